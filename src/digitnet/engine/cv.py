"""The k-fold loop: resume what a run dir holds, train the rest with the plan's runner, write the report.

The runners: three ways to train a run's pending folds, one interface, run(plan, arrays, folds, store, finish). Each
trains `folds`, saves each fold through `store` as it ends and hands its result to `finish` (which reports it); the
plan chose one (plan.runner), and RUNNERS below is the one place that maps the choice to the code.
- sequential: one fold after another, in this process, with all the cores.
- packed: all folds at once as one packed net (packed.py); exact for plan.PACKABLE_OPTIMIZERS.
- processes: a fold per worker process, the cores shared between them (workers.py).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from pathlib import Path

from digitnet import layout
from digitnet.config.plan import RunPlan
from digitnet.core.data import MNISTArrays
from digitnet.engine.fit import (
    fit_loggers,
    fold_hparams,
    fold_result,
    make_datamodule,
    make_trainer,
    say_profile,
    tb_writer,
    train_fold,
)
from digitnet.engine.folds import FoldStore
from digitnet.errors import UserError
from digitnet.logs import say
from digitnet.report.results import cv_summary, write_cv_report


class Pruned(Exception):
    """Raised by an after-fold hook (a search trial's pruner) to stop the fold loop."""

    def __init__(self, fold: int, value: float):
        super().__init__(f"pruned after fold {fold}")
        self.fold, self.value = fold, value


def run_cv(plan: RunPlan, arrays: MNISTArrays, run_dir: Path, after_fold=None) -> dict:
    """Train and score every fold (skipping folds a previous run in this dir finished); write the report.
    `after_fold(result)`: called as each fold ends; raising Pruned stops the run, without a report."""
    start = time.perf_counter()
    store = FoldStore.for_plan(run_dir, plan)
    results: dict[int, dict] = {}

    def finish(result: dict, resumed: bool = False) -> None:
        line = f"> {100 * result['score']:.3f}" if result["status"] == "ok" else f"> {result['status']}"
        # Folds can end in any order (fold workers), so each line names its fold, numbered as folds/fold_K.json.
        line += f"  (fold {result['fold']}{', finished earlier' if resumed else ''}"
        line += f"; tta={result['tta']}, {100 * result['score_without_tta']:.3f} without)" if "tta" in result else ")"
        say(line + ("  at chance: learned nothing" if result.get("at_chance") else ""))
        results[result["fold"]] = result
        if after_fold is not None:
            after_fold(result)

    try:
        for fold in range(plan.n_folds):
            saved = store.load(fold)
            if saved is not None:
                finish(saved, resumed=True)
        resumed = len(results)
        pending = [fold for fold in range(plan.n_folds) if fold not in results]
        for fold in pending:
            store.start_afresh(fold)
        if pending:
            RUNNERS[plan.runner](plan, arrays, pending, store, finish)
    except Pruned as pruned:  # the folds that ended are kept; the summary marks the run as pruned
        layout.write_json_atomic(
            run_dir / layout.PRUNED, {"fold": pruned.fold, "value": pruned.value, "folds": sorted(results)}
        )
        say(f"pruned after fold {pruned.fold}: mean so far {100 * pruned.value:.3f}, below the pruner's bar")
        return {"status": str(pruned), "mean": None}

    ordered = [results[fold] for fold in range(plan.n_folds)]
    summary = cv_summary(plan, ordered, wall_seconds=time.perf_counter() - start, resumed_folds=resumed)
    write_cv_report(run_dir, summary, arrays.train_x[:9], arrays.train_y[:9])
    if summary["mean"] is not None:
        chance = f" ({summary['n_at_chance']} at chance)" if summary["n_at_chance"] else ""
        tta = f" (tta={plan.tta}; {100 * summary['mean_without_tta']:.3f} without)" if plan.tta != "none" else ""
        say(f"Accuracy: mean={100 * summary['mean']:.3f} std={100 * summary['std']:.3f}, n={summary['n']}{chance}{tta}")
    else:
        say(f"Accuracy: none, {summary['status']} ({summary['n_diverged']} of {len(ordered)} folds diverged)")
    return summary


Finish = Callable[[dict], None]


def run_sequential(plan: RunPlan, arrays: MNISTArrays, folds: list[int], store: FoldStore, finish: Finish) -> None:
    for fold in folds:
        result, weights = train_fold(plan, arrays, fold, store.run_dir)
        store.save(result, weights)
        finish(result)


def run_packed(plan: RunPlan, arrays: MNISTArrays, folds: list[int], store: FoldStore, finish: Finish) -> None:
    if len(folds) < 2:
        return run_sequential(plan, arrays, folds, store, finish)
    from digitnet.core.checkpoints import checkpoint_dict
    from digitnet.core.nets import ScaledNet
    from digitnet.engine.packed import train_folds, unpack

    dms = {k: make_datamodule(plan, arrays, k) for k in folds}
    profile = store.run_dir / layout.PROFILER / layout.FOLDS
    trainer = make_trainer(plan, False, [], f"folds {', '.join(map(str, folds))} of {plan.n_folds} at once", profile)
    model, seconds = train_folds(trainer, plan, dms, lambda k: fit_loggers(plan, store.run_dir, f"fold_{k}"))
    if "profiler" in plan.trainer:
        say_profile(profile)
    for i, (k, loggers) in enumerate(zip(folds, model.fold_loggers)):
        dm = dms[k]
        net = ScaledNet(plan.model, dm.pixel_mean, dm.pixel_std)
        net.net = unpack(model.net, plan.model, i).to(model.device)
        status = "diverged" if i in model.diverged else "ok"
        # A fold's "seconds" is its share of the joint run, so that the folds' seconds add up to the wall time.
        reason, writer = model.diverged.get(i), tb_writer(loggers)
        result = fold_result(k, status, reason, seconds / len(folds), dm, model.histories[i], net, writer, plan)
        result["parallel_seconds"] = round(seconds, 3)
        for logger in loggers:
            logger.finalize("success")
        store.save(result, checkpoint_dict(net.net, fold_hparams(plan, dm, k)) if status == "ok" else None)
        finish(result)


def run_processes(plan: RunPlan, arrays: MNISTArrays, folds: list[int], store: FoldStore, finish: Finish) -> None:
    """Folds in plan.processes spawned processes. Each worker saves its fold as it ends (so Ctrl-C here loses only
    the folds in progress); `finish` then reports it. Leaving, also by Ctrl-C, SIGTERM or an error, kills the workers
    (SIGKILL: no fold goes on training unseen, whatever a library in the worker does with SIGTERM)."""
    import multiprocessing
    import os
    import signal

    from digitnet.engine import workers

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked OpenMP or CUDA state
    tasks, results, unfinished = context.Queue(), context.Queue(), context.Value("i", len(folds))
    for fold in folds:
        tasks.put(fold)
    processes = [
        context.Process(target=workers.serve, args=(plan, store, tasks, results, unfinished, os.getpid()), daemon=True)
        for _ in range(min(plan.processes, len(folds)))
    ]
    # Ctrl-C at a terminal reaches the whole process group, and a worker still importing would print a traceback:
    # the workers start with SIGINT blocked (the mask survives exec) and ignore it before unblocking it.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        for process in processes:
            process.start()
            tasks.put(None)  # one stop sign a worker
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        for _ in folds:
            result = _next_result(results, processes)
            if "error" in result:
                raise UserError(
                    f"fold {result['fold']} failed in its worker process ({result['error']}); the folds "
                    "that finished are kept"
                )
            finish(result)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # also when a process could not start
        for process in processes:
            if process.pid is not None:
                process.kill()
                process.join()
        store.remove_partial_files()  # a worker killed while saving leaves its temp file


def _next_result(results, processes) -> dict:
    """The next fold a worker finished. Once every worker has ended and no fold is left to read, one of them died
    with its fold (the kernel's OOM killer, say): an error, not a wait."""
    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            if all(p.exitcode is not None for p in processes):
                codes = sorted({p.exitcode for p in processes})
                raise UserError(
                    f"a fold worker process ended before its fold did (exit codes {codes}); the folds "
                    "that finished are kept; rerun to resume"
                ) from None


RUNNERS = {"sequential": run_sequential, "packed": run_packed, "processes": run_processes}  # names.Runner
