"""The run plan: every value of the composed Hydra config checked, and every `auto` settled, once.

`make_plan(cfg)` is the only reader of the Hydra config. It checks each value (one UserError line naming the key,
the value and the fix), then decides what depends on the machine: the device, where the data lives, how the folds
run (one after another, packed into one net, or in worker processes), thread and process counts, the CUDA graph and
the validation batch size. Everything downstream takes the plan, a frozen dataclass of plain values: it pickles to
fold workers, and cv_summary.json / test_metrics.json record it as it ran.

This module imports no Lightning and, until the cheap checks have passed, no torch: a bad value is reported about a
second after Python starts (torch's import alone takes about as long on the 2-core CPU).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import sys
from dataclasses import asdict, dataclass, field, replace

from omegaconf import DictConfig, OmegaConf

from digitnet.errors import UserError

TASKS = ("cv", "final")
ARCHS = ("baseline", "batchnorm", "deep", "deepbn", "vgg")  # nets.NETS, checked equal by a test
SCALINGS = ("normalize", "center", "standardize")
RUNNERS = ("sequential", "packed", "processes")
AUGMENTS = ("none", "affine")  # augment.py
SCHEDULERS = ("none", "onecycle", "cosine")  # models.optimization
TTAS = ("none", "shift")  # nets.TTAS: test-time augmentation of fold scores, the holdout score and predictions
SEED_LIMIT = 2**32  # numpy's and Lightning's seeds are 32-bit; fold k uses seed + k
# Packing K folds into one net is exact when the optimizer's update of each weight entry depends only on that entry's
# gradient and state (elementwise): then each fold is updated as its own optimizer would. Each of these has a float64
# packed-equals-sequential test (tests/test_parallel.py); others (LBFGS, Adafactor, ...) couple entries.
PACKABLE_OPTIMIZERS = ("torch.optim.SGD", "torch.optim.Adam", "torch.optim.AdamW")
# Lightning's precision names; the short forms are its deprecated aliases.
PRECISIONS = {"32-true": "32-true", "32": "32-true", "64-true": "64-true", "64": "64-true", "16-mixed": "16-mixed",
              "16": "16-mixed", "bf16-mixed": "bf16-mixed", "bf16": "bf16-mixed", "16-true": "16-true",
              "bf16-true": "bf16-true"}
# lightning.pytorch.Trainer's arguments (2.4-2.6); a test checks this list against the installed Lightning.
TRAINER_ARGS = frozenset((
    "accelerator", "strategy", "devices", "num_nodes", "precision", "logger", "callbacks", "fast_dev_run",
    "max_epochs", "min_epochs", "max_steps", "min_steps", "max_time", "limit_train_batches", "limit_val_batches",
    "limit_test_batches", "limit_predict_batches", "overfit_batches", "val_check_interval", "check_val_every_n_epoch",
    "num_sanity_val_steps", "log_every_n_steps", "enable_checkpointing", "enable_progress_bar", "enable_model_summary",
    "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm", "deterministic", "benchmark",
    "inference_mode", "use_distributed_sampler", "profiler", "detect_anomaly", "barebones", "plugins",
    "sync_batchnorm", "reload_dataloaders_every_n_epochs", "default_root_dir", "enable_autolog_hparams",
    "model_registry",
))
# Set by digitnet for every fit: TensorBoard under the run dir, its own callbacks, its own checkpoints.
OWNED_TRAINER_ARGS = ("logger", "callbacks", "enable_checkpointing", "default_root_dir")
# Plan keys that never change a fold's result, so a resumed run may differ in them: where things are shown and
# logged, and how the folds are scheduled (sequential, processes and packed give the same folds: tests/test_workers.py
# is bit-identical, tests/test_parallel.py equal to 1e-9 in float64). Everything else must match to resume.
# The same computation is not always the same bits in float32: deepbn's BatchNorm sums round differently with the
# thread count (1 per fold worker, all cores sequentially), which moved a 300-image fold by one image. Such folds
# are resumed side by side, as runs on two machines would be.
NOT_IN_FINGERPRINT = ("task", "data_root", "download", "eval_batch_size", "data_device", "runner", "processes",
                      "threads", "cuda_graph", "progress", "notes", "trainer.enable_progress_bar", "trainer.enable_model_summary",
                      "trainer.log_every_n_steps")
# Fields added after run dirs existed without them: left out of the fingerprint at their default, so that an older
# run dir (which could only have had that default) still resumes.
LATER_FIELDS = {"dropout": 0.0, "tta": "none"}
# The config key of each plan field, where they differ: what a resume refusal names.
CONFIG_KEYS = {"model": "model.name", "dropout": "model.dropout", "label_smoothing": "loss.label_smoothing",
               "limit": "data.limit", "batch_size": "data.batch_size", "scaling": "data.scaling",
               "n_folds": "cv.n_folds", "cv_seed": "cv.seed", "device": "trainer.accelerator", "tta": "tta.name"}

_MISSING = object()


def default_data_root() -> str:
    """Where MNIST is read from when nothing says otherwise: $DIGITNET_DATA, else ./data (as conf/data/mnist.yaml)."""
    import os

    return os.environ.get("DIGITNET_DATA", "data")


@dataclass(frozen=True)
class RunPlan:
    """What a run does, with every choice settled. Plain values only."""

    task: str  # cv | final
    model: str  # an arch of nets.NETS
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
    device: str  # cpu | cuda
    data_device: str  # where the training set lives while training (cuda: batches gathered there by index)
    runner: str  # sequential | packed | processes
    processes: int  # fold worker processes (runner=processes), else 1
    threads: int  # torch threads of the run (the cores); workers share them
    cuda_graph: bool  # packed runner: one captured CUDA graph per training step
    progress: str  # bar (Lightning's, on a terminal) | epochs (a line per epoch: workers, logs, CI) | off
    augment: dict = field(default_factory=lambda: {"name": "none"})  # augment.py; training batches only
    scheduler: dict = field(default_factory=lambda: {"name": "none"})  # LR schedule, stepped every batch
    label_smoothing: float = 0.0
    dropout: float = 0.0  # model.dropout (deepbn), training only
    tta: str = "none"  # how fold scores, the holdout score and checkpoints' predictions are made (nets.with_tta)
    notes: tuple = ()  # why an `auto` chose what it chose, where that is not the obvious choice

    def as_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))  # tuples as lists: what the JSON reports hold

    def fingerprint_fields(self) -> dict:
        """What a fold's result depends on: everything but NOT_IN_FINGERPRINT."""
        fields = self.as_dict()
        for key in NOT_IN_FINGERPRINT:
            group, _, sub = key.partition(".")
            (fields[group].pop(sub, None) if sub else fields.pop(group, None))
        for key, default in LATER_FIELDS.items():
            if fields.get(key) == default:
                del fields[key]
        return fields

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.fingerprint_fields(), sort_keys=True).encode()).hexdigest()[:16]

    def for_data(self, n_images: int) -> "RunPlan":
        """The plan for a training set of n_images, known once MNIST is read: checks the fold count, and leaves the
        packed runner when the folds differ in size (packed folds step together, batch for batch)."""
        if self.limit > n_images:
            note = f"data.limit={self.limit} is more than the {n_images} training images: using all of them"
            return replace(self, limit=0, notes=(*self.notes, note)).for_data(n_images)
        n = self.limit or n_images
        if self.task == "cv" and self.n_folds > n:
            raise UserError(f"cv.n_folds={self.n_folds} is more than the {n} training images; lower cv.n_folds")
        trained = n - math.ceil(n / self.n_folds) if self.task == "cv" else n  # the smallest training set
        limit = self.trainer.get("limit_train_batches")

        def full_batches(images: int) -> int:  # a last batch of one image is dropped (data.MNISTDataModule)
            return images // self.batch_size if images % self.batch_size == 1 else -(-images // self.batch_size)

        def batches(images: int) -> int:  # what an epoch trains on: limit_train_batches as Lightning applies it
            if isinstance(limit, float):
                return int(full_batches(images) * limit)
            return min(full_batches(images), limit) if isinstance(limit, int) else full_batches(images)

        if isinstance(limit, float) and batches(trained) < 1:  # Lightning refuses 0 inside the fit
            raise UserError(f"trainer.limit_train_batches={limit} leaves no batch of the {full_batches(trained)} an "
                            f"epoch has; give at least {1 / full_batches(trained):.2g}, or a whole number of batches")
        max_steps = self.trainer.get("max_steps", -1)
        if self.task == "cv" and max_steps not in (None, -1):
            # Lightning stops at max_steps even inside an epoch, and then skips that epoch's validation, which is
            # the fold's score. Its steps are optimizer steps: one per accumulate_grad_batches batches, and one for
            # an epoch's remainder.
            accumulate = self.trainer.get("accumulate_grad_batches") or 1
            per_epoch = -(-batches(n - n // self.n_folds) // accumulate)  # the largest training set
            needed = per_epoch * self.trainer["max_epochs"]
            if max_steps < needed:
                raise UserError(f"trainer.max_steps={max_steps} would stop a fold inside its training, before the "
                                f"validation that scores it ({self.trainer['max_epochs']} epoch(s) of {per_epoch} "
                                f"steps take {needed}); set trainer.max_epochs instead, or remove trainer.max_steps")
        if self.batch_size > trained and not any(note.startswith("data.batch_size=") for note in self.notes):
            note = (f"data.batch_size={self.batch_size} is more than the {trained} training images "
                    f"{'of a fold' if self.task == 'cv' else 'of the fit'}: each epoch is one batch of all of them")
            return replace(self, notes=(*self.notes, note)).for_data(n_images)
        if self.task == "cv" and self.runner == "packed" and n % self.n_folds:
            note = (f"folds one after another, not packed: {n} images do not split into {self.n_folds} equal folds "
                    f"(set data.limit to a multiple of {self.n_folds} to pack them)")
            return replace(self, runner="sequential", cuda_graph=False, notes=(*self.notes, note))
        return self

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
        return f"digitnet: task={self.task} model={self.model}: {how}; on {self.device}, precision {self.trainer['precision']}"


def differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """'key: saved -> current' for every leaf that differs (the resume refusal names them)."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "(unset)"), current.get(key, "(unset)")
        if not prefix:
            a, b = LATER_FIELDS.get(key, a) if a == "(unset)" else a, LATER_FIELDS.get(key, b) if b == "(unset)" else b
        name = key if prefix else CONFIG_KEYS.get(key, key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{name}.")
        elif a != b:
            out.append(f"{prefix}{name}={a!r} there, {b!r} now")
    return out


# ---- reading values --------------------------------------------------------------------------------------------

def _get(cfg: DictConfig, key: str, default=_MISSING):
    try:
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
    except Exception as exc:  # noqa: BLE001 - an interpolation that cannot resolve, a missing env var, ...
        raise UserError(f"{key}: cannot be read ({str(exc).splitlines()[0]})") from None
    if value is _MISSING:
        if default is not _MISSING:
            return default
        raise UserError(f"{key} is missing from the config; restore it (see conf/) or drop the override that removed it")
    return value


def _whole(cfg, key: str, low: int | None = None, high: int | None = None, hint: str = "", default=_MISSING) -> int:
    value = _get(cfg, key, default)
    ok = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value, ok = int(value), True
    if not ok:
        raise UserError(f"{key}={value!r} is not a whole number{'; ' + hint if hint else ''}")
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"at least {low}" if low is not None and value < low and high in (None, MAX_COUNT) else (
            f"at most {high}" if low is None or high == MAX_COUNT else f"from {low} to {high}")
        raise UserError(f"{key}={value} must be {span}{'; ' + hint if hint else ''}")
    return value


def _real(cfg, key: str, low: float, high: float = math.inf, *, low_open=False, high_open=False, hint="",
          default=_MISSING) -> float:
    value = _get(cfg, key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{key}={value!r} is not a number{'; ' + hint if hint else ''}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if not math.isfinite(value) or too_low or too_high:
        lo, hi = ("(" if low_open else "["), (")" if high_open or high == math.inf else "]")
        span = f"> {low:g}" if low_open and high == math.inf else f"in {lo}{low:g}, {high:g}{hi}"
        raise UserError(f"{key}={value:g} must be a finite number {span}{'; ' + hint if hint else ''}")
    return value


def _choice(cfg, key: str, choices, hint: str = "") -> str:
    value = _get(cfg, key)
    if not isinstance(value, str) or value not in choices:
        raise UserError(f"{key}={value!r} is unknown; use one of {', '.join(map(str, choices))}{hint}")
    return value


def _flag(cfg, key: str) -> bool:
    value = _get(cfg, key)
    if not isinstance(value, bool):
        raise UserError(f"{key}={value!r} must be true or false")
    return value


def _auto_flag(cfg, key: str) -> bool | None:
    """true / false, or None for auto."""
    value = _get(cfg, key, "auto")
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() == "auto":
        return None
    raise UserError(f"{key}={value!r} must be auto, true or false")


def _auto_whole(cfg, key: str, hint: str) -> int | None:
    value = _get(cfg, key, "auto")
    if isinstance(value, str) and value.lower() == "auto":
        return None
    return _whole(cfg, key, 1, MAX_COUNT, hint=hint)


# ---- the plan --------------------------------------------------------------------------------------------------

# The keys each part of the config may hold (the trainer's are TRAINER_ARGS, the optimizer's its class's arguments).
KNOWN_KEYS = {
    "": ("task", "seed", "data", "model", "optimizer", "trainer", "cv", "augment", "scheduler", "loss", "tta"),
    "loss": ("label_smoothing",),
    "augment": ("name", "degrees", "scale", "shift"),
    "scheduler": ("name", "pct_start"),
    "tta": ("name",),
    "data": ("root", "download", "limit", "batch_size", "eval_batch_size", "scaling"),
    "model": ("name", "dropout"),
    "cv": ("n_folds", "seed", "parallel", "cuda_graph", "workers"),
}
# The config groups whose nodes hold keys: conf/'s folders but experiment (_global_) and hydra (train.GROUPS).
GROUP_NODES = ("data", "model", "optimizer", "trainer", "cv", "augment", "scheduler", "tta")


def _check_group_nodes(cfg) -> None:
    """`tta: shift` in an experiment file (meant as `- override /tta: shift`) made the node a bare value, and an
    empty option file made it empty: the group then fell back to its default without a word. A group removed with
    ~group is absent, and takes the plan's default."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    for group in GROUP_NODES:
        value = raw.get(group, _MISSING)
        if value is _MISSING or (isinstance(value, dict) and value):
            continue
        if value is None or isinstance(value, dict):
            raise UserError(f"{group}.* is empty: the {group} option chosen sets no keys, or a config sets {group}: "
                            f"null; choose an option with {group}=NAME")
        name = value if isinstance(value, str) and value.isidentifier() else "NAME"  # a list or a number: no name
        raise UserError(f"{group}: {str(value)[:40]!r} is a plain value, but {group} is a config group; choose it with "
                        f"{group}={name} on the command line, or `- override /{group}: {name}` in an experiment "
                        "file's defaults")


# Upper bounds that keep a number a number of things (a batch of 10**20 images overflows the data loader).
MAX_COUNT = 2**31 - 1


def _check_known_keys(cfg) -> None:
    for node, known in KNOWN_KEYS.items():
        values = _get(cfg, node, None) if node else OmegaConf.to_container(cfg, resolve=False)
        if not isinstance(values, dict):
            continue
        for key in values:
            if key not in known:
                where = f"{node}.{key}" if node else key
                raise UserError(f"{where} is not a digitnet setting; check the spelling (known: {', '.join(known)})")


def make_plan(cfg: DictConfig, *, cuda_available: bool | None = None, cores: int | None = None,
              tty: bool | None = None) -> RunPlan:
    """Check the composed config and settle every choice. `cuda_available`, `cores` and `tty` (is stdout a
    terminal) default to this machine's; tests pass them in to check the decisions on CPU."""
    _check_known_keys(cfg)
    _check_group_nodes(cfg)
    task = _choice(cfg, "task", TASKS, " (task=cv: k-fold CV; task=final: fit on all, score the holdout)")
    if _get(cfg, "model", None) is None:
        raise UserError(f"no model chosen; add model={'|'.join(ARCHS)}")
    model = _choice(cfg, "model.name", ARCHS, f" (model={'|'.join(ARCHS)})")
    seed = _whole(cfg, "seed", 0, SEED_LIMIT - 1, hint="a 32-bit seed")

    root = _get(cfg, "data.root")
    if not isinstance(root, str) or not root.strip():
        raise UserError(f"data.root={root!r} must be a folder; set data.root=DIR or the DIGITNET_DATA variable")
    download = _flag(cfg, "data.download")
    limit = _whole(cfg, "data.limit", 0, MAX_COUNT, hint="0 means all training images")
    batch_size = _whole(cfg, "data.batch_size", 1, MAX_COUNT, hint="the tutorial uses 32")
    eval_batch = _auto_whole(cfg, "data.eval_batch_size", "or auto")
    scaling = _choice(cfg, "data.scaling", SCALINGS)

    n_folds = _whole(cfg, "cv.n_folds", 2, MAX_COUNT, hint="k-fold CV needs at least 2 folds (default 5)")
    if model in ("batchnorm", "deepbn", "vgg") and batch_size < 2:
        raise UserError(f"data.batch_size=1 with model={model}: BatchNorm needs at least 2 images a batch; use "
                        "data.batch_size=2 or more (the tutorial's is 32)")
    dropout = _real(cfg, "model.dropout", 0, 1, high_open=True, default=0.0, hint="a rate in [0, 1), e.g. 0.25")
    if dropout and model != "deepbn":
        raise UserError(f"model.dropout={dropout}: model={model} has no dropout layers; use model=deepbn")
    cv_seed = _whole(cfg, "cv.seed", 0, SEED_LIMIT - 1, hint="a 32-bit seed")
    # A training set of one image trains nothing (its one-image batch is dropped, for BatchNorm's sake).
    if task == "cv":
        if 0 < limit < n_folds:
            raise UserError(f"data.limit={limit} is smaller than cv.n_folds={n_folds}; each fold needs images")

        def fewest_trained(n: int) -> int:  # KFold's largest validation fold holds ceil(n / k) images
            return n - math.ceil(n / n_folds)

        if 0 < limit and fewest_trained(limit) < 2:
            enough = next(n for n in itertools.count(limit) if fewest_trained(n) >= 2)
            raise UserError(f"data.limit={limit} with cv.n_folds={n_folds} leaves a fold {fewest_trained(limit)} "
                            f"training image(s); give data.limit={enough} or more")
        if seed + n_folds - 1 >= SEED_LIMIT:
            raise UserError(f"seed={seed}: fold {n_folds - 1} would use seed {seed + n_folds - 1}, past 2**32 - 1")
    elif limit == 1:
        raise UserError("data.limit=1: one training image trains nothing; give data.limit=2 or more (0: all)")
    parallel = _auto_flag(cfg, "cv.parallel")
    cuda_graph = _auto_flag(cfg, "cv.cuda_graph")
    workers = _auto_whole(cfg, "cv.workers", "or auto (1: folds one after another)")

    optimizer = _optimizer_values(cfg)
    trainer = _trainer_values(cfg)
    augment, scheduler = _augment_values(cfg), _scheduler_values(cfg)
    label_smoothing = _real(cfg, "loss.label_smoothing", 0, 1, high_open=True, default=0.0)
    tta = _choice(cfg, "tta.name", TTAS, " (tta=none|shift)") if _get(cfg, "tta", None) else "none"

    # Past the cheap checks: what needs torch.
    import torch

    _check_optimizer_builds(optimizer, torch, scheduler)
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    cores = cores or torch.get_num_threads()

    accelerator = trainer["accelerator"]
    if accelerator in ("gpu", "cuda") and not cuda_available:
        raise UserError(f"trainer.accelerator={accelerator} but no CUDA GPU is visible; use trainer.accelerator=cpu "
                        "(or auto, which picks the GPU when there is one)")
    device = "cuda" if accelerator in ("gpu", "cuda") or (accelerator == "auto" and cuda_available) else "cpu"
    trainer["accelerator"] = "gpu" if device == "cuda" else "cpu"
    if device == "cpu" and trainer["precision"] in ("16-mixed", "16-true"):
        raise UserError(f"trainer.precision={trainer['precision']} needs a GPU; on CPU use 32-true, 64-true or "
                        "bf16-mixed")

    notes: list[str] = []
    runner, processes, graph = "sequential", 1, False
    if task == "cv":
        runner, processes, graph = _fold_strategy(parallel, cuda_graph, workers, optimizer, trainer, device, cores,
                                                  n_folds, notes, plain_steps=augment["name"] == "none" and
                                                  scheduler["name"] == "none", dropout=dropout)
    # Lightning's bar needs a terminal of its own: fold workers share one, and a log file gets every redraw.
    if not trainer.get("enable_progress_bar", True):
        progress = "off"
    elif runner == "processes" or not (tty if tty is not None else sys.stdout.isatty()):
        progress = "epochs"
    else:
        progress = "bar"
    trainer["enable_progress_bar"] = progress == "bar"
    return RunPlan(
        task=task, model=model, seed=seed, data_root=root, download=download, limit=limit, batch_size=batch_size,
        # auto: 1000 on CUDA (fewer launches); 250 on CPU (12k images in 1.7 s, against 2.6 s at 1000).
        eval_batch_size=eval_batch or (1000 if device == "cuda" else 250),
        scaling=scaling, optimizer=optimizer, trainer=trainer, n_folds=n_folds, cv_seed=cv_seed, device=device,
        data_device=device, runner=runner, processes=processes, threads=cores, cuda_graph=graph, progress=progress,
        augment=augment, scheduler=scheduler, label_smoothing=label_smoothing, dropout=dropout, tta=tta,
        notes=tuple(notes),
    )


def _augment_values(cfg) -> dict:
    name = _choice(cfg, "augment.name", AUGMENTS, " (augment=none|affine)") if _get(cfg, "augment", None) else "none"
    if name == "none":
        _refuse_unused(cfg, "augment", "augment=affine")
        return {"name": "none"}
    return {"name": name, "degrees": _real(cfg, "augment.degrees", 0, 180), "scale": _real(cfg, "augment.scale", 0, 1,
            high_open=True), "shift": _real(cfg, "augment.shift", 0, 1)}


def _refuse_unused(cfg, group: str, fix: str) -> None:
    """`+augment.degrees=5` with augment=none would be silently ignored (as model.dropout on a net without dropout
    is refused)."""
    extra = sorted(k for k in (_get(cfg, group, None) or {}) if k != "name")
    if extra:
        raise UserError(f"{group}.{extra[0]}={_get(cfg, f'{group}.{extra[0]}', None)} does nothing with "
                        f"{group}={_get(cfg, f'{group}.name', 'none')}; choose {fix}, or drop it")


def _scheduler_values(cfg) -> dict:
    if not _get(cfg, "scheduler", None):
        return {"name": "none"}
    name = _choice(cfg, "scheduler.name", SCHEDULERS, " (scheduler=none|onecycle|cosine)")
    if name != "onecycle":
        _refuse_unused(cfg, "scheduler", "scheduler=onecycle")
    if name == "onecycle":
        return {"name": name, "pct_start": _real(cfg, "scheduler.pct_start", 0, 1, low_open=True, high_open=True,
                                                 default=0.25)}
    return {"name": name}


def _optimizer_values(cfg) -> dict:
    optimizer = _get(cfg, "optimizer", None)
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("_target_"), str):
        raise UserError("optimizer._target_ is missing; choose optimizer=sgd|adam|adamw")
    _real(cfg, "optimizer.lr", 0, low_open=True, hint="the tutorial uses 0.01")
    if "momentum" in optimizer:
        _real(cfg, "optimizer.momentum", 0, 1, high_open=True, hint="the tutorial uses 0.9")
    if "weight_decay" in optimizer:
        _real(cfg, "optimizer.weight_decay", 0)
    if "eps" in optimizer:  # 0 divides by zero wherever a gradient is 0: every fold diverged
        _real(cfg, "optimizer.eps", 0, low_open=True, hint="Adam's default is 1e-8")
    if "dampening" in optimizer:  # torch takes any number; above 1 it turns the momentum's gradient term around
        _real(cfg, "optimizer.dampening", 0, 1, hint="0 (the default) or up to 1")
    if optimizer.get("maximize") is True:
        raise UserError("optimizer.maximize=true would climb the loss instead of lowering it; remove the override")
    return optimizer


def _check_optimizer_builds(optimizer: dict, torch, scheduler: dict) -> None:
    """Build the optimizer, and the LR schedule on it, once on a dummy parameter: a wrong class or key, or an
    optimizer the schedule cannot drive, fails here, not inside the first fit."""
    import importlib

    target = optimizer["_target_"]
    try:  # not hydra.utils.get_class: it logs its failure into the run's train.log and the console first
        module, _, name = target.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
    except Exception:  # noqa: BLE001 - any import failure means the same to the user
        raise UserError(f"optimizer._target_={target} cannot be imported; choose optimizer=sgd|adam|adamw") from None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise UserError(f"optimizer._target_={target} is not a torch.optim optimizer; choose optimizer=sgd|adam|adamw")
    settings = {k: v for k, v in optimizer.items() if k != "_target_"}
    import inspect

    for key, value in settings.items():
        default = inspect.signature(cls).parameters.get(key)
        if default is not None and isinstance(default.default, bool) and not isinstance(value, bool):
            raise UserError(f"optimizer.{key}={value!r} must be true or false")
    try:
        weight = torch.nn.Parameter(torch.zeros(2))
        built = cls([weight], **settings)
        # One real step on a dummy weight: some optimizers refuse only then (SparseAdam: dense gradients).
        (weight * torch.tensor([1.0, -1.0])).sum().backward()
        built.step()
    except Exception as exc:  # noqa: BLE001 - TypeError for unknown keys, ValueError for bad values
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"optimizer: {target} rejects {settings} ({detail}); fix or remove that key "
                        "(~optimizer.KEY), or choose optimizer=sgd|adam|adamw") from None
    if scheduler["name"] != "none":
        from digitnet.schedules import lr_scheduler

        try:
            lr_scheduler(built, optimizer["lr"], scheduler, total_steps=10)
        except Exception as exc:  # noqa: BLE001 - OneCycleLR's ValueError for an optimizer without momentum
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"scheduler={scheduler['name']} cannot drive {target} ({detail}); choose "
                            "optimizer=sgd|adam|adamw, or another scheduler") from None


