"""`python -m digitnet.train` (`digitnet-train`): k-fold CV (task=cv) or the final fit and holdout score (task=final).

The flow: Hydra composes the config -> make_plan checks it and settles every choice (plan.py) -> run(plan) reads
MNIST and hands the plan to the task: the fold loop (cv.py, with one of runners.py's runners) or the final fit.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import sys
from importlib import resources
from pathlib import Path

from digitnet import interrupts  # standard library only

if __name__ == "__main__":  # python -m digitnet.train: from before the imports below (about 0.4 s)
    interrupts.catch_early()

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from digitnet import rundir  # noqa: E402 - first: its clock tells the run dirs Hydra makes for this process
from digitnet.errors import UserError, config_folders, exit_on_user_error, misconfigured_group_file  # noqa: E402
from digitnet.files import write_json_atomic  # noqa: E402
from digitnet.plan import GROUP_NODES, RunPlan, make_plan  # noqa: E402

PROG = interrupts.PROG
# The configs ship inside the package (pyproject maps conf/ to digitnet.conf): editable installs, wheels, any cwd.
# Run from a checkout without installing (PYTHONPATH=src), they are the checkout's conf/.
_CHECKOUT_CONF = Path(__file__).resolve().parents[2] / "conf"
_INSTALLED = importlib.util.find_spec("digitnet.conf") is not None
CONFIG_PATH = "pkg://digitnet.conf" if _INSTALLED else str(_CHECKOUT_CONF)


def _config_context():
    """Hydra's compose API on the same configs as @hydra.main."""
    from hydra import initialize_config_dir, initialize_config_module

    if _INSTALLED:
        return initialize_config_module("digitnet.conf", version_base="1.3")
    return initialize_config_dir(str(_CHECKOUT_CONF), version_base="1.3")


GROUPS = (*GROUP_NODES, "experiment")  # conf/ minus hydra/ (a test checks it against the folders)
# With these, configs come from elsewhere too; Hydra itself then says which choices it knows.
USER_CONFIG_ARGS = ("--config-dir", "-cd", "--config-path", "-cp", "hydra.searchpath", "+hydra.searchpath")


def check_flags(argv: list[str]) -> None:
    """Hydra's own flags, parsed as Hydra will: a misspelled one (--bogus, -c bogus) is one line and exit 1, like
    the other entry points' usage errors, not argparse's usage block and exit 2."""
    if "--version" in argv:
        return  # Hydra's parser prints the version and leaves: let Hydra do it
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def error(message: str) -> None:
        if message.startswith("unrecognized arguments") and "=" in message:  # flags after key=value overrides
            _refuse(f"{message}: Hydra's flags (--config-dir, --cfg, ...) come before the key=value overrides")
        _refuse(f"{message} (see --help; settings are key=value overrides)")

    parser.error = error
    args = parser.parse_args(argv)
    modes = [flag for flag, given in (("--multirun", args.multirun), ("--cfg", args.cfg), ("--info", args.info),
                                      ("--run", args.run), ("--shell-completion", args.shell_completion)) if given]
    if len(modes) > 1:  # also as prefixes (--multi) or --cfg=job; Hydra's own line is a traceback
        _refuse(f"{' and '.join(modes)}: give one of them")
    if args.config_dir is not None and not os.path.isdir(args.config_dir):
        _refuse(f"--config-dir {args.config_dir}: no such folder; give the folder that holds your config groups")


def _config_folder() -> Path:
    """The packaged configs' folder (digitnet.conf installed, else the checkout's conf/)."""
    return Path(str(resources.files("digitnet.conf"))) if _INSTALLED else _CHECKOUT_CONF


def check_group_choices(argv: list[str]) -> None:
    """`model=foo` gets one line naming the choices, before Hydra's multi-line composition error."""
    if any(arg.split("=")[0] in USER_CONFIG_ARGS for arg in argv):
        return
    conf = _config_folder()
    for arg in argv:
        key, sep, value = arg.partition("=")
        plain_key = key.lstrip("+~")
        if not sep or plain_key not in GROUPS:
            continue
        if key.startswith("+") and not key.startswith("++"):
            _refuse(f"{arg}: {plain_key} is in the defaults list already; write {plain_key}={value} (no +)")
        if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"" and "," in value:
            _refuse(f"{arg}: quotes make one name of it, and {plain_key} has no choice {value[1:-1]}; to sweep, "
                    f"write -m {plain_key}={value[1:-1]}")
        listed = re.fullmatch(r"\s*choice\((.*)\)\s*", value)  # choice(a,b) sweeps choices; other functions: Hydra's
        if "(" in value and not listed:
            continue
        known = sorted(p.name[:-5] for p in (conf / plain_key).iterdir() if p.name.endswith(".yaml"))
        for choice in (listed.group(1) if listed else value).split(","):
            choice = choice.strip().strip("'\"")  # Hydra allows 'quoted' values and spaces after commas
            if choice == "null" and plain_key == "experiment":
                _refuse("experiment=null: the defaults need no preset; leave experiment= out, or name them "
                        "experiment=tutorial (in a sweep: experiment=tutorial,best)")
            if choice == "" and not listed and "," in value:  # Hydra reads `model=vgg,` as a sweep of vgg and ''
                _refuse(f"{arg}: an empty choice after a comma; remove the comma (a sweep: -m {plain_key}=a,b)")
            if choice not in known:
                _refuse(f"{plain_key}={choice} is unknown; use one of {', '.join(known)}")


