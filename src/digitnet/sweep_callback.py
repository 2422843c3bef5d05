"""Hydra's multirun, made safe to start and to rerun: before the first job, the sweep dir must hold this sweep (or
nothing), the launcher's options must be ones it takes, and every job's config must make a plan; at the end, the
sweep summary. A job that fails at run time is recorded as failed (train.py) and the sweep goes on."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
from dataclasses import fields, is_dataclass
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from digitnet import layout, startup
from digitnet.config.schema import config_file_problem
from digitnet.errors import NO_RESULT, UserError, describe, first_line, named, shown
from digitnet.layout import enclosing_run, run_file_in

PROG = "digitnet.train"


def expand(overrides: list[str], config_loader) -> list[list[str]] | None:
    """The jobs of a grid sweep, as Hydra's basic sweeper makes them (each sweep override's values, in a cartesian
    product, in the order given); None where it is no grid (interval(): a sweeper plugin's, or refused by Hydra)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices = []
    for override in OverridesParser.create(config_loader=config_loader).parse_overrides(overrides):
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices.append([f"{key}={override.get_value_element_as_str()}"])
        elif not override.is_discrete_sweep():
            return None
        else:
            try:
                values = list(override.sweep_string_iterator())
            except ValueError as exc:  # range(1,3,0)
                raise UserError(f"{override.input_line}: {exc}", key=key) from None
            if not values:
                raise UserError(f"{override.input_line} gives no value to sweep", key=key)
            choices.append([f"{key}={value}" for value in values])
    return [list(job) for job in itertools.product(*choices)]


def _refuse(message: str, code: int = 1) -> None:
    """Hydra turns a callback's exceptions into warnings and goes on; SystemExit is what stops the sweep."""
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def _mlflow(config: DictConfig) -> dict | None:
    """logger.mlflow's options where it is selected, its store settled as each job's plan settles it."""
    from digitnet.config.plan import settled_store

    mlflow = OmegaConf.select(config, "logger.mlflow")
    if mlflow is None or not mlflow.enabled:
        return None
    options = OmegaConf.to_container(mlflow, resolve=True)
    return {**options, "tracking_uri": settled_store(options["tracking_uri"])}


def _check_ray(ray: dict) -> None:
    """The sweep's process keeps its own Ctrl-C and SIGTERM. A job that asks a local Ray instance for more CPUs or
    GPUs than it has waits for them for ever: refused (a cluster's, ray.init.address, are its own to say)."""
    # Ray's driver would take SIGTERM from this process's handler (and dump a stack instead of ending the sweep).
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    init, remote = ray.get("init") or {}, ray.get("remote") or {}
    if init.get("address"):
        return
    import torch

    have = {"num_cpus": init.get("num_cpus") or os.cpu_count(), "num_gpus": init.get("num_gpus") or 0}
    if not init.get("num_gpus") and torch.cuda.is_available():
        have["num_gpus"] = torch.cuda.device_count()
    for key, count in have.items():
        wanted = remote.get(key)
        if isinstance(wanted, (int, float)) and wanted > count:
            raise UserError(
                f"hydra.launcher.ray.remote.{key}={wanted}: each job would wait for ever, as this machine's local Ray "
                f"instance has {count}; ask for {count} or fewer (or give hydra.launcher.ray.init.address of a "
                "cluster)",
                key=f"hydra.launcher.ray.remote.{key}",
                value=wanted,
            )


def _start_ray(init: dict) -> None:
    """Ray's instance started here, as the Ray launcher would (it uses one already started), so that this process
    takes Ctrl-C and SIGTERM back from ray.init, which sets its own: an interrupt then ends every process of the
    sweep (engine/interrupts.py), and train's cli shuts the instance down at the end."""
    import ray

    from digitnet.engine import interrupts

    if not ray.is_initialized():
        try:
            ray.init(**init)
        except Exception as exc:  # noqa: BLE001 - Ray's errors of every kind: the sweep cannot run
            _refuse(f"hydra.launcher.ray.init: Ray did not start ({named(exc)}); nothing was run")
    interrupts.catch_early()


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            self._check_sweep_dir(config, sweep_dir)
            self._check_launcher(config.hydra.launcher)
            jobs = self._check_jobs(config, sweep_dir)
        except UserError as exc:
            _refuse(f"{exc}; nothing was run")
        except Exception as exc:  # noqa: BLE001 - a check that breaks must not let the sweep run unchecked
            _refuse(f"the sweep's jobs could not be checked ({describe(exc)}); nothing was run")
        # The job plans imported torch. Jobs that a launcher runs elsewhere leave this process waiting for the whole
        # sweep: it collects its garbage again from now, not from a job start that never comes here.
        startup.imports_done()
        if jobs is not None and OmegaConf.to_container(config.hydra.sweep)["subdir"] == "${hydra.job.num}":
            # what the summary lists, jobs that never start included
            layout.write_jobs(sweep_dir, {str(n): overrides for n, overrides in enumerate(jobs)})
        mlflow = _mlflow(config)
        if mlflow is not None:  # the parent run, made before any job writes to the store
            from digitnet.report.tracking import start_sweep

            try:
                start_sweep(mlflow, sweep_dir, list(config.hydra.overrides.task))
            except UserError as exc:
                _refuse(f"{exc}; nothing was run")
        if str(OmegaConf.select(config, "hydra.launcher._target_")).endswith(".RayLauncher"):
            _start_ray(OmegaConf.to_container(config.hydra.launcher.ray.init, resolve=True))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from digitnet.report.sweep_table import summarize

        try:
            summary = summarize(config.hydra.sweep.dir)
            jobs = summary["jobs"]
        except Exception as exc:  # noqa: BLE001 - Hydra would make it a warning and exit 0
            _refuse(
                f"the sweep's summary could not be written ({describe(exc)}); the jobs' results are kept in their "
                "dirs: python -m digitnet.summarize SWEEP_DIR writes it"
            )
        mlflow = _mlflow(config)
        if mlflow is not None:
            from digitnet.report.tracking import end_sweep

            try:
                problems = end_sweep(mlflow, Path(config.hydra.sweep.dir), summary["best"])
            except Exception as exc:  # noqa: BLE001 - the jobs' results and the summary are written already
                problems = [describe(exc)]
            for problem in problems:  # what the runs on disk still hold; rerunning the sweep records them again
                print(f"note: MLflow could not record {problem}", file=sys.stderr)
        failed = [j["job"] for j in jobs if j["status"].startswith("failed")]
        good = [j for j in jobs if j["mean"] is not None and j["n_at_chance"] < j["n"]]
        if failed or not good:
            _refuse(
                f"jobs {', '.join(failed)} failed (see the summary)"
                if failed
                else "no job gave a usable result (diverged or at chance: see the summary)",
                NO_RESULT,
            )

    @staticmethod
    def _check_sweep_dir(config: DictConfig, sweep_dir: Path) -> None:
        """A sweep dir holds one sweep: the same overrides and subdir as the multirun.yaml there, and no run of
        another kind; a rerun of the same command resumes it."""
        from digitnet.report.sweep_table import check_summary_writable

        check_summary_writable(sweep_dir)
        if run_file_in(sweep_dir, sweeps=False):
            raise UserError(f"{shown(sweep_dir)} is the run dir of a single run; choose a new hydra.sweep.dir")
        if enclosing_run(sweep_dir):
            raise UserError(
                f"{shown(sweep_dir)} is inside the run dir {shown(enclosing_run(sweep_dir))}; choose a "
                "hydra.sweep.dir outside it"
            )
        saved = sweep_dir / layout.MULTIRUN
        if not saved.is_file():
            return
        try:
            before = OmegaConf.load(saved).hydra
            ran = ([str(o) for o in before.overrides.task], OmegaConf.to_container(before.sweep)["subdir"])
        except Exception as exc:  # noqa: BLE001 - any damage: Hydra would overwrite it with this command's sweep
            raise UserError(
                f"{shown(saved)} is damaged ({first_line(describe(exc), 80)}); delete it (the job "
                "dirs still say which sweep this is) or choose a new hydra.sweep.dir"
            ) from None
        now = (list(config.hydra.overrides.task), OmegaConf.to_container(config.hydra.sweep)["subdir"])
        if ran != now:
            raise UserError(
                f"{shown(sweep_dir)} holds the sweep `{' '.join(ran[0])}` (subdir {ran[1]}), not "
                f"`{' '.join(now[0])}` (subdir {now[1]}); rerun it with the same overrides to resume it, "
                "or choose a new hydra.sweep.dir",
                path=sweep_dir,
            )

    @staticmethod
    def _check_launcher(launcher: DictConfig) -> None:
        """Options Hydra adds with `+` that the launcher's schema lacks; SLURM without SLURM; and joblib's options,
        checked by joblib.Parallel itself, before any job rather than after multirun.yaml is written."""
        schema = OmegaConf.get_type(launcher)
        options = OmegaConf.to_container(launcher, resolve=True)
        if is_dataclass(schema):
            known = {f.name for f in fields(schema)}
            for key in options:
                if key not in known:
                    raise UserError(
                        f"hydra.launcher.{key} is not an option of {schema.__name__} (those are "
                        f"{', '.join(sorted(known - {'_target_'}))})",
                        key=f"hydra.launcher.{key}",
                    )
        target = str(options.pop("_target_", ""))
        if target.endswith(".SlurmLauncher") and shutil.which("sbatch") is None:
            raise UserError(
                "hydra/launcher=submitit_slurm needs SLURM, and this machine has no sbatch; run the sweep "
                "on the cluster's login node, or use hydra/launcher=submitit_local here"
            )
        if target.endswith(".RayLauncher"):
            _check_ray(options.get("ray") or {})
        if target.endswith("JoblibLauncher"):
            import joblib

            if options.get("backend") not in (None, "loky"):  # the launcher always runs loky, whatever is set
                raise UserError(
                    "hydra.launcher.backend: Hydra's joblib launcher always runs loky; leave it out",
                    key="hydra.launcher.backend",
                )
            if options.get("timeout") is not None:  # reached, it ends the whole sweep with joblib's TimeoutError
                raise UserError(
                    "hydra.launcher.timeout would stop the whole sweep at the first job past it; leave it "
                    "null, and make jobs shorter with trainer.max_epochs or data.limit",
                    key="hydra.launcher.timeout",
                )
            if options.get("n_jobs") == 0:  # joblib says so only once the jobs are dispatched
                raise UserError(
                    "hydra.launcher.n_jobs=0 runs no job; give 1, 2, ... or -1 (one per core)",
                    key="hydra.launcher.n_jobs",
                )
            try:
                joblib.Parallel(**{**options, "backend": "loky"})
            except (TypeError, ValueError) as exc:
                raise UserError(f"hydra.launcher: {exc}", key="hydra.launcher") from None

    @staticmethod
    def _check_jobs(config: DictConfig, sweep_dir: Path) -> list[list[str]] | None:
        """Every job's plan made before the first trains (a bad value in job 5 is not found after 4 jobs); two jobs
        that are the same run refused; a job dir of an earlier run must hold the same job."""
        from hydra import compose
        from hydra.core.global_hydra import GlobalHydra

        from digitnet.config.plan import make_plan

        subdir = str(OmegaConf.to_container(config.hydra.sweep)["subdir"] or "")
        if not any(name in subdir for name in ("${hydra.job.num}", "${hydra.job.id}", "${hydra.job.override_dirname}")):
            raise UserError(
                f"hydra.sweep.subdir={subdir} would put the jobs in one folder; include ${{hydra.job.num}}",
                key="hydra.sweep.subdir",
            )
        if not config.hydra.sweeper.get("_target_", "").endswith(".BasicSweeper"):
            return None  # a sweeper plugin makes its own jobs: each is checked as it starts
        jobs = expand(list(config.hydra.overrides.task), GlobalHydra.instance().config_loader())
        if jobs is None:
            return None
        for number, overrides in enumerate(jobs):  # first what needs no plan: it answers before torch is imported
            saved = layout.overrides_file(sweep_dir / str(number))
            if subdir == "${hydra.job.num}" and saved.is_file():
                before = layout.job_overrides(saved.parent.parent)
                if before != [o for o in overrides if not o.startswith("hydra.")]:
                    raise UserError(
                        f"{shown(saved.parent.parent)} holds the job `{' '.join(before)}`, not "
                        f"`{' '.join(overrides)}`; rerun the sweep's own command, or choose a new "
                        "hydra.sweep.dir",
                        path=saved,
                    )
        plans: dict[str, int] = {}
        for number, overrides in enumerate(jobs):
            try:
                plan = make_plan(compose(config_name="config", overrides=overrides))
            except Exception as exc:  # noqa: BLE001 - the plan's refusal, or Hydra's: this job cannot run
                folders = [Path(s.path) for s in config.hydra.runtime.config_sources if s.schema == "file"]
                problem = None if isinstance(exc, UserError) else config_file_problem(folders, overrides)
                raise UserError(f"sweep job {number} ({' '.join(overrides)}): {problem or describe(exc)}") from None
            same = plans.setdefault(json.dumps(plan.as_dict(), sort_keys=True), number)
            if same != number:  # -m seed=1,1 or optimizer.lr=0.01,1e-2
                raise UserError(
                    f"sweep jobs {same} ({' '.join(jobs[same])}) and {number} ({' '.join(overrides)}) are "
                    "the same run; give each value once"
                )
        return jobs
