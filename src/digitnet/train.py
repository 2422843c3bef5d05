"""`python -m digitnet.train` (`digitnet-train`): k-fold CV (task=cv) or the final fit and holdout score (task=final).

The flow: Hydra composes the config (typed by config/schema.py) -> make_plan checks it and settles every choice
(config/plan.py) -> run(plan, run_dir) reads MNIST and hands the plan to the task: the fold loop (engine/cv.py, with
one of its runners) or the final fit (engine/final.py). Everything a run writes goes into its run dir.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import signal
import sys
from pathlib import Path

from digitnet import startup  # standard library only
from digitnet.engine import interrupts  # standard library only

if __name__ == "__main__":  # python -m digitnet.train: Ctrl-C is one line from the first moment
    interrupts.catch_early()
    startup.start_process()

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.core.plugins import Plugins  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from digitnet import layout  # noqa: E402
from digitnet.config.plan import RunPlan, make_plan  # noqa: E402
from digitnet.config.schema import config_file_problem  # noqa: E402 - and the schema in Hydra's ConfigStore
from digitnet.engine import rundir  # noqa: E402 - first: its clock tells the run dirs Hydra makes for this process
from digitnet.errors import SHOW_TRACEBACKS, NoResult, UserError, describe, reported, say_error  # noqa: E402
from hydra_plugins.digitnet_optuna.optuna_sweeper import OptunaSweeper  # noqa: E402

# The search's sweeper (hydra/sweeper=digitnet_optuna). Hydra finds plugins by listing the hydra_plugins package,
# which an editable install (pip install -e .) does not show; registering it here works for both.
Plugins.instance().register(OptunaSweeper)
PROG = "digitnet.train"
# The configs ship inside the package (pyproject maps conf/ to digitnet.conf); from a checkout without installing
# (PYTHONPATH=src) they are the checkout's conf/.
CHECKOUT_CONF = Path(__file__).resolve().parents[2] / "conf"
INSTALLED = importlib.util.find_spec("digitnet.conf") is not None
CONFIG_PATH = "pkg://digitnet.conf" if INSTALLED else str(CHECKOUT_CONF)
# Hydra's launchers that digitnet's extras install: `hydra/launcher=NAME` -> (its plugin package, the extra).
LAUNCHERS = {
    "joblib": ("hydra_joblib_launcher", "joblib"),
    "submitit_local": ("hydra_submitit_launcher", "slurm"),
    "submitit_slurm": ("hydra_submitit_launcher", "slurm"),
    "ray": ("hydra_ray_launcher", "ray"),
}


def compose_plan(*overrides: str, **machine) -> RunPlan:
    """The plan of `overrides` on the packaged config, without the command line (bench scripts, notebooks).
    `machine` passes make_plan's cuda_available / cores / tty."""
    from hydra import compose, initialize_config_dir, initialize_config_module

    context = (
        initialize_config_module("digitnet.conf", version_base="1.3")
        if INSTALLED
        else initialize_config_dir(str(CHECKOUT_CONF), version_base="1.3")
    )
    with context:
        return make_plan(compose(config_name="config", overrides=list(overrides)), **machine)


def prepare(plan: RunPlan):
    """What can still refuse a plan before anything is written: Lightning's own check of the trainer arguments, and
    MNIST (read, or fetched). Returns the plan settled for the data, and the data."""
    from digitnet.core.data import load_mnist
    from digitnet.engine.fit import check_trainer
    from digitnet.logs import quiet

    quiet()
    check_trainer(plan)
    arrays = load_mnist(plan.data_root, download=plan.download)
    startup.imports_done()  # every path from here (a fit, scoring a saved final model) collects garbage again
    return plan.for_data(arrays), arrays


def check_store(plan: RunPlan) -> None:
    """logger.mlflow's store is usable, and the experiment made, before any work (once the run dir has accepted
    the plan: the check makes the store)."""
    if "mlflow" in plan.loggers:
        from digitnet.report.tracking import check

        check(plan.loggers["mlflow"])


def execute(plan: RunPlan, arrays, run_dir: Path, tracked: bool = True, after_fold=None) -> dict:
    """The task itself, into run_dir, recorded in MLflow if selected (`tracked`; a sweep's callback records its
    jobs when the sweep ends). `after_fold`: a search trial's pruning hook (engine/cv.py). Returns
    cv_summary.json's or test_metrics.json's content."""
    from digitnet.logs import say

    say(plan.describe())
    for note in plan.notes:
        say(f"note: {note}")
    run_dir.mkdir(parents=True, exist_ok=True)
    layout.write_json_atomic(run_dir / layout.PLAN, plan.as_dict())
    if plan.task == "final":
        from digitnet.engine.final import run_final

        result = run_final(plan, arrays, run_dir)
    else:
        from digitnet.engine.cv import run_cv

        result = run_cv(plan, arrays, run_dir, after_fold)
    return track(plan, result, run_dir) if tracked else result