def _trainer_values(cfg) -> dict:
    trainer = _get(cfg, "trainer", None)
    if not isinstance(trainer, dict):
        raise UserError("trainer is missing from the config; drop the override that removed it")
    target = trainer.pop("_target_", "lightning.pytorch.Trainer")
    if target not in ("lightning.pytorch.Trainer", "pytorch_lightning.Trainer", "lightning.Trainer"):
        raise UserError(f"trainer._target_={target}: digitnet trains with lightning.pytorch.Trainer; remove the override")
    for key in trainer:
        if key not in TRAINER_ARGS:
            raise UserError(f"trainer.{key} is not an argument of Lightning's Trainer; check the spelling "
                            "(the trainer group takes lightning.pytorch.Trainer's arguments)")
        if key in OWNED_TRAINER_ARGS:
            raise UserError(f"trainer.{key} is set by digitnet itself (TensorBoard logs, callbacks and checkpoints go "
                            "into the run dir); remove the override")
    trainer["max_epochs"] = _whole(cfg, "trainer.max_epochs", 1, hint="the tutorial trains 10 epochs")
    accelerator = _get(cfg, "trainer.accelerator", "auto")
    if accelerator not in ("auto", "cpu", "gpu", "cuda"):
        raise UserError(f"trainer.accelerator={accelerator!r} is not supported; use auto, cpu or gpu")
    trainer["accelerator"] = accelerator
    devices = _get(cfg, "trainer.devices", 1)
    if devices not in (1, "1", "auto") or isinstance(devices, bool):
        raise UserError(f"trainer.devices={devices!r}: digitnet trains each fold on one device; use trainer.devices=1 "
                        "(to use several GPUs, run sweep jobs side by side: README, Scaling out)")
    trainer["devices"] = 1
    for key, allowed in (("strategy", ("auto",)), ("num_nodes", (1,))):
        if key in trainer and trainer[key] not in allowed:
            raise UserError(f"trainer.{key}={trainer[key]!r}: digitnet runs each fit in one process on one device; "
                            f"remove the override")
    precision = str(_get(cfg, "trainer.precision", "32-true"))
    if precision not in PRECISIONS:
        raise UserError(f"trainer.precision={precision!r} is unknown; use 32-true, 64-true, bf16-mixed or 16-mixed")
    trainer["precision"] = PRECISIONS[precision]
    if trainer.get("gradient_clip_val") is not None:
        trainer["gradient_clip_val"] = _real(cfg, "trainer.gradient_clip_val", 0)
    if "accumulate_grad_batches" in trainer:
        _whole(cfg, "trainer.accumulate_grad_batches", 1)
    for key in ("enable_progress_bar", "enable_model_summary", "deterministic"):
        if key in trainer and not isinstance(trainer[key], bool) and not (key == "deterministic" and trainer[key] == "warn"):
            raise UserError(f"trainer.{key}={trainer[key]!r} must be true or false")
    _check_trainer_types(cfg, trainer)
    return trainer


