"""One kind of error for bad input, and one way to report it: a single line on stderr and exit 1."""

from __future__ import annotations

import sys
from contextlib import contextmanager


class UserError(Exception):
    """Bad input from the user (config value, file, path). The message says what, where, and how to fix it."""


@contextmanager
def exit_on_user_error(prog: str = "digitnet"):
    try:
        yield
    except UserError as exc:
        sys.stdout.flush()
        print(f"{prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None



@contextmanager
def quiet_broken_pipe():
    """`digitnet-predict ... | head`: the reader went away, which is no error of ours; leave without a traceback."""
    import os

    try:
        yield
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own advice: no second error at exit
        raise SystemExit(1) from None


def run_console(main) -> None:
    """A console script's body: main()'s return value is the exit code."""
    with quiet_broken_pipe():
        sys.exit(main())


def argument_parser(prog: str, description: str):
    """argparse, with its usage errors as one line like every other error (`digitnet.predict: error: ...`),
    exit 1; `--help` still shows the usage."""
    import argparse

    class OneLineParser(argparse.ArgumentParser):
        def error(self, message):
            sys.stdout.flush()
            print(f"{prog}: error: {message} (see --help)", file=sys.stderr)
            raise SystemExit(1)

    return OneLineParser(prog=f"python -m {prog}", description=description)
