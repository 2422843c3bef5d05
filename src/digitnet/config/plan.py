"""The run plan: what a schema cannot say about the composed config, checked, and every `auto` settled, once.

The schema (schema.py) has refused wrong types, unknown keys and choices. `make_plan` adds the ranges (RANGES), the
rules that tie keys together or would skip the validation that scores a fold, and the machine's choices: the device,
how the folds run (one after another, packed into one net, or in worker processes), threads, the CUDA graph. The plan
is a frozen dataclass of plain values: it pickles to fold workers, and the reports record it as it ran. No torch
until the cheap checks have passed: a bad value is reported before torch's import would have finished."""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import NamedTuple

from omegaconf import DictConfig

from digitnet.config.schema import checked
from digitnet.errors import ConfigError, UserError
from digitnet.names import BATCHNORM_ARCHS, DROPOUT_ARCHS

SEED_MAX = 2**32 - 1  # numpy's and Lightning's seeds are 32-bit; fold k uses seed + k
COUNT_MAX = 2**31 - 1  # a count beyond this overflows the data loader
# Packing K folds into one net is exact when the optimizer's update of each weight entry depends only on that entry's
# gradient and state (elementwise). Each of these has a float64 packed-equals-sequential test; others couple entries.
PACKABLE_OPTIMIZERS = ("torch.optim.SGD", "torch.optim.Adam", "torch.optim.AdamW")
# cv.workers=auto trains a CV this small (training images x epochs, all folds) in this process: a worker process's
# start (torch and Lightning imported again) costs more than workers win back on it (docs/performance.md).
SMALL_CV_WORK = 100_000
PRECISION_ALIASES = {"32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed"}  # Lightning's own
# Set by digitnet for every fit: TensorBoard under the run dir, its own callbacks, its own checkpoints.
OWNED_TRAINER_ARGS = ("logger", "callbacks", "enable_checkpointing", "default_root_dir")
# Plan keys that never change a fold's result, so a resumed run may differ in them: where things are shown and
# logged, and how the folds are scheduled (sequential, processes and packed give the same folds; tested).
NOT_IN_FINGERPRINT = (
    "task",
    "data_root",
    "download",
    "eval_batch_size",
    "runner",
    "processes",
    "threads",
    "cuda_graph",
    "progress",
    "notes",
    "loggers",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.profiler",
)
CV_ONLY = ("n_folds", "cv_seed")  # not part of what a final fit depends on
# The config key of each plan field, where they differ: what a resume refusal names.
CONFIG_KEYS = {
    "model": "model.name",
    "dropout": "model.dropout",
    "label_smoothing": "loss.label_smoothing",
    "limit": "data.limit",
    "batch_size": "data.batch_size",
    "scaling": "data.scaling",
    "n_folds": "cv.n_folds",
    "cv_seed": "cv.seed",
    "device": "trainer.accelerator",
    "tta": "tta.name",
    "data_digest": "the data (the images and labels in data.root)",
}


class Range(NamedTuple):
    low: float
    high: float = math.inf
    whole: bool = False
    open_low: bool = False
    open_high: bool = False
    hint: str = ""

    def problem(self, value) -> str | None:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.whole and not (number and float(value).is_integer()):
            return "must be a whole number"
        if not number or not math.isfinite(value):
            return "must be a finite number"
        low_ok = value > self.low if self.open_low else value >= self.low
        high_ok = value < self.high if self.open_high else value <= self.high
        if low_ok and high_ok:
            return None
        show = lambda x: str(int(x)) if float(x).is_integer() else f"{x:g}"  # noqa: E731
        lower = f"{'>' if self.open_low else 'at least'} {show(self.low)}"
        upper = f"{'<' if self.open_high else 'at most'} {show(self.high)}"
        if self.high in (math.inf, COUNT_MAX):  # no real upper bound: say the side that failed
            return f"must be {lower}" if not low_ok else f"must be {upper}"
        return f"must be {lower} and {upper}"


