"""Three ways to train a run's pending folds, one interface: run(plan, arrays, folds, store, finish).

Each runner trains `folds`, saves each fold through `store` as it ends and hands its result to `finish` (which
reports it). The plan picked the runner (plan.runner); the fold loop (cv.py) does not know which one ran.
- sequential: one fold after another, in this process, with all the cores.
- packed: all folds at once as one packed net (parallel.py); exact, see plan.PACKABLE_OPTIMIZERS.
- processes: a fold per worker process, the cores shared between them (workers.py).
"""

from __future__ import annotations

from typing import Callable

from digitnet.data import MNISTArrays
from digitnet.errors import UserError
from digitnet.folds import FoldStore
from digitnet.plan import RunPlan
from digitnet.training import fold_hparams, fold_result, make_datamodule, make_trainer, tb_logger, train_fold

Finish = Callable[[dict], None]


def run_sequential(plan: RunPlan, arrays: MNISTArrays, folds: list[int], store: FoldStore, finish: Finish) -> None:
    for fold in folds:
        result, weights = train_fold(plan, arrays, fold, store.run_dir)
        store.save(result, weights)
        finish(result)


def run_packed(plan: RunPlan, arrays: MNISTArrays, folds: list[int], store: FoldStore, finish: Finish) -> None:
    if len(folds) < 2:
        return run_sequential(plan, arrays, folds, store, finish)
    from digitnet.nets import ScaledNet, checkpoint_dict
    from digitnet.parallel import train_folds, unpack

    dms = {k: make_datamodule(plan, arrays, k) for k in folds}
    label = f"folds {', '.join(map(str, folds))} of {plan.n_folds} at once"
    trainer = make_trainer(plan, False, [], label)
    model, seconds = train_folds(trainer, plan, dms, lambda k: tb_logger(store.run_dir, f"fold_{k}"))
    for i, (k, logger) in enumerate(zip(folds, model.fold_loggers)):
        dm = dms[k]
        net = ScaledNet(plan.model, dm.pixel_mean, dm.pixel_std)
        net.net = unpack(model.net, plan.model, i).to(model.device)
        status = "diverged" if i in model.diverged else "ok"
        # A fold's "seconds" is its share of the joint run, so that the folds' seconds add up to the wall time.
        result = fold_result(k, status, model.diverged.get(i), seconds / len(folds), dm, model.histories[i], net,
                             logger.experiment, plan.eval_batch_size, plan.tta) | {"parallel_seconds": round(seconds, 3)}
        logger.finalize("success")
        store.save(result, checkpoint_dict(net.net, fold_hparams(plan, dm, k)) if status == "ok" else None)
        finish(result)


def run_processes(plan: RunPlan, arrays: MNISTArrays, folds: list[int], store: FoldStore, finish: Finish) -> None:
    """Folds in plan.processes spawned processes. Each worker saves its fold as it ends (so Ctrl-C here loses only
    the folds in progress); `finish` then reports it."""
    import multiprocessing
    import os
    import signal

    from digitnet import workers

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked OpenMP or CUDA state
    unfinished = context.Value("i", len(folds))
    processes = min(plan.processes, len(folds))
    # Leaving the block, also by Ctrl-C or an error, terminates the workers: no fold goes on training unseen.
    # Ctrl-C at a terminal reaches the whole process group, and a worker still importing would print a traceback:
    # the workers start with SIGINT blocked (the mask survives exec), ignore it in workers.start, then unblock it.
    # Here the block lasts only while the pool starts its processes; a Ctrl-C meanwhile is delivered after it.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        with context.Pool(processes, initializer=workers.start,
                          initargs=(plan, unfinished, os.getpid())) as pool:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            for result in pool.imap_unordered(workers.train_fold, [(plan, store, fold) for fold in folds]):
                if "error" in result:
                    raise UserError(f"fold {result['fold']} failed in its worker process ({result['error']}); the "
                                    "folds that finished are kept")
                finish(result)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # also when the pool could not start
        store.remove_partial_files()  # a worker terminated while saving leaves its temp file


RUNNERS = {"sequential": run_sequential, "packed": run_packed, "processes": run_processes}  # plan.RUNNERS
