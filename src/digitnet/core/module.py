"""The Lightning side: the LightningModule that trains the nets of core.nets (the whole training step on one screen),
and the LightningDataModule of one fold's split."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from digitnet.core.augment import make_augment
from digitnet.core.data import MNISTArrays, batches, kfold_indices, pixel_stats, to_unit
from digitnet.core.nets import build_net
from digitnet.core.schedules import lr_scheduler


def fit(trainer: pl.Trainer, model: pl.LightningModule, **data) -> None:
    """trainer.fit; Ctrl-C comes out as KeyboardInterrupt. Lightning answers Ctrl-C with a graceful stop and then
    exit(1), which would read as a failure and skip our "interrupted, rerun to resume" line."""
    try:
        trainer.fit(model, **data)
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    if trainer.interrupted:  # never record a fit that did not finish
        raise KeyboardInterrupt


class DigitClassifier(pl.LightningModule):
    """A net plus the pixel scaling it was trained with. Takes x/255 images of shape (N, 1, 28, 28), returns logits.

    Every hparam is a plain value (str, float, dict of those), so a checkpoint loads with weights_only=True and
    knows its own architecture and scaling.
    """

    def __init__(
        self,
        arch: str = "baseline",
        optimizer: dict | None = None,
        scaling: str = "normalize",
        pixel_mean: float = 0.0,
        pixel_std: float = 1.0,
        augment: dict | None = None,
        scheduler: dict | None = None,
        label_smoothing: float = 0.0,
        augment_seed: int = 0,
        dropout: float = 0.0,
        tta: str = "none",  # not used in training: how the saved checkpoint predicts (core.nets.with_tta)
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = build_net(arch, dropout)
        self.augment = make_augment(augment, augment_seed)  # training batches only
        # validate_args=False: the checks sync with the device on every step.
        self.train_acc = MulticlassAccuracy(num_classes=10, average="micro", validate_args=False)
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.val_acc = MulticlassAccuracy(num_classes=10, average="micro", validate_args=False)
        # The last validation pass's confusion counts (10 * true + predicted), so that a fold's matrix needs no
        # second pass over its validation images; see last_confusion.
        self.register_buffer("val_counts", torch.zeros(100, dtype=torch.long), persistent=False)
        self.val_counts_step = self.val_counts_device = None

    def on_fit_start(self):
        if self.device.type == "cpu" and next(self.parameters()).dtype == torch.float32:  # see forward
            self.net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.hparams.pixel_mean) / self.hparams.pixel_std
        if x.device.type == "cpu" and x.dtype == torch.float32:
            # oneDNN's float32 convolutions and pooling are faster on channels_last: the deep net's batch-32 step
            # took 13.8 instead of 17.1 ms on one thread, as each fold worker has (docs/performance.md). float64
            # (trainer.precision=64-true, what the packed-equals-sequential tests use) keeps the plain layout.
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.augment is not None:
            x = self.augment(x)
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        # Epoch totals accumulate on the device and are logged once, on the last batch: one self.log costs ~1 ms.
        # One value an image, so a short last batch counts by its size: MeanMetric(nan_strategy="disable") drops
        # update()'s weight argument (torchmetrics 1.9), which made train_loss a mean of batch means.
        self.train_loss.update(loss.detach().expand(len(y)))
        self.train_acc.update(logits, y)
        if self.trainer.is_last_batch:
            self.log("train_loss", self.train_loss, on_step=False, on_epoch=True)
            self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def on_validation_epoch_start(self):
        self.val_counts.zero_()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.val_acc.update(logits, y)
        # one_hot + sum, not bincount: CUDA's bincount is not deterministic.
        self.val_counts += F.one_hot(10 * y + logits.argmax(1), 100).sum(0)
        self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True, batch_size=len(y))
        self.log("val_acc", self.val_acc, on_epoch=True, batch_size=len(y))

    def on_validation_epoch_end(self):
        self.val_counts_step = None if self.trainer.sanity_checking else self.trainer.global_step
        self.val_counts_device = self.device.type

    def last_confusion(self, n_val: int) -> torch.Tensor | None:
        """The confusion matrix (row = true digit) of the last validation pass, where it is the trained net's as the
        second pass would score it (on the CPU, where Lightning leaves the net after fit, at full precision) over all
        `n_val` validation images; otherwise None (score the net again): a pass on a GPU (TF32 convolutions), in
        reduced precision, before the last training step (check_val_every_n_epoch) or over some batches."""
        full = str(self.trainer.precision) in ("32-true", "64-true") and self.val_counts_device == "cpu"
        counts = self.val_counts.cpu()
        if not full or self.val_counts_step != self.trainer.global_step or int(counts.sum()) != n_val:
            return None
        return counts.reshape(10, 10)

    def configure_optimizers(self):
        spec = dict(self.hparams.optimizer or {"_target_": "torch.optim.SGD", "lr": 0.01, "momentum": 0.9})
        return optimization(self, spec, self.hparams.scheduler)


def optimization(module: pl.LightningModule, optimizer: dict, scheduler: dict | None):
    """configure_optimizers' answer: the optimizer, and the plan's LR schedule stepped every batch."""
    opt = instantiate(optimizer, params=module.parameters())
    name = (scheduler or {}).get("name", "none")
    if name == "none":
        return opt
    sched = lr_scheduler(opt, optimizer["lr"], scheduler, int(module.trainer.estimated_stepping_batches))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class MNISTDataModule(pl.LightningDataModule):
    """One fold's train/val split of the training set (fold=None: all of it), plus the holdout as `test`."""

    def __init__(
        self,
        arrays: MNISTArrays,
        fold: int | None = None,
        n_folds: int = 5,
        cv_seed: int = 1,
        limit: int = 0,
        batch_size: int = 32,
        eval_batch_size: int = 1000,
        scaling: str = "normalize",
        shuffle_seed: int = 0,
    ):
        super().__init__()
        n = len(arrays.train_y) if limit <= 0 else min(limit, len(arrays.train_y))
        x, y = arrays.train_x[:n], arrays.train_y[:n]
        if fold is None:
            train_idx, val_idx = np.arange(n), np.arange(0)
        else:
            train_idx, val_idx = kfold_indices(n, n_folds, cv_seed)[fold]
        train_idx, val_idx = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
        # Scaling statistics from the training part alone: validation pixels never shape them.
        self.pixel_mean, self.pixel_std = pixel_stats(x[train_idx], scaling)
        self.train_x, self.train_y = to_unit(x[train_idx]), y[train_idx]
        self.val_x, self.val_y = to_unit(x[val_idx]), y[val_idx]
        self.arrays = arrays
        self.batch_size, self.eval_batch_size, self.shuffle_seed = batch_size, eval_batch_size, shuffle_seed

    def to_device(self, device: torch.device | str) -> MNISTDataModule:
        """Keep the (small) dataset on the accelerator: batches are then gathered there by index, no copies."""
        self.train_x, self.train_y = self.train_x.to(device), self.train_y.to(device)
        self.val_x, self.val_y = self.val_x.to(device), self.val_y.to(device)
        return self

    def train_dataloader(self):
        # A last batch of one image is dropped: BatchNorm cannot train on it (never the case at the tutorial's sizes:
        # 48,000 and 60,000 images in batches of 32).
        return batches(
            self.train_x,
            self.train_y,
            self.batch_size,
            shuffle=True,
            seed=self.shuffle_seed,
            drop_last=len(self.train_y) % self.batch_size == 1,
        )

    def val_dataloader(self):
        return batches(self.val_x, self.val_y, self.eval_batch_size, shuffle=False)

    def test_dataloader(self):
        return batches(to_unit(self.arrays.test_x), self.arrays.test_y, self.eval_batch_size, shuffle=False)