# Every key with a range; a key a config does not hold is not checked. cv.* keys are not checked for task=final.
RANGES = {
    "seed": Range(0, SEED_MAX, whole=True),
    "cv.seed": Range(0, SEED_MAX, whole=True),
    "data.limit": Range(0, COUNT_MAX, whole=True, hint="0 means all training images"),
    "data.batch_size": Range(1, COUNT_MAX, whole=True, hint="the tutorial uses 32"),
    "data.eval_batch_size": Range(1, COUNT_MAX, whole=True, hint="or auto"),
    "cv.n_folds": Range(2, COUNT_MAX, whole=True, hint="k-fold CV needs at least 2 folds (default 5)"),
    "cv.workers": Range(1, COUNT_MAX, whole=True, hint="or auto (1: folds one after another)"),
    "model.dropout": Range(0, 1, open_high=True),
    "loss.label_smoothing": Range(0, 1, open_high=True),
    "optimizer.lr": Range(0, open_low=True, hint="the tutorial uses 0.01"),
    "optimizer.momentum": Range(0, 1, open_high=True, hint="the tutorial uses 0.9"),
    "optimizer.dampening": Range(0, 1),
    "optimizer.weight_decay": Range(0),
    "optimizer.eps": Range(0, open_low=True, hint="Adam's default is 1e-8"),
    "augment.degrees": Range(0, 180),
    "augment.scale": Range(0, 1, open_high=True),
    "augment.shift": Range(0, 1),
    "scheduler.pct_start": Range(0, 1, open_low=True, open_high=True),
    "trainer.max_epochs": Range(1, COUNT_MAX, whole=True, hint="the tutorial trains 10 epochs"),
    "trainer.check_val_every_n_epoch": Range(1, COUNT_MAX, whole=True),
    "trainer.log_every_n_steps": Range(1, COUNT_MAX, whole=True),
    "trainer.num_sanity_val_steps": Range(-1, COUNT_MAX, whole=True),
    "trainer.accumulate_grad_batches": Range(1, COUNT_MAX, whole=True),
    "trainer.gradient_clip_val": Range(0),
    "trainer.max_steps": Range(-1, COUNT_MAX, whole=True),
    "trainer.min_steps": Range(0, COUNT_MAX, whole=True),
    "trainer.min_epochs": Range(0, COUNT_MAX, whole=True),
}


SIZES = {"optimizer.betas": 2}


