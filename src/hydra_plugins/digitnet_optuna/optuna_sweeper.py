"""digitnet's Optuna sweeper as a Hydra plugin: `hydra/sweeper=digitnet_optuna` (the hparams_search presets choose
it). Hydra instantiates sweepers only from the hydra_plugins package; the work is digitnet.search.study's. Settings
are named as hydra-optuna-sweeper names them; `pruner` is new: trials are pruned fold by fold."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf


class Direction(Enum):
    maximize = "maximize"  # the score is an accuracy: its minimum is of no use, and the summary's best is the highest


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.digitnet_optuna.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False  # sampler and pruner stay settings: a study remembers them, and each job makes its pruner
    # Any optuna.samplers class with its arguments; TPE seeded, so that a search can be run again.
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": 1})
    # Any optuna.pruners class; null: no pruning. Steps are folds: the median of the finished trials at that fold.
    pruner: Any = field(default_factory=lambda: {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 3})
    direction: Direction = Direction.maximize  # of the CV mean accuracy (hydra-optuna-sweeper's key)
    n_trials: int = 20  # in all, the study's earlier trials included: a rerun resumes it
    n_jobs: int = 1  # trials launched together (in parallel where the launcher runs jobs in parallel)
    params: Optional[Any] = (
        None  # key: interval(a,b) | tag(log, interval(a,b)) | range(a,b,step) | choice(x,y) | [x, y]
    )


ConfigStore.instance().store(group="hydra/sweeper", name="digitnet_optuna", node=OptunaSweeperConf, provider="digitnet")


class OptunaSweeper(Sweeper):
    def __init__(self, **conf: Any):
        from digitnet.search.study import Search

        conf = {
            k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else getattr(v, "value", v)
            for k, v in conf.items()
        }
        self.search = Search(conf)

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.search.sweep(arguments)
