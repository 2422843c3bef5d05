"""Run directories you can trust: one writer at a time, and a refused run changes nothing in them.

Hydra itself writes nothing into a job's dir (conf/config.yaml: hydra.output_subdir=null). A run first checks that
the dir is free and holds nothing of another config, then takes the dir's lock, and only then writes: `.hydra/`
(what Hydra would have written), `plan.json`, folds, reports.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from digitnet import layout
from digitnet.config.plan import RunPlan, differences
from digitnet.engine.folds import FoldStore
from digitnet.errors import UserError, shown
from digitnet.layout import FINAL_CKPT, enclosing_run, run_file_in

PROCESS_START = time.time()


def check_not_in_a_sweep(run_dir: Path) -> None:
    """A single run (not a sweep's job) may resume one of a sweep's jobs, but not write into the sweep dir itself
    nor add a job dir of its own, which the sweep's table would then list as one of its jobs."""
    if (run_dir / layout.MULTIRUN).is_file():
        raise UserError(
            f"{run_dir} is a sweep dir; resume one of its jobs with hydra.run.dir={run_dir}/N, or choose "
            "a new hydra.run.dir"
        )
    if (run_dir.parent / layout.MULTIRUN).is_file() and not layout.overrides_file(run_dir).is_file():
        raise UserError(
            f"{run_dir} would be a new job dir inside the sweep {run_dir.parent}; choose a folder outside "
            "it (its jobs are resumed by rerunning the sweep's command, or with hydra.run.dir=SWEEP/N)"
        )


def check_place(run_dir: Path, key: str = "hydra.run.dir") -> None:
    """Before anything is read or written: not inside another run's dir, not above one (that run could no longer be
    resumed), its fold files plain files, and writable (tried for real: root passes access() on a read-only mount)."""
    if (outer := enclosing_run(run_dir)) is not None:
        raise UserError(f"{shown(run_dir)} is inside the run dir {shown(outer)}; choose a folder outside it")
    if not run_dir.is_dir():
        return  # Hydra makes it just before the run
    below = [
        p
        for child in run_dir.iterdir()
        if child.is_dir() and child.name not in (layout.FOLDS, *layout.LOG_DIRS, layout.HYDRA)
        for p in (child, *(c for c in child.iterdir() if c.is_dir()))
        if run_file_in(p, sweeps=False)
    ]
    if below:
        raise UserError(f"{shown(run_dir)} holds the run dir {shown(below[0])}; choose a folder of its own")
    own = [run_dir / name for name in layout.OWN_FILES]
    odd = [p for p in [*(run_dir / layout.FOLDS).glob("fold_*"), *own] if os.path.lexists(p) and not p.is_file()]
    if odd:
        raise UserError(
            f"{shown(odd[0])} is not a plain file, where digitnet keeps its own; remove it (or choose a new {key})",
            path=odd[0],
        )
    for folder in (run_dir, run_dir / layout.FOLDS):
        if folder.is_dir():
            layout.check_writable_folder(folder, folder)


def check_compatible(run_dir: Path, plan: RunPlan, key: str = "hydra.run.dir") -> None:
    """A run dir holds one config's results: refuse a plan that would mix in another (task or fingerprint)."""
    if plan.task == "cv":  # every saved fold readable and of this config (also those of an older digitnet)
        store = FoldStore.for_plan(run_dir, plan)
        for fold in range(plan.n_folds):
            store.load(fold)
    saved = layout.read_plan(run_dir, key)
    if saved is None:
        if plan.task == "final" and (run_dir / FINAL_CKPT).exists():  # it would be scored under this config
            raise UserError(
                f"{run_dir} holds final.ckpt but no plan.json, so the config that trained it is unknown; "
                f"restore plan.json, or delete final.ckpt to fit again, or choose a new {key}"
            )
        return
    # A run that failed or was stopped before it finished anything left only its plan and logs: say so, since the
    # usual fix (rerun with the same settings) would fail again.
    folds = run_dir / layout.FOLDS
    finished = (run_dir / FINAL_CKPT).exists() if saved.task == "final" else any(folds.glob("fold_*"))
    nothing = "" if finished else f" that finished nothing; delete that dir to reuse it, or choose a new {key}"
    if saved.task != plan.task:
        raise UserError(
            f"{run_dir} holds a task={saved.task} run" + (nothing or f"; choose a new {key} for task={plan.task}")
        )
    if saved.fingerprint() != plan.fingerprint():
        changed = "; ".join(differences(saved.fingerprint_fields(), plan.fingerprint_fields())[:3])
        raise UserError(
            f"{run_dir} holds a run of another config ({changed})"
            + (nothing or f"; rerun with the same settings to resume it, or choose a new {key}")
        )
    stores = [p.loggers.get("mlflow", {}).get("tracking_uri") for p in (saved, plan)]
    if None not in stores and stores[0] != stores[1]:  # one run dir, one store: its MLflow run is replaced in place
        raise UserError(
            f"{run_dir} records into the MLflow store {stores[0]} (its plan.json), this command into {stores[1]}; "
            f"set logger.mlflow.tracking_uri={stores[0]} to resume it, or choose a new {key}",
            key="logger.mlflow.tracking_uri",
            value=stores[1],
        )


class RunDirLock:
    """An exclusive lock on the run dir (flock on a file in it), held until the process ends or release()."""

    def __init__(self, run_dir: Path, key: str = "hydra.run.dir"):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / layout.LOCK
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            raise UserError(
                f"{run_dir} is in use by another digitnet run ({holder}); wait for it to end, or choose another {key}"
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"PID {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None


def report_existing_final(run_dir: Path) -> None:
    """task=final into a dir that already holds its model (same config): say so, never fit over it."""
    from digitnet.core.checkpoints import load_checkpoint
    from digitnet.logs import say

    ckpt = run_dir / FINAL_CKPT
    try:
        load_checkpoint(ckpt)
    except UserError as exc:
        raise UserError(f"{exc}; delete it to fit the final model again") from None
    try:
        score = f", holdout {100 * json.loads((run_dir / layout.TEST_METRICS).read_text())['accuracy']:.3f}%"
    except (OSError, ValueError, KeyError, TypeError):  # not scored yet, or unreadable: the model is what counts
        score = ""
    say(
        f"The final model of this config exists: {ckpt}{score}. Re-score it with `digitnet-evaluate {ckpt}`, or "
        "choose a new hydra.run.dir to fit another."
    )


def write_hydra_files(run_dir: Path, task_cfg, hydra_cfg) -> None:
    """The files Hydra writes into .hydra/, written once the run is accepted. A resumed run keeps the
    overrides.yaml it started with: a sweep's table labels its jobs by them, and a job resumed with a plain command
    (its plan checked equal) spells the same run in other words."""
    from omegaconf import OmegaConf

    (run_dir / layout.HYDRA).mkdir(parents=True, exist_ok=True)
    OmegaConf.save(task_cfg, layout.hydra_file(run_dir, "config"))
    OmegaConf.save(hydra_cfg, layout.hydra_file(run_dir, "hydra"))
    if layout.read_overrides(run_dir) is None:  # missing or damaged: anew
        OmegaConf.save(hydra_cfg.hydra.overrides.task, layout.overrides_file(run_dir))


def remove_if_new_and_empty(run_dir: Path) -> None:
    """A refused run leaves no trace: drop the dir Hydra made for it (empty, and made after this process started),
    and the empty dirs above it up to the working dir (outputs/<date>/ of the default run dir)."""
    path, cwd = run_dir.resolve(), Path.cwd().resolve()
    stop = cwd if cwd in path.parents else path.parent
    try:
        if path.stat().st_mtime < PROCESS_START - 1:
            return  # the user's own empty dir
    except OSError:
        return
    while path != stop:
        try:
            path.rmdir()  # only ever an empty dir
        except OSError:
            return
        path = path.parent