@dataclass(frozen=True)
class RunPlan:
    """What a run does, with every choice settled. Plain values only."""

    task: str  # cv | final
    model: str  # an Arch
    seed: int  # fold k (and the final fit, k=0) seeds everything with seed + k
    data_root: str
    download: bool
    limit: int  # first N training images, 0 = all
    batch_size: int
    eval_batch_size: int
    scaling: str
    optimizer: dict  # {"_target_": "torch.optim.SGD", "lr": 0.01, ...}: built per fold, stored in checkpoints
    trainer: dict  # lightning Trainer arguments, accelerator and precision resolved
    n_folds: int
    cv_seed: int  # KFold(n_folds, shuffle=True, random_state=cv_seed)
    device: str  # cpu | cuda; on cuda the data lives there too, batches gathered by index
    runner: str  # a Runner
    processes: int  # fold worker processes (runner=processes), else 1
    threads: int  # torch threads of the run (the cores); workers share them
    cuda_graph: bool  # packed runner: one captured CUDA graph per training step
    progress: str  # bar (Lightning's, on a terminal) | epochs (a line per epoch: workers, logs, CI) | off
    augment: dict = field(default_factory=lambda: {"name": "none"})  # training batches only
    scheduler: dict = field(default_factory=lambda: {"name": "none"})  # LR schedule, stepped every batch
    label_smoothing: float = 0.0
    dropout: float = 0.0  # model.dropout (deepbn), training only
    tta: str = "none"  # how fold scores, the holdout score and checkpoints' predictions are made
    loggers: dict = field(default_factory=lambda: {"tensorboard": {}})  # the selected ones, with their options
    data_digest: str = ""  # what the images and labels in use are (core.data.digest), set once they are read
    notes: tuple = ()  # why an `auto` chose what it chose, where that is not the obvious choice

    def as_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))  # tuples as lists: what the JSON reports hold

    @classmethod
    def from_dict(cls, saved: dict) -> RunPlan:
        """A run dir's plan.json, also an older digitnet's: fields this one lacks are dropped, those it added take
        their defaults. ValueError if it is no plan."""
        known = {f.name for f in fields(cls)}
        try:
            plan = cls(**{k: v for k, v in saved.items() if k in known} | {"notes": ()})
            plan.fingerprint()
        except (TypeError, AttributeError) as exc:
            raise ValueError(str(exc)) from None
        if not isinstance(plan.trainer, dict) or not isinstance(plan.optimizer, dict):
            raise ValueError("trainer and optimizer must be mappings")
        return plan

    def fingerprint_fields(self) -> dict:
        """What a run's results depend on: everything but NOT_IN_FINGERPRINT (and the CV settings, for task=final)."""
        fields = self.as_dict()
        for key in NOT_IN_FINGERPRINT + (CV_ONLY if self.task == "final" else ()):
            group, _, sub = key.partition(".")
            (fields[group].pop(sub, None) if sub else fields.pop(group, None))
        return fields

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.fingerprint_fields(), sort_keys=True).encode()).hexdigest()[:16]

    def for_data(self, arrays) -> RunPlan:
        """The plan for the data as read: its digest, and the checks and notes that depend on its size."""
        from digitnet.core.data import digest

        n_images = len(arrays.train_y)
        notes = list(self.notes)
        limit = self.limit if self.limit < n_images else 0
        if limit != self.limit:
            notes.append(f"data.limit={self.limit} is more than the {n_images} training images: using all of them")
        n = limit or n_images
        if self.task == "cv" and self.n_folds > n:
            raise ConfigError("cv.n_folds", self.n_folds, f"more folds than the {n} training images", "lower it")
        trained = n - math.ceil(n / self.n_folds) if self.task == "cv" else n  # the smallest training set
        batches = trained // self.batch_size if trained % self.batch_size == 1 else -(-trained // self.batch_size)
        fraction = self.trainer.get("limit_train_batches")  # a last batch of one image is dropped (core.data)
        if isinstance(fraction, float) and int(batches * fraction) < 1:
            raise ConfigError(
                "trainer.limit_train_batches",
                fraction,
                f"leaves none of the {batches} batches of an epoch",
                f"give at least {1 / batches:.2g}, or a whole number of batches",
            )
        if self.batch_size > trained:
            notes.append(
                f"data.batch_size={self.batch_size} is more than the {trained} training images "
                f"{'of a fold' if self.task == 'cv' else 'of the fit'}: each epoch is one batch of all"
            )
        runner, graph = self.runner, self.cuda_graph
        if self.task == "cv" and runner == "packed" and n % self.n_folds:
            notes.append(
                f"folds one after another, not packed: {n} images do not split into {self.n_folds} equal "
                f"folds (set data.limit to a multiple of {self.n_folds} to pack them)"
            )
            runner, graph = "sequential", False
        used = [arrays.train_x[:n], arrays.train_y[:n]] + (
            [arrays.test_x, arrays.test_y] if self.task == "final" else []
        )
        return replace(
            self, limit=limit, runner=runner, cuda_graph=graph, notes=tuple(notes), data_digest=digest(*used)
        )

    def describe(self) -> str:
        """One line for the terminal: what will run, and where."""
        if self.task == "final":
            how = "fit on all training images, then score the holdout"
        elif self.runner == "processes":
            how = f"{self.n_folds} folds in {self.processes} processes, sharing {self.threads} thread(s)"
        elif self.runner == "packed":
            how = f"{self.n_folds} folds at once, packed into one net" + (", CUDA graph" if self.cuda_graph else "")
        else:
            how = f"{self.n_folds} folds one after another, {self.threads} thread(s)"
        precision = self.trainer["precision"]
        return f"digitnet: task={self.task} model={self.model}: {how}; on {self.device}, precision {precision}"


def differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """'key=saved there, current now' for every leaf that differs (the resume refusal names them)."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "(unset)"), current.get(key, "(unset)")
        name = key if prefix else CONFIG_KEYS.get(key, key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{name}.")
        elif a != b:
            out.append(f"{prefix}{name}={a!r} there, {b!r} now")
    return out


def _plain(node) -> dict:
    """A group node as plain values: enums as their names, unset optional arguments left out."""
    values = asdict(node) if is_dataclass(node) else dict(node)
    return {k: getattr(v, "value", v) for k, v in values.items() if v is not None}


def _check_ranges(values: dict, task: str) -> None:
    for key, rule in RANGES.items():
        value = values.get(key, "auto")  # absent, or an `auto` that the plan settles
        if value != "auto" and not (task == "final" and key.startswith("cv.")) and (problem := rule.problem(value)):
            raise ConfigError(key, value, problem, rule.hint)
    for key, size in SIZES.items():  # list-valued keys of a fixed length, which torch reads by index
        value = values.get(key)
        if value is not None and (not isinstance(value, list) or len(value) != size):
            raise ConfigError(key, value, f"takes {size} values", "for Adam, e.g. [0.9,0.999]")


def _switch(key: str, value) -> bool | None:
    """auto -> None; true / false as they are."""
    if not isinstance(value, bool) and value != "auto":
        raise ConfigError(key, value, "must be auto, true or false")
    return None if value == "auto" else value


def make_plan(
    cfg: DictConfig, *, cuda_available: bool | None = None, cores: int | None = None, tty: bool | None = None
) -> RunPlan:
    """Check the composed config and settle every choice. `cuda_available`, `cores` and `tty` (is stdout a
    terminal) default to this machine's; tests pass them in to check the decisions on CPU."""
    conf, extra = checked(cfg)
    for group in ("optimizer", "augment", "scheduler"):  # typed Any: a list-shaped option file lands here as is
        node = getattr(conf, group)
        if not (is_dataclass(node) or isinstance(node, dict)):
            raise ConfigError(group, node, "the chosen option holds no keys", f"give {group} an option file of keys")
    task, model = conf.task.value, conf.model.name.value
    groups = {
        name: _plain(getattr(conf, name))
        for name in ("data", "model", "optimizer", "trainer", "cv", "augment", "scheduler", "loss", "logger")
    }
    groups["trainer"].update(extra)
    values = {f"{g}.{k}": v for g, node in groups.items() for k, v in node.items()} | {"seed": conf.seed}
    _check_ranges(values, task)
    data, cv, optimizer, scheduler = groups["data"], groups["cv"], groups["optimizer"], groups["scheduler"]
    _check_model(model, conf.model.dropout, data["batch_size"])
    _check_sizes(task, data["limit"], cv["n_folds"], conf.seed)
    trainer = _trainer(groups["trainer"], task)
    import torch  # past the cheap checks

    _check_optimizer_builds(optimizer, scheduler, torch)
    cuda_available = torch.cuda.is_available() if cuda_available is None else cuda_available
    cores = cores or torch.get_num_threads()
    device = _device(trainer, cuda_available)
    notes: list[str] = []
    runner, processes, graph = "sequential", 1, False
    if task == "cv":
        plain_steps = groups["augment"]["name"] == "none" and scheduler["name"] == "none"
        work = data["limit"] * (cv["n_folds"] - 1) * trainer["max_epochs"] or None
        runner, processes, graph = _fold_strategy(
            cv, optimizer, trainer, device, cores, notes, plain_steps, conf.model.dropout, work
        )
    # Lightning's bar needs a terminal of its own: fold workers share one, and a log file gets every redraw.
    terminal = (tty if tty is not None else sys.stdout.isatty()) and runner != "processes"
    progress = "off" if not trainer["enable_progress_bar"] else "bar" if terminal else "epochs"
    trainer["enable_progress_bar"] = progress == "bar"
    # eval_batch_size auto: 1000 on CUDA (fewer launches), 250 on CPU (docs/performance.md).
    evaluation = data["eval_batch_size"] if data["eval_batch_size"] != "auto" else 1000 if device == "cuda" else 250
    return RunPlan(
        task=task, model=model, seed=conf.seed, data_root=data["root"], download=data["download"],
        limit=data["limit"], batch_size=data["batch_size"], eval_batch_size=evaluation, scaling=data["scaling"],
        optimizer=optimizer, trainer=trainer, n_folds=cv["n_folds"], cv_seed=cv["seed"], device=device,
        runner=runner, processes=processes, threads=cores, cuda_graph=graph, progress=progress,
        augment=groups["augment"], scheduler=scheduler, label_smoothing=conf.loss.label_smoothing,
        dropout=conf.model.dropout, tta=conf.tta.name.value, notes=tuple(notes), loggers=_loggers(groups["logger"]),
    )  # fmt: skip


