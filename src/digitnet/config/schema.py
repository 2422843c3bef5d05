"""The config's schema: Structured Configs registered in Hydra's ConfigStore, so that Hydra and OmegaConf themselves
refuse a wrong type, an unknown key or an unknown choice, with their own messages.

`config_schema` types the whole config (conf/config.yaml names it first in its defaults list). Groups whose options
take different keys (optimizer, augment, scheduler) get one schema per kind, stored as `schema/<group>/<kind>`; each
option file of conf/ starts from its kind's (`- /schema/augment/affine@_here_`). Hydra adds `+key=value` overrides
without looking at the schema, so `checked` merges the composed config into it once more, each group node into the
schema of the kind it names (augment.name, optimizer._target_)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from digitnet.names import TTA, Arch, Augment, Scaling, Schedule, Task


@dataclass
class DataConf:
    root: str = "${oc.env:DIGITNET_DATA,data}"
    download: bool = True
    limit: int = 0  # the first N training images; 0: all
    batch_size: int = 32
    eval_batch_size: Any = "auto"  # auto (by device) or a number of images; changes no result
    scaling: Scaling = Scaling.normalize


@dataclass
class ModelConf:
    name: Arch = MISSING
    dropout: float = 0.0


@dataclass
class SGDConf:
    _target_: str = "torch.optim.SGD"
    lr: float = 0.01
    momentum: float = 0.0
    dampening: Optional[float] = None  # None: torch's default, and left out of the plan
    weight_decay: Optional[float] = None
    nesterov: Optional[bool] = None


@dataclass
class AdamConf:
    _target_: str = "torch.optim.Adam"
    lr: float = 0.001
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    eps: Optional[float] = None
    amsgrad: Optional[bool] = None


@dataclass
class AdamWConf(AdamConf):
    _target_: str = "torch.optim.AdamW"
    weight_decay: float = 0.01


@dataclass
class TrainerConf:
    """The lightning.pytorch.Trainer arguments digitnet sets. Any other Trainer argument can be added with
    `+trainer.NAME=value`; a constructed Trainer checks those."""

    max_epochs: int = 10
    accelerator: str = "auto"
    devices: Any = 1
    precision: Any = "32-true"
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 50
    enable_progress_bar: bool = True
    enable_model_summary: bool = False
    num_sanity_val_steps: int = 0
    deterministic: Any = False


@dataclass
class CVConf:
    n_folds: int = 5
    seed: int = 1  # KFold(n_folds, shuffle=True, random_state=seed)
    parallel: Any = "auto"  # auto, true or false: folds packed into one net
    cuda_graph: Any = "auto"  # auto, true or false
    workers: Any = "auto"  # auto or a number of fold processes


@dataclass
class NoAugmentConf:
    name: Augment = Augment.none


@dataclass
class AffineConf:
    name: Augment = Augment.affine
    degrees: float = 10.0
    scale: float = 0.1
    shift: float = 0.1


@dataclass
class NoScheduleConf:
    name: Schedule = Schedule.none


@dataclass
class CosineConf:
    name: Schedule = Schedule.cosine


@dataclass
class OneCycleConf:
    name: Schedule = Schedule.onecycle
    pct_start: float = 0.25


@dataclass
class LossConf:
    label_smoothing: float = 0.0


@dataclass
class TTAConf:
    name: TTA = TTA.none


@dataclass
class TensorBoardConf:
    enabled: bool = False  # each conf/logger/ option sets it: logger=[tensorboard,mlflow] selects two


@dataclass
class CSVConf:
    enabled: bool = False


@dataclass
class MLflowConf:
    enabled: bool = False
    tracking_uri: str = "sqlite:///outputs/mlflow.db"  # relative to the working dir
    experiment_name: str = "digitnet"


@dataclass
class LoggerConf:
    tensorboard: TensorBoardConf = field(default_factory=TensorBoardConf)
    csv: CSVConf = field(default_factory=CSVConf)
    mlflow: MLflowConf = field(default_factory=MLflowConf)


@dataclass
class Config:
    task: Task = Task.cv
    seed: int = 1
    data: DataConf = field(default_factory=DataConf)
    model: ModelConf = field(default_factory=ModelConf)
    optimizer: Any = MISSING
    trainer: TrainerConf = field(default_factory=TrainerConf)
    cv: CVConf = field(default_factory=CVConf)
    augment: Any = MISSING
    scheduler: Any = MISSING
    loss: LossConf = field(default_factory=LossConf)
    tta: TTAConf = field(default_factory=TTAConf)
    logger: LoggerConf = field(default_factory=LoggerConf)


# group -> (the key that names a node's kind, {kind: its schema}). An optimizer of another class (your own option
# file, say torch.optim.RMSprop) has no schema here: building it on a dummy parameter checks it (plan.py).
KINDS = {
    "optimizer": (
        "_target_",
        {"torch.optim.SGD": SGDConf, "torch.optim.Adam": AdamConf, "torch.optim.AdamW": AdamWConf},
    ),
    "augment": ("name", {"none": NoAugmentConf, "affine": AffineConf}),
    "scheduler": ("name", {"none": NoScheduleConf, "cosine": CosineConf, "onecycle": OneCycleConf}),
}


def register() -> None:
    store = ConfigStore.instance()
    store.store(name="config_schema", node=Config)
    for group, (_, kinds) in KINDS.items():
        for kind, schema in kinds.items():
            store.store(group=f"schema/{group}", name=kind.rsplit(".", 1)[-1].lower(), node=schema)


register()


def checked(cfg: DictConfig) -> tuple[Config, dict]:
    """The composed config as typed objects, merged into the schema once more (OmegaConf's own errors name the key),
    and the Trainer arguments beyond TrainerConf's, untyped: Lightning checks those."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    schema = OmegaConf.structured(Config)
    for group, (key, kinds) in KINDS.items():
        node = plain.get(group)
        kind = getattr(node.get(key), "value", node.get(key)) if isinstance(node, dict) else None
        if kind in kinds:
            schema[group] = OmegaConf.structured(kinds[kind])
    trainer = plain.get("trainer") if isinstance(plain.get("trainer"), dict) else {}
    typed = {f.name for f in fields(TrainerConf)}
    extra = {key: trainer.pop(key) for key in list(trainer) if key not in typed}
    return OmegaConf.to_object(OmegaConf.merge(schema, plain)), extra


def config_file_problem(folders: list[Path], overrides: list[str]) -> str | None:
    """The first config file under `folders` that is not UTF-8 YAML holding keys, those the overrides choose first
    (model=x: model/x.yaml). Hydra's own error for such a file names no file (UnicodeDecodeError, "Invalid loaded
    object type: int"), or comes as a YAML parser's traceback."""
    import yaml

    chosen = [f"/{o.lstrip('+').replace('=', '/', 1)}.yaml" for o in overrides if "=" in o]
    paths = sorted(
        (p for folder in folders for p in sorted(Path(folder).rglob("*.yaml"))),
        key=lambda p: not any(str(p).endswith(c) for c in chosen),
    )
    for path in paths:
        try:
            content = yaml.safe_load(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            return f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#x} at offset {exc.start}); save it as UTF-8"
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            return f"{path}{f', line {mark.line + 1}' if mark else ''}: not valid YAML ({getattr(exc, 'problem', exc)})"
        if content is not None and not isinstance(content, dict):
            kind = type(content).__name__
            return f"{path} holds {kind} {str(content)[:30]}, not keys; a config file maps keys to values"
    return None
