"""An Optuna search with and without fold-by-fold pruning, against a grid of the same budget.

    python bench/search_pruning.py [--trials 20] [--limit 15000] [--epochs 3] [--out DIR] [--runs pruned,...]

Runs, one after the other, whole processes on this machine (MNIST: $DIGITNET_DATA):
1. `hparams_search=lr` with its MedianPruner (the preset as shipped);
2. the same search with `~hydra.sweeper.pruner` (no pruning);
3. a grid sweep of `--trials` learning rates, log-spaced over the preset's range (1e-4..1), folds one at a time as
   in the search.
Each on the first --limit training images at --epochs epochs, 5 folds. Prints a markdown table: wall time, trials
pruned, fold-trainings run, best lr and its CV mean; and what the grid finds with the pruned search's compute (every
k-th of its points, k chosen so that the fold-trainings match). `--runs` runs only some of them into an --out
that holds the others (their times are kept in DIR/seconds.json), to measure one again on a quiet machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml


def run(args: list[str], sweep_dir: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "digitnet.train", *args, f"hydra.sweep.dir={sweep_dir}"],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def rows(sweep_dir: Path) -> list[dict]:
    return list(csv.DictReader(open(sweep_dir / "sweep_summary.csv")))


def folds_run(table: list[dict]) -> int:
    return sum(sum(1 for k, v in r.items() if k.startswith("fold_") and v not in ("", None)) for r in table)


def best(table: list[dict]) -> tuple[str, float]:
    ok = [r for r in table if r["status"].startswith("ok") and r["mean"]]
    top = max(ok, key=lambda r: float(r["mean"]))
    return top["overrides"], 100 * float(top["mean"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--limit", type=int, default=15000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=None)
    parser.add_argument("--runs", default="pruned,unpruned,grid")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="search-bench-"))
    common = [f"data.limit={args.limit}", f"trainer.max_epochs={args.epochs}", "trainer.enable_progress_bar=false"]
    search = ["hparams_search=lr", f"hydra.sweeper.n_trials={args.trials}", *common]
    lrs = ",".join(f"{lr:.3g}" for lr in np.logspace(-4, 0, args.trials))
    runs = {
        "search, pruned": (search, out / "pruned"),
        "search, no pruning": (search + ["hydra.sweeper.pruner=null"], out / "unpruned"),
        "grid": (["-m", f"optimizer.lr={lrs}", "cv.workers=1", "cv.parallel=false", *common], out / "grid"),
    }
    times = out / "seconds.json"
    seconds = json.loads(times.read_text()) if times.is_file() else {}
    for name, (argv, folder) in runs.items():
        if folder.name in args.runs.split(","):
            seconds[name] = run(argv, folder)
            times.write_text(json.dumps(seconds))
    print(f"{args.trials} trials, data.limit={args.limit}, {args.epochs} epochs, 5 folds; results in {out}\n")
    print("| run | wall s | trials pruned | fold trainings | best | CV mean % |")
    print("|---|---|---|---|---|---|")
    for name, (_, folder) in runs.items():
        table = rows(folder)
        pruned = sum(r["status"].startswith("pruned") for r in table)
        label, mean = best(table)
        print(f"| {name} | {seconds[name]:.0f} | {pruned} | {folds_run(table)} | {label} | {mean:.3f} |")
    grid, budget = rows(out / "grid"), folds_run(rows(out / "pruned"))
    step = max(1, round(len(grid) * 5 / budget))
    subset = grid[::step]
    label, mean = best(subset)
    print(
        f"\nThe grid with the pruned search's compute ({budget} fold trainings): every {step}th point, "
        f"{len(subset)} runs: best {label}, {mean:.3f}"
    )
    results = yaml.safe_load(open(out / "pruned" / "search_results.yaml"))
    print(f"search_results.yaml (pruned): {results}")


if __name__ == "__main__":
    main()
