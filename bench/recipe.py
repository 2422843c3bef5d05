"""A recipe's holdout figures: task=final for several seeds, and a 5-fold CV with its fold ensemble.

    python bench/recipe.py [--seeds 1 2 3] [--no-cv] [--out DIR] -- OVERRIDE ...

e.g. `python bench/recipe.py -- experiment=best` (README, "The recipe"). Each fit runs through the real CLI
into DIR (a temp dir by default);
prints each seed's holdout accuracy and training seconds, their mean, then the CV's mean fold accuracy and the
ensemble's holdout accuracy (digitnet.evaluate on the CV run dir). The holdout is only reported: choose recipes on
the CV folds (sweeps and their paired test), never on these figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def train(out: Path, *overrides: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "digitnet.train",
            *overrides,
            f"hydra.run.dir={out}",
            "trainer.enable_progress_bar=false",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--no-cv", action="store_true", help="only the task=final fits")
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temp dir)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="digitnet-recipe-"))
    print(f"recipe: {' '.join(args.overrides) or '(defaults)'}; runs in {out}", flush=True)
    scores = []
    for seed in args.seeds:
        wall = train(out / f"final_seed{seed}", "task=final", f"seed={seed}", *args.overrides)
        metrics = json.loads((out / f"final_seed{seed}" / "test_metrics.json").read_text())
        scores.append(metrics["accuracy"])
        print(
            f"task=final seed={seed}: holdout {100 * metrics['accuracy']:.3f}%, "
            f"training {metrics['train_seconds']:.0f} s"
            f" (process {wall:.0f} s)",
            flush=True,
        )
    if scores:
        print(f"single model, {len(scores)} seeds: mean holdout {100 * statistics.mean(scores):.3f}%")
    if not args.no_cv:
        wall = train(out / "cv", *args.overrides)
        summary = json.loads((out / "cv" / "cv_summary.json").read_text())
        # evaluate reads the holdout from where training read MNIST (a data.root override, else $DIGITNET_DATA).
        root = [o.split("=", 1)[1] for o in args.overrides if o.startswith("data.root=")]
        subprocess.run(
            [sys.executable, "-m", "digitnet.evaluate", str(out / "cv"), *(["--data-root", root[-1]] if root else [])],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        ensemble = json.loads((out / "cv" / "ensemble_metrics.json").read_text())
        print(
            f"5-fold CV: mean fold accuracy {100 * summary['mean']:.3f}% (training {summary['train_seconds']:.0f} s "
            f"summed over folds, process {wall:.0f} s); fold ensemble on the holdout {100 * ensemble['accuracy']:.3f}%"
        )


if __name__ == "__main__":
    main()
