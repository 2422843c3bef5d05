"""What runs inside a fold worker process (runner=processes): one fold at a time, with a share of the cores."""

from __future__ import annotations

import os
import signal
import sys

import lightning.pytorch as pl
import torch

from digitnet.folds import FoldStore
from digitnet.plan import RunPlan

_state: dict = {}


def share_cores() -> None:
    """cores / (folds that can run now) threads: never more threads than cores (OpenMP threads that spin-wait on a
    shared core slow each other down many times over), and the last fold, once alone, gets all the cores."""
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


class ShareCores(pl.Callback):
    """Every `every` batches: re-shares the cores (reading a shared counter costs microseconds), and leaves at once
    if the parent is gone."""

    def __init__(self, every: int = 50):
        self.every = every

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx % self.every == 0:
            if os.getppid() != _state["parent"]:
                os._exit(1)
            share_cores()


def leave_on_sigterm() -> None:
    """The parent ends its pool with SIGTERM (after a Ctrl-C there, or a fold's error), and a worker must then die
    at once, whatever it is doing. Lightning's fit replaces SIGTERM's default with a Python handler that only notes
    the signal until the next batch: a fit that failed before then sent the worker back to the pool's queue, alive,
    and the parent waited for it forever (3 of 13 tries of a hostile test). A Python handler of our own is no cure:
    the kernel may hand the signal to one of torch's or TensorBoard's threads while the main thread sleeps in the
    queue's semaphore, where Python never runs the handler (seen: a finished run hung in Pool.terminate). So the
    default stays, and Lightning's connector installs nothing in a worker (lightning 2.6: register_signal_handlers;
    teardown then restores nothing, since it recorded nothing)."""
    from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _SignalConnector.register_signal_handlers = lambda self: None


def start(plan: RunPlan, unfinished, parent: int) -> None:
    """Pool initializer: each worker reads MNIST once and keeps it for the folds it trains."""
    from digitnet.data import load_mnist
    from digitnet.logs import quiet

    # Ctrl-C is the parent's to handle: it terminates the workers, whose folds in progress are then lost anyway.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the parent until it was ignored here
    leave_on_sigterm()
    _state.update(parent=parent, cores=plan.threads, workers=plan.processes, unfinished=unfinished)
    die_with_parent()
    _state["arrays"] = load_mnist(plan.data_root, download=False)
    quiet()


def train_fold(task: tuple[RunPlan, FoldStore, int]) -> dict:
    from digitnet.training import train_fold as train

    plan, store, fold = task
    share_cores()
    try:
        try:
            result, weights = train(plan, _state["arrays"], fold, store.run_dir, callbacks=(ShareCores(),))
        except KeyboardInterrupt:  # SIGINT is ignored here; leave without a traceback: the parent says what happened
            os._exit(1)
        except Exception as exc:  # noqa: BLE001 - sent back as a value: the parent reports it in one line
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            return {"fold": fold, "error": f"{type(exc).__name__}{': ' + first if first else ''}"}
        store.save(result, weights)  # here, not in the parent: a fold that ends as the parent is stopped is kept
        return result
    finally:
        unfinished = _state["unfinished"]
        with unfinished.get_lock():
            unfinished.value -= 1
