"""A fit's parts built from the run plan: the data module, the model, the Trainer; and one fold trained end to end."""

from __future__ import annotations

import math
import time
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from digitnet import layout
from digitnet.config.plan import RunPlan
from digitnet.core.checkpoints import checkpoint_dict
from digitnet.core.data import MNISTArrays
from digitnet.core.module import DigitClassifier, Diverged, MNISTDataModule, fit
from digitnet.core.nets import with_tta
from digitnet.engine.callbacks import CHANCE_LEVEL, EpochLines, FoldProgressBar
from digitnet.errors import UserError
from digitnet.logs import say
from digitnet.report import results


def fold_label(plan: RunPlan, fold: int) -> str:
    """Folds are numbered from 0 everywhere: terminal lines, folds/fold_K.json, tb/fold_K, reports."""
    return f"fold {fold} of {plan.n_folds}"


def make_datamodule(plan: RunPlan, arrays: MNISTArrays, fold: int | None) -> MNISTDataModule:
    """Fold `fold`'s split (None: all training images), shuffled with seed + fold, on the plan's data device."""
    dm = MNISTDataModule(
        arrays,
        fold=fold,
        n_folds=plan.n_folds,
        cv_seed=plan.cv_seed,
        limit=plan.limit,
        batch_size=plan.batch_size,
        eval_batch_size=plan.eval_batch_size,
        scaling=plan.scaling,
        shuffle_seed=plan.seed + (fold or 0),
    )
    return dm.to_device(plan.device) if plan.device != "cpu" else dm


def make_model(plan: RunPlan, dm: MNISTDataModule, fold: int | None = None) -> DigitClassifier:
    """Fold `fold`'s model (None: the final fit's); its augmentation is seeded as its batches are, seed + fold."""
    return DigitClassifier(
        arch=plan.model,
        optimizer=plan.optimizer,
        scaling=plan.scaling,
        pixel_mean=dm.pixel_mean,
        pixel_std=dm.pixel_std,
        augment=plan.augment,
        scheduler=plan.scheduler,
        label_smoothing=plan.label_smoothing,
        augment_seed=plan.seed + (fold or 0),
        dropout=plan.dropout,
        tta=plan.tta,
    )


def fit_loggers(plan: RunPlan, run_dir: Path, version: str) -> list:
    """The Lightning loggers of one fit (`version`: fold_K or final) that logger=[...] selected: TensorBoard in
    run_dir/tb/VERSION, CSV in run_dir/csv/VERSION. MLflow is not among them: report.tracking records a run from its
    results, in the parent process."""
    loggers = []
    if "tensorboard" in plan.loggers:
        # hp_metric off: the job's one HPARAMS entry (with hp/cv_mean, hp/cv_std) is written by results.log_hparams.
        loggers.append(TensorBoardLogger(run_dir, name=layout.TB, version=version, default_hp_metric=False))
    if "csv" in plan.loggers:
        loggers.append(CSVLogger(run_dir, name=layout.CSV, version=version))
    return loggers


def tb_writer(loggers: list):
    """The TensorBoard SummaryWriter among a fit's loggers (sample images, confusion matrices), or None."""
    return next((lg.experiment for lg in loggers if isinstance(lg, TensorBoardLogger)), None)


def make_trainer(
    plan: RunPlan, logger, callbacks: list, label: str, profile: Path | None = None, **overrides
) -> pl.Trainer:
    """The plan's Trainer, with digitnet's logger and callbacks, and the plan's way of showing progress. A profiler
    named by trainer.profiler writes its report to `profile` (run_dir/profiler/NAME), not to a log nobody reads."""
    if plan.progress == "bar":
        callbacks = [*callbacks, FoldProgressBar(label)]
    elif plan.progress == "epochs":
        callbacks = [*callbacks, EpochLines(label)]
    arguments = {**plan.trainer, **overrides}
    if profile is not None and arguments.get("profiler") in PROFILERS:
        from lightning.pytorch import profilers

        kind = getattr(profilers, PROFILERS[arguments["profiler"]])
        arguments["profiler"] = kind(dirpath=profile.parent, filename=profile.name)
    return pl.Trainer(**arguments, logger=logger, callbacks=callbacks, enable_checkpointing=False)


PROFILERS = {"simple": "SimpleProfiler", "advanced": "AdvancedProfiler", "pytorch": "PyTorchProfiler"}