def _refuse(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def check_output_dirs(argv: list[str]) -> None:
    """hydra.run.dir / hydra.sweep.dir that cannot be a folder get one line here; Hydra would make them first and
    fail with a traceback."""
    given = {key.lstrip("+"): value for key, _, value in (arg.partition("=") for arg in argv)}
    dirs = {key: given[key] for key in ("hydra.run.dir", "hydra.sweep.dir") if key in given}
    if not dirs:
        dirs = {"the output folder": "outputs"}  # the default run and sweep dirs live under ./outputs
    with exit_on_user_error(PROG):
        for key, value in dirs.items():
            if not value.strip():
                raise UserError(f"{key} is empty; give a folder, e.g. {key}=outputs/myrun")
            if "${" in value:
                continue
            path = Path(value)
            if path.exists() and not path.is_dir():
                raise UserError(f"{key}={value} is a file; choose a folder")
            missing = []
            while not path.exists():
                if path.is_symlink():  # exists() follows the link: it points nowhere
                    raise UserError(f"{key}={value}: {path} is a broken link (to {os.readlink(path)}); remove it, or "
                                    "choose another folder")
                missing.append(path)
                path = path.parent
            if not path.is_dir():
                raise UserError(f"{key}={value}: {path} is a file, not a folder; choose another folder")
            if not os.access(path, os.W_OK | os.X_OK):
                raise UserError(f"{key}={value}: {path} is not writable; choose a folder you can write to")
            try:  # the real test (root passes access() everywhere): make the folders, then remove them again
                for folder in reversed(missing):
                    folder.mkdir()
            except OSError as exc:
                raise UserError(f"{key}={value} cannot be created ({exc.strerror}); choose a folder you can write "
                                "to") from None
            finally:
                for folder in missing:
                    if folder.is_dir():
                        folder.rmdir()


def compose_plan(*overrides: str, **machine) -> RunPlan:
    """The plan of `overrides` on the packaged config, without the command line (bench scripts, notebooks).
    `machine` passes make_plan's cuda_available / cores / tty."""
    from hydra import compose

    with _config_context():
        return make_plan(compose(config_name="config", overrides=list(overrides)), **machine)


def prepare(plan: RunPlan):
    """What can still refuse a plan before anything is written: Lightning's own check of the trainer arguments, and
    MNIST (read, or fetched). Returns the plan settled for the data, and the data."""
    from digitnet.data import load_mnist
    from digitnet.logs import quiet
    from digitnet.training import check_trainer

    quiet()
    check_trainer(plan)
    arrays = load_mnist(plan.data_root, download=plan.download)
    return plan.for_data(len(arrays.train_y)), arrays


def execute(plan: RunPlan, arrays, run_dir: Path) -> dict:
    """The task itself; everything it writes goes into run_dir. Returns cv_summary.json's or test_metrics.json's
    content."""
    from digitnet.logs import say

    say(plan.describe())
    for note in plan.notes:
        say(f"note: {note}")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "plan.json", plan.as_dict())
    if plan.task == "final":
        from digitnet.final import run_final

        return run_final(plan, arrays, run_dir)
    from digitnet.cv import run_cv

    return run_cv(plan, arrays, run_dir)


