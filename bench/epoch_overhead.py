"""One training epoch of the deep net on fold 0 (48k images, batch 32): digitnet vs a plain PyTorch loop.

Same process, same data, same net and optimizer; prints both times and digitnet's ratio to the plain loop.

    python bench/epoch_overhead.py [--data-root DIR] [--limit N] [--repeats R]
"""

from __future__ import annotations

import argparse
import time

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from digitnet.core.data import default_root, load_mnist
from digitnet.engine.fit import make_datamodule, make_model
from digitnet.logs import quiet
from digitnet.train import compose_plan


def plain_epoch(dm, plan) -> float:
    """The pytorch/examples way: the same in-memory batches, a bare loop."""
    torch.manual_seed(1)
    model = make_model(plan, dm)
    opt = torch.optim.SGD(model.parameters(), lr=plan.optimizer["lr"], momentum=plan.optimizer["momentum"])
    model.train()
    start = time.perf_counter()
    for x, y in dm.train_dataloader():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def digitnet_epoch(dm, plan) -> float:
    """digitnet's LightningModule, metrics and callbacks, in a Trainer as the CV loop builds it (no validation)."""
    torch.manual_seed(1)
    model = make_model(plan, dm)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[],
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=default_root())
    parser.add_argument("--limit", type=int, default=0, help="first N training images (0 = all 60k, fold 0 = 48k)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    quiet()
    plan = compose_plan("model=deep", f"data.limit={args.limit}", "trainer.accelerator=cpu")
    dm = make_datamodule(plan, load_mnist(args.data_root, download=False), fold=0)
    print(
        f"deep net, {len(dm.train_y)} training images, batch 32, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    totals = {"plain_epoch": 0.0, "digitnet_epoch": 0.0}
    for r in range(args.repeats):
        # Alternate the order so neither side always runs on a warmer cache.
        first, second = (plain_epoch, digitnet_epoch) if r % 2 == 0 else (digitnet_epoch, plain_epoch)
        t = {first.__name__: first(dm, plan), second.__name__: second(dm, plan)}
        ratio = t["digitnet_epoch"] / t["plain_epoch"]
        print(f"plain loop {t['plain_epoch']:.2f} s   digitnet {t['digitnet_epoch']:.2f} s   ratio {ratio:.3f}")
        for key in totals:
            totals[key] += t[key]
    if args.repeats > 1:  # single epochs vary by 20% on a shared 2-core VM: the sum is the figure to quote
        print(
            f"all {args.repeats} repeats: plain {totals['plain_epoch']:.1f} s, "
            f"digitnet {totals['digitnet_epoch']:.1f} s, "
            f"ratio {totals['digitnet_epoch'] / totals['plain_epoch']:.3f}"
        )


if __name__ == "__main__":
    main()
