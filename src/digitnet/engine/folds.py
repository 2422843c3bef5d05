"""A run dir's finished folds (folds/fold_K.json): written once, as each fold ends, and read back to resume."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from digitnet.config.plan import RunPlan, differences
from digitnet.errors import UserError
from digitnet.files import write_json_atomic


class Pruned(Exception):
    """Raised by an after-fold hook (a search trial's pruner) to stop the fold loop."""

    def __init__(self, fold: int, value: float):
        super().__init__(f"pruned after fold {fold}")
        self.fold, self.value = fold, value


def finite_fraction(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1


def fold_problem(saved, fold: int, tta: str) -> str | None:
    """What is wrong with a fold's result (a fold file's, or cv_summary.json's entry), or None: what the reports rely
    on. `tta`: the run's, with which an ok fold was scored."""
    if not isinstance(saved, dict) or saved.get("fold") != fold:
        return f"not the result of fold {fold}"
    if saved.get("status") not in ("ok", "diverged"):
        return f"status {saved.get('status')!r} is not ok or diverged"
    if saved["status"] == "ok" and not finite_fraction(saved.get("score")):
        return f"score {saved.get('score')!r} is not an accuracy in [0, 1]"
    if saved["status"] == "ok" and saved.get("tta", "none") != tta:
        return f"tta {saved.get('tta', 'none')!r} is not the run's tta {tta!r}"
    if "tta" in saved and not finite_fraction(saved.get("score_without_tta")):
        return f"score_without_tta {saved.get('score_without_tta')!r} is not an accuracy in [0, 1]"
    if not isinstance(saved.get("history"), list) or not isinstance(saved.get("seconds"), (int, float)):
        return "history or seconds missing"
    return None


@dataclass(frozen=True)
class FoldStore:
    """Picklable (fold workers save through it too): the run dir and what a fold's result depends on."""

    run_dir: Path
    run_key: dict  # RunPlan.fingerprint_fields(): a saved fold is reused only where this matches

    @classmethod
    def for_plan(cls, run_dir: Path, plan: RunPlan) -> FoldStore:
        return cls(Path(run_dir), plan.fingerprint_fields())

    def path(self, fold: int) -> Path:
        return self.run_dir / "folds" / f"fold_{fold}.json"

    def checkpoint(self, fold: int) -> Path:
        return self.run_dir / "folds" / f"fold_{fold}.ckpt"

    def save(self, result: dict, checkpoint: dict | None = None) -> None:
        """The one place a finished fold is written: its net (fold_K.ckpt, final.ckpt's format) first, then its
        result, each atomically; the result file is what marks the fold done."""
        if checkpoint is not None:
            from digitnet.core.checkpoints import save_checkpoint

            self.path(result["fold"]).parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(self.checkpoint(result["fold"]), checkpoint)
        write_json_atomic(self.path(result["fold"]), {**result, "run_key": self.run_key})

    def load(self, fold: int) -> dict | None:
        """The fold's saved result, or None. A fold of another config stops the run: results are never mixed."""
        path = self.path(fold)
        if not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text())
            key = saved.get("run_key") if isinstance(saved, dict) else None
            problem = None if key != self.run_key else fold_problem(saved, fold, self.run_key.get("tta", "none"))
            if problem or not isinstance(key, dict):
                raise ValueError(problem or "no run_key")
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(
                f"{path} is damaged ({str(exc).splitlines()[0][:80]}); delete it and rerun: that fold trains again",
                path=path,
            ) from None
        if key != self.run_key:
            changed = "; ".join(differences(key, self.run_key)[:3])
            raise UserError(
                f"{path} was trained with another config ({changed}); rerun with the same settings to "
                "resume it, or choose a new hydra.run.dir",
                path=path,
            )
        saved.pop("run_key")
        if saved["status"] == "ok":
            self._check_checkpoint(fold, saved)
        return saved

    def _check_checkpoint(self, fold: int, result: dict) -> None:
        """A finished fold's net must be there, load, and be the net its result describes: resume would say
        "finished earlier", and evaluate fail after."""
        from digitnet.core.checkpoints import check_member, load_checkpoint

        checkpoint = self.checkpoint(fold)
        try:
            if not checkpoint.exists():
                raise UserError(f"{checkpoint} is missing, though {self.path(fold).name} says the fold finished")
            check_member(checkpoint, load_checkpoint(checkpoint), {**result, "run_key": self.run_key})
        except UserError as exc:
            raise UserError(
                f"{exc}; delete {self.path(fold)} and rerun: that fold trains again", path=checkpoint
            ) from None

    def start_afresh(self, fold: int) -> None:
        """A fold that is (re)trained starts clean logs: drop what an interrupted attempt logged."""
        for logs in ("tb", "csv"):
            shutil.rmtree(self.run_dir / logs / f"fold_{fold}", ignore_errors=True)
        self.remove_partial_files(fold)

    def remove_partial_files(self, fold: int | None = None) -> None:
        """The temp files of saves cut short (a fold worker stopped in the middle of writing its checkpoint): never
        read, since only renamed files count, and removed so that none is left behind. fold None: every fold's."""
        pattern = f".fold_{fold}.*tmp" if fold is not None else ".fold_*tmp"
        for partial in (self.run_dir / "folds").glob(pattern):
            partial.unlink(missing_ok=True)
