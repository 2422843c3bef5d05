"""A run dir's finished folds (folds/fold_K.json): written once, as each fold ends, and read back to resume."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from digitnet import layout
from digitnet.config.plan import RunPlan
from digitnet.errors import UserError


@dataclass(frozen=True)
class FoldStore:
    """Picklable (fold workers save through it too): the run dir and what a fold's result depends on."""

    run_dir: Path
    run_key: dict  # RunPlan.fingerprint_fields(): a saved fold is reused only where this matches

    @classmethod
    def for_plan(cls, run_dir: Path, plan: RunPlan) -> FoldStore:
        return cls(Path(run_dir), plan.fingerprint_fields())

    def path(self, fold: int) -> Path:
        return layout.fold_file(self.run_dir, fold)

    def checkpoint(self, fold: int) -> Path:
        return layout.fold_checkpoint(self.run_dir, fold)

    def save(self, result: dict, checkpoint: dict | None = None) -> None:
        """The one place a finished fold is written: its net (fold_K.ckpt, final.ckpt's format) first, then its
        result, each atomically; the result file is what marks the fold done."""
        if checkpoint is not None:
            from digitnet.core.checkpoints import save_checkpoint

            self.path(result["fold"]).parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(self.checkpoint(result["fold"]), checkpoint)
        layout.write_json_atomic(self.path(result["fold"]), {**result, "run_key": self.run_key})

    def load(self, fold: int) -> dict | None:
        """The fold's saved result, or None. A fold of another config stops the run: results are never mixed."""
        saved = layout.read_fold(self.run_dir, fold, self.run_key)
        if saved is not None:
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
        for logs in layout.LOG_DIRS:
            shutil.rmtree(self.run_dir / logs / f"fold_{fold}", ignore_errors=True)
        self.remove_partial_files(fold)

    def remove_partial_files(self, fold: int | None = None) -> None:
        """The temp files of saves cut short (a fold worker stopped in the middle of writing its checkpoint): never
        read, since only renamed files count, and removed so that none is left behind. fold None: every fold's."""
        pattern = f".fold_{fold}.*tmp" if fold is not None else ".fold_*tmp"
        for partial in (self.run_dir / layout.FOLDS).glob(pattern):
            partial.unlink(missing_ok=True)
