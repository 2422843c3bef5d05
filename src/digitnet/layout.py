"""The run-dir layer: every file and folder digitnet keeps in a run dir, a sweep dir and a search is named here once;
their records are read and validated here, once, and written here, atomically. The rest of digitnet trusts what
these functions return. Standard library and PyYAML only (Hydra's own dependency): the checks before a run use it
before torch is imported.

A run dir (a single run's, or a sweep's job N):
    plan.json  cv_summary.json | final.ckpt + test_metrics.json  folds/fold_K.json + fold_K.ckpt  figures  tb/ csv/
    .hydra/overrides.yaml (which job it is)  train.log  failure.json | pruned.json (a sweep job's)  mlflow_run.json
A sweep dir: multirun.yaml  sweep_jobs.json  N/ (job dirs)  sweep_summary.*  mlflow_sweep.json;
a search adds optuna_journal.log (the study) and search_results.yaml.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from digitnet.errors import UserError, first_line, shown

# A run dir.
PLAN = "plan.json"
CV_SUMMARY = "cv_summary.json"
FINAL_CKPT = "final.ckpt"
TEST_METRICS = "test_metrics.json"
ENSEMBLE_METRICS = "ensemble_metrics.json"  # evaluate's report of a CV run's fold ensemble
ENSEMBLE_FIGURE = "ensemble_confusion_matrix.png"
FOLDS = "folds"
TRAIN_LOG = "train.log"
LOCK = ".digitnet.lock"
HYDRA = ".hydra"  # Hydra's files, written by the run once it is accepted (conf: hydra.output_subdir=null)
FAILURE = "failure.json"  # a sweep job that failed once accepted
PRUNED = "pruned.json"  # a search trial its pruner stopped: the fold after which
MLFLOW_RUN = "mlflow_run.json"  # {"tracking_uri", "run_id"}: the MLflow run that holds this run dir
CV_FIGURES = ("learning_curves.png", "cv_boxplot.png", "samples.png")
HOLDOUT_FIGURE = "confusion_matrix.png"
TB, CSV = "tb", "csv"  # TensorBoard's and the CSV logger's folders: one subfolder per fit (fold_K, final)
LOG_DIRS = (TB, CSV)
PROFILER = "profiler"
# What a run writes into its dir: a folder or a dangling link in one's place would fail a write after training.
OWN_FILES = (PLAN, CV_SUMMARY, FINAL_CKPT, TEST_METRICS, TRAIN_LOG, LOCK, *CV_FIGURES, HOLDOUT_FIGURE, MLFLOW_RUN)
# What marks a folder as a run dir: nothing of another run goes in there, nor is it read as a folder of images.
RUN_MARKS = (PLAN, CV_SUMMARY, FINAL_CKPT, FOLDS)

# A sweep dir.
MULTIRUN = "multirun.yaml"  # Hydra's, as the sweep starts
SWEEP_JOBS = "sweep_jobs.json"  # [{"dir", "overrides"}]: the jobs the sweep planned (a search: its trials so far)
SWEEP_SUMMARY = ("sweep_summary.csv", "sweep_summary.md", "sweep_boxplot.png")
JOURNAL = "optuna_journal.log"  # a search's Optuna study
SEARCH_RESULTS = "search_results.yaml"
MLFLOW_SWEEP = "mlflow_sweep.json"  # the sweep's parent MLflow run


def fold_file(run_dir: Path, fold: int) -> Path:
    return Path(run_dir) / FOLDS / f"fold_{fold}.json"


def fold_checkpoint(run_dir: Path, fold: int) -> Path:
    return Path(run_dir) / FOLDS / f"fold_{fold}.ckpt"


def hydra_file(run_dir: Path, name: str) -> Path:
    """.hydra/NAME.yaml (config, hydra, overrides): what Hydra would have written, as Hydra names it."""
    return Path(run_dir) / HYDRA / f"{name}.yaml"


def overrides_file(run_dir: Path) -> Path:
    return hydra_file(run_dir, "overrides")


# Errors about files, said one way.


def damaged(path: Path, what: str, fix: str) -> UserError:
    """A file of ours that cannot be used: which file, what is wrong with it, and what to do."""
    return UserError(f"{shown(path)} is damaged ({what}); {fix}", path=path)


def read_json(path: Path, fix: str):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise damaged(path, first_line(exc, 80) or type(exc).__name__, fix) from None


def write_json_atomic(path: Path, data) -> None:
    """Temp file + rename: a reader (or a resumed run) never sees half a file, even after Ctrl-C. The file gets the
    permissions a plain open() would give (mkstemp's are 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Where things are.


def run_file_in(folder: Path, *, sweeps: bool = True) -> str | None:
    """The first run-dir file `folder` holds (also a sweep's multirun.yaml unless sweeps=False), or None."""
    names = RUN_MARKS + ((MULTIRUN,) if sweeps else ())
    return next((name for name in names if (Path(folder) / name).exists()), None)


def enclosing_run(path: Path) -> Path | None:
    """The run dir (a single run's) that `path` lies inside, if any: nothing of another run goes in there."""
    return next((p for p in Path(path).resolve().parents if run_file_in(p, sweeps=False)), None)


def check_writable_file(path, what: str) -> None:
    """A file we are about to write: not a folder, and its folder exists (or can be made) and is writable."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file path such as {path / 'metrics.json'}")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{what} {path}: {parent} is a file, not a folder; choose another path")
    check_writable_folder(parent, f"{what} {path}: {parent}")


def check_writable_folder(folder: Path, what: str) -> None:
    """Tried for real, with a file made and removed: root passes access() everywhere, a read-only mount included."""
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise UserError(
            f"{shown(what)} is not writable ({exc.strerror}); choose a folder you can write to", path=Path(folder)
        ) from None


# The records of a run dir.


def finite_fraction(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1


def fold_problem(saved, fold: int, tta: str) -> str | None:
    """What is wrong with a fold's result (a fold file's, or cv_summary.json's entry), or None: what the reports rely
    on. `tta`: the run's, with which an ok fold was scored."""
    if not isinstance(saved, dict) or saved.get("fold") != fold:
        return f"not the result of fold {fold}"
    if saved.get("status") not in ("ok", "diverged"):
        return f"status {saved.get('status')!r} is not ok or diverged"
    if saved["status"] == "ok" and not finite_fraction(saved.get("score")):
        return f"score {saved.get('score')!r} is not an accuracy in [0, 1]"
    if saved["status"] == "ok" and saved.get("tta", "none") != tta:
        return f"tta {saved.get('tta', 'none')!r} is not the run's tta {tta!r}"
    if "tta" in saved and not finite_fraction(saved.get("score_without_tta")):
        return f"score_without_tta {saved.get('score_without_tta')!r} is not an accuracy in [0, 1]"
    if not isinstance(saved.get("history"), list) or not isinstance(saved.get("seconds"), (int, float)):
        return "history or seconds missing"
    return None


RETRAIN_FOLD = "delete it and rerun: that fold trains again"


def read_fold(run_dir: Path, fold: int, run_key: dict | None = None) -> dict | None:
    """folds/fold_K.json as written (its run_key included), or None if the fold has not finished. With `run_key`
    (what this run's results depend on), a fold of another config is refused as such, before its content is judged:
    results are never mixed."""
    path = fold_file(run_dir, fold)
    if not path.is_file():
        return None
    saved = read_json(path, RETRAIN_FOLD)
    key = saved.get("run_key") if isinstance(saved, dict) else None
    if not isinstance(key, dict):
        raise damaged(path, "no run_key", RETRAIN_FOLD)
    if run_key is not None and key != run_key:
        from digitnet.config.plan import differences

        raise UserError(
            f"{shown(path)} was trained with another config ({'; '.join(differences(key, run_key)[:3])}); rerun with "
            "the same settings to resume it, or choose a new hydra.run.dir",
            path=path,
        )
    if problem := fold_problem(saved, fold, key.get("tta", "none")):
        raise damaged(path, problem, RETRAIN_FOLD)
    return saved


def finished_folds(run_dir: Path) -> dict[int, dict]:
    """{K: folds/fold_K.json} for every fold file in the run dir, each checked as read_fold checks it."""
    found = {}
    for path in (Path(run_dir) / FOLDS).glob("fold_*.json"):
        number = path.stem.removeprefix("fold_")
        if number.isdigit() and path.name == f"fold_{int(number)}.json":
            found[int(number)] = read_fold(run_dir, int(number))
    return dict(sorted(found.items()))


def summary_problem(s) -> str | None:
    """cv_summary.json as the reports need it: accuracies in [0, 1] (or none), one per fold, folds that read right."""
    kinds = (("folds", list), ("fold_scores", list), ("plan", dict), ("status", str))
    if not isinstance(s, dict) or not all(isinstance(s.get(k), t) for k, t in kinds):
        return "not a CV summary"
    if not len(s["fold_scores"]) == len(s["folds"]) == s["plan"].get("n_folds"):
        return f"{len(s['fold_scores'])} fold scores for {s['plan'].get('n_folds')} folds"
    for key in ("mean", "std"):
        if s.get(key) is not None and not finite_fraction(s[key]):
            return f"{key} {s[key]!r} is not an accuracy in [0, 1]"
    for k, (score, fold) in enumerate(zip(s["fold_scores"], s["folds"])):
        problem = fold_problem(fold, k, s["plan"].get("tta", "none"))
        if problem or not (score is None or finite_fraction(score)):
            return f"fold {k}: {problem or f'score {score!r}'}"
    return None


RERUN_JOB = "delete it and rerun the job (its finished folds are kept)"


def read_cv_summary(run_dir: Path) -> dict | None:
    path = Path(run_dir) / CV_SUMMARY
    if not path.is_file():
        return None
    summary = read_json(path, RERUN_JOB)
    if problem := summary_problem(summary):
        raise damaged(path, problem, RERUN_JOB)
    return summary


def read_plan(run_dir: Path, key: str = "hydra.run.dir"):
    """The run dir's plan.json as a RunPlan (also an older digitnet's), or None where there is none."""
    from digitnet.config.plan import RunPlan

    path = Path(run_dir) / PLAN
    if not path.is_file():
        return None
    fix = f"delete it and rerun, or choose a new {key}"
    try:
        return RunPlan.from_dict(read_json(path, fix))
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise damaged(path, first_line(exc, 100), fix) from None


def read_overrides(run_dir: Path) -> list[str] | None:
    """The job's own overrides (.hydra/overrides.yaml, hydra.* left out): which job a sweep's job dir is. None
    where the file is missing or damaged."""
    import yaml

    try:
        saved = yaml.safe_load(overrides_file(run_dir).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(saved, list) or not all(isinstance(o, str) for o in saved):
        return None
    return [o for o in saved if not o.startswith("hydra.")]


def job_overrides(run_dir: Path) -> list[str]:
    """read_overrides, for a job dir that must say which job it is."""
    overrides = read_overrides(run_dir)
    if overrides is None:
        path = overrides_file(run_dir)
        raise UserError(
            f"{shown(path)} is missing or damaged, so which job {shown(run_dir)} ran is unknown; rerun the sweep's "
            "own command (it writes it again)",
            path=path,
        )
    return overrides


def write_failure(run_dir: Path, error: str, kind: str) -> None:
    write_json_atomic(Path(run_dir) / FAILURE, {"error": error, "type": kind})


def read_outcome(run_dir: Path) -> str | None:
    """A sweep job's end that is not a summary: 'failed: ...' (failure.json) or 'pruned after fold K' (pruned.json);
    None for neither. A summary, where there is one, wins over both (the caller asks only without one)."""
    run_dir = Path(run_dir)
    fix = "delete it and rerun the job"
    if (run_dir / FAILURE).is_file():
        failure = read_json(run_dir / FAILURE, fix)
        return f"failed: {failure.get('error', '?') if isinstance(failure, dict) else '?'}"
    if (run_dir / PRUNED).is_file():
        pruned = read_json(run_dir / PRUNED, fix)
        if not isinstance(pruned, dict) or not isinstance(pruned.get("fold"), int):
            raise damaged(run_dir / PRUNED, "not a pruned trial's record", fix)
        return f"pruned after fold {pruned['fold']}"
    return None


# The records of a sweep dir.


def read_jobs(sweep_dir: Path) -> list[dict]:
    """sweep_jobs.json: [{"dir": ..., "overrides": [...]}, ...], or [] where the sweep planned none."""
    path = Path(sweep_dir) / SWEEP_JOBS
    fix = "delete it (the job dirs' own .hydra/overrides.yaml still say which job each is) and rerun the sweep"
    planned = read_json(path, fix) if path.is_file() else []
    if not isinstance(planned, list) or not all(
        isinstance(j, dict)
        and isinstance(j.get("dir"), str)
        and isinstance(j.get("overrides", []), list)
        and all(isinstance(o, str) for o in j.get("overrides", []))
        for j in planned
    ):
        raise damaged(path, "not a list of jobs", fix)
    return planned


def write_jobs(sweep_dir: Path, jobs: dict[str, list[str]], merge: bool = False) -> None:
    """The jobs a sweep planned, {dir: overrides}; `merge`: into those sweep_jobs.json holds (a search plans a batch
    of trials at a time)."""
    known = {j["dir"]: j for j in read_jobs(sweep_dir)} if merge else {}
    known.update({name: {"dir": name, "overrides": overrides} for name, overrides in jobs.items()})
    ordered = sorted(known.values(), key=lambda j: (len(j["dir"]), j["dir"]))
    write_json_atomic(Path(sweep_dir) / SWEEP_JOBS, ordered)


def is_job_dir(path: Path) -> bool:
    return path.is_dir() and ((path / HYDRA).is_dir() or run_file_in(path, sweeps=False) is not None)


def job_dirs(sweep_dir: Path) -> list[tuple[Path, list[str] | None]]:
    """(job dir, planned overrides) for every job: those the sweep planned (sweep_jobs.json), then any other job dir
    found (an older sweep's, or a job resumed alone)."""
    sweep_dir = Path(sweep_dir)
    jobs = [(sweep_dir / j["dir"], j.get("overrides")) for j in read_jobs(sweep_dir)]
    known = {d for d, _ in jobs}
    found = [p for p in sweep_dir.iterdir() if p not in known and is_job_dir(p)]
    found.sort(key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))
    return jobs + [(p, None) for p in found]
