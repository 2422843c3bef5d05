"""The reports' figures (matplotlib, Agg): confusion matrices, sample images, learning curves, box plots."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

TRAIN_COLOR, VAL_COLOR = "tab:blue", "tab:orange"


def confusion_figure(matrix, title: str):
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > matrix.max() / 2 else "black")
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true", title=title)
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.09, top=0.94)  # fixed: tight_layout would draw its 100 texts
    return fig


def samples_figure(images, labels):
    """The first 9 training images (tensors) with their labels."""
    fig, axes = plt.subplots(3, 3, figsize=(5, 5))
    for ax, img, label in zip(axes.flat, images, labels):
        ax.imshow(img.squeeze().numpy(), cmap="gray")
        ax.set_title(str(int(label)), fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


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
            ax.plot(
                x,
                [e.get(f"train_{key}", np.nan) for e in epochs],
                color=TRAIN_COLOR,
                marker=marker,
                label=None if labelled else "train",
            )
            ax.plot(
                x,
                [e.get(f"val_{key}", np.nan) for e in epochs],
                color=VAL_COLOR,
                marker=marker,
                label=None if labelled else "validation",
            )
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
        ax.set_xticks(
            range(1, len(names) + 1),
            names,
            rotation=20 if len(names) > 3 else 0,
            ha="right" if len(names) > 3 else "center",
        )
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
