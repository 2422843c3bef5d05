"""Reports: JSON summaries (written atomically), matplotlib figures, and TensorBoard extras."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchmetrics.functional.classification import multiclass_confusion_matrix  # noqa: E402

from digitnet.errors import UserError  # noqa: E402
from digitnet.files import write_json_atomic  # noqa: E402,F401 - reports write JSON through it

TRAIN_COLOR, VAL_COLOR = "tab:blue", "tab:orange"


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
        "n_at_chance": sum(bool(f.get("at_chance")) for f in ok),  # learned nothing (callbacks.CHANCE_LEVEL)
        # The last run's wall time; folds finished by earlier runs (resumed_folds) are not in it.
        "wall_seconds": round(wall_seconds, 2),
        "resumed_folds": resumed_folds,
        "train_seconds": round(sum(f["seconds"] for f in folds), 2),
        **_without_tta(plan, folds, complete),
        "folds": folds,
        "history": [f["history"] for f in folds],
        "plan": plan.as_dict(),  # as it ran: every auto settled
    }


def _without_tta(plan, folds: list[dict], complete: bool) -> dict:
    """With test-time augmentation, the same folds' figures without it (training.fold_result), beside the scores."""
    if plan.tta == "none":
        return {}
    scores = [f.get("score_without_tta") for f in folds]
    return {"tta": plan.tta, "fold_scores_without_tta": scores,
            "mean_without_tta": float(np.mean(scores)) if complete else None}


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    model.eval()
    weight = next(model.parameters())  # trainer.precision=64-true leaves the net in float64
    dtype = weight.dtype if x.is_floating_point() else x.dtype
    return torch.cat([model(x[i : i + batch_size].to(weight.device, dtype)).float().cpu()
                      for i in range(0, len(x), batch_size)])


def confusion(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    preds = predict_logits(model, x, batch_size).argmax(1)
    return multiclass_confusion_matrix(preds, y.cpu(), num_classes=10)


def confusion_figure(matrix, title: str):
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > matrix.max() / 2 else "black")
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return fig


def samples_figure(images: torch.Tensor, labels: torch.Tensor):
    fig, axes = plt.subplots(3, 3, figsize=(5, 5))
    for ax, img, label in zip(axes.flat, images, labels):
        ax.imshow(img.squeeze().numpy(), cmap="gray")
        ax.set_title(str(int(label)), fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


def log_fold_images(writer, sample_x: torch.Tensor, matrix) -> None:
    """Sample images and the validation confusion matrix, in the fold's TensorBoard run (IMAGES tab)."""
    from torchvision.utils import make_grid

    writer.add_image("samples/validation", make_grid(sample_x.cpu(), nrow=8, pad_value=1.0), 0)
    fig = confusion_figure(matrix, "validation confusion matrix")
    writer.add_figure("confusion_matrix/validation", fig, 0)  # closes the figure


def learning_curves_figure(histories: list[list[dict]]):
    """The tutorial's two panels; train blue, validation orange, one line per fold."""
    fig, (ax_loss, ax_acc) = plt.subplots(2, 1, figsize=(7, 8), sharex=True)
    labelled = False
    for epochs in histories:
        if not epochs:  # a fold that diverged in its first epoch
            continue
        x = [e["epoch"] + 1 for e in epochs]
        marker = "o" if len(epochs) < 20 else None  # a 1-epoch run is a point, which a bare line would not show
        for ax, key in ((ax_loss, "loss"), (ax_acc, "acc")):
            ax.plot(x, [e.get(f"train_{key}", np.nan) for e in epochs], color=TRAIN_COLOR, marker=marker,
                    label=None if labelled else "train")
            ax.plot(x, [e.get(f"val_{key}", np.nan) for e in epochs], color=VAL_COLOR, marker=marker,
                    label=None if labelled else "validation")
        labelled = True
    ax_loss.set(title="Cross Entropy Loss", ylabel="loss")
    ax_acc.set(title="Classification Accuracy", ylabel="accuracy", xlabel="epoch")
    for ax in (ax_loss, ax_acc):
        if labelled:
            ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def boxplot_figure(groups: dict[str, list[float]], title: str):
    """Fold accuracies per group. Up to 6 groups side by side; more lie one per row, so every label stays readable."""
    names = list(groups)
    data = [[100 * s for s in groups[n]] for n in names]
    if len(names) <= 6:
        fig, ax = plt.subplots(figsize=(max(4, 1.3 * len(names) + 2), 5))
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=20 if len(names) > 3 else 0,
                      ha="right" if len(names) > 3 else "center")
        ax.set(ylabel="validation accuracy (%)", title=title)
        ax.grid(alpha=0.3, axis="y")
    else:
        fig, ax = plt.subplots(figsize=(9, 1.5 + 0.35 * len(names)))
        ax.boxplot(data[::-1], showmeans=True, vert=False)  # first job on top
        ax.set_yticks(range(1, len(names) + 1), names[::-1], fontsize=8)
        ax.set(xlabel="validation accuracy (%)", title=title)
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def save(fig, path: Path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_cv_report(run_dir: Path, summary: dict, sample_x: torch.Tensor, sample_y: torch.Tensor) -> None:
    write_json_atomic(run_dir / "cv_summary.json", summary)
    save(learning_curves_figure(summary["history"]), run_dir / "learning_curves.png")
    scores = [s for s in summary["fold_scores"] if s is not None]
    save(boxplot_figure({summary["model"]: scores}, f"{summary['model']}: {len(scores)}-fold CV"), run_dir / "cv_boxplot.png")
    save(samples_figure(sample_x, sample_y), run_dir / "samples.png")
    log_hparams(run_dir, summary)


def log_hparams(run_dir: Path, summary: dict) -> None:
    """One HPARAMS entry per job: the plan as it ran, with hp/cv_mean and hp/cv_std."""
    from lightning.pytorch.loggers import TensorBoardLogger

    metrics = {"hp/cv_mean": summary["mean"], "hp/cv_std": summary["std"]}
    logger = TensorBoardLogger(run_dir, name="tb", version="cv", default_hp_metric=False)
    logger.log_hyperparams(summary["plan"], {k: (float("nan") if v is None else v) for k, v in metrics.items()})
    logger.finalize("success")


def holdout_metrics(model: torch.nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> dict:
    """Accuracy, loss, per-class accuracy and confusion matrix of a model on the 10k holdout."""
    from digitnet.data import to_unit

    logits = predict_logits(model, to_unit(x_uint8), batch_size)
    if not torch.isfinite(logits).all():  # argmax of NaN is 0: the matrix would say "all zeros" and the loss NaN
        bad = int((~torch.isfinite(logits).all(1)).sum())
        raise UserError(f"the model's outputs are not finite (NaN or inf) for {bad} of the {len(y)} holdout images: "
                        "its weights or pixel statistics are broken; retrain it, or use another checkpoint")
    matrix = multiclass_confusion_matrix(logits.argmax(1), y, num_classes=10)
    per_class = (matrix.diag().double() / matrix.sum(1).clamp(min=1)).tolist()
    return {
        "accuracy": float(matrix.diag().sum() / matrix.sum()),
        "loss": float(torch.nn.functional.cross_entropy(logits, y)),
        "n": len(y),
        "per_class_accuracy": {str(d): round(a, 6) for d, a in enumerate(per_class)},
        "confusion_matrix": matrix.tolist(),
    }


def write_holdout_report(run_dir: Path, metrics: dict, title: str) -> None:
    write_json_atomic(run_dir / "test_metrics.json", metrics)
    save(confusion_figure(metrics["confusion_matrix"], title), run_dir / "confusion_matrix.png")
