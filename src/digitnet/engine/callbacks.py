"""Lightning callbacks of a fold's fit: its history, the divergence guard, and how progress is shown."""

from __future__ import annotations

import math

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

EPOCH_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc")


class Diverged(Exception):
    """The training loss became NaN or infinite."""


class History(pl.Callback):
    """Per-epoch train/val loss and accuracy, read once per epoch (no per-step host sync)."""

    def __init__(self):
        self.epochs: list[dict] = []

    def on_train_epoch_end(self, trainer, pl_module):
        m = trainer.callback_metrics
        self.epochs.append({"epoch": trainer.current_epoch, **{k: float(m[k]) for k in EPOCH_KEYS if k in m}})


# A fold has diverged when its loss is NaN/inf, or this many times the first checked loss. Cross-entropy starts near
# ln(10) = 2.3, so 10x is 23: no healthy run gets there (fastai's LR finder already stops at 4x the best loss).
BLOW_UP = 10.0
# A fold that ends at or below this validation accuracy learned nothing (10 classes: chance is 0.1); it is flagged.
CHANCE_LEVEL = 0.2


def blow_up_reason(loss: float, first: float | None) -> str | None:
    if not math.isfinite(loss):
        return f"loss became {loss}"
    if first is not None and loss > BLOW_UP * first:
        return f"loss became {loss:.4g}, over {BLOW_UP:g}x its first value {first:.3g}"
    return None


class DivergenceGuard(pl.Callback):
    """Stops the fold as soon as its loss blows up (see BLOW_UP). Checks every step on CPU, every `every` steps
    elsewhere (each check is a host sync)."""

    def __init__(self, every: int = 50):
        self.every = every
        self.first: float | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss.device.type != "cpu" and batch_idx % self.every:
            return
        value = float(loss.detach())
        reason = blow_up_reason(value, self.first)
        if reason:
            raise Diverged(f"{reason} at epoch {trainer.current_epoch}, batch {batch_idx}")
        if self.first is None:
            self.first = value


class FoldProgressBar(TQDMProgressBar):
    """Lightning's bar, labelled with the fold ("fold 2 of 5, epoch 3/10") instead of the logger's version."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def on_train_epoch_start(self, trainer, pl_module):
        super().on_train_epoch_start(trainer, pl_module)
        self.train_progress_bar.set_description(f"{self.label}, epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")


class EveryBatches(pl.Callback):
    """Calls `check()` before every `every`-th training batch of an epoch, the first included."""

    def __init__(self, check, every: int):
        self.check, self.every = check, every

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx % self.every == 0:
            self.check()


class EpochLines(pl.Callback):
    """A line per epoch in place of the bar: for fold workers sharing a terminal, and for logs (nohup, CI, SLURM),
    where every redraw of a bar would be a line."""

    def __init__(self, label: str):
        self.label = label

    def on_train_epoch_end(self, trainer, pl_module):
        if hasattr(pl_module, "close_epoch"):  # packed folds: each fold's figure, in fold order
            pl_module.close_epoch()
            last = [h[-1] for h in pl_module.histories if h and h[-1]["epoch"] == trainer.current_epoch]
            scores = "  ".join(
                f"{k} " + " ".join(f"{e[k]:.4f}" for e in last)
                for k in ("train_loss", "val_loss", "val_acc")
                if last and all(k in e for e in last)
            )
        else:
            m = trainer.callback_metrics
            scores = "  ".join(f"{k} {float(m[k]):.4f}" for k in ("train_loss", "val_loss", "val_acc") if k in m)
        print(f"{self.label}, epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {scores}", flush=True)
