"""task=final: fit on all training images, save a safe checkpoint, score it once on the holdout."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import lightning.pytorch as pl

from digitnet import layout
from digitnet.config.plan import RunPlan
from digitnet.core.data import MNISTArrays
from digitnet.core.module import Diverged, fit
from digitnet.core.nets import with_tta
from digitnet.engine.fit import fit_loggers, make_datamodule, make_model, make_trainer, say_profile
from digitnet.errors import NoResult, UserError
from digitnet.logs import say
from digitnet.report import results


def run_final(plan: RunPlan, arrays: MNISTArrays, run_dir: Path) -> dict:
    start = time.perf_counter()
    pl.seed_everything(plan.seed, verbose=False)
    dm = make_datamodule(plan, arrays, fold=None)  # on the plan's data device, as every fold's
    model = make_model(plan, dm)
    # No validation split: every training image is used for fitting; the holdout is only scored, after.
    for logs in layout.LOG_DIRS:  # an interrupted fit's events: not mixed in
        shutil.rmtree(run_dir / logs / "final", ignore_errors=True)
    profile = run_dir / layout.PROFILER / "final"
    trainer = make_trainer(plan, fit_loggers(plan, run_dir, "final"), [], "final fit", profile, limit_val_batches=0)
    try:
        fit(trainer, model, datamodule=dm)
    except Diverged as exc:
        raise NoResult(f"the final fit diverged ({exc}); lower optimizer.lr", key="optimizer.lr") from None
    train_seconds = time.perf_counter() - start
    if "profiler" in plan.trainer:
        say_profile(profile)
    trainer.save_checkpoint(run_dir / layout.FINAL_CKPT)
    return _score(
        plan, arrays, run_dir, model, n_train=len(dm.train_y), train_seconds=round(train_seconds, 2), start=start
    )


def score_saved(plan: RunPlan, arrays: MNISTArrays, run_dir: Path) -> dict:
    """A final fit that was stopped after saving final.ckpt and before scoring it: score the saved model now."""
    from digitnet.core.checkpoints import load_checkpoint

    try:  # of this config: the run dir's plan.json said so (a final.ckpt without one is refused)
        model = load_checkpoint(run_dir / layout.FINAL_CKPT)
    except UserError as exc:
        raise UserError(f"{exc}; delete it to fit the final model again") from None
    say(
        f"The final model of this config was saved but not scored (the run was stopped): scoring "
        f"{run_dir / 'final.ckpt'} on the holdout"
    )
    n_train = len(arrays.train_y) if plan.limit <= 0 else min(plan.limit, len(arrays.train_y))
    return _score(plan, arrays, run_dir, model, n_train=n_train, scored_after_a_stop=True, start=time.perf_counter())


def _score(plan: RunPlan, arrays: MNISTArrays, run_dir: Path, model, start: float, **facts) -> dict:
    ckpt = run_dir / layout.FINAL_CKPT
    metrics = results.holdout_metrics(with_tta(model, plan.tta), arrays.test_x, arrays.test_y, plan.eval_batch_size)
    line, title = f"> {100 * metrics['accuracy']:.3f}", f"{plan.model}: holdout confusion matrix"
    if plan.tta != "none":  # the same model without it, beside: what TTA adds
        without = results.holdout_metrics(model, arrays.test_x, arrays.test_y, plan.eval_batch_size)["accuracy"]
        metrics["accuracy_without_tta"] = without
        line += f"  (tta={plan.tta}, {100 * without:.3f} without)"
        title = f"{plan.model}, tta={plan.tta}: holdout confusion matrix"
    metrics.update(
        model=plan.model,
        task="final",
        tta=plan.tta,
        checkpoint=str(ckpt),
        **facts,
        wall_seconds=round(time.perf_counter() - start, 2),
        plan=plan.as_dict(),
    )
    results.write_holdout_report(run_dir, metrics, title)
    say(line)
    say(f"Checkpoint: {ckpt}")
    return metrics
