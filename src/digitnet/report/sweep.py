"""Sweep summaries: one row per job, a box plot, and a paired test of every job against the best one.

Written when a multirun ends (config.multirun.SweepCallback), or on demand by `python -m digitnet.summarize DIR`,
which also reads sweeps that are unfinished or were interrupted. Every job the sweep planned has a row: those that
never started, failed or lost their summary too, so that "best" is never said of a partial table without a word.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import yaml

from digitnet.engine.folds import finite_fraction, fold_problem
from digitnet.errors import UserError, shown
from digitnet.files import run_file_in
from digitnet.report.stats import TEST_NAME, corrected_resampled_ttest

SUMMARY_FILES = ("sweep_summary.csv", "sweep_summary.md", "sweep_boxplot.png")
JOBS_FILE = "sweep_jobs.json"  # the jobs the sweep planned, written by its callback (a search: its sweeper)
PRUNED_FILE = "pruned.json"  # in a search trial's dir: the fold after which its pruner stopped it


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _damaged(path, str(exc).splitlines()[0][:80]) from None


def _damaged(path: Path, what: str) -> UserError:
    return UserError(
        f"{shown(path)} is damaged ({what}); delete it (a fold file retrains on the next run of that "
        "job) or rerun the job",
        path=path,
    )


def saved_overrides(job_dir: Path) -> list[str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    try:
        overrides = yaml.safe_load(path.read_text()) or []
        assert isinstance(overrides, list) and all(isinstance(o, str) for o in overrides)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AssertionError):
        raise UserError(
            f"{shown(path)} is missing or damaged, so which job {shown(job_dir)} ran is unknown; rerun the "
            "sweep's own command (it writes it again)",
            path=path,
        ) from None
    return [o for o in overrides if not o.startswith("hydra.")]


def _check_summary(path: Path, s) -> None:
    """cv_summary.json as the table needs it: accuracies in [0, 1] (or none), one per fold, folds that read right."""
    if not isinstance(s, dict) or not all(
        isinstance(s.get(k), t) for k, t in (("folds", list), ("fold_scores", list), ("plan", dict), ("status", str))
    ):
        raise _damaged(path, "not a CV summary")
    if not len(s["fold_scores"]) == len(s["folds"]) == s["plan"].get("n_folds"):
        raise _damaged(path, f"{len(s['fold_scores'])} fold scores for {s['plan'].get('n_folds')} folds")
    for key in ("mean", "std"):
        if s.get(key) is not None and not finite_fraction(s[key]):
            raise _damaged(path, f"{key} {s[key]!r} is not an accuracy in [0, 1]")
    for k, (score, fold) in enumerate(zip(s["fold_scores"], s["folds"])):
        problem = fold_problem(fold, k, s["plan"].get("tta", "none")) or (
            None if score is None or finite_fraction(score) else f"score {score!r}"
        )
        if problem:
            raise _damaged(path, f"fold {k}: {problem}")


def _from_folds(job_dir: Path, n_folds: int | None) -> dict:
    """A job's figures from its fold files, when its cv_summary.json is not there (unfinished, or lost)."""
    folds = {}
    for path in sorted((job_dir / "folds").glob("fold_*.json")):
        f = _read_json(path)
        problem = fold_problem(
            f,
            f.get("fold") if isinstance(f, dict) else -1,
            (f.get("run_key") or {}).get("tta", "none")
            if isinstance(f, dict) and isinstance(f.get("run_key"), dict)
            else "none",
        )
        if problem or path.name != f"fold_{f['fold']}.json" or not 0 <= f["fold"] < (n_folds or f["fold"] + 1):
            raise _damaged(path, problem or f"it holds the result of fold {f['fold']!r}")  # a copied file
        folds[f["fold"]] = f
    n_folds = n_folds or len(folds)
    scores = [folds[k]["score"] if k in folds else None for k in range(n_folds)]
    done = len(folds) == n_folds and n_folds > 0
    ok = [f["score"] for f in folds.values() if f["status"] == "ok"]
    status = (
        "diverged"
        if any(f["status"] == "diverged" for f in folds.values())
        else "ok"
        if done
        else f"incomplete ({len(folds)}/{n_folds} folds)"
        if folds
        else "not started"
    )
    at_chance = sum(bool(f.get("at_chance")) for f in folds.values())
    return {
        "status": status + (", rebuilt from its fold files" if done else ""),
        "n_folds": n_folds,
        "mean": float(np.mean(ok)) if status == "ok" else None,
        "std": float(np.std(ok)) if status == "ok" else None,
        "n": len(ok),
        "fold_scores": scores,
        "n_at_chance": at_chance,
        "folds": list(folds.values()),
        "train_seconds": round(sum(f["seconds"] for f in folds.values()), 2) if folds else None,
        "wall_seconds": None,
        "resumed_folds": None,
    }