def track(plan: RunPlan, result: dict, run_dir: Path) -> dict:
    """Record a finished run in MLflow (logger=[...,mlflow]). Its results are in run_dir already: a store that fails
    now is said, and costs none of them."""
    if "mlflow" in plan.loggers:
        from digitnet.logs import say
        from digitnet.report.tracking import record

        try:
            say(f"MLflow: run {record(plan, result, run_dir)} in {plan.loggers['mlflow']['tracking_uri']}")
        except Exception as exc:  # noqa: BLE001 - the run's own files hold everything
            say(f"note: MLflow could not record this run ({describe(exc)}); its results are in {run_dir}")
    return result


def run(plan: RunPlan, run_dir: str | Path) -> dict:
    """Run a checked plan into run_dir; return its summary. The pure entry point behind @hydra.main."""
    plan, arrays = prepare(plan)
    check_store(plan)
    return execute(plan, arrays, Path(run_dir))


def _accept(cfg: DictConfig, run_dir: Path, key: str, sweep_job: bool):
    """The plan, the data and the run dir's lock: nothing is written into run_dir before its checks pass, so that a
    refused rerun leaves it as it was. Returns (plan, arrays, lock)."""
    if HydraConfig.get().job.chdir:  # Hydra moved into the run dir: a relative path means the caller's
        cwd = HydraConfig.get().runtime.cwd
        root = OmegaConf.select(cfg, "data.root", throw_on_resolution_failure=False)
        store = (
            OmegaConf.select(cfg, "logger.mlflow.tracking_uri", throw_on_resolution_failure=False)
            if OmegaConf.select(cfg, "logger.mlflow.enabled", throw_on_resolution_failure=False) is True
            else None
        )
        with open_dict(cfg):
            if isinstance(root, str) and root.strip() and not os.path.isabs(root):
                cfg.data.root = os.path.join(cwd, root)
            if isinstance(store, str) and store.startswith("sqlite:///") and not store.startswith("sqlite:////"):
                cfg.logger.mlflow.tracking_uri = "sqlite:///" + os.path.join(cwd, store[len("sqlite:///") :])
    rundir.check_place(run_dir, key)  # the checks that need neither plan nor data first: they answer in a second
    if not sweep_job:
        rundir.check_not_in_a_sweep(run_dir)
    cores = cuda = None  # a single run: make_plan asks torch, once its cheap checks have passed
    if sweep_job:
        import torch

        cores, cuda = launcher_share(HydraConfig.get().launcher, os.environ, torch.get_num_threads())
    plan = make_plan(cfg, cores=cores, cuda_available=cuda)
    if cores is not None:
        torch.set_num_threads(cores)
    interrupts.interrupt.task = plan.task
    plan, arrays = prepare(plan)
    rundir.check_compatible(run_dir, plan, key)
    check_store(plan)
    lock = rundir.RunDirLock(run_dir, key)
    interrupts.interrupt.kept = True
    rundir.check_compatible(run_dir, plan, key)  # again, now that no other run can write here
    for name in (layout.FAILURE, layout.PRUNED):  # an earlier try of this sweep job failed, or was pruned
        (run_dir / name).unlink(missing_ok=True)
    return plan, arrays, lock


def launcher_share(launcher, environ, threads: int) -> tuple[int | None, bool | None]:
    """(cores, may it use a GPU) as a sweep job's launcher (hydra.launcher) gave them, where torch's own view is
    wider; None: torch's. torch's thread count (`threads`) already follows OMP_NUM_THREADS (joblib's workers get
    cores // n_jobs) and the CPU affinity (SLURM binds a task's cpus_per_task); but Ray only reserves a task's
    num_cpus and num_gpus, and submitit_local starts every job at once on the whole machine, so its cpus_per_task is
    read here (1 when unset, as on SLURM)."""
    target = str(OmegaConf.select(launcher, "_target_"))
    if target.endswith(".RayLauncher"):
        import ray
        import torch

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU") or 1
        return min(threads, max(1, int(cpus))), bool(ray.get_gpu_ids()) and torch.cuda.is_available()
    if target.endswith(".LocalLauncher"):
        return min(threads, OmegaConf.select(launcher, "cpus_per_task") or 1), None
    slurm = environ.get("SLURM_CPUS_PER_TASK", "")
    return (min(threads, int(slurm)) if slurm.isdigit() else None), None


