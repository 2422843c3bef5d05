"""Issue 11's recipe search in one go, for a machine that can run several fits at once (one GPU: bench/recipe_gpu.sh).

    python bench/recipe_search.py [--out DIR] [--cv-timeout S] [--final-timeout S] -- OVERRIDE ...

1. Every candidate below runs its 5-fold CV on all 60k (the same KFold(5, shuffle, seed 1) folds), all at once.
2. The pick, on the CV folds only: the best mean fold accuracy overall, and the best among the candidates whose
   final fit fits the 15-minute budget on this project's 2-core CPU (predicted from the CPU seconds an epoch measured
   for each net, below). Each candidate is compared with the best by the sweep table's paired test.
3. 3 seeds of task=final for each pick, and every candidate's fold ensemble on the holdout (digitnet.evaluate), all
   at once. The holdout figures are reported only: nothing is chosen on them.

Prints the tables and writes recipe_search.json into --out's parent of runs (or $OUT when set).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from digitnet.report.stats import corrected_resampled_ttest  # noqa: E402

# All on top of experiment=best (affine augmentation, one-cycle SGD, label smoothing 0.1) at batch 128: on the CPU a
# batch of 128 costs what 4 batches of 32 do (bench: 22 s an epoch for deep either way), on a GPU 4x fewer steps.
# cpu_s_per_epoch: task=final, 2 epochs on this project's 2-core CPU VM (AMD EPYC, torch 2.14.1), start-up removed:
# deepbn 58 s -> 24 s an epoch, vgg 82 s -> 36 s an epoch; deep from its 30-epoch fits (659-755 s).
CANDIDATES = {
    "deep-lr0.1-30ep": ("model=deep optimizer.lr=0.1 trainer.max_epochs=30", 23 * 30),
    "deepbn-lr0.2-30ep": ("model=deepbn optimizer.lr=0.2 trainer.max_epochs=30", 24 * 30),
    "vgg-lr0.2-24ep": ("model=vgg optimizer.lr=0.2 trainer.max_epochs=24", 36 * 24),
    "vgg-lr0.1-30ep": ("model=vgg optimizer.lr=0.1 trainer.max_epochs=30", 36 * 30),
    "vgg-lr0.2-30ep": ("model=vgg optimizer.lr=0.2 trainer.max_epochs=30", 36 * 30),
    "deepbn-lr0.2-40ep": ("model=deepbn optimizer.lr=0.2 trainer.max_epochs=40", 24 * 40),
}
BASE = "experiment=best data.batch_size=128"  # in a log: a line per epoch, so a stopped run shows how far it got
BUDGET_S = 15 * 60


def slug(name: str) -> str:
    return name.replace(" ", "_").replace(".", "")


def merged(*groups: list[str]) -> list[str]:
    """Overrides, later groups winning per key (digitnet.train refuses a key given twice)."""
    by_key = {}
    for group in groups:
        by_key.update((o.split("=", 1)[0], o) for o in group)
    return list(by_key.values())


# --serial: one run at a time. Several processes on one GPU are time-sliced, and a step that waits for the GPU (the
# augmentation's per-step host-to-device copy) waits for every other process's slice: 6 CVs at once on an H200 had
# not finished 24 epochs in 250 s (2026-11-27).
SERIAL = False
DEADLINE = float("inf")


def launch(out: Path, name: str, overrides: list[str], timeout: float) -> tuple[subprocess.Popen, float] | None:
    timeout = min(timeout, DEADLINE - time.perf_counter() - 10)
    if timeout < 30:
        print(f"  {name}: skipped, {timeout + 10:.0f} s left before the deadline", flush=True)
        return None
    log = open(out / f"{name}.log", "w")
    command = [
        "timeout",
        str(int(timeout)),
        sys.executable,
        "-m",
        "digitnet.train",
        *overrides,
        f"hydra.run.dir={out / name}",
    ]
    job = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), time.perf_counter()
    if SERIAL:
        wait_all({name: job})
    return job


WALLS: dict[str, float] = {}  # each run's seconds, start to exit


def wait_all(jobs: dict) -> dict[str, float]:
    for name, job in jobs.items():
        if job is None or name in WALLS:
            continue
        process, start = job
        process.wait()
        walls = WALLS
        walls[name] = round(time.perf_counter() - start, 1)
        tail = process.args[-1].split("=", 1)[1]
        lines = [line for line in Path(tail + ".log").read_text().splitlines() if "epoch" in line]
        metrics = Path(tail) / "test_metrics.json"
        holdout = f"; holdout {100 * json.loads(metrics.read_text())['accuracy']:.2f}%" if metrics.is_file() else ""
        print(
            f"  {name}: exit {process.returncode} after {walls[name]} s{holdout}; last epoch line: "
            f"{lines[-1] if lines else None}",
            flush=True,
        )
    return WALLS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temp dir)")
    parser.add_argument("--report", type=Path, default=Path(os.environ.get("OUT", ".")) / "recipe_search.json")
    parser.add_argument("--cv-timeout", type=float, default=240)
    parser.add_argument("--final-timeout", type=float, default=200)
    parser.add_argument("--serial", action="store_true", help="one run at a time (a GPU: see SERIAL)")
    parser.add_argument("--deadline", type=float, default=float("inf"), help="seconds from the start; no run past it")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--only", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES))
    parser.add_argument("overrides", nargs="*", help="added to every run (trainer.accelerator=gpu, data.root=...)")
    args = parser.parse_args()
    global SERIAL, DEADLINE
    SERIAL, DEADLINE = args.serial, time.perf_counter() + args.deadline
    out = args.out or Path(tempfile.mkdtemp(prefix="digitnet-recipe-search-"))
    out.mkdir(parents=True, exist_ok=True)
    base = [*BASE.split(), *args.overrides]
    report: dict = {"base": base, "candidates": {}}

    print(
        f"== 1. {len(args.only)} 5-fold CVs {'one at a time' if SERIAL else 'at once'} ({time.strftime('%T')}); "
        f"runs in {out}",
        flush=True,
    )
    jobs = {
        f"cv_{slug(n)}": launch(
            out, f"cv_{slug(n)}", merged(base, CANDIDATES[n][0].split(), args.overrides), args.cv_timeout
        )
        for n in args.only
    }
    walls = wait_all(jobs)
    scores = {}
    for n in args.only:
        summary_path = out / f"cv_{slug(n)}" / "cv_summary.json"
        entry = report["candidates"][n] = {
            "overrides": CANDIDATES[n][0],
            "cpu_fit_s_predicted": CANDIDATES[n][1],
            "cv_wall_s": walls.get(f"cv_{slug(n)}"),
        }
        if summary_path.is_file():
            summary = json.loads(summary_path.read_text())
            if summary["status"] == "ok" and not summary["n_diverged"] and summary["n"] == 5:
                scores[n] = [100 * s for s in summary["fold_scores"]]
                entry.update(cv_mean=100 * summary["mean"], cv_folds=scores[n], cv_train_s=summary["train_seconds"])
    if not scores:
        print("no candidate finished its CV", flush=True)
        Path(args.report).write_text(json.dumps(report, indent=1))
        sys.exit(1)
    best = max(scores, key=lambda n: statistics.mean(scores[n]))
    in_budget = [n for n in scores if CANDIDATES[n][1] <= BUDGET_S]
    best_in_budget = max(in_budget, key=lambda n: statistics.mean(scores[n])) if in_budget else None
    print(f"\n| candidate (+ {BASE}) | CPU fit (predicted) | mean % | folds | delta vs best | p |")
    print("|---|---|---|---|---|---|")
    for n in sorted(scores, key=lambda n: -statistics.mean(scores[n])):
        t, p = corrected_resampled_ttest(scores[n], scores[best], 1 / (len(scores[n]) - 1))
        report["candidates"][n].update(delta_vs_best=statistics.mean(scores[n]) - statistics.mean(scores[best]), p=p)
        print(
            f"| {n} | {CANDIDATES[n][1] / 60:.0f} min | {statistics.mean(scores[n]):.3f} | "
            f"{' '.join(f'{s:.2f}' for s in scores[n])} | "
            f"{'' if n == best else f'{statistics.mean(scores[n]) - statistics.mean(scores[best]):+.3f}'} | "
            f"{'' if n == best else f'{p:.2f}'} |"
        )
    picks = list(dict.fromkeys(p for p in (best, best_in_budget) if p))
    report.update(best=best, best_in_budget=best_in_budget)
    print(f"picked on CV: best {best!r}; best within {BUDGET_S // 60} CPU minutes {best_in_budget!r}", flush=True)

    print(
        f"\n== 2. every fold ensemble on the holdout, then task=final seeds {args.seeds} for {picks} "
        f"({time.strftime('%T')})",
        flush=True,
    )
    root = [o.split("=", 1)[1] for o in args.overrides if o.startswith("data.root=")]
    evaluations = {
        n: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "digitnet.evaluate",
                str(out / f"cv_{slug(n)}"),
                *(["--data-root", root[-1]] if root else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        for n in scores
    }
    for n, process in evaluations.items():
        process.wait()
        metrics = out / f"cv_{slug(n)}" / "ensemble_metrics.json"
        if metrics.is_file():
            report["candidates"][n]["ensemble_holdout"] = 100 * json.loads(metrics.read_text())["accuracy"]
            print(f"  {n}: fold ensemble on the holdout {report['candidates'][n]['ensemble_holdout']:.2f}%", flush=True)
    Path(args.report).write_text(json.dumps(report, indent=1))
    jobs = {
        f"final_{slug(n)}_seed{s}": launch(
            out,
            f"final_{slug(n)}_seed{s}",
            merged(base, CANDIDATES[n][0].split(), args.overrides, ["task=final", f"seed={s}"]),
            args.final_timeout,
        )
        for s in args.seeds
        for n in picks
    }
    walls = wait_all(jobs)
    for n in picks:
        finals = []
        for s in args.seeds:
            metrics = out / f"final_{slug(n)}_seed{s}" / "test_metrics.json"
            if metrics.is_file():
                m = json.loads(metrics.read_text())
                finals.append(
                    {
                        "seed": s,
                        "holdout": 100 * m["accuracy"],
                        "train_s": m.get("train_seconds"),
                        "process_s": walls.get(f"final_{slug(n)}_seed{s}"),
                    }
                )
        report["candidates"][n]["finals"] = finals
    print("\n| candidate | CV mean % | fold ensemble, holdout % | task=final holdout % (seeds 1 2 3) | mean |")
    print("|---|---|---|---|---|")
    for n in sorted(scores, key=lambda n: -statistics.mean(scores[n])):
        c = report["candidates"][n]
        finals = c.get("finals", [])
        print(
            f"| {n} | {c['cv_mean']:.3f} | {c.get('ensemble_holdout', float('nan')):.2f} | "
            f"{' '.join(format(f['holdout'], '.2f') for f in finals)} | "
            f"{statistics.mean(f['holdout'] for f in finals) if finals else float('nan'):.3f} |"
        )
    Path(args.report).write_text(json.dumps(report, indent=1))
    print(f"\nreport: {args.report} ({time.strftime('%T')})")


if __name__ == "__main__":
    main()
