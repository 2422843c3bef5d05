"""The k-fold loop: a fresh model, optimizer, trainer and seed per fold; each finished fold saved as it ends."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from digitnet import report
from digitnet.config import eval_batch_size, on_cuda
from digitnet.data import MNISTArrays, MNISTDataModule
from digitnet.errors import UserError
from digitnet.models import DigitClassifier, fit


class Diverged(Exception):
    """The training loss became NaN or infinite."""


class History(pl.Callback):
    """Per-epoch train/val loss and accuracy, read once per epoch (no per-step host sync)."""

    KEYS = ("train_loss", "train_acc", "val_loss", "val_acc")

    def __init__(self):
        self.epochs: list[dict] = []

    def on_train_epoch_end(self, trainer, pl_module):
        m = trainer.callback_metrics
        self.epochs.append({"epoch": trainer.current_epoch, **{k: float(m[k]) for k in self.KEYS if k in m}})


class DivergenceGuard(pl.Callback):
    """Stops the fold as soon as the loss is NaN/inf. Checks every step on CPU, every `every` steps elsewhere."""

    def __init__(self, every: int = 50):
        self.every = every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss.device.type != "cpu" and batch_idx % self.every:
            return
        if not torch.isfinite(loss.detach()).item():
            raise Diverged(f"loss became {float(loss)} at epoch {trainer.current_epoch}, batch {batch_idx}")


class FoldProgressBar(TQDMProgressBar):
    """Lightning's bar, labelled with the fold ("fold 2/5, epoch 3") instead of the logger's version."""

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


def plain(node) -> dict:
    """A config node as plain Python values (what checkpoints and JSON may hold)."""
    return OmegaConf.to_container(node, resolve=True)


def make_model(cfg: DictConfig, dm: MNISTDataModule) -> DigitClassifier:
    return DigitClassifier(
        arch=cfg.model.name,
        optimizer=plain(cfg.optimizer),
        scaling=cfg.data.scaling,
        pixel_mean=dm.pixel_mean,
        pixel_std=dm.pixel_std,
    )


def make_datamodule(cfg: DictConfig, arrays: MNISTArrays, fold: int | None, shuffle_seed: int) -> MNISTDataModule:
    return MNISTDataModule(
        arrays,
        fold=fold,
        n_folds=cfg.cv.n_folds,
        cv_seed=cfg.cv.seed,
        limit=cfg.data.limit,
        batch_size=cfg.data.batch_size,
        eval_batch_size=eval_batch_size(cfg),
        scaling=cfg.data.scaling,
        shuffle_seed=shuffle_seed,
    )


def fingerprint(cfg: DictConfig) -> str:
    """What a fold's result depends on; a resumed run only reuses folds with the same fingerprint."""
    keep = {k: plain(cfg[k]) for k in ("data", "model", "optimizer", "cv")}
    keep.update(seed=cfg.seed, max_epochs=cfg.trainer.max_epochs)
    for key in ("root", "download", "eval_batch_size"):
        keep["data"].pop(key, None)
    for key in ("parallel", "cuda_graph", "workers"):  # the same results either way
        keep["cv"].pop(key, None)
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def tb_logger(run_dir: Path, version: str) -> TensorBoardLogger:
    # hp_metric off: the job's one HPARAMS entry (with hp/cv_mean, hp/cv_std) is written by report.log_hparams.
    return TensorBoardLogger(run_dir, name="tb", version=version, default_hp_metric=False)


def fold_logger(run_dir: Path, fold: int) -> TensorBoardLogger:
    return tb_logger(run_dir, f"fold_{fold}")


def clear_interrupted_fold(run_dir: Path, fold: int) -> None:
    """A fold that is (re)trained starts a clean TensorBoard run: drop what an interrupted attempt logged."""
    shutil.rmtree(run_dir / "tb" / f"fold_{fold}", ignore_errors=True)


def make_trainer(cfg: DictConfig, run_dir: Path, version: str, callbacks: list, label: str | None = None,
                 **overrides) -> pl.Trainer:
    logger = tb_logger(run_dir, version) if version else False
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks = [*callbacks, FoldProgressBar(label or version)]
    return instantiate(cfg.trainer, logger=logger, callbacks=callbacks, **overrides)


