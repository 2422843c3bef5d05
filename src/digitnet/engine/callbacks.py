"""Lightning callbacks of a fold's fit: how its progress is shown, and a check every so many batches."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

EPOCH_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc")


# A fold that ends at or below this validation accuracy learned nothing (10 classes: chance is 0.1); it is flagged.
CHANCE_LEVEL = 0.2


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
        pl_module.close_epoch()  # each fold's figures (packed folds: in fold order)
        last = [h[-1] for h in pl_module.histories if h and h[-1]["epoch"] == trainer.current_epoch]
        keys = [k for k in ("train_loss", "val_loss", "val_acc") if last and all(k in e for e in last)]
        scores = "  ".join(f"{k} " + " ".join(f"{e[k]:.4f}" for e in last) for k in keys)
        print(f"{self.label}, epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {scores}", flush=True)