# Trainer arguments by kind: what Lightning documents for each (checked here: some fail only deep in a fit).
_TRAINER_FLAGS = ("enable_progress_bar", "enable_model_summary", "detect_anomaly", "inference_mode", "benchmark",
                  "sync_batchnorm", "use_distributed_sampler", "barebones", "fast_dev_run")
_TRAINER_COUNTS = {"log_every_n_steps": 1, "check_val_every_n_epoch": 1, "accumulate_grad_batches": 1,
                   "reload_dataloaders_every_n_epochs": 0, "min_epochs": 0, "num_sanity_val_steps": -1,
                   "max_steps": -1, "min_steps": 0}
_TRAINER_FRACTIONS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches",
                      "overfit_batches", "val_check_interval")


def _seconds(max_time) -> float | None:
    """Lightning's max_time ("DD:HH:MM:SS" or a dict of timedelta's arguments) in seconds; None if unreadable
    (Lightning's own check then speaks)."""
    import datetime

    try:
        if isinstance(max_time, str):
            days, hours, minutes, seconds = (int(part) for part in max_time.split(":"))
            return datetime.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds).total_seconds()
        if isinstance(max_time, dict):
            return datetime.timedelta(**max_time).total_seconds()
    except (TypeError, ValueError):
        return None
    return None


