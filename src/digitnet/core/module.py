"""The Lightning side: the LightningModule that trains the nets of core.nets (the whole training step on one screen),
what it shares with the packed folds' module (engine/packed.py): each epoch's figures and the divergence check, and
the LightningDataModule of one fold's split."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

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


class Diverged(Exception):
    """Every fold's training loss blew up (see BLOW_UP)."""


# A fold has diverged when its loss is NaN/inf, or this many times the first checked loss. Cross-entropy starts near
# ln(10) = 2.3, so 10x is 23: no healthy run gets there (fastai's LR finder already stops at 4x the best loss).
BLOW_UP = 10.0


def blow_up_reason(loss: float, first: float | None) -> str | None:
    if not math.isfinite(loss):
        return f"loss became {loss}"
    if first is not None and loss > BLOW_UP * first:
        return f"loss became {loss:.4g}, over {BLOW_UP:g}x its first value {first:.3g}"
    return None


class FoldFigures(pl.LightningModule):
    """What a module of K folds keeps of them (K nets packed into one, or K=1): each epoch's loss and accuracy per
    fold, summed on the device and read once an epoch (no per-step host sync), into `histories` and the loggers;
    and the divergence check, every step on the CPU and every 50th elsewhere (each is a host sync): a fold whose loss
    blows up stops, the others go on, and the fit stops (Diverged) once every fold has."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k
        for name in ("train_totals", "val_totals"):  # [loss sum, correct, count] x K, float64: exact counts
            self.register_buffer(name, torch.zeros(3, k, dtype=torch.float64), persistent=False)
        self.register_buffer("alive", torch.ones(k, dtype=torch.bool), persistent=False)
        self.histories: list[list[dict]] = [[] for _ in range(k)]
        self.diverged: dict[int, str] = {}
        self.first_losses: list[float] | None = None
        self.steps_done = self.closed_epochs = 0
        self.fold_loggers: list[list] = []  # packed folds: each fold's own; otherwise the Trainer's

    def count(self, totals: torch.Tensor, losses: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        """One batch of each fold: losses (K,) batch means, logits (K, B, 10), y (K, B)."""
        n = y.shape[1]
        totals[0] += losses.detach() * n  # a short last batch counts by its size
        totals[1] += (logits.argmax(-1) == y).sum(1)
        totals[2] += n

    def check_divergence(self, losses: torch.Tensor, batch_idx: int) -> None:
        self.steps_done += 1
        if losses.device.type != "cpu" and batch_idx % 50:
            return
        values = losses.detach().double().cpu().tolist()
        if self.first_losses is None:
            self.first_losses = values
        for k, value in enumerate(values):
            reason = blow_up_reason(value, self.first_losses[k])
            if reason and k not in self.diverged:
                self.alive[k] = False
                self.diverged[k] = f"{reason} at epoch {self.current_epoch}, batch {batch_idx}"
        if len(self.diverged) == self.k:
            raise Diverged(self.diverged[0] if self.k == 1 else "every fold diverged")

    def on_train_epoch_end(self):
        self.close_epoch()

    def close_epoch(self) -> None:
        """The epoch's per-fold figures into histories and the loggers, once: callbacks.EpochLines calls it first to
        print them, since Lightning runs callbacks' epoch-end hooks before the module's."""
        if self.closed_epochs > self.current_epoch:
            return
        self.closed_epochs = self.current_epoch + 1
        train, val = self.train_totals.cpu(), self.val_totals.cpu()  # the one host sync per epoch
        for k in range(self.k):
            if k in self.diverged:  # a diverged fold's history ends before the epoch it diverged in
                continue
            epoch = {"epoch": self.current_epoch, "train_loss": float(train[0, k] / train[2, k])}
            epoch["train_acc"] = float(train[1, k] / train[2, k])
            if val[2, k] > 0:
                epoch.update(val_loss=float(val[0, k] / val[2, k]), val_acc=float(val[1, k] / val[2, k]))
            self.histories[k].append(epoch)
            for logger in self.fold_loggers[k] if self.fold_loggers else self.loggers:
                logger.log_metrics(epoch, step=self.steps_done - 1)
        self.train_totals.zero_()
        self.val_totals.zero_()


class DigitClassifier(FoldFigures):
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
        super().__init__(k=1)
        self.save_hyperparameters()
        self.net = build_net(arch, dropout)
        self.augment = make_augment(augment, augment_seed)  # training batches only
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
            # oneDNN's float32 convolutions and pooling are faster on channels_last (docs/performance.md). float64
            # (trainer.precision=64-true, what the packed-equals-sequential tests use) keeps the plain layout.
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.augment is not None:
            x = self.augment(x)
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        self.count(self.train_totals, loss[None], logits[None], y[None])
        self.check_divergence(loss[None], batch_idx)
        return loss

    def on_validation_epoch_start(self):
        self.val_counts.zero_()

    def validation_step(self, batch, batch_idx):
        if self.trainer.sanity_checking:  # a sanity pass counts towards no epoch's figures
            return
        x, y = batch
        logits = self(x)
        self.count(self.val_totals, F.cross_entropy(logits, y)[None], logits[None], y[None])
        # one_hot + sum, not bincount: CUDA's bincount is not deterministic.
        self.val_counts += F.one_hot(10 * y + logits.argmax(1), 100).sum(0)

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
