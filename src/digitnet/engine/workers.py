"""What runs inside a fold worker process (runner=processes): one fold at a time, with a share of the cores.
torch and Lightning are imported in `serve`, once the collector waits (startup.py), not as the worker starts."""

from __future__ import annotations

import os
import signal
import sys

from digitnet import startup
from digitnet.config.plan import RunPlan
from digitnet.engine.folds import FoldStore
from digitnet.errors import named

_state: dict = {}


def share_cores() -> None:
    """cores / (folds that can run now) threads: never more threads than cores (OpenMP threads that spin-wait on a
    shared core slow each other down many times over), and the last fold, once alone, gets all the cores."""
    import torch

    running = min(_state["workers"], _state["unfinished"].value)
    threads = max(1, _state["cores"] // max(1, running))
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)


def die_with_parent() -> None:
    """Workers never outlive the run: Linux kills this process when its parent dies, SIGKILL included
    (prctl PR_SET_PDEATHSIG); elsewhere ShareCores' check of the parent's PID catches it within 50 batches."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != _state["parent"]:  # the parent died before the prctl took effect
        os._exit(1)


def check_in() -> None:
    """Every 50 batches (callbacks.EveryBatches): leave at once if the parent is gone, and re-share the cores
    (reading a shared counter costs microseconds)."""
    if os.getppid() != _state["parent"]:
        os._exit(1)
    share_cores()


def serve(plan: RunPlan, store: FoldStore, tasks, results, unfinished, parent: int) -> None:
    """A worker's life: read MNIST once, then train the folds it takes from `tasks` until a stop sign (None)."""
    # Ctrl-C and SIGTERM are the parent's to handle: it kills the workers, whose folds in progress are then lost
    # anyway. A signal sent to the whole process group reaches them too: they leave without a word.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(128 + signum))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the parent until it was ignored here
    startup.start_process()
    from digitnet.core.data import digest, load_mnist
    from digitnet.errors import describe
    from digitnet.logs import quiet

    _state.update(parent=parent, cores=plan.threads, workers=plan.processes, unfinished=unfinished)
    die_with_parent()
    quiet()
    try:
        arrays = load_mnist(plan.data_root, download=False)
        n = plan.limit or len(arrays.train_y)
        changed = digest(arrays.train_x[:n], arrays.train_y[:n]) != plan.data_digest
        problem = f"the MNIST files in {plan.data_root} changed since the run read them" if changed else None
    except Exception as exc:  # noqa: BLE001 - reported by the parent, for the first fold taken
        problem = describe(exc)
    import digitnet.engine.fit  # noqa: F401 - torch and Lightning, before the collector freezes what they made

    startup.imports_done()
    while (fold := tasks.get()) is not None:
        results.put({"fold": fold, "error": problem} if problem else train_fold(plan, store, arrays, fold))


def train_fold(plan: RunPlan, store: FoldStore, arrays, fold: int) -> dict:
    from digitnet.engine.callbacks import EveryBatches
    from digitnet.engine.fit import train_fold as train

    share_cores()
    try:
        try:
            result, weights = train(plan, arrays, fold, store.run_dir, callbacks=(EveryBatches(check_in, 50),))
        except Exception as exc:  # noqa: BLE001 - sent back as a value: the parent reports it in one line
            return {"fold": fold, "error": named(exc, 300)}
        store.save(result, weights)  # here, not in the parent: a fold that ends as the parent is stopped is kept
        return result
    finally:
        with _state["unfinished"].get_lock():
            _state["unfinished"].value -= 1