def _check_trainer_types(cfg, trainer: dict) -> None:
    for key in _TRAINER_FLAGS:
        if key in trainer and trainer[key] is not None and not isinstance(trainer[key], bool):
            raise UserError(f"trainer.{key}={trainer[key]!r} must be true or false")
    for key, low in _TRAINER_COUNTS.items():
        if trainer.get(key) is not None:
            _whole(cfg, f"trainer.{key}", low, MAX_COUNT)
    for key in _TRAINER_FRACTIONS:
        value = trainer.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (
                isinstance(value, float) and value > 1):
            raise UserError(f"trainer.{key}={value!r} must be a fraction in [0, 1] or a whole number of batches")
    if trainer.get("fast_dev_run"):
        raise UserError("trainer.fast_dev_run: its result would be recorded as a fold's; use data.limit and "
                        "trainer.max_epochs=1 for a quick run")
    # Every fold is scored by its last epoch's validation, and must train: no settings that skip either.
    if trainer.get("limit_train_batches") == 0 or trainer.get("max_steps") == 0:
        raise UserError("trainer.limit_train_batches=0 / trainer.max_steps=0 would train nothing; remove the override")
    if trainer.get("limit_val_batches") == 0 and _get(cfg, "task", "cv") == "cv":
        raise UserError("trainer.limit_val_batches=0: CV scores each fold on its validation images; remove the override")
    if trainer.get("overfit_batches"):
        raise UserError(f"trainer.overfit_batches={trainer['overfit_batches']!r}: each fit would train on a few "
                        "batches and be recorded as a real one; use data.limit for a small run")
    val = trainer.get("limit_val_batches")  # 1.0 is all of them; the whole number 1 is one batch
    if _get(cfg, "task", "cv") == "cv" and val is not None and (val != 1.0 or isinstance(val, int)):
        raise UserError(f"trainer.limit_val_batches={trainer['limit_val_batches']!r} would score each fold on part of "
                        "its validation images; remove the override (to go faster, lower data.limit)")
    if trainer.get("val_check_interval") == 0:
        raise UserError("trainer.val_check_interval=0 would validate nothing; remove the override")
    interval = trainer.get("val_check_interval")
    if _get(cfg, "task", "cv") == "cv" and interval is not None and (interval != 1.0 or isinstance(interval, int)):
        raise UserError(f"trainer.val_check_interval={interval!r}: a fold's score is its validation at the end of "
                        "its last epoch, so validation runs at epoch ends; use trainer.check_val_every_n_epoch")
    if (seconds := _seconds(trainer.get("max_time"))) is not None and seconds <= 0:
        raise UserError(f"trainer.max_time={trainer['max_time']!r} leaves no time to train; give a positive time "
                        "(DD:HH:MM:SS), or remove it")
    if trainer.get("max_time") is not None and _get(cfg, "task", "cv") == "cv":
        raise UserError(f"trainer.max_time={trainer['max_time']!r} would stop a fold wherever the clock says, before "
                        "the validation that scores it; set trainer.max_epochs instead (or use it with task=final)")
    for low, high in (("min_epochs", "max_epochs"), ("min_steps", "max_steps")):
        top = trainer.get(high)  # max_steps=-1 or null (Lightning's default): no limit
        if top is not None and (trainer.get(low) or 0) > top >= 0:
            raise UserError(f"trainer.{low}={trainer[low]} is more than trainer.{high}={trainer[high]}, which wins "
                            f"(training stops at {high}); lower trainer.{low} or raise trainer.{high}")
    every = trainer.get("check_val_every_n_epoch") or 1
    if _get(cfg, "task", "cv") == "cv" and trainer["max_epochs"] % every:
        raise UserError(f"trainer.check_val_every_n_epoch={every} skips the last of trainer.max_epochs="
                        f"{trainer['max_epochs']} epochs, whose validation is the fold's score; make max_epochs a "
                        "multiple of it")


