"""What runs inside a fold worker process (cv.workers > 1): one fold at a time, with a share of the cores."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning.pytorch as pl
import torch
from omegaconf import OmegaConf

_state: dict = {}


def share_cores() -> None:
    """cores / (folds that can run now) threads: never more threads than cores (OpenMP threads that spin-wait on a
    shared core slow each other down many times over), and the last fold, once alone, gets all the cores."""
    running = min(_state["workers"], _state["unfinished"].value)
    threads = max(1, _state["cores"] // max(1, running))
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)


class ShareCores(pl.Callback):
    """Re-shares the cores every `every` batches (reading a shared counter costs microseconds), and prints a line per
    epoch in place of the progress bar, which several processes on one terminal would garble."""

    def __init__(self, label: str, every: int = 50):
        self.label, self.every = label, every

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx % self.every == 0:
            share_cores()

    def on_train_epoch_end(self, trainer, pl_module):
        m = trainer.callback_metrics
        scores = "  ".join(f"{k} {float(m[k]):.4f}" for k in ("train_loss", "val_loss", "val_acc") if k in m)
        print(f"{self.label}, epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {scores}  "
              f"({torch.get_num_threads()} thread(s))", flush=True)


def start(cores: int, workers: int, unfinished) -> None:
    from digitnet.train import quiet

    # Ctrl-C is the parent's to handle: it terminates the workers, whose folds in progress are then lost anyway.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _state.update(cores=cores, workers=workers, unfinished=unfinished)
    quiet()


def train_fold(task: tuple[str, int, str, str]) -> dict:
    from digitnet.cv import save_fold, train_fold as train
    from digitnet.data import load_mnist

    cfg_yaml, fold, run_dir, fingerprint = task

    cfg = OmegaConf.create(cfg_yaml)
    cfg.trainer.enable_progress_bar = False  # several bars on one terminal would garble it; the parent prints folds
    if "arrays" not in _state:
        _state["arrays"] = load_mnist(cfg.data.root, download=False)
    share_cores()
    try:
        label = f"fold {fold + 1}/{cfg.cv.n_folds}"
        try:
            result = train(cfg, _state["arrays"], fold, Path(run_dir), callbacks=(ShareCores(label),))
        except KeyboardInterrupt:
            # SIGINT is ignored here, so this is the parent terminating the pool (after a Ctrl-C there; Lightning
            # turns the SIGTERM into an interrupted fit). Leave without a traceback: the parent says what happened.
            os._exit(1)
        save_fold(Path(run_dir), result, fingerprint)
        return result
    finally:
        unfinished = _state["unfinished"]
        with unfinished.get_lock():
            unfinished.value -= 1