def fold_result(fold, status, reason, seconds, dm, history, net, writer, eval_batch: int) -> dict:
    """A finished fold as cv_summary.json and the fold file hold it; the same for sequential and parallel runs."""
    score = history[-1].get("val_acc") if status == "ok" and history else None
    if status == "ok" and (score is None or not math.isfinite(score)):
        status, reason, score = "diverged", "validation accuracy is not finite", None
    result = {
        "fold": fold,
        "status": status,
        "score": score,
        "seconds": round(seconds, 3),
        "n_train": len(dm.train_y),
        "n_val": len(dm.val_y),
        "pixel_mean": dm.pixel_mean,
        "pixel_std": dm.pixel_std,
        "history": history,
    }
    if reason:
        result["reason"] = reason
    if status == "ok":
        result["confusion_matrix"] = report.confusion(net, dm.val_x, dm.val_y, eval_batch).tolist()
        report.log_fold_images(writer, dm.val_x[:32], result["confusion_matrix"])
    return result


def train_fold(cfg: DictConfig, arrays: MNISTArrays, fold: int, run_dir: Path, callbacks: tuple = ()) -> dict:
    seed = int(cfg.seed) + fold
    pl.seed_everything(seed, verbose=False)
    dm = make_datamodule(cfg, arrays, fold, shuffle_seed=seed)
    if on_one_cuda_device(cfg):
        dm.to_device("cuda")
    model = make_model(cfg, dm)
    history = History()
    trainer = make_trainer(cfg, run_dir, f"fold_{fold}", [history, DivergenceGuard(), *callbacks],
                           label=f"fold {fold + 1}/{cfg.cv.n_folds}", enable_checkpointing=False)
    start = time.perf_counter()
    status, reason = "ok", None
    try:
        fit(trainer, model, datamodule=dm)
    except Diverged as exc:
        status, reason = "diverged", str(exc)
    seconds = time.perf_counter() - start
    result = fold_result(fold, status, reason, seconds, dm, history.epochs, model, trainer.logger.experiment,
                         eval_batch_size(cfg))
    trainer.logger.finalize("success")
    return result


def on_one_cuda_device(cfg: DictConfig) -> bool:
    return on_cuda(cfg) and str(cfg.trainer.get("devices", 1)) in ("1", "auto")


def parallel_wanted(cfg: DictConfig) -> bool:
    """cv.parallel=auto: fold-parallel on CUDA, where K small nets in one beat K launch-bound runs."""
    choice = str(cfg.cv.get("parallel", "auto")).lower()
    if choice in ("true", "false"):
        return choice == "true"
    return on_one_cuda_device(cfg)


def train_folds_parallel(cfg: DictConfig, arrays: MNISTArrays, folds: list[int], run_dir: Path) -> list[dict] | None:
    """All `folds` at once (see parallel.py); None when their sizes differ and they cannot step together."""
    from digitnet.nets import ScaledNet
    from digitnet.parallel import train_folds, unpack

    dms = {k: make_datamodule(cfg, arrays, k, shuffle_seed=int(cfg.seed) + k) for k in folds}
    if len({(len(dm.train_y), len(dm.val_y)) for dm in dms.values()}) > 1:
        return None
    if on_one_cuda_device(cfg):
        for dm in dms.values():
            dm.to_device("cuda")
    captured = str(cfg.cv.get("cuda_graph", "auto")).lower()
    captured = on_one_cuda_device(cfg) if captured == "auto" else captured == "true"
    trainer = make_trainer(cfg, run_dir, None, [], label=f"folds {', '.join(str(k + 1) for k in folds)} at once",
                           enable_checkpointing=False)
    model, seconds = train_folds(trainer, cfg, dms, plain(cfg.optimizer), lambda k: fold_logger(run_dir, k), captured)
    results = []
    for i, (k, logger) in enumerate(zip(folds, model.fold_loggers)):
        dm = dms[k]
        net = ScaledNet(cfg.model.name, dm.pixel_mean, dm.pixel_std)
        net.net = unpack(model.net, cfg.model.name, i).to(model.device)
        status = "diverged" if i in model.diverged else "ok"
        # A fold's "seconds" is its share of the joint run, so that the folds' seconds add up to the wall time.
        results.append(fold_result(k, status, model.diverged.get(i), seconds / len(folds), dm, model.histories[i], net,
                                   logger.experiment, eval_batch_size(cfg)) | {"parallel_seconds": round(seconds, 3)})
        logger.finalize("success")
    return results


