"""task=final: fit on all training images, save a safe checkpoint, score it once on the holdout."""

from __future__ import annotations

import time
from pathlib import Path

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from digitnet import report
from digitnet.cv import Diverged, DivergenceGuard, make_datamodule, make_model, make_trainer
from digitnet.data import MNISTArrays
from digitnet.config import eval_batch_size
from digitnet.errors import UserError
from digitnet.models import fit


def run_final(cfg: DictConfig, arrays: MNISTArrays, run_dir: Path) -> dict:
    start = time.perf_counter()
    pl.seed_everything(int(cfg.seed), verbose=False)
    dm = make_datamodule(cfg, arrays, fold=None, shuffle_seed=int(cfg.seed))
    model = make_model(cfg, dm)
    # No validation split: every training image is used for fitting; the holdout is only scored, after.
    trainer = make_trainer(cfg, run_dir, "final", [DivergenceGuard()], label="final fit", enable_checkpointing=False,
                           limit_val_batches=0)
    try:
        fit(trainer, model, datamodule=dm)
    except Diverged as exc:
        raise UserError(f"the final fit diverged ({exc}); lower optimizer.lr") from None
    train_seconds = time.perf_counter() - start
    ckpt = run_dir / "final.ckpt"
    trainer.save_checkpoint(ckpt)
    metrics = report.holdout_metrics(model, arrays.test_x, arrays.test_y, eval_batch_size(cfg))
    metrics.update(
        model=cfg.model.name,
        task="final",
        checkpoint=str(ckpt),
        n_train=len(dm.train_y),
        train_seconds=round(train_seconds, 2),
        wall_seconds=round(time.perf_counter() - start, 2),
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    report.write_holdout_report(run_dir, metrics, f"{cfg.model.name}: holdout confusion matrix")
    print(f"> {100 * metrics['accuracy']:.3f}")
    return metrics
