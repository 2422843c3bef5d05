"""Bad input, and how every entry point reports an error: one message that names what is wrong and the fix, no
traceback (HYDRA_FULL_ERROR=1 shows it, as in any Hydra app), and an exit code that says what happened:
0 done; 1 bad input or an error; 2 a command-line usage error (argparse's, Hydra's); 3 it ran, but nothing usable came
of it (folds diverged or at chance, a final fit diverged, a sweep job failed); 130 / 143 Ctrl-C / SIGTERM."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

NO_RESULT = 3
# Read once, at import: train.py sets HYDRA_FULL_ERROR for Hydra itself (so that Hydra raises instead of printing).
SHOW_TRACEBACKS = os.environ.get("HYDRA_FULL_ERROR") == "1"


class UserError(Exception):
    """Bad input (a config value, a file, a path). `key`, `value` and `path` say where; the message also says how to
    fix it."""

    exit_code = 1

    def __init__(self, message: str, *, key: str | None = None, value=None, path=None):
        super().__init__(message)
        self.key, self.value, self.path = key, value, path


class ConfigError(UserError):
    """A config value that cannot run: `key=value: problem; fix`."""

    def __init__(self, key: str, value, problem: str, fix: str = ""):
        super().__init__(f"{key}={value!r}: {problem}" + (f"; {fix}" if fix else ""), key=key, value=value)


class NoResult(UserError):
    """The work ran, but nothing usable came of it (the report says what)."""

    exit_code = NO_RESULT


def first_line(error, limit: int = 200) -> str:
    """An exception's message (or a text) as one line of at most `limit` characters; "" for none: what a message of
    ours quotes of a library's."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else ""


def named(exc: BaseException, limit: int = 200) -> str:
    """`Type: first line of its message`, or the type alone."""
    first = first_line(exc, limit)
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def shown(path) -> str:
    """A path as one line can hold it: control characters (a newline in a file name) escaped."""
    text = str(path)
    return text if text.isprintable() else ascii(text)[1:-1]


def describe(exc: BaseException) -> str:
    """An exception as the user needs to read it. Hydra's and OmegaConf's errors are their own messages, as Hydra
    prints them; a file-system error names its file; anything else is a bug of ours, said as such."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, (HydraException, OmegaConfBaseException)):
        cause = exc.__cause__
        tail = f"\n{cause}" if isinstance(cause, OmegaConfBaseException) else ""
        return f"{exc}{tail}".strip()
    if isinstance(exc, OSError) and exc.filename is not None:
        if os.path.islink(exc.filename) and not os.path.exists(exc.filename):
            target = os.readlink(exc.filename)
            return f"{shown(exc.filename)}: a broken link (to {target}); remove it or choose another path"
        return f"{shown(exc.filename)}: {exc.strerror}; check that path"
    text = str(exc).strip()
    return (
        f"{type(exc).__name__}{': ' + text if text else ''} (unexpected; rerun with HYDRA_FULL_ERROR=1 for the "
        "traceback, and please report it)"
    )


def say_error(prog: str, exc: BaseException) -> None:
    sys.stdout.flush()
    print(f"{prog}: error: {describe(exc)}", file=sys.stderr, flush=True)


@contextmanager
def reported(prog: str):
    """Any exception: its message on stderr and the exit code, never a traceback (unless HYDRA_FULL_ERROR=1)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - every error ends the same way
        if SHOW_TRACEBACKS and not isinstance(exc, UserError):
            raise
        say_error(prog, exc)
        raise SystemExit(getattr(exc, "exit_code", 1)) from None


def run_console(main) -> None:
    """A console script's body: main()'s return value is the exit code; `... | head` closing the pipe is no error."""
    try:
        sys.exit(main())
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's advice: no second error at exit
        sys.exit(1)