def run(plan: RunPlan, run_dir: str | Path) -> dict:
    """Run a checked plan into run_dir; return its summary. The pure entry point behind @hydra.main."""
    plan, arrays = prepare(plan)
    return execute(plan, arrays, Path(run_dir))


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    interrupt = interrupts.interrupt
    restore_handlers = interrupt.install(run_dir)
    lock = None
    try:
        with exit_on_user_error(PROG), interrupt.consequences():
            if HydraConfig.get().job.chdir:  # Hydra moved into the run dir: a relative data.root means the caller's
                _root_from_caller(cfg, HydraConfig.get().runtime.cwd)
            try:
                plan = make_plan(cfg)
            except UserError as exc:  # an empty option file of a --config-dir: say which file, not which key
                hydra_cfg = HydraConfig.get()
                raise UserError(misconfigured_group_file(hydra_cfg.runtime.choices, config_folders(hydra_cfg))
                                or str(exc)) from None
            interrupt.task = plan.task
            plan, arrays = prepare(plan)
            # Nothing is written into run_dir before these pass, so a refused rerun leaves it as it was.
            rundir.check_place(run_dir)
            if HydraConfig.get().mode == RunMode.RUN:
                rundir.check_not_in_a_sweep(run_dir)
            rundir.check_compatible(run_dir, plan)
            lock = rundir.RunDirLock(run_dir)
            interrupt.kept = True
            rundir.check_compatible(run_dir, plan)  # again, now that no other run can write here
            if plan.task == "final" and (run_dir / "final.ckpt").is_file():
                if not (run_dir / "test_metrics.json").exists():  # stopped between saving and scoring it
                    from digitnet.final import score_saved

                    return score_saved(plan, arrays, run_dir).get("mean")  # None, as execute's for task=final
                return rundir.report_existing_final(run_dir)
            rundir.write_hydra_files(run_dir, cfg, HydraConfig.instance().cfg)
            typed = OmegaConf.to_container(HydraConfig.get().overrides.hydra, resolve=False)
            if HydraConfig.get().mode == RunMode.RUN and any(o.lstrip("+").startswith("hydra.sweep.dir=") for o in typed):
                from digitnet.logs import say

                say(f"note: hydra.sweep.dir is for sweeps (-m); this run goes to {run_dir}")
            return execute(plan, arrays, run_dir).get("mean")
    except KeyboardInterrupt:
        if not interrupt.signals:  # not from a signal (a library raised it): treated as Ctrl-C
            interrupt.note(signal.SIGINT)
        interrupt.say()
        raise SystemExit(interrupt.code()) from None
    finally:
        restore_handlers()
        if lock is None:
            rundir.remove_if_new_and_empty(run_dir)
        else:
            lock.release()


def _root_from_caller(cfg: DictConfig, cwd: str) -> None:
    from omegaconf import open_dict

    root = OmegaConf.select(cfg, "data.root", throw_on_resolution_failure=False)
    if isinstance(root, str) and root.strip() and not os.path.isabs(root):
        with open_dict(cfg):
            cfg.data.root = os.path.join(cwd, root)


