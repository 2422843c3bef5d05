"""Sweep summaries: one row per job, a box plot, and a paired test of every job against the best one.

Written when a multirun ends (digitnet.sweep_callback), or on demand by `python -m digitnet.summarize DIR`,
which also reads sweeps that are unfinished or were interrupted. Every job the sweep planned has a row: those that
never started, failed or lost their summary too, so that "best" is never said of a partial table without a word.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from digitnet import layout
from digitnet.errors import UserError, shown
from digitnet.report.stats import TEST_NAME, corrected_resampled_ttest

CSV, MARKDOWN, BOXPLOT = layout.SWEEP_SUMMARY
# The columns a job's row takes from its cv_summary.json.
SUMMARY_KEYS = ("status", "mean", "std", "n", "fold_scores", "n_at_chance", "train_seconds", "wall_seconds")


def _from_folds(job_dir: Path, n_folds: int | None) -> dict:
    """A job's figures from its fold files, when its cv_summary.json is not there (unfinished, or lost)."""
    folds = layout.finished_folds(job_dir)
    stray = next((k for k in folds if n_folds is not None and k >= n_folds), None)
    if stray is not None:  # a fold file copied from a run of more folds
        raise layout.damaged(layout.fold_file(job_dir, stray), f"fold {stray} of a {n_folds}-fold run", "delete it")
    n_folds = n_folds or len(folds)
    done = len(folds) == n_folds and n_folds > 0
    ok = [f["score"] for f in folds.values() if f["status"] == "ok"]
    if any(f["status"] == "diverged" for f in folds.values()):
        status = "diverged"
    else:
        status = "ok" if done else f"incomplete ({len(folds)}/{n_folds} folds)" if folds else "not started"
    return {
        "status": status + (", rebuilt from its fold files" if done else ""),
        "n_folds": n_folds,
        "mean": float(np.mean(ok)) if status == "ok" else None,
        "std": float(np.std(ok)) if status == "ok" else None,
        "n": len(ok),
        "fold_scores": [folds[k]["score"] if k in folds else None for k in range(n_folds)],
        "n_at_chance": sum(bool(f.get("at_chance")) for f in folds.values()),
        "folds": list(folds.values()),
        "train_seconds": round(sum(f["seconds"] for f in folds.values()), 2) if folds else None,
        "wall_seconds": None,
        "resumed_folds": None,
    }


def read_job(job_dir: Path, overrides: list[str] | None = None) -> dict:
    """A job's row: its overrides, status and fold scores. `overrides`: what the sweep planned for it, for a job
    that never started (no .hydra/ of its own)."""
    # A job that started has its own overrides.yaml; one refused before it started has the sweep's plan of it.
    started = layout.is_job_dir(job_dir) or ((job_dir / layout.FAILURE).exists() and overrides is None)
    job = {
        "job": job_dir.name,
        "dir": str(job_dir),
        "override_list": layout.job_overrides(job_dir) if started else overrides,
    }
    plan = layout.read_plan(job_dir, "hydra.sweep.dir")
    summary = layout.read_cv_summary(job_dir)
    if summary is not None:
        job.update({k: summary.get(k) for k in SUMMARY_KEYS}, folds=summary["folds"], n_folds=len(summary["folds"]))
        job["resumed_folds"] = summary.get("resumed_folds")
    else:
        job.update(_from_folds(job_dir, plan.n_folds if plan else None))
        job["status"] = layout.read_outcome(job_dir) or job["status"]
    if job["status"] == "ok" and job["n_at_chance"]:
        job["status"] = f"ok, {job['n_at_chance']} at chance"
    # What the paired test needs: the fold plan must be the same for both jobs.
    folds = job.pop("folds")
    job["ratio"] = folds[0]["n_val"] / folds[0]["n_train"] if folds else None
    job["fold_plan"] = (plan.limit, plan.n_folds, plan.cv_seed) if plan else None
    return job


def compare_to_best(jobs: list[dict]) -> dict | None:
    for j in jobs:
        j.update(delta_vs_best=None, t=None, p_value=None)
    ok = [j for j in jobs if j["status"].startswith("ok") and j["mean"] is not None]
    if not ok:
        return None
    best = max(ok, key=lambda j: j["mean"])
    for j in ok:
        if j is not best:
            j["delta_vs_best"] = j["mean"] - best["mean"]
            if j["fold_plan"] != best["fold_plan"]:
                j["p_value"] = "n/a: other folds"
            else:
                j["t"], j["p_value"] = corrected_resampled_ttest(best["fold_scores"], j["fold_scores"], best["ratio"])
    return best


def _pct(x, digits=3, sign=""):
    return "" if x is None else f"{100 * x:{sign}.{digits}f}"


def _p(p):
    return "" if p is None else p if isinstance(p, str) else "nan" if math.isnan(p) else f"{p:.3g}"


def _cell(text) -> str:
    """Text as one markdown table cell: a newline or a | in a job dir's name or an override would break the row."""
    return shown(text).replace("|", "\\|")