def _check_model(model: str, dropout: float, batch_size: int) -> None:
    if dropout and model not in DROPOUT_ARCHS:
        fix = f"use model={'|'.join(DROPOUT_ARCHS)}"
        raise ConfigError("model.dropout", dropout, f"model={model} has no dropout layers", fix)
    if model in BATCHNORM_ARCHS and batch_size < 2:
        problem = f"model={model} has BatchNorm, which needs at least 2 images a batch"
        raise ConfigError("data.batch_size", batch_size, problem, "use 2 or more (the tutorial's is 32)")


def _loggers(selection: dict) -> dict:
    """{name: options} of the loggers logger=[...] selected. An option set on one not selected would be lost."""
    from digitnet.config.schema import LoggerConf

    defaults = asdict(LoggerConf())
    for name, options in selection.items():
        changed = [key for key, value in options.items() if value != defaults[name][key] and key != "enabled"]
        if changed and not options["enabled"]:
            chosen = [n for n, o in selection.items() if o["enabled"]] + [name]
            raise ConfigError(
                f"logger.{name}.{changed[0]}",
                options[changed[0]],
                f"logger {name} is not selected",
                f"select it: logger=[{','.join(chosen)}]",
            )
    mlflow = selection["mlflow"]
    if mlflow["enabled"] and not mlflow["experiment_name"].strip():
        raise ConfigError(
            "logger.mlflow.experiment_name",
            mlflow["experiment_name"],
            "is empty",
            "name the experiment (the default is digitnet)",
        )
    if mlflow["enabled"]:
        mlflow["tracking_uri"] = settled_store(mlflow["tracking_uri"])
    return {
        name: {k: v for k, v in options.items() if k != "enabled"}
        for name, options in selection.items()
        if options["enabled"]
    }


SQLITE = "sqlite:///"


def settled_store(uri: str) -> str:
    """An MLflow store as one place, wherever a run is resumed from: a relative sqlite path (the default,
    sqlite:///outputs/mlflow.db) made absolute against the working dir."""
    if not uri.startswith(SQLITE) or uri.startswith(SQLITE + "/"):
        return uri
    return SQLITE + str(Path(uri[len(SQLITE) :]).expanduser().resolve())


def _check_sizes(task: str, limit: int, n_folds: int, seed: int) -> None:
    """Enough images for every fold to train (a one-image batch is dropped, for BatchNorm's sake), and fold seeds
    that stay 32-bit."""
    if task == "final" and limit == 1:
        raise ConfigError("data.limit", 1, "one training image trains nothing", "give 2 or more (0: all)")
    if task == "final":
        return
    if 0 < limit < n_folds:
        raise ConfigError("data.limit", limit, f"fewer images than cv.n_folds={n_folds}", "each fold needs images")
    if 0 < limit and limit - math.ceil(limit / n_folds) < 2:
        enough = next(n for n in range(limit, limit + 2 * n_folds + 4) if n - math.ceil(n / n_folds) >= 2)
        raise ConfigError(
            "data.limit",
            limit,
            f"leaves a fold of cv.n_folds={n_folds} under 2 training images",
            f"give {enough} or more",
        )
    if seed + n_folds - 1 > SEED_MAX:
        raise ConfigError("seed", seed, f"fold {n_folds - 1} would use seed {seed + n_folds - 1}, past 2**32 - 1")


def _seconds(max_time) -> float | None:
    """Lightning's max_time ("DD:HH:MM:SS" or a dict of timedelta's arguments) in seconds; None if unreadable
    (Lightning's own check then speaks)."""
    import datetime

    try:
        if isinstance(max_time, str):
            max_time = dict(zip(("days", "hours", "minutes", "seconds"), map(int, max_time.split(":")), strict=True))
        return datetime.timedelta(**max_time).total_seconds()
    except (TypeError, ValueError):
        return None