def check_composes(argv: list[str]) -> None:
    """Compose the command's config once before Hydra does: its composition and interpolation errors (a misspelled
    key, `~trainer`, an unset ${oc.env:...}) become one line instead of Hydra's several. Skipped for Hydra's
    own flags and --config-path/--config-name, where Hydra's messages stand; a --config-dir joins the search
    path, as Hydra adds it. A sweep's common config is composed as Hydra composes it, without the swept values
    (each job is checked in sweep.SweepSummaryCallback)."""
    sweep = [arg for arg in argv if arg in ("-m", "--multirun")] or [a for a in argv if a == "hydra.mode=MULTIRUN"]
    overrides = [arg for arg in argv if arg not in ("-m", "--multirun")]
    overrides = _config_dir_as_search_path(_without_print_flags(overrides))
    if overrides is None or any(arg.startswith("-") for arg in overrides):  # --config-path, --info, ...: Hydra's
        return
    from hydra import compose
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationKeyError, InterpolationResolutionError

    from digitnet.errors import composition_error_line, undecodable_yaml

    with exit_on_user_error(PROG):
        try:
            parsed = OverridesParser.create().parse_overrides(overrides)
            _refuse_repeated_keys(parsed)
            if sweep:
                overrides = [o.input_line for o in parsed if not o.is_sweep_override()]
            with _config_context():
                _refuse_null_groups(parsed)
                cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
                for key in ("hydra.run.dir", "hydra.sweep.dir"):
                    value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
                    if value is None and "oc.env" in str(OmegaConf.to_container(cfg.hydra).get(key.split(".")[1])):
                        raise UserError(f"{key} names an environment variable that is not set")
                    try:
                        OmegaConf.select(cfg, key)
                    except (InterpolationKeyError, InterpolationResolutionError) as exc:
                        if "HydraConfig was not set" not in str(exc):  # ${hydra:...}: Hydra fills it in at the run
                            raw = OmegaConf.to_container(cfg.hydra, resolve=False)[key.split(".")[1]]["dir"]
                            raise UserError(f"{key}={raw} cannot be resolved ({str(exc).splitlines()[0]}); use a "
                                            "plain folder, or keys that exist, e.g. outputs/${model.name}") from None
        except UserError:
            raise
        except UnicodeDecodeError as exc:  # a config file in another encoding: the error names no file
            raise UserError(undecodable_yaml(_override_folders(overrides))
                            or f"a config file is not UTF-8 text ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - Hydra's ConfigCompositionException, OverrideParseException, ...
            choices = {k.lstrip("+~"): v for k, _, v in (o.partition("=") for o in overrides) if k.lstrip("+~") in GROUPS}
            raise UserError(misconfigured_group_file(choices, _override_folders(overrides))
                            or composition_error_line(exc)) from None


def _override_folders(overrides: list[str]) -> list[Path]:
    """The config folders of a command: the packaged configs, then those of hydra.searchpath (a --config-dir)."""
    folders = [_config_folder()]
    for override in overrides:
        if override.lstrip("+").startswith("hydra.searchpath="):
            folders += [Path(p) for p in re.findall(r'file://([^",\]]+)', override)]
    return folders


def _without_print_flags(args: list[str]) -> list[str]:
    """The overrides of `--cfg job [--resolve] [--package P] OVERRIDES`: it prints the config these compose, so
    their errors are checked as a run's (Hydra's own were 6 lines)."""
    out, i = [], 0
    while i < len(args):
        flag = args[i].partition("=")[0]
        if flag in ("--cfg", "-c", "--package", "-p"):
            i += 1 if "=" in args[i] else 2
            continue
        if args[i] != "--resolve":
            out.append(args[i])
        i += 1
    return out


def _config_dir_as_search_path(args: list[str]) -> list[str] | None:
    """`--config-dir DIR` (-cd) as the override `hydra.searchpath=[file://DIR]`, which composes the same (Hydra puts
    DIR after the packaged configs either way). Given twice, the last counts (Hydra's argparse keeps it); with a
    hydra.searchpath=[...] of its own, DIR joins that list. None where that value is not a list."""
    out, given = [], []
    i = 0
    while i < len(args):
        flag, eq, value = args[i].partition("=")
        if flag in ("--config-dir", "-cd"):
            if not eq:
                i += 1
                value = args[i] if i < len(args) else ""
            given.append(value)
        else:
            out.append(args[i])
        i += 1
    if not given:
        return out
    folder = json.dumps("file://" + os.path.abspath(given[-1]))
    for i, arg in enumerate(out):
        key, _, value = arg.partition("=")
        if key.lstrip("+") == "hydra.searchpath":
            if not (value.strip().startswith("[") and value.strip().endswith("]")):
                return None
            listed = value.strip()[1:-1].strip()
            out[i] = f"{key}=[{listed + ', ' if listed else ''}{folder}]"
            return out
    return [*out, f"hydra.searchpath=[{folder}]"]


def _refuse_null_groups(parsed) -> None:
    """hydra/launcher=null: Hydra's own line names no group and no choice ("Config group override must be a string
    or a list. Got NoneType"). digitnet's own groups are checked before (check_group_choices)."""
    from hydra.core.global_hydra import GlobalHydra

    from digitnet.errors import UserError

    for override in parsed:
        if "/" in override.key_or_group and not override.is_delete() and override.value() is None:
            options = GlobalHydra.instance().config_loader().get_group_options(override.key_or_group)
            raise UserError(f"{override.input_line}: a config group needs a choice; use one of {', '.join(options)}")


def _refuse_repeated_keys(parsed) -> None:
    """Hydra lets a later override of the same key win, silently: `-m optimizer.lr=0.1,0.2 optimizer.lr=0.3` would
    drop the sweep. And model.name is the model group's to set: `model=baseline model.name=deep` trains deep under
    baseline's name."""
    from digitnet.errors import UserError

    seen: dict[str, str] = {}
    for override in parsed:
        key = override.get_key_element()
        if key.lstrip("+~").startswith("hydra") and override.is_sweep_override():
            raise UserError(f"{override.input_line}: Hydra's own settings cannot be swept; run one sweep for each "
                            "value")
        if key.startswith("~hydra/"):
            raise UserError(f"{override.input_line}: Hydra's own config groups cannot be removed; choose one, e.g. "
                            f"{key[1:]}=basic")
        if key in seen:
            raise UserError(f"{key.lstrip('+~')} is given twice ({seen[key]} and {override.input_line}); give it once")
        seen[key] = override.input_line
        if key.lstrip("+~") == "model.name":
            from digitnet.plan import ARCHS

            value = override.get_value_element_as_str() if not override.is_delete() else ""
            fix = f"write model={value} instead" if value in ARCHS else f"write model={'|'.join(ARCHS)}"
            raise UserError(f"{override.input_line}: the net is chosen with the model group; {fix}")


def cli() -> None:
    """Console script `digitnet-train`."""
    interrupts.catch_early()
    argv = sys.argv[1:]
    check_flags(argv)
    check_group_choices(argv)
    check_output_dirs(argv)
    check_composes(argv)
    main()


if __name__ == "__main__":
    cli()
