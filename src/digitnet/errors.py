"""One kind of error for bad input, and one way to report it: a single line on stderr and exit 1."""

from __future__ import annotations

import itertools
import re
import sys
from contextlib import contextmanager


class UserError(Exception):
    """Bad input from the user (config value, file, path). The message says what, where, and how to fix it."""


@contextmanager
def exit_on_user_error(prog: str = "digitnet"):
    """UserError: its one line, exit 1. Anything else that escapes is also one line (its type and first line), since
    a value no check foresaw must not end in a traceback; DIGITNET_DEBUG=1 shows the traceback instead."""
    import os

    try:
        yield
    except UserError as exc:
        sys.stdout.flush()
        print(f"{prog}: error: {shown(exc)}", file=sys.stderr)  # one line, whatever file names it quotes
        raise SystemExit(1) from None
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("DIGITNET_DEBUG"):
            raise
        sys.stdout.flush()
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        print(f"{prog}: error: {type(exc).__name__}{': ' + first if first else ''} (nothing was checked for this; rerun "
              "with DIGITNET_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        raise SystemExit(1) from None


# Keys that some choices of a group have and others lack: Hydra's "no such key" would send the user to `+key=`,
# which the plan then refuses.
_KEYS_OF_SOME_CHOICES = {"model.dropout": "only model=deepbn has dropout layers; add model=deepbn"}


def composition_error_line(exc: Exception) -> str:
    """Hydra's multi-line composition or override-parsing error as one line with its fix."""
    mark = getattr(exc, "problem_mark", None)  # a YAML syntax error in a config file (a --config-dir's, say)
    if mark is not None and getattr(exc, "problem", None):
        return f"{mark.name}, line {mark.line + 1}: not valid YAML ({exc.problem}); fix the file"
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()] or [type(exc).__name__]
    cause = str(exc.__cause__ or "").strip().splitlines()
    if lines[0].startswith("Error merging override ") and cause:  # a typed Hydra key: OmegaConf says what it takes
        return f"{lines[0].removeprefix('Error merging override ')}: {cause[0].rstrip('.')}; give a value of that type"
    append = next((line.split(" use ")[-1] for line in lines[1:] if line.startswith("To append")), "")
    key = append.lstrip("+").partition("=")[0]
    if key in _KEYS_OF_SOME_CHOICES:
        return f"{append.lstrip('+')}: {_KEYS_OF_SOME_CHOICES[key]}"
    if append and key != key.lower():  # every digitnet key is lower case: Model=deep is model=deep
        return f"{lines[0].rstrip('.')}: no such key; keys are lower case: {append.lstrip('+').lower()}"
    if append:
        return f"{lines[0].rstrip('.')}: no such key; check the spelling, or add one with {append}"
    if lines[0].startswith("Error parsing override '") and len(lines) > 1 and lines[1].startswith("missing EQUAL"):
        key = lines[0].split("'", 1)[1].rstrip("'")
        return f"{key}: an override is key=value (e.g. {key}=...); to remove a key write ~{key.lstrip('+~')}"
    if "LexerNoViableAlt" in lines[0] or "mismatched input" in lines[0] or "extraneous input" in lines[0]:
        return (f"cannot parse the override {lines[0].split(': ', 1)[-1]}; quote values with spaces or special "
                "characters (Hydra's override syntax: key='a value')")
    if lines[0].startswith("Error parsing override") and len(lines) > 1 and " while evaluating " in lines[1]:
        # a sweep or cast function given the wrong arguments, e.g. tag(a,0.1,0.2): Hydra's second line says which
        return (f"{lines[0].split(' ', 3)[-1]}: {lines[1].partition(': ')[2] or lines[1]} (Hydra's override "
                "functions: https://hydra.cc/docs/advanced/override_grammar/extended)")
    missing = re.search(r"Could not find '(.+)/([^/]*)'", lines[0])
    if missing and any(line.startswith("Available options in") for line in lines):
        # a Hydra group of its own, e.g. hydra/launcher=nope (digitnet's groups are checked before composing)
        first = next(i for i, line in enumerate(lines) if line.startswith("Available options in")) + 1
        options = list(itertools.takewhile(lambda line: not line.startswith("Config search path"), lines[first:]))
        return f"{missing.group(1)}={missing.group(2)} is unknown; use one of {', '.join(options)}"
    if lines[0].startswith("Ambiguous value for argument"):
        return f"{lines[0].rstrip('.')}: to sweep, add -m (--multirun) before the overrides"
    return lines[0]