def _trainer(trainer: dict, task: str) -> dict:
    """The Trainer arguments, with the settings refused that would leave the run's files or scores not what they
    say: a fold scored on part of its validation or before its last epoch's end, a fit recorded that trained on a few
    batches, a logger or checkpoints that are digitnet's own. Lightning checks the rest when the Trainer is built."""
    cv = task == "cv"

    def refuse(key, problem, fix="remove the override"):
        raise ConfigError(f"trainer.{key}", trainer[key], problem, fix)

    for key in OWNED_TRAINER_ARGS:
        if key in trainer:
            refuse(key, "digitnet sets it for every fit (TensorBoard logs, callbacks and checkpoints in the run dir)")
    if trainer.get("devices") not in (1, "1", "auto"):
        refuse(
            "devices",
            "digitnet trains each fit on one device",
            "use 1; for several GPUs, run sweep jobs side by side (README, Scaling out)",
        )
    trainer["devices"] = 1
    for key, allowed in (("strategy", "auto"), ("num_nodes", 1)):
        if trainer.get(key, allowed) != allowed:
            refuse(key, "digitnet runs each fit in one process on one device")
    for key in ("fast_dev_run", "overfit_batches"):
        if trainer.get(key):
            refuse(
                key,
                "the fit would train on a few batches and be recorded as a real one",
                "use data.limit and trainer.max_epochs=1 for a quick run",
            )
    for key in ("limit_train_batches", "max_steps"):
        if trainer.get(key) == 0:
            refuse(key, "would train nothing")
    for key in ("limit_val_batches", "val_check_interval"):  # 1.0 is all of them; the whole number 1 is one batch
        value = trainer.get(key, 1.0)
        if cv and (value != 1.0 or isinstance(value, int)):
            refuse(key, "a fold is scored on all its validation images at the end of its last epoch")
    if "max_time" in trainer and (seconds := _seconds(trainer["max_time"])) is not None and seconds <= 0:
        refuse("max_time", "leaves no time to train", "give a positive time (DD:HH:MM:SS), or remove it")
    for key in ("max_time", "max_steps"):  # they stop a fit wherever they fall, even inside an epoch
        if cv and trainer.get(key, -1) not in (None, -1):
            refuse(key, "would stop a fold before the validation that scores it", "set trainer.max_epochs instead")
    for low, high in (("min_epochs", "max_epochs"), ("min_steps", "max_steps")):
        top = trainer.get(high)  # max_steps=-1 or null: no limit
        if top is not None and (trainer.get(low) or 0) > top >= 0:
            refuse(low, f"is more than trainer.{high}={top}, which wins", f"lower it or raise trainer.{high}")
    if cv and trainer["max_epochs"] % trainer["check_val_every_n_epoch"]:
        refuse(
            "check_val_every_n_epoch",
            f"skips the validation of the last of trainer.max_epochs={trainer['max_epochs']} epochs, the fold's score",
            "make max_epochs a multiple of it",
        )
    if trainer["accelerator"] not in ("auto", "cpu", "gpu", "cuda"):
        refuse("accelerator", "digitnet trains on CPU or one CUDA GPU", "use auto, cpu or gpu")
    trainer["precision"] = PRECISION_ALIASES.get(str(trainer["precision"]), str(trainer["precision"]))
    return trainer


def _device(trainer: dict, cuda_available: bool) -> str:
    accelerator = trainer["accelerator"]
    if accelerator in ("gpu", "cuda") and not cuda_available:
        raise ConfigError(
            "trainer.accelerator",
            accelerator,
            "no CUDA GPU is visible",
            "use trainer.accelerator=cpu (or auto, which picks the GPU when there is one)",
        )
    device = "cuda" if accelerator in ("gpu", "cuda") or (accelerator == "auto" and cuda_available) else "cpu"
    trainer["accelerator"] = "gpu" if device == "cuda" else "cpu"
    if device == "cpu" and trainer["precision"] in ("16-mixed", "16-true"):
        raise ConfigError(
            "trainer.precision", trainer["precision"], "needs a GPU", "on CPU use 32-true, 64-true or bf16-mixed"
        )
    return device


