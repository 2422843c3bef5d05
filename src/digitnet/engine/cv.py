"""The k-fold loop: resume what a run dir holds, train the rest with the plan's runner, write the report."""

from __future__ import annotations

import time
from pathlib import Path

from digitnet import layout
from digitnet.config.plan import RunPlan
from digitnet.core.data import MNISTArrays
from digitnet.engine.folds import FoldStore
from digitnet.engine.runners import RUNNERS
from digitnet.logs import say
from digitnet.report.results import cv_summary, write_cv_report


class Pruned(Exception):
    """Raised by an after-fold hook (a search trial's pruner) to stop the fold loop."""

    def __init__(self, fold: int, value: float):
        super().__init__(f"pruned after fold {fold}")
        self.fold, self.value = fold, value


def run_cv(plan: RunPlan, arrays: MNISTArrays, run_dir: Path, after_fold=None) -> dict:
    """Train and score every fold (skipping folds a previous run in this dir finished); write the report.
    `after_fold(result)`: called as each fold ends; raising Pruned stops the run, without a report."""
    start = time.perf_counter()
    store = FoldStore.for_plan(run_dir, plan)
    results: dict[int, dict] = {}

    def finish(result: dict, resumed: bool = False) -> None:
        line = f"> {100 * result['score']:.3f}" if result["status"] == "ok" else f"> {result['status']}"
        # Folds can end in any order (fold workers), so each line names its fold, numbered as folds/fold_K.json.
        line += f"  (fold {result['fold']}{', finished earlier' if resumed else ''}"
        line += f"; tta={result['tta']}, {100 * result['score_without_tta']:.3f} without)" if "tta" in result else ")"
        say(line + ("  at chance: learned nothing" if result.get("at_chance") else ""))
        results[result["fold"]] = result
        if after_fold is not None:
            after_fold(result)

    try:
        for fold in range(plan.n_folds):
            saved = store.load(fold)
            if saved is not None:
                finish(saved, resumed=True)
        resumed = len(results)
        pending = [fold for fold in range(plan.n_folds) if fold not in results]
        for fold in pending:
            store.start_afresh(fold)
        if pending:
            RUNNERS[plan.runner](plan, arrays, pending, store, finish)
    except Pruned as pruned:  # the folds that ended are kept; the summary marks the run as pruned
        layout.write_json_atomic(
            run_dir / layout.PRUNED, {"fold": pruned.fold, "value": pruned.value, "folds": sorted(results)}
        )
        say(f"pruned after fold {pruned.fold}: mean so far {100 * pruned.value:.3f}, below the pruner's bar")
        return {"status": str(pruned), "mean": None}

    ordered = [results[fold] for fold in range(plan.n_folds)]
    summary = cv_summary(plan, ordered, wall_seconds=time.perf_counter() - start, resumed_folds=resumed)
    write_cv_report(run_dir, summary, arrays.train_x[:9], arrays.train_y[:9])
    if summary["mean"] is not None:
        chance = f" ({summary['n_at_chance']} at chance)" if summary["n_at_chance"] else ""
        tta = f" (tta={plan.tta}; {100 * summary['mean_without_tta']:.3f} without)" if plan.tta != "none" else ""
        say(f"Accuracy: mean={100 * summary['mean']:.3f} std={100 * summary['std']:.3f}, n={summary['n']}{chance}{tta}")
    else:
        say(f"Accuracy: none, {summary['status']} ({summary['n_diverged']} of {len(ordered)} folds diverged)")
    return summary