def _packing_blocker(optimizer: dict, trainer: dict, dropout: float = 0.0) -> str | None:
    """Why packed folds would not train exactly as separate ones, or None."""
    if dropout:
        return "model.dropout would draw the packed folds' masks from one random stream, not each fold's own"
    if trainer.get("gradient_clip_val"):
        return "gradient clipping (trainer.gradient_clip_val) would clip the folds' joint gradient norm"
    if trainer.get("accumulate_grad_batches", 1) != 1:
        return "gradient accumulation (trainer.accumulate_grad_batches) is not supported for packed folds"
    if optimizer["_target_"] not in PACKABLE_OPTIMIZERS:
        return (f"{optimizer['_target_']} is not proven exact for packed folds "
                f"(those are {', '.join(t.rsplit('.', 1)[1] for t in PACKABLE_OPTIMIZERS)})")
    return None


def _graph_blocker(optimizer: dict, runner: str, device: str, plain_steps: bool = True) -> str | None:
    if runner != "packed" or device != "cuda":
        return "it needs packed folds (cv.parallel) on one CUDA device"
    if not plain_steps:
        return "the captured step has no augmentation or LR schedule (augment=none, scheduler=none)"
    if optimizer["_target_"] != "torch.optim.SGD" or optimizer.get("dampening", 0):
        return "the captured step supports SGD without dampening only"
    return None


