"""The seed protocol, four ways, in one process on the same data: seconds and mean validation accuracy.

Protocol: the deep net, KFold(5, shuffle, random_state=1) of the 60k training images (48k train / 12k validation
per fold), SGD 0.01/0.9, batch 32, 10 epochs, validation every epoch.

    python bench/cv_speed.py [--quick] [--epochs N] [--folds N] [--limit N] [--device cpu|cuda] [--only NAME ...]

--quick runs 1 epoch. Methods: naive (Lightning with TensorDataset + DataLoader and a self.log per step), plain (a
bare PyTorch loop over the same in-memory batches), sequential (digitnet, cv.parallel=false cv.workers=1), parallel
(digitnet, cv.parallel=true: one packed net) and workers (digitnet, cv.workers=auto: on CPU one fold process per core,
the cores split between them). The Keras/TF figure of the tutorial's own code is a documented reference only (README).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from digitnet.core.data import default_root, load_mnist
from digitnet.core.nets import build_net
from digitnet.engine.fit import make_datamodule
from digitnet.logs import quiet
from digitnet.train import compose_plan, run


class NaiveModule(pl.LightningModule):
    """What a first Lightning port looks like: per-sample dataset, default collate, self.log every step."""

    def __init__(self):
        super().__init__()
        self.net = build_net("deep")

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


def naive(arrays, plan, args) -> list[float]:
    scores = []
    for fold in range(args.folds):
        pl.seed_everything(1 + fold, verbose=False)
        dm = make_datamodule(plan, arrays, fold)
        train = DataLoader(TensorDataset(dm.train_x, dm.train_y), batch_size=32, shuffle=True)
        val = DataLoader(TensorDataset(dm.val_x, dm.val_y), batch_size=32)
        model = NaiveModule()
        trainer = pl.Trainer(
            max_epochs=args.epochs,
            accelerator=args.device,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(model, train, val)
        scores.append(float(trainer.callback_metrics["val_acc"]))
    return scores


def plain(arrays, plan, args) -> list[float]:
    """pytorch/examples style; data on the device, batches gathered by index."""
    device = torch.device(args.device)
    scores = []
    for fold in range(args.folds):
        torch.manual_seed(1 + fold)
        dm = make_datamodule(plan, arrays, fold)
        x, y = dm.train_x.to(device), dm.train_y.to(device)
        vx, vy = dm.val_x.to(device), dm.val_y.to(device)
        model = build_net("deep").to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        g = torch.Generator().manual_seed(1 + fold)
        for _ in range(args.epochs):
            model.train()
            perm = torch.randperm(len(y), generator=g).to(device)
            for i in range(0, len(y), 32):
                idx = perm[i : i + 32]
                opt.zero_grad()
                F.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                correct = sum(
                    int((model(vx[i : i + 1000]).argmax(1) == vy[i : i + 1000]).sum()) for i in range(0, len(vy), 1000)
                )
        scores.append(correct / len(vy))
    return scores


def digitnet(parallel: bool, workers: int | str = 1):
    def method(arrays, plan, args) -> list[float]:
        run_plan = compose_plan(
            "model=deep",
            f"trainer.max_epochs={args.epochs}",
            "cv.n_folds=5",
            f"data.limit={args.limit}",
            f"data.root={args.data_root}",
            f"cv.parallel={str(parallel).lower()}",
            f"cv.workers={workers}",
            "trainer.enable_progress_bar=false",
            f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
        )
        with tempfile.TemporaryDirectory() as tmp:
            summary = run(run_plan, run_dir=tmp)
        return summary["fold_scores"]

    return method


METHODS = {
    "naive": naive,
    "plain": plain,
    "sequential": digitnet(False),
    "parallel": digitnet(True),
    "workers": digitnet(False, "auto"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--folds", type=int, default=5, help="folds for naive/plain (digitnet always runs 5)")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--data-root", default=default_root())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", nargs="*", choices=list(METHODS), default=list(METHODS))
    args = parser.parse_args()
    if args.quick:
        args.epochs = 1
    quiet()
    arrays = load_mnist(args.data_root, download=False)
    # The seed protocol's folds and batches, for the hand-written methods (their data stays on the CPU here).
    plan = compose_plan(
        "model=deep", f"data.limit={args.limit}", "data.eval_batch_size=1000", "trainer.accelerator=cpu"
    )
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"deep net, {args.epochs} epoch(s), folds: naive/plain {args.folds}, digitnet 5; {name}; "
        f"torch {torch.__version__}"
    )
    for method in args.only:
        start = time.perf_counter()
        scores = METHODS[method](arrays, plan, args)
        seconds = time.perf_counter() - start
        print(
            f"{method:>10}: {seconds:8.1f} s  ({seconds / len(scores) / args.epochs:6.2f} s per fold-epoch)  "
            f"mean val acc {100 * np.mean(scores):.3f}%  over {len(scores)} folds",
            flush=True,
        )


if __name__ == "__main__":
    main()