def read_job(job_dir: Path, overrides: list[str] | None = None) -> dict:
    """A job's row: its overrides, status and fold scores. `overrides`: what the sweep planned for it, for a job
    that never started (no .hydra/ of its own)."""
    # A job that started has its own overrides.yaml; one refused before it started has the sweep's plan of it.
    started = (
        (job_dir / ".hydra").is_dir()
        or run_file_in(job_dir, sweeps=False)
        or ((job_dir / "failure.json").exists() and overrides is None)
    )
    job = {
        "job": job_dir.name,
        "dir": str(job_dir),
        "override_list": saved_overrides(job_dir) if started else overrides,
    }
    plan = _read_json(job_dir / "plan.json") if (job_dir / "plan.json").is_file() else None
    if plan is not None and not (
        isinstance(plan, dict)
        and all(
            isinstance(plan.get(k), int) and not isinstance(plan.get(k), bool) for k in ("n_folds", "limit", "cv_seed")
        )
    ):
        raise _damaged(job_dir / "plan.json", "not a run plan")
    path = job_dir / "cv_summary.json"
    if path.is_file():
        s = _read_json(path)
        _check_summary(path, s)
        job.update(
            {
                k: s.get(k)
                for k in (
                    "status",
                    "mean",
                    "std",
                    "n",
                    "fold_scores",
                    "n_at_chance",
                    "folds",
                    "train_seconds",
                    "wall_seconds",
                    "resumed_folds",
                )
            },
            n_folds=len(s["folds"]),
        )
    else:
        job.update(_from_folds(job_dir, plan["n_folds"] if plan else None))
    if job["status"] == "ok" and job["n_at_chance"]:
        job["status"] = f"ok, {job['n_at_chance']} at chance"
    if (job_dir / "failure.json").is_file() and not path.is_file():
        failure = _read_json(job_dir / "failure.json")
        job["status"] = f"failed: {failure.get('error', '?') if isinstance(failure, dict) else '?'}"
    elif (job_dir / PRUNED_FILE).is_file() and not path.is_file():  # a search trial its pruner stopped
        pruned = _read_json(job_dir / PRUNED_FILE)
        if not isinstance(pruned, dict) or not isinstance(pruned.get("fold"), int):
            raise _damaged(job_dir / PRUNED_FILE, "not a pruned trial's record")
        job["status"] = f"pruned after fold {pruned['fold']}"
    # What the paired test needs: the fold plan must be the same for both jobs.
    folds = job.pop("folds")
    job["ratio"] = folds[0]["n_val"] / folds[0]["n_train"] if folds else None
    job["fold_plan"] = (plan["limit"], plan["n_folds"], plan["cv_seed"]) if plan else None
    return job


def planned_jobs(sweep_dir: Path) -> list[dict]:
    """sweep_jobs.json: [{"dir": ..., "overrides": [...]}, ...], or [] where the sweep planned none."""
    planned = _read_json(sweep_dir / JOBS_FILE) if (sweep_dir / JOBS_FILE).is_file() else []
    if not isinstance(planned, list) or not all(
        isinstance(j, dict)
        and isinstance(j.get("dir"), str)
        and isinstance(j.get("overrides", []), list)
        and all(isinstance(o, str) for o in j.get("overrides", []))
        for j in planned
    ):
        raise _damaged(sweep_dir / JOBS_FILE, "not a list of jobs")
    return planned


def job_dirs(sweep_dir: Path) -> list[tuple[Path, list[str] | None]]:
    """(job dir, planned overrides) for every job: those the sweep planned (sweep_jobs.json), then any other job dir
    found (an older sweep's, or a job resumed alone)."""
    jobs = [(sweep_dir / j["dir"], j.get("overrides")) for j in planned_jobs(sweep_dir)]
    known = {d for d, _ in jobs}
    found = [
        p
        for p in sweep_dir.iterdir()
        if p.is_dir() and p not in known and ((p / ".hydra").is_dir() or run_file_in(p, sweeps=False))
    ]
    found.sort(key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))
    return jobs + [(p, None) for p in found]


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
    for name in SUMMARY_FILES:
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
    jobs = [read_job(d, overrides) for d, overrides in job_dirs(sweep_dir)]
    if not jobs:
        raise UserError(f"{shown(sweep_dir)} holds no job dirs; is it a sweep dir?", path=sweep_dir)
    # Show what varies per job; what every job shares is said once, above the table.
    common = set.intersection(*(set(j["override_list"]) for j in jobs)) if len(jobs) > 1 else set()
    for j in jobs:
        j["overrides"] = " ".join(o for o in j["override_list"] if o not in common) or "(defaults)"
    best = compare_to_best(jobs)
    k = max((j["n_folds"] for j in jobs), default=0)
    with open(sweep_dir / "sweep_summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "job",
                "overrides",
                "status",
                "mean",
                "std",
                "n",
                *[f"fold_{i}" for i in range(k)],
                "train_seconds",
                "wall_seconds",
                "resumed_folds",
                "delta_vs_best",
                "t",
                "p_value",
                "test",
            ]
        )
        for j in jobs:
            writer.writerow(
                [
                    j["job"],
                    j["overrides"],
                    j["status"],
                    j["mean"],
                    j["std"],
                    j["n"],
                    *(j["fold_scores"] + [None] * k)[:k],
                    j["train_seconds"],
                    j["wall_seconds"],
                    j["resumed_folds"],
                    j["delta_vs_best"],
                    j["t"],
                    j["p_value"],
                    TEST_NAME if isinstance(j["t"], float) else "",
                ]
            )
    lines = _table(sweep_dir, jobs, best, common)
    (sweep_dir / "sweep_summary.md").write_text("\n".join(lines) + "\n")
    groups = {f"{j['job']}: {j['overrides']}"[:40]: [s for s in j["fold_scores"] if s is not None] for j in jobs}
    save(boxplot_figure(groups, "sweep: fold accuracies per job"), sweep_dir / "sweep_boxplot.png")
    if not quiet:
        print("\n".join(lines[4:]))
        print(f"Sweep summary: {sweep_dir / 'sweep_summary.md'}" + ("" if best else " (no job finished all its folds)"))
    return {"jobs": jobs, "best": best}