def _work(cfg: DictConfig, run_dir: Path, sweep_job: bool) -> dict | None:
    """Accept the run, then do it (or say that its final model exists). A sweep job that fails once accepted is
    recorded in failure.json and the sweep goes on; a single run with no usable result exits 3."""
    key = "hydra.sweep.dir" if sweep_job else "hydra.run.dir"
    lock = None
    try:
        plan, arrays, lock = _accept(cfg, run_dir, key, sweep_job)
        if plan.task == "final" and (run_dir / layout.FINAL_CKPT).is_file():
            if not (run_dir / layout.TEST_METRICS).exists():  # stopped between saving and scoring it
                from digitnet.engine.final import score_saved

                scored = score_saved(plan, arrays, run_dir)
                return scored if sweep_job else track(plan, scored, run_dir)
            return rundir.report_existing_final(run_dir)
        rundir.write_hydra_files(run_dir, cfg, HydraConfig.instance().cfg)
        reporter = None
        if sweep_job and plan.task == "cv":  # a search's trial (its sweeper says which): pruned fold by fold
            from digitnet.search.study import job_reporter

            reporter = job_reporter(HydraConfig.get(), plan.n_folds)
        summary = execute(plan, arrays, run_dir, tracked=not sweep_job, after_fold=reporter and reporter.after_fold)
        from digitnet.report.results import usable  # torch: imported once the run has been accepted

        if plan.task == "cv" and not usable(summary) and not sweep_job:
            raise NoResult(
                f"no usable result: {summary['n_diverged']} fold(s) diverged, {summary['n_at_chance']} at "
                f"chance (chance is 10%); the report is in {run_dir}; try a lower optimizer.lr"
            )
        return summary
    except Exception as exc:
        if not (sweep_job and lock is not None):
            raise
        say_error(PROG, UserError(f"sweep job {HydraConfig.get().job.num} failed: {describe(exc)}"))
        layout.write_failure(run_dir, describe(exc), type(exc).__name__)
        return {"status": f"failed: {describe(exc)}", "mean": None}
    finally:
        if lock is None:
            rundir.remove_if_new_and_empty(run_dir)
        else:
            lock.release()


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def main(cfg: DictConfig) -> dict:
    """Returns the job's outcome, {"status", "mean"} (a final fit's mean: its holdout accuracy): what a search's
    sweeper tells Optuna."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    interrupt = interrupts.interrupt
    restore_handlers = interrupt.install(run_dir)
    try:
        with reported(PROG), interrupt.consequences():
            summary = _work(cfg, run_dir, HydraConfig.get().mode == RunMode.MULTIRUN) or {}
            return {"status": summary.get("status", "ok"), "mean": summary.get("mean", summary.get("accuracy"))}
    except KeyboardInterrupt:
        if not interrupt.signals:  # not from a signal (a library raised it): taken as Ctrl-C
            interrupt.note(signal.SIGINT)
        interrupt.say()
        raise SystemExit(interrupt.code()) from None
    finally:
        restore_handlers()


def _check_plugins_installed(argv: list[str]) -> None:
    """`hydra/launcher=joblib` without digitnet's extra: Hydra says only that the option is unknown; a search without
    Optuna would fail after composing."""
    for arg in argv:
        key, _, name = arg.partition("=")
        needs = None
        if key.lstrip("+") == "hydra/launcher" and name in LAUNCHERS:
            package, extra = LAUNCHERS[name]
            needs = extra if importlib.util.find_spec(f"hydra_plugins.{package}") is None else None
        elif key.lstrip("+") in ("hparams_search", "hydra/sweeper") and name not in ("null", "basic"):
            needs = "optuna" if importlib.util.find_spec("optuna") is None else None
        if needs:
            print(f'{PROG}: error: {arg} needs its plugin: pip install "digitnet[{needs}]"', file=sys.stderr)
            raise SystemExit(1)


def _config_folders(argv: list[str]) -> list[Path]:
    """The folders configs come from: the packaged ones, and those of --config-dir and hydra.searchpath."""
    import re

    folders = [Path(str(importlib.resources.files("digitnet.conf"))) if INSTALLED else CHECKOUT_CONF]
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in ("--config-dir", "-cd"):
            folders.append(Path(value if eq else argv[i + 1] if i + 1 < len(argv) else "."))
        if flag.lstrip("+") == "hydra.searchpath":
            folders += [Path(p) for p in re.findall(r"file://([^'\",\]]+)", arg)]
    return folders


def cli() -> None:
    """Console script `digitnet-train`. Hydra raises its errors instead of printing them with a traceback
    (HYDRA_FULL_ERROR), and `reported` prints them as Hydra's compact report would: a few lines, exit 1. What
    escapes main() comes from composing the config (main reports its own errors), so a config file is named."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    interrupts.catch_early()
    startup.start_process()
    argv = sys.argv[1:]
    _check_plugins_installed(argv)
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        with reported(PROG):
            try:
                main()
            except (HydraException, OmegaConfBaseException, UserError):
                raise
            except Exception as exc:  # noqa: BLE001 - Hydra's file reading: YAML, Unicode, value errors
                if SHOW_TRACEBACKS:
                    raise
                said = describe(exc) if isinstance(exc, OSError) else str(exc) or type(exc).__name__
                raise UserError(config_file_problem(_config_folders(argv), argv) or said) from None
    finally:  # a local Ray instance that the sweep started ends with it (its processes outlived it, some as zombies)
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            interrupts.collect_descendants(sys.modules["ray"].shutdown)


if __name__ == "__main__":
    cli()