def workers_wanted(cfg: DictConfig, pending: int) -> int:
    """cv.workers=auto: one worker process per core on CPU (see README for the figures), else one."""
    choice = str(cfg.cv.get("workers", 1)).lower()
    if choice == "auto":
        choice = torch.get_num_threads() if not on_cuda(cfg) and not parallel_wanted(cfg) else 1
    return max(1, min(int(choice), pending))


def save_fold(run_dir: Path, result: dict, expected_fingerprint: str) -> None:
    result["fingerprint"] = expected_fingerprint
    report.write_json_atomic(run_dir / "folds" / f"fold_{result['fold']}.json", result)


def train_folds_in_workers(cfg: DictConfig, folds: list[int], run_dir: Path, workers: int, expected: str,
                           finish) -> None:
    """Folds in `workers` processes at once, the cores split between them. Each worker saves its fold as it ends
    (so Ctrl-C here loses only the folds in progress); `finish` then reports it."""
    import multiprocessing

    from digitnet import workers as fold_worker

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked OpenMP or CUDA state
    unfinished = context.Value("i", len(folds))
    cores = torch.get_num_threads()
    cfg_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    tasks = [(cfg_yaml, fold, str(run_dir), expected) for fold in folds]
    print(f"Training {len(folds)} folds in {workers} processes, {max(1, cores // workers)} thread(s) each", flush=True)
    # Leaving the block, also by Ctrl-C or an error, terminates the workers: no fold goes on training unseen.
    with context.Pool(workers, initializer=fold_worker.start, initargs=(cores, workers, unfinished)) as pool:
        for result in pool.imap_unordered(fold_worker.train_fold, tasks):
            finish(result, saved=True)


def load_finished_fold(path: Path, expected: str) -> dict | None:
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved.get("fingerprint") != expected:
        raise UserError(
            f"{path.parent.parent} holds folds of a different config; to resume, rerun with the same overrides, "
            "else choose a new hydra.run.dir"
        )
    return saved


def run_cv(cfg: DictConfig, arrays: MNISTArrays, run_dir: Path) -> dict:
    """Train and score every fold (skipping folds a previous run in this dir finished); write the report."""
    start = time.perf_counter()
    expected = fingerprint(cfg)
    results = {}

    def finish(result: dict, resumed: bool = False, saved: bool = False) -> None:
        if not (resumed or saved):
            save_fold(run_dir, result, expected)
        line = f"> {100 * result['score']:.3f}" if result["status"] == "ok" else f"> {result['status']}"
        # Fold workers finish in any order, so their lines name the fold (numbered as folds/fold_K.json).
        label = f"  (fold {result['fold']}, finished earlier)" if resumed else f"  (fold {result['fold']})" if saved else ""
        print(line + label, flush=True)
        results[result["fold"]] = result

    for fold in range(cfg.cv.n_folds):
        saved = load_finished_fold(run_dir / "folds" / f"fold_{fold}.json", expected)
        if saved is not None:
            finish(saved, resumed=True)
    pending = [fold for fold in range(cfg.cv.n_folds) if fold not in results]
    resumed = len(results)
    for fold in pending:
        clear_interrupted_fold(run_dir, fold)
    together = train_folds_parallel(cfg, arrays, pending, run_dir) if len(pending) > 1 and parallel_wanted(cfg) else None
    workers = workers_wanted(cfg, len(pending))
    if together is not None:
        for result in together:
            finish(result)
    elif workers > 1:
        train_folds_in_workers(cfg, pending, run_dir, workers, expected, finish)
    else:
        for fold in pending:
            finish(train_fold(cfg, arrays, fold, run_dir))
    ordered = [results[fold] for fold in range(cfg.cv.n_folds)]
    summary = report.cv_summary(cfg, ordered, wall_seconds=time.perf_counter() - start, resumed_folds=resumed)
    report.write_cv_report(run_dir, summary, arrays.train_x[:9], arrays.train_y[:9])
    if summary["mean"] is not None:
        print(f"Accuracy: mean={100 * summary['mean']:.3f} std={100 * summary['std']:.3f}, n={summary['n']}")
    else:
        print(f"Accuracy: none, {summary['status']} ({summary['n_diverged']} of {len(ordered)} folds diverged)")
    return summary