def check_summary_writable(sweep_dir: Path) -> None:
    """All of a sweep's summary files are written, or none: a folder, a link or an unwritable file in the place of
    one is refused first."""
    for name in layout.SWEEP_SUMMARY:
        path = sweep_dir / name
        if path.is_symlink() or (path.exists() and not path.is_file()):  # a link would write outside the sweep dir
            raise UserError(
                f"{shown(path)} is not a plain file, so the sweep's summary cannot be written; move it away", path=path
            )
        try:
            if path.exists():
                open(path, "ab").close()  # may it be written? (appends nothing)
        except OSError as exc:
            raise UserError(
                f"{shown(path)} cannot be written ({exc.strerror}); make it writable or move it away", path=path
            ) from None


def _write_csv(path: Path, jobs: list[dict]) -> None:
    k = max((j["n_folds"] for j in jobs), default=0)
    folds = [f"fold_{i}" for i in range(k)]
    columns = ["job", "overrides", "status", "mean", "std", "n", *folds, "train_seconds", "wall_seconds"]
    columns += ["resumed_folds", "delta_vs_best", "t", "p_value"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*columns, "test"])
        for j in jobs:
            row = {**j, **dict(zip(folds, j["fold_scores"]))}
            writer.writerow([row.get(c) for c in columns] + [TEST_NAME if isinstance(j["t"], float) else ""])


def _table(sweep_dir: Path, jobs: list[dict], best: dict | None, common: set) -> list[str]:
    lines = [
        f"# Sweep summary: {sweep_dir}",
        "",
        f"Accuracy in % on the validation folds. p: {TEST_NAME}, each job against the best (**bold**).",
        "",
        f"Overrides shared by every job: {' '.join(sorted(common)) or '(none)'}",
        "",
        "| job | overrides | status | mean | std | folds | train s | wall s (last run) | Δ vs best | p |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for j in jobs:
        mark = "**" if j is best else ""
        folds = " ".join(_pct(s, 2) if s is not None else "–" for s in j["fold_scores"])
        wall = "" if j["wall_seconds"] is None else str(round(j["wall_seconds"]))
        wall += f" ({j['resumed_folds']} resumed)" if wall and j.get("resumed_folds") else ""
        train = "" if j["train_seconds"] is None else str(round(j["train_seconds"]))
        lines.append(
            f"| {_cell(j['job'])} | {mark}{_cell(j['overrides'])}{mark} | {_cell(j['status'])} "
            f"| {_pct(j['mean'])} | {_pct(j['std'])} | {folds} | {train} | {wall} "
            f"| {_pct(j['delta_vs_best'], sign='+')} | {_p(j['p_value'])} |"
        )
    unfinished = [j["job"] for j in jobs if not j["status"].startswith("ok")]
    if best:
        lines += [
            "",
            f"Best: job {best['job']} ({best['overrides']}), mean {_pct(best['mean'])} std {_pct(best['std'])}"
            + (f", of the jobs that finished (not job {', '.join(unfinished)})." if unfinished else "."),
        ]
    return lines


def summarize(sweep_dir: str | Path, quiet: bool = False) -> dict:
    """Write sweep_summary.csv/.md and sweep_boxplot.png into sweep_dir; return {'jobs': [...], 'best': ...}.

    "train s" sums the training seconds of a job's folds, also those finished by an earlier run that this one
    resumed; "wall s" is the last run's start-to-report time (small for a resumed job, empty for an unfinished one).
    """
    from digitnet.report.figures import boxplot_figure, save  # matplotlib: not at import (Hydra loads the callback)

    sweep_dir = Path(sweep_dir)
    check_summary_writable(sweep_dir)
    jobs = [read_job(d, overrides) for d, overrides in layout.job_dirs(sweep_dir)]
    if not jobs:
        raise UserError(f"{shown(sweep_dir)} holds no job dirs; is it a sweep dir?", path=sweep_dir)
    # Show what varies per job; what every job shares is said once, above the table.
    common = set.intersection(*(set(j["override_list"]) for j in jobs)) if len(jobs) > 1 else set()
    for j in jobs:
        j["overrides"] = " ".join(o for o in j["override_list"] if o not in common) or "(defaults)"
    best = compare_to_best(jobs)
    _write_csv(sweep_dir / CSV, jobs)
    lines = _table(sweep_dir, jobs, best, common)
    (sweep_dir / MARKDOWN).write_text("\n".join(lines) + "\n")
    groups = {f"{j['job']}: {j['overrides']}"[:40]: [s for s in j["fold_scores"] if s is not None] for j in jobs}
    save(boxplot_figure(groups, "sweep: fold accuracies per job"), sweep_dir / BOXPLOT)
    if not quiet:
        print("\n".join(lines[4:]))
        print(f"Sweep summary: {sweep_dir / MARKDOWN}" + ("" if best else " (no job finished all its folds)"))
    return {"jobs": jobs, "best": best}