def _fold_strategy(parallel, cuda_graph, workers, optimizer, trainer, device, cores, n_folds, notes, plain_steps=True,
                   dropout=0.0):
    """(runner, processes, cuda_graph) for task=cv."""
    blocker = _packing_blocker(optimizer, trainer, dropout)
    if parallel and blocker:
        raise UserError(f"cv.parallel=true: {blocker}; set cv.parallel=false (or auto)")
    if parallel and workers and workers > 1:
        raise UserError(f"cv.workers={workers} and cv.parallel=true exclude each other; choose one of them")
    if parallel is None and device == "cuda" and blocker:
        notes.append(f"cv.parallel=auto: folds one after another, not packed: {blocker}")
    if parallel or (parallel is None and device == "cuda" and not blocker and not (workers and workers > 1)):
        runner, processes = "packed", 1
    else:
        # cv.workers=auto: on CPU one fold process per core, one thread each (two 1-thread processes finish two
        # deep-net steps in 10.2-10.8 ms, one 2-thread process one step in 12.7 ms: README, fold workers).
        processes = min(workers or (cores if device == "cpu" else 1), n_folds)
        runner = "processes" if processes > 1 else "sequential"
    graph_blocker = _graph_blocker(optimizer, runner, device, plain_steps)
    if cuda_graph and graph_blocker:
        raise UserError(f"cv.cuda_graph=true: {graph_blocker}; set cv.cuda_graph=false (or auto)")
    if cuda_graph is None and runner == "packed" and device == "cuda" and graph_blocker:
        notes.append(f"cv.cuda_graph=auto: off, {graph_blocker}")
    graph = bool(cuda_graph is not False and not graph_blocker)
    return runner, (processes if runner == "processes" else 1), graph
