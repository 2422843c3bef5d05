"""Config checks that run before any data is read or any net is trained."""

from __future__ import annotations

from omegaconf import DictConfig

from digitnet.data import SCALINGS
from digitnet.errors import UserError
from digitnet.nets import NETS

TASKS = ("cv", "final")


def _number(cfg: DictConfig, key: str, kind=float):
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, key)
    try:
        if kind is int and (isinstance(value, bool) or float(value) != int(value)):
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise UserError(f"{key}={value!r} is not {'a whole number' if kind is int else 'a number'}") from None


def on_cuda(cfg: DictConfig) -> bool:
    """Whether the trainer will run on a CUDA device."""
    import torch

    accelerator = str(cfg.trainer.accelerator)
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def eval_batch_size(cfg: DictConfig) -> int:
    """data.eval_batch_size, with auto as 1000 on CUDA (fewer launches) and 250 on CPU (cache-sized batches)."""
    value = cfg.data.eval_batch_size
    return (1000 if on_cuda(cfg) else 250) if str(value).lower() == "auto" else int(value)


def resolve_auto(cfg: DictConfig) -> None:
    """Settle the `auto` choices that depend only on the device, so that reports show the values used."""
    cfg.data.eval_batch_size = eval_batch_size(cfg)


def validate(cfg: DictConfig) -> None:
    """Raise UserError naming the first bad value and how to fix it."""
    if cfg.task not in TASKS:
        raise UserError(f"task={cfg.task!r} is unknown; use task=cv or task=final")
    if cfg.model.name not in NETS:
        raise UserError(f"model.name={cfg.model.name!r} is unknown; use model={'|'.join(NETS)}")
    if _number(cfg, "optimizer.lr") <= 0:
        raise UserError(f"optimizer.lr={cfg.optimizer.lr} must be > 0 (the tutorial uses 0.01)")
    momentum = cfg.optimizer.get("momentum")
    if momentum is not None and not 0 <= _number(cfg, "optimizer.momentum") < 1:
        raise UserError(f"optimizer.momentum={momentum} must be in [0, 1) (the tutorial uses 0.9)")
    if _number(cfg, "data.batch_size", int) <= 0:
        raise UserError(f"data.batch_size={cfg.data.batch_size} must be a positive whole number (default 32)")
    if str(cfg.data.eval_batch_size).lower() != "auto" and _number(cfg, "data.eval_batch_size", int) <= 0:
        raise UserError(f"data.eval_batch_size={cfg.data.eval_batch_size} must be auto or a positive whole number")
    if cfg.data.scaling not in SCALINGS:
        raise UserError(f"data.scaling={cfg.data.scaling!r} is unknown; use one of {', '.join(SCALINGS)}")
    n_folds = _number(cfg, "cv.n_folds", int)
    if n_folds < 2:
        raise UserError(f"cv.n_folds={n_folds} must be at least 2 for k-fold cross-validation (default 5)")
    limit = _number(cfg, "data.limit", int)
    if limit < 0:
        raise UserError(f"data.limit={limit} must be 0 (all images) or a positive count")
    if cfg.task == "cv" and 0 < limit < n_folds:
        raise UserError(f"data.limit={limit} is smaller than cv.n_folds={n_folds}; each fold needs images")
    workers = cfg.cv.get("workers", 1)
    if str(workers).lower() != "auto":
        if _number(cfg, "cv.workers", int) < 1:
            raise UserError(f"cv.workers={workers} must be auto or a positive whole number (1: folds one after another)")
        if int(workers) > 1 and str(cfg.cv.get("parallel", "auto")).lower() == "true":
            raise UserError(f"cv.workers={workers} and cv.parallel=true exclude each other; choose one of them")
    _number(cfg, "seed", int)
    _number(cfg, "cv.seed", int)
    if _number(cfg, "trainer.max_epochs", int) < 1:
        raise UserError(f"trainer.max_epochs={cfg.trainer.max_epochs} must be at least 1")
