"""Fold-parallel CV: K folds train at once as K independent nets packed into one.

`pack` turns K copies of a net of core.nets into one: convolutions become grouped convolutions (fold k in channel
group k), dense layers per-fold batched matmuls, BatchNorm runs over K*C channels (each fold keeps its statistics).
The loss is the sum of the folds' mean losses, so each fold's weights get exactly the gradient of its own loss, and an
elementwise optimizer (config.plan.PACKABLE_OPTIMIZERS) updates each fold as its own would. Each fold starts from its
sequential run's initial weights (seeded seed + fold) and sees the same batches in the same order (its DataLoader,
zipped). On a GPU each step can run as one captured CUDA graph (docs/performance.md: worth 4x or more).
"""

from __future__ import annotations

import contextlib
import copy
import time

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from digitnet.core.augment import make_augment
from digitnet.core.module import Diverged, FoldFigures, fit, optimization
from digitnet.core.nets import build_net


class FoldFlatten(nn.Module):
    """(B, K*C, H, W) -> (K, B, C*H*W): each fold's features, flattened as nn.Flatten would."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x):
        return x.reshape(x.shape[0], self.k, -1).transpose(0, 1)


class FoldLinear(nn.Module):
    """K independent Linear layers on (K, B, n_in)."""

    def __init__(self, k: int, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(k, n_out, n_in))
        self.bias = nn.Parameter(torch.empty(k, 1, n_out))

    def forward(self, x):
        return torch.baddbmm(self.bias, x, self.weight.transpose(1, 2))


class FoldBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over K*C channels, for (K, B, C) inputs: per-fold statistics."""

    def forward(self, x):
        k, b, c = x.shape
        return super().forward(x.transpose(0, 1).reshape(b, k * c)).reshape(b, k, c).transpose(0, 1)


def _cat(layers, name):
    return torch.cat([getattr(layer, name).detach() for layer in layers])


def pack(nets: list[nn.Sequential]) -> nn.Sequential:
    """K nets of the same architecture -> one net on (B, K, 28, 28) returning (K, B, 10)."""
    k = len(nets)
    packed = []
    for layers in zip(*nets):
        first = layers[0]
        if isinstance(first, nn.Conv2d):
            m = nn.Conv2d(first.in_channels * k, first.out_channels * k, first.kernel_size, groups=k)
            m.weight.data, m.bias.data = _cat(layers, "weight"), _cat(layers, "bias")
        elif isinstance(first, (nn.BatchNorm2d, nn.BatchNorm1d)):
            m = (nn.BatchNorm2d if isinstance(first, nn.BatchNorm2d) else FoldBatchNorm1d)(first.num_features * k)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(m, name).data = _cat(layers, name)
        elif isinstance(first, nn.Flatten):
            m = FoldFlatten(k)
        elif isinstance(first, nn.Linear):
            m = FoldLinear(k, first.in_features, first.out_features)
            m.weight.data = torch.stack([layer.weight.detach() for layer in layers])
            m.bias.data = torch.stack([layer.bias.detach() for layer in layers])[:, None, :]
        elif isinstance(first, (nn.ReLU, nn.MaxPool2d)) or (isinstance(first, nn.Dropout) and first.p == 0):
            m = copy.deepcopy(first)
        else:
            raise TypeError(f"cannot pack {type(first).__name__}")
        packed.append(m)
    return nn.Sequential(*packed)


def unpack(packed: nn.Sequential, arch: str, fold: int) -> nn.Sequential:
    """Fold `fold`'s own net, as build_net(arch) would hold it."""
    net = build_net(arch).to(next(packed.parameters()).dtype)
    state = {}
    for i, (m, plain) in enumerate(zip(packed, net)):
        if isinstance(plain, (nn.Conv2d, nn.BatchNorm2d, nn.BatchNorm1d)):
            n = plain.out_channels if isinstance(plain, nn.Conv2d) else plain.num_features
            for name, value in m.state_dict().items():
                state[f"{i}.{name}"] = value if name == "num_batches_tracked" else value[fold * n : (fold + 1) * n]
        elif isinstance(plain, nn.Linear):
            state[f"{i}.weight"], state[f"{i}.bias"] = m.weight.detach()[fold], m.bias.detach()[fold, 0]
    net.load_state_dict(state)
    return net


