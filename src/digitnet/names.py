"""The closed lists: every name a config, a plan, a checkpoint or a report may hold. Standard library only, so that
the config schema, the plan and the checks import nothing heavy."""

from __future__ import annotations

from enum import Enum


class Task(Enum):
    cv = "cv"  # k-fold cross-validation on the training set
    final = "final"  # fit on all of it, save final.ckpt, score the holdout once


class Arch(Enum):
    baseline = "baseline"
    batchnorm = "batchnorm"
    deep = "deep"
    deepbn = "deepbn"
    vgg = "vgg"


class Scaling(Enum):
    normalize = "normalize"  # x/255
    center = "center"  # minus the training images' mean
    standardize = "standardize"  # and divided by their std


class TTA(Enum):
    none = "none"
    shift = "shift"  # the image and its four one-pixel shifts, probabilities averaged


class Augment(Enum):
    none = "none"
    affine = "affine"


class Schedule(Enum):
    none = "none"
    onecycle = "onecycle"
    cosine = "cosine"


class Runner(Enum):
    sequential = "sequential"  # one fold after another, in this process
    packed = "packed"  # all folds at once as one packed net
    processes = "processes"  # a fold per worker process


BATCHNORM_ARCHS = ("batchnorm", "deepbn", "vgg")  # need two or more images a training batch
DROPOUT_ARCHS = ("deepbn",)  # take model.dropout


def names(kind: type[Enum]) -> list[str]:
    return [member.value for member in kind]