def _check_optimizer_builds(optimizer: dict, scheduler: dict, torch) -> None:
    """Build the optimizer, and the LR schedule on it, once on a dummy parameter and take one step: a class that is
    no optimizer, a key it refuses, or a schedule it cannot follow fails here, in torch's words, not in the first
    fit."""
    import importlib

    target = optimizer.get("_target_")
    try:  # not hydra.utils.get_class: it logs its failure into the run's train.log first
        module, _, name = target.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(
            "optimizer._target_", target, "cannot be imported", "choose optimizer=sgd|adam|adamw"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(
            "optimizer._target_", target, "is not a torch.optim optimizer", "choose optimizer=sgd|adam|adamw"
        )
    settings = {k: v for k, v in optimizer.items() if k != "_target_"}
    try:
        weight = torch.nn.Parameter(torch.zeros(2))
        built = cls([weight], **settings)
        (weight * torch.tensor([1.0, -1.0])).sum().backward()
        built.step()  # some optimizers refuse only now (SparseAdam: dense gradients)
        if scheduler["name"] != "none":
            from digitnet.core.schedules import lr_scheduler

            lr_scheduler(built, optimizer["lr"], scheduler, total_steps=10)
    except Exception as exc:  # noqa: BLE001 - torch's TypeError for unknown keys, ValueError for bad values
        raise UserError(f"optimizer: {exc}".strip(), key="optimizer", value=settings) from None


def _packing_blocker(optimizer: dict, trainer: dict, dropout: float) -> str | None:
    """Why packed folds would not train exactly as separate ones, or None."""
    if dropout:
        return "model.dropout would draw the packed folds' masks from one random stream, not each fold's own"
    if trainer.get("gradient_clip_val"):
        return "gradient clipping (trainer.gradient_clip_val) would clip the folds' joint gradient norm"
    if trainer.get("accumulate_grad_batches", 1) != 1:
        return "gradient accumulation (trainer.accumulate_grad_batches) is not supported for packed folds"
    if optimizer["_target_"] not in PACKABLE_OPTIMIZERS:
        return f"{optimizer['_target_']} is not proven exact for packed folds (SGD, Adam and AdamW are)"
    return None


def _graph_blocker(optimizer: dict, runner: str, device: str, plain_steps: bool) -> str | None:
    if runner != "packed" or device != "cuda":
        return "it needs packed folds (cv.parallel) on one CUDA device"
    if not plain_steps:
        return "the captured step has no augmentation or LR schedule (augment=none, scheduler=none)"
    if optimizer["_target_"] != "torch.optim.SGD" or optimizer.get("dampening", 0):
        return "the captured step supports SGD without dampening only"
    return None


def _fold_strategy(cv: dict, optimizer, trainer, device, cores, notes, plain_steps, dropout, work=None):
    """(runner, processes, cuda_graph) for task=cv. `work`: the images the folds train on, times the epochs, where
    data.limit bounds it."""
    parallel, cuda_graph = _switch("cv.parallel", cv["parallel"]), _switch("cv.cuda_graph", cv["cuda_graph"])
    workers, n_folds = None if cv["workers"] == "auto" else cv["workers"], cv["n_folds"]
    blocker = _packing_blocker(optimizer, trainer, dropout)
    if parallel and blocker:
        raise ConfigError("cv.parallel", True, blocker, "set cv.parallel=false (or auto)")
    if parallel and workers and workers > 1:
        raise ConfigError("cv.parallel", True, f"excludes cv.workers={workers}", "choose one of them")
    if parallel is None and device == "cuda" and blocker:
        notes.append(f"cv.parallel=auto: folds one after another, not packed: {blocker}")
    if parallel or (parallel is None and device == "cuda" and not blocker and not (workers and workers > 1)):
        runner, processes = "packed", 1
    else:
        # cv.workers=auto: on CPU one fold process per core, one thread each (docs/performance.md: at batch 32 two
        # 1-thread processes finish two deep-net steps faster than one 2-thread process finishes one each).
        processes = min(workers or (cores if device == "cpu" else 1), n_folds)
        if workers is None and work is not None and work < SMALL_CV_WORK:  # a quick look: no worker start-up
            processes = 1
        runner = "processes" if processes > 1 else "sequential"
    graph_blocker = _graph_blocker(optimizer, runner, device, plain_steps)
    if cuda_graph and graph_blocker:
        raise ConfigError("cv.cuda_graph", True, graph_blocker, "set cv.cuda_graph=false (or auto)")
    if cuda_graph is None and runner == "packed" and device == "cuda" and graph_blocker:
        notes.append(f"cv.cuda_graph=auto: off, {graph_blocker}")
    return runner, (processes if runner == "processes" else 1), bool(cuda_graph is not False and not graph_blocker)