def say_profile(profile: Path) -> None:
    """The profiler's report file, named on the terminal (Lightning writes it as `fit-NAME.txt`)."""
    for report in sorted(profile.parent.glob(f"*{profile.name}*")):
        say(f"profiler report: {report}")


def check_trainer(plan: RunPlan) -> None:
    """Let Lightning check the trainer arguments before any data is read, on a Trainer built as a fold's is."""
    try:
        make_trainer(plan, logger=True, callbacks=[], label="check")
    except Exception as exc:  # noqa: BLE001 - MisconfigurationException, ValueError, TypeError, ...
        raise UserError(f"trainer: {str(exc).strip() or type(exc).__name__}", key="trainer") from None


def fold_result(fold, status, reason, seconds, dm, history, net, writer, plan: RunPlan, counted=None) -> dict:
    """A finished fold as cv_summary.json and the fold file hold it; the same for every runner. Its score is the
    last epoch's val_acc, or with test-time augmentation (tta=shift) that of the trained net, which the validation
    epochs (the learning curves) do without: it costs 5 forward passes an image. Its figure without TTA is then
    scored the same way (full precision, not trainer.precision's validation), so the two differ by TTA alone.
    `counted`: the net's confusion matrix where the last validation pass already gave it (last_confusion)."""
    eval_batch, tta = plan.eval_batch_size, plan.tta
    score = history[-1].get("val_acc") if status == "ok" and history else None
    matrix = None
    if tta != "none" and status == "ok" and score is not None and math.isfinite(score):
        plain = counted if counted is not None else results.confusion(net, dm.val_x, dm.val_y, eval_batch)
        matrix = results.confusion(with_tta(net, tta), dm.val_x, dm.val_y, eval_batch)
        score, without_tta = float(matrix.trace() / matrix.sum()), float(plain.trace() / plain.sum())
        if writer is not None:  # the fold's score, beside the learning curves' val_acc without TTA
            writer.add_scalar("fold/score", score)
            writer.add_scalar("fold/score_without_tta", without_tta)
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
    if matrix is not None:
        result.update(tta=tta, score_without_tta=without_tta)
    if status == "ok":
        result["at_chance"] = score <= CHANCE_LEVEL  # finite loss, but nothing learned: flagged in every report
        if matrix is None:
            matrix = counted if counted is not None else results.confusion(net, dm.val_x, dm.val_y, eval_batch)
        result["confusion_matrix"] = matrix.tolist()
        if writer is not None:
            results.log_fold_images(writer, dm.val_x[:32], result["confusion_matrix"])
    return result


def fold_hparams(plan: RunPlan, dm: MNISTDataModule, fold: int) -> dict:
    """A fold model's checkpoint hparams: what final.ckpt holds (plain values), and its fold (so that fold files
    swapped between folds are noticed)."""
    return {
        "arch": plan.model,
        "optimizer": plan.optimizer,
        "scaling": plan.scaling,
        "pixel_mean": dm.pixel_mean,
        "pixel_std": dm.pixel_std,
        "dropout": plan.dropout,
        "tta": plan.tta,
        "fold": fold,
    }


def train_fold(plan: RunPlan, arrays: MNISTArrays, fold: int, run_dir: Path, callbacks: tuple = ()):
    """A fresh model, optimizer, Trainer and seed (seed + fold) for one fold. Returns its result and its
    checkpoint (None if it diverged), not yet saved."""
    pl.seed_everything(plan.seed + fold, verbose=False)
    dm = make_datamodule(plan, arrays, fold)
    model = make_model(plan, dm, fold)
    profile = run_dir / layout.PROFILER / f"fold_{fold}"
    loggers = fit_loggers(plan, run_dir, f"fold_{fold}")
    trainer = make_trainer(plan, loggers, list(callbacks), fold_label(plan, fold), profile)
    start = time.perf_counter()
    status, reason = "ok", None
    try:
        fit(trainer, model, datamodule=dm)
    except Diverged as exc:
        status, reason = "diverged", str(exc)
    seconds = time.perf_counter() - start
    counted = model.last_confusion(len(dm.val_y))
    result = fold_result(
        fold, status, reason, seconds, dm, model.histories[0], model, tb_writer(loggers), plan, counted
    )
    for logger in loggers:
        logger.finalize("success")
    if "profiler" in plan.trainer:
        say_profile(profile)
    weights = checkpoint_dict(model.net, fold_hparams(plan, dm, fold)) if result["status"] == "ok" else None
    return result, weights
