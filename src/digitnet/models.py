"""The tutorial's three nets and the LightningModule that trains them."""

from __future__ import annotations

import pickle
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from digitnet.errors import UserError


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3), nn.ReLU()]


def _head(n_in: int, batchnorm: bool = False) -> list[nn.Module]:
    return [nn.Flatten(), nn.Linear(n_in, 100), nn.ReLU(), *([nn.BatchNorm1d(100)] if batchnorm else []), nn.Linear(100, 10)]


def baseline() -> nn.Sequential:
    return nn.Sequential(*_conv(1, 32), nn.MaxPool2d(2), *_head(32 * 13 * 13))


def batchnorm() -> nn.Sequential:
    # BatchNorm after each activation, as in the tutorial.
    return nn.Sequential(*_conv(1, 32), nn.BatchNorm2d(32), nn.MaxPool2d(2), *_head(32 * 13 * 13, batchnorm=True))


def deep() -> nn.Sequential:
    return nn.Sequential(
        *_conv(1, 32), nn.MaxPool2d(2), *_conv(32, 64), *_conv(64, 64), nn.MaxPool2d(2), *_head(64 * 4 * 4)
    )


NETS = {"baseline": baseline, "batchnorm": batchnorm, "deep": deep}


def build_net(name: str) -> nn.Sequential:
    if name not in NETS:
        raise UserError(f"unknown model {name!r}; use one of {', '.join(NETS)} (model=deep)")
    net = NETS[name]()
    layers = [m for m in net if isinstance(m, (nn.Conv2d, nn.Linear))]
    # Keras defaults of the tutorial: He-uniform hidden layers, Glorot-uniform output layer, zero biases.
    for layer in layers[:-1]:
        nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
    nn.init.xavier_uniform_(layers[-1].weight)
    for layer in layers:
        nn.init.zeros_(layer.bias)
    return net


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


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
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = build_net(arch)
        # validate_args=False: the checks sync with the device on every step.
        self.train_acc = MulticlassAccuracy(num_classes=10, average="micro", validate_args=False)
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.val_acc = MulticlassAccuracy(num_classes=10, average="micro", validate_args=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.hparams.pixel_mean) / self.hparams.pixel_std)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        # Epoch totals accumulate on the device and are logged once, on the last batch: one self.log costs ~1 ms.
        self.train_loss.update(loss.detach(), len(y))
        self.train_acc.update(logits, y)
        if self.trainer.is_last_batch:
            self.log("train_loss", self.train_loss, on_step=False, on_epoch=True)
            self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.val_acc.update(logits, y)
        self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True, batch_size=len(y))
        self.log("val_acc", self.val_acc, on_epoch=True, batch_size=len(y))

    def configure_optimizers(self):
        spec = dict(self.hparams.optimizer or {"_target_": "torch.optim.SGD", "lr": 0.01, "momentum": 0.9})
        return instantiate(spec, params=self.parameters())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> DigitClassifier:
    """Rebuild a DigitClassifier from a checkpoint's own hparams. Never unpickles code (weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file; pass the final.ckpt of a task=final run")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise UserError(f"{path}: refused, it holds objects other than plain weights and values ({first})") from None
    except Exception as exc:  # noqa: BLE001 - zip/format errors of every kind mean "not a checkpoint"
        raise UserError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__}); pass a digitnet .ckpt") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise UserError(f"{path}: not a digitnet checkpoint (no state_dict and hyper_parameters)")
    hp = dict(ckpt["hyper_parameters"])
    arch = hp.get("arch")
    if arch not in NETS:
        raise UserError(f"{path}: checkpoint names unknown architecture {arch!r}; this digitnet knows {', '.join(NETS)}")
    model = DigitClassifier(**{k: hp[k] for k in ("arch", "optimizer", "scaling", "pixel_mean", "pixel_std") if k in hp})
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not fit a {arch} net ({str(exc).splitlines()[0][:160]})") from None
    return model.eval()
