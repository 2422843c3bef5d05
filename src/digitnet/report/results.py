"""What a run reports: the CV summary and the holdout metrics (JSON, written atomically), their figures, and
TensorBoard extras (sample images, confusion matrices, the job's HPARAMS entry)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from digitnet import layout
from digitnet.errors import UserError
from digitnet.layout import write_json_atomic
from digitnet.report.figures import boxplot_figure, confusion_figure, learning_curves_figure, samples_figure, save


def cv_summary(plan, folds: list[dict], wall_seconds: float, resumed_folds: int = 0) -> dict:
    ok = [f for f in folds if f["status"] == "ok"]
    diverged = [f for f in folds if f["status"] == "diverged"]
    scores = [f["score"] for f in ok]
    complete = len(ok) == len(folds)
    return {
        "model": plan.model,
        "task": "cv",
        "status": "ok" if complete else "diverged",
        "fold_scores": [f["score"] for f in folds],
        # Population std (ddof=0), as the tutorial's numpy.std. Only a fully trained set of folds gets a mean.
        "mean": float(np.mean(scores)) if complete else None,
        "std": float(np.std(scores)) if complete else None,
        "n": len(scores),
        "n_diverged": len(diverged),
        "n_at_chance": sum(bool(f.get("at_chance")) for f in ok),  # learned nothing (engine.callbacks.CHANCE_LEVEL)
        # The last run's wall time; folds finished by earlier runs (resumed_folds) are not in it.
        "wall_seconds": round(wall_seconds, 2),
        "resumed_folds": resumed_folds,
        "train_seconds": round(sum(f["seconds"] for f in folds), 2),
        **_without_tta(plan, folds, complete),
        "folds": folds,
        "history": [f["history"] for f in folds],
        "plan": plan.as_dict(),  # as it ran: every auto settled
    }


def usable(summary: dict) -> bool:
    """Whether a CV run gave a result: every fold trained (none diverged) and not every fold at chance."""
    return summary["status"] == "ok" and summary["n_at_chance"] < summary["n"]


def _without_tta(plan, folds: list[dict], complete: bool) -> dict:
    """With test-time augmentation, the same folds' figures without it (engine.fit.fold_result), beside the scores."""
    if plan.tta == "none":
        return {}
    scores = [f.get("score_without_tta") for f in folds]
    return {
        "tta": plan.tta,
        "fold_scores_without_tta": scores,
        "mean_without_tta": float(np.mean(scores)) if complete else None,
    }


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    model.eval()
    weight = next(model.parameters())  # trainer.precision=64-true leaves the net in float64
    dtype = weight.dtype if x.is_floating_point() else x.dtype
    return torch.cat(
        [model(x[i : i + batch_size].to(weight.device, dtype)).float().cpu() for i in range(0, len(x), batch_size)]
    )


def confusion_matrix(preds: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Counts of (true digit, predicted digit): row = the true one."""
    return torch.bincount(10 * y.cpu().long() + preds.cpu().long(), minlength=100).reshape(10, 10)


def confusion(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    return confusion_matrix(predict_logits(model, x, batch_size).argmax(1), y)


def log_fold_images(writer, sample_x: torch.Tensor, matrix) -> None:
    """Sample images and the validation confusion matrix, in the fold's TensorBoard run (IMAGES tab)."""
    from torchvision.utils import make_grid

    writer.add_image("samples/validation", make_grid(sample_x.cpu(), nrow=8, pad_value=1.0), 0)
    fig = confusion_figure(matrix, "validation confusion matrix")
    writer.add_figure("confusion_matrix/validation", fig, 0)  # closes the figure


def write_cv_report(run_dir: Path, summary: dict, sample_x: torch.Tensor, sample_y: torch.Tensor) -> None:
    write_json_atomic(run_dir / layout.CV_SUMMARY, summary)
    save(learning_curves_figure(summary["history"]), run_dir / layout.CV_FIGURES[0])
    scores = [s for s in summary["fold_scores"] if s is not None]
    save(
        boxplot_figure({summary["model"]: scores}, f"{summary['model']}: {len(scores)}-fold CV"),
        run_dir / layout.CV_FIGURES[1],
    )
    save(samples_figure(sample_x, sample_y), run_dir / layout.CV_FIGURES[2])
    if "tensorboard" in summary["plan"]["loggers"]:
        log_hparams(run_dir, summary)


def log_hparams(run_dir: Path, summary: dict) -> None:
    """One HPARAMS entry per job: the plan as it ran, with hp/cv_mean and hp/cv_std."""
    from lightning.pytorch.loggers import TensorBoardLogger

    metrics = {"hp/cv_mean": summary["mean"], "hp/cv_std": summary["std"]}
    logger = TensorBoardLogger(run_dir, name=layout.TB, version="cv", default_hp_metric=False)
    logger.log_hyperparams(summary["plan"], {k: (float("nan") if v is None else v) for k, v in metrics.items()})
    logger.finalize("success")


def holdout_metrics(model: torch.nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> dict:
    """Accuracy, loss, per-class accuracy and confusion matrix of a model on the 10k holdout."""
    from digitnet.core.data import to_unit

    logits = predict_logits(model, to_unit(x_uint8), batch_size)
    if not torch.isfinite(logits).all():  # argmax of NaN is 0: the matrix would say "all zeros" and the loss NaN
        bad = int((~torch.isfinite(logits).all(1)).sum())
        raise UserError(
            f"the model's outputs are not finite (NaN or inf) for {bad} of the {len(y)} holdout images: "
            "its weights or pixel statistics are broken; retrain it, or use another checkpoint"
        )
    matrix = confusion_matrix(logits.argmax(1), y)
    counts = matrix.sum(1)  # a class with no holdout images has no accuracy (None), not 0
    per_class = [None if n == 0 else float(c / n) for c, n in zip(matrix.diag().tolist(), counts.tolist())]
    return {
        "accuracy": float(matrix.diag().sum() / matrix.sum()),
        "loss": float(torch.nn.functional.cross_entropy(logits, y)),
        "n": len(y),
        "per_class_accuracy": {str(d): None if a is None else round(a, 6) for d, a in enumerate(per_class)},
        "confusion_matrix": matrix.tolist(),
    }


def write_holdout_report(run_dir: Path, metrics: dict, title: str) -> None:
    write_json_atomic(run_dir / layout.TEST_METRICS, metrics)
    save(confusion_figure(metrics["confusion_matrix"], title), run_dir / layout.HOLDOUT_FIGURE)