class FoldParallelClassifier(FoldFigures):
    """K folds' nets in one LightningModule. Batches are (x: (K, B, 1, 28, 28), y: (K, B))."""

    def __init__(
        self,
        arch: str,
        fold_seeds: list[int],
        optimizer: dict,
        pixel_mean: list[float],
        pixel_std: list[float],
        captured: bool = False,
        augment: dict | None = None,
        scheduler: dict | None = None,
        label_smoothing: float = 0.0,
    ):
        super().__init__(k=len(fold_seeds))
        self.save_hyperparameters()
        # Each fold draws its own transforms, from the generator its sequential run would use (seed + fold).
        self.augments = [make_augment(augment, seed) for seed in fold_seeds] if augment else []
        self.augments = [a for a in self.augments if a is not None]
        # captured: the whole train step runs as one CUDA graph (manual optimization; see CapturedStep).
        self.automatic_optimization = not captured
        self.captured_step: CapturedStep | None = None
        nets = []
        for seed in fold_seeds:  # the same initial weights as fold k's sequential run
            pl.seed_everything(seed, verbose=False)
            nets.append(build_net(arch))
        self.net = pack(nets)
        # Per-fold scaling, held in float64 so that float64 runs match DigitClassifier's plain floats exactly.
        self.register_buffer(
            "mean", torch.tensor(pixel_mean, dtype=torch.float64).view(-1, 1, 1, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(pixel_std, dtype=torch.float64).view(-1, 1, 1, 1, 1), persistent=False)

    def forward(self, x):
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        k, b = x.shape[:2]
        return self.net(x.transpose(0, 1).reshape(b, k, 28, 28))

    def _losses(self, batch, totals, train: bool = False):
        x, y = batch
        if train and self.augments:
            k, b = x.shape[:2]
            thetas = torch.cat([augment.thetas(b) for augment in self.augments])
            x = self.augments[0].apply(x.reshape(k * b, *x.shape[2:]), thetas).view_as(x)
        logits = self(x)
        smoothing = self.hparams.label_smoothing if train else 0.0
        losses = (
            F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none", label_smoothing=smoothing)
            .view_as(y)
            .mean(1)
        )
        self.count(totals, losses, logits, y)
        return losses

    def training_step(self, batch, batch_idx):
        if self.automatic_optimization:
            losses = self._losses(batch, self.train_totals, train=True)
        else:
            losses = self._captured_or_eager_step(batch)
        self.check_divergence(losses, batch_idx)
        if self.automatic_optimization:
            return self._total_loss(losses)

    def _total_loss(self, losses):
        # Each fold's weights only reach its own loss, so the sum trains K independent nets; diverged folds stop.
        return torch.where(self.alive, losses, torch.zeros_like(losses)).sum()

    def _step(self, x, y):
        """One whole training step, what the CUDA graph captures: forward, backward, optimizer step, totals."""
        losses = self._losses((x, y), self.train_totals, train=True)
        self._total_loss(losses).backward()
        self.optimizers().optimizer.step()
        return losses.detach()

    def _captured_or_eager_step(self, batch):
        x, y = batch
        optimizer = self.optimizers().optimizer
        if self.captured_step is None:
            self.captured_step = CapturedStep(self._step, self, optimizer, (x, y), self.train_totals)
        if x.shape == self.captured_step.static[0].shape:
            return self.captured_step(x, y)
        optimizer.zero_grad(set_to_none=True)  # a short last batch: its own shapes, run eagerly
        return self._step(x, y)

    def validation_step(self, batch, batch_idx):
        if not self.trainer.sanity_checking:  # a sanity pass counts towards no epoch's figures
            self._losses(batch, self.val_totals)

    def configure_optimizers(self):
        return optimization(self, dict(self.hparams.optimizer), self.hparams.scheduler)


class CapturedStep:
    """A training step captured once as a CUDA graph and replayed for every batch of the same shape.

    Capture needs warm-up steps, which really train; so the model, optimizer and metric state are saved before
    and put back (in place, keeping their addresses) after, and the first replayed step is the true first step.
    The plan allows it for SGD without dampening only (plan._graph_blocker): there a zero momentum buffer gives
    exactly the first step's `buf = grad`.
    Off CUDA (tests), replay calls the step on the same static buffers: the same logic, without the graph.
    """

    def __init__(
        self,
        step,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        example: tuple,
        totals: torch.Tensor,
        warmup: int = 3,
    ):
        self.step, self.optimizer = step, optimizer
        self.static = [t.clone() for t in example]
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        self.graph = None
        cuda = example[0].is_cuda
        side = torch.cuda.Stream() if cuda else None
        if cuda:
            side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side) if cuda else contextlib.nullcontext():
            for _ in range(warmup):
                optimizer.zero_grad(set_to_none=True)
                step(*self.static)
        if cuda:
            torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():  # undo the warm-up: weights, BatchNorm statistics, momentum, metric totals
            for k, v in model.state_dict().items():
                v.copy_(saved[k])
            for state in optimizer.state.values():
                if state.get("momentum_buffer") is not None:
                    state["momentum_buffer"].zero_()
            totals.zero_()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = step(*self.static)

    def __call__(self, *batch):
        for static, value in zip(self.static, batch):
            static.copy_(value)
        if self.graph is not None:
            self.graph.replay()
            return self.out
        self.optimizer.zero_grad(set_to_none=True)
        return self.step(*self.static)


class ZippedFolds:
    """One batch per fold per step, stacked: fold k's batches come from its own DataLoader, in its own order."""

    def __init__(self, loaders):
        self.loaders = loaders

    def __len__(self):
        return len(self.loaders[0])

    def __iter__(self):
        for batches in zip(*self.loaders):
            yield torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])


def train_folds(trainer: pl.Trainer, plan, dms: dict, make_fold_loggers, captured: bool | None = None):
    """Fit the folds of `dms` ({fold: datamodule}) together; return the model and the seconds it took.
    `captured` (default: plan.cuda_graph) runs each step through CapturedStep."""
    folds = list(dms)
    model = FoldParallelClassifier(
        arch=plan.model,
        fold_seeds=[plan.seed + k for k in folds],
        optimizer=plan.optimizer,
        pixel_mean=[dms[k].pixel_mean for k in folds],
        pixel_std=[dms[k].pixel_std for k in folds],
        captured=plan.cuda_graph if captured is None else captured,
        augment=plan.augment,
        scheduler=plan.scheduler,
        label_smoothing=plan.label_smoothing,
    )
    model.fold_loggers = [make_fold_loggers(k) for k in folds]
    for k, loggers in zip(folds, model.fold_loggers):
        for logger in loggers:
            logger.log_hyperparams({**dict(model.hparams), "fold": k})
    train = ZippedFolds([dms[k].train_dataloader() for k in folds])
    val = ZippedFolds([dms[k].val_dataloader() for k in folds])
    start = time.perf_counter()
    try:
        fit(trainer, model, train_dataloaders=train, val_dataloaders=val)
    except Diverged:  # every fold did: model.diverged says how
        pass
    return model, time.perf_counter() - start