def undecodable_yaml(folders) -> str | None:
    """The line naming the first YAML file under `folders` that is not UTF-8 (Hydra's UnicodeDecodeError names none)."""
    from pathlib import Path

    for folder in folders:
        for path in sorted(Path(folder).rglob("*.yaml")):
            try:
                path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                return (f"{shown(path)}: not UTF-8 text (byte {exc.object[exc.start]:#x} at offset {exc.start}); "
                        "save it as UTF-8")
            except OSError:
                continue
    return None


def config_folders(hydra_cfg) -> list:
    """The folders a run's configs come from (the packaged ones, a --config-dir, hydra.searchpath), in Hydra's
    search order."""
    from importlib import resources
    from pathlib import Path

    folders = []
    for source in hydra_cfg.runtime.config_sources:
        if source.schema == "file":
            folders.append(Path(source.path))
        elif source.schema == "pkg" and source.provider != "hydra":
            try:
                folders.append(Path(str(resources.files(source.path))))
            except (ModuleNotFoundError, TypeError):
                continue
    return folders


def misconfigured_group_file(choices: dict, folders: list) -> str | None:
    """The line naming a config file of yours that leaves a group without keys, or None. Hydra composes an option
    file that is empty, a list or a number (that one with "Invalid loaded object type: int") to nothing or fails,
    and `data: null` in an experiment file empties its group; the refusals that follow (a missing key, "Could not
    override 'data.limit'") name no file. `choices`: {group: option} as chosen; an experiment's own `- override`
    lines count beneath them. `folders`: where configs are looked up, in Hydra's order."""
    from pathlib import Path

    import yaml

    def read(group: str, option: str):
        for folder in folders:  # the first folder that has it is the one Hydra read
            path = Path(folder) / group / f"{option}.yaml"
            if path.is_file():
                try:
                    return path, yaml.safe_load(path.read_text(encoding="utf-8"))
                except (OSError, ValueError, yaml.YAMLError):
                    return None, None
        return None, None

    choices = {g: o for g, o in choices.items() if isinstance(o, str) and not g.startswith("hydra")}
    experiment, content = read("experiment", choices["experiment"]) if "experiment" in choices else (None, None)
    if isinstance(content, dict):
        for item in content.get("defaults") or []:
            for key, option in (item.items() if isinstance(item, dict) else ()):
                group = str(key).removeprefix("override ").strip().lstrip("/")
                choices.setdefault(group, option)  # the command line's choice wins, as in Hydra
        for group, value in content.items():
            if group != "defaults" and (Path(folders[0]) / group).is_dir() and not isinstance(value, dict):
                return (f"{shown(experiment)} sets {group}: {str(value)[:40] if value is not None else 'null'}, but "
                        f"{group} is a config group; choose its option in the file's defaults list "
                        f"(- override /{group}: NAME), or set its keys ({group}: {{key: value}})")
    for group, option in choices.items():
        if group == "experiment":
            continue
        path, content = read(group, option)
        if path is None or isinstance(content, dict):
            continue
        kinds = {list: "a list", str: "a string", bool: "true or false", int: "a number", float: "a number"}
        held = "is empty" if content is None else f"holds {kinds.get(type(content), 'a value')}, not keys"
        return (f"{shown(path)} {held}, so {group}={option} sets nothing; write {group} keys into it, as digitnet's "
                f"conf/{group}/ files hold")
    return None


def shown(path) -> str:
    """A path as one line can hold it: control characters (a newline in a file name) escaped."""
    text = str(path)
    return text if text.isprintable() else ascii(text)[1:-1]



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

    class StoreOnce(argparse.Action):  # argparse's default action ('store'), registered below in its place
        """argparse lets the last of `--out a.json --out b.json` win silently; an option given twice is a slip."""

        def __call__(self, parser, namespace, values, option_string=None):
            if option_string is not None:
                if self.dest in parser.given:
                    parser.error(f"{self.option_strings[-1]} is given twice ({parser.given[self.dest]} and {values}); "
                                 "give it once")
                parser.given[self.dest] = values
            setattr(namespace, self.dest, values)

    class OneLineParser(argparse.ArgumentParser):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.given: dict = {}  # dest -> the value it was first given, in this parse
            self.register("action", None, StoreOnce)
            self.register("action", "store", StoreOnce)

        def error(self, message):
            sys.stdout.flush()
            print(f"{prog}: error: {message} (see --help)", file=sys.stderr)
            raise SystemExit(1)

        def parse_known_args(self, args=None, namespace=None):
            self.given = {}
            return super().parse_known_args(args, namespace)

    return OneLineParser(prog=f"python -m {prog}", description=description)
