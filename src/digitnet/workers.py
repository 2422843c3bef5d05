"""What runs inside a fold worker process (runner=processes): one fold at a time, with a share of the cores."""

from __future__ import annotations

import os
import signal

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


class ShareCores(pl.Callback):
    """Re-shares the cores every `every` batches (reading a shared counter costs microseconds)."""

    def __init__(self, every: int = 50):
        self.every = every

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx % self.every == 0:
            share_cores()


def start(plan: RunPlan, unfinished) -> None:
    """Pool initializer: each worker reads MNIST once and keeps it for the folds it trains."""
    from digitnet.data import load_mnist
    from digitnet.logs import quiet

    # Ctrl-C is the parent's to handle: it terminates the workers, whose folds in progress are then lost anyway.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _state.update(cores=plan.threads, workers=plan.processes, unfinished=unfinished,
                  arrays=load_mnist(plan.data_root, download=False))
    quiet()


def train_fold(task: tuple[RunPlan, FoldStore, int]) -> dict:
    from digitnet.training import train_fold as train

    plan, store, fold = task
    share_cores()
    try:
        try:
            result = train(plan, _state["arrays"], fold, store.run_dir, callbacks=(ShareCores(),))
        except KeyboardInterrupt:
            # SIGINT is ignored here, so this is the parent terminating the pool (after a Ctrl-C there; Lightning
            # turns the SIGTERM into an interrupted fit). Leave without a traceback: the parent says what happened.
            os._exit(1)
        store.save(result)  # here, not in the parent: a fold that ends as the parent is stopped is kept
        return result
    finally:
        unfinished = _state["unfinished"]
        with unfinished.get_lock():
            unfinished.value -= 1
