"""MLflow tracking (logger=[...,mlflow]): one MLflow run per CV job or final fit, recorded from what it wrote into its
run dir by one process only, so that nothing races on one sqlite file: a single run's own process when it ends; for
a sweep, the sweep's process when the last job has ended (its jobs may run in parallel, on other machines too), under
a parent run made before the first job starts.

A run dir records which MLflow run holds it (MLFLOW_RUN); recording it again (a rerun that resumed or re-reported it)
replaces that run, so that one run dir is one MLflow run."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from digitnet.config.plan import SQLITE
from digitnet.errors import ConfigError, named
from digitnet.layout import (
    CV_FIGURES,
    CV_SUMMARY,
    FINAL_CKPT,
    HOLDOUT_FIGURE,
    MLFLOW_RUN,
    MLFLOW_SWEEP,
    SEARCH_RESULTS,
    SWEEP_SUMMARY,
    TEST_METRICS,
    check_writable_folder,
    job_dirs,
    read_plan,
    write_json_atomic,
)

REPORTS = (CV_SUMMARY, TEST_METRICS)
FIGURES = (*CV_FIGURES, HOLDOUT_FIGURE, *REPORTS)


# For the check before a run: a server that does not answer is said in seconds, not after MLflow's retries (minutes).
CHECK_ENVIRONMENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@contextmanager
def _environment(values: dict):
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check(options: dict) -> None:
    """logger.mlflow's store answers and holds the experiment (made if new), before any training."""
    with _environment(CHECK_ENVIRONMENT):
        client(options)


def client(options: dict):
    """(MlflowClient, experiment id) of logger.mlflow's store, the experiment made if new; a store MLflow cannot use
    is a ConfigError."""
    uri, name = options["tracking_uri"], options["experiment_name"]
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError("logger", "mlflow", "MLflow is not installed", 'pip install "digitnet[mlflow]"') from None
    logging.getLogger("mlflow").setLevel(logging.ERROR)  # its retries and notices; a failure is said below
    try:
        artifacts = None
        if uri.startswith(SQLITE):  # the folder of the database, and its runs' figures beside it
            folder = Path(uri[len(SQLITE) :]).expanduser().resolve().parent
            folder.mkdir(parents=True, exist_ok=True)
            check_writable_folder(folder, folder)  # MLflow would retry an unwritable one for minutes
            artifacts = (folder / "mlartifacts" / name).as_uri()
        mlflow = MlflowClient(tracking_uri=uri)
        experiment = mlflow.get_experiment_by_name(name)
        return mlflow, experiment.experiment_id if experiment else mlflow.create_experiment(name, artifacts)
    except Exception as exc:  # noqa: BLE001 - MLflow's and SQLAlchemy's errors of every kind
        raise ConfigError(
            "logger.mlflow.tracking_uri",
            uri,
            f"MLflow cannot use it ({named(exc)})",
            f"give a writable {SQLITE}PATH.db, or a tracking server's http(s) URL",
        ) from None


def _params(plan: dict, prefix: str = "") -> dict:
    """The plan's settings as MLflow params: nested keys joined by dots, values as text."""
    out = {}
    for key, value in plan.items():
        if isinstance(value, dict):
            out.update(_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return out


# MLflow's metric name: the result's key (cv_summary.json's, test_metrics.json's).
CV_METRICS = {
    "cv_mean": "mean",
    "cv_std": "std",
    "cv_n": "n",
    "n_diverged": "n_diverged",
    "n_at_chance": "n_at_chance",
    "cv_mean_without_tta": "mean_without_tta",
    "train_seconds": "train_seconds",
}
FINAL_METRICS = {
    "holdout_accuracy": "accuracy",
    "holdout_accuracy_without_tta": "accuracy_without_tta",
    "holdout_loss": "loss",
    "train_seconds": "train_seconds",
    "wall_seconds": "wall_seconds",
}


def _metrics(result: dict) -> dict:
    """{key: [(step, value)]}: a CV job's per-fold curves (step: the epoch) and scores, or a final fit's score."""
    final = result.get("task") == "final"
    out = {
        key: [(0, result[name])]
        for key, name in (FINAL_METRICS if final else CV_METRICS).items()
        if result.get(name) is not None
    }
    for fold in [] if final else result["folds"]:
        k = fold["fold"]
        if fold["score"] is not None:
            out[f"fold_{k}/score"] = [(0, fold["score"])]
        for epoch in fold["history"]:
            for name, value in epoch.items():
                if name != "epoch":
                    out.setdefault(f"fold_{k}/{name}", []).append((epoch["epoch"], value))
    return out


def _figures(result: dict, run_dir: Path, folder: Path) -> None:
    """The run's figures and JSON report, and each fold's validation confusion matrix, into `folder`."""
    from digitnet.report.figures import confusion_figure, save

    for name in FIGURES:
        if (run_dir / name).is_file():
            (folder / name).write_bytes((run_dir / name).read_bytes())
    (folder / "confusion_matrices").mkdir()
    for fold in result.get("folds", []):
        if fold.get("confusion_matrix"):
            save(
                confusion_figure(fold["confusion_matrix"], f"fold {fold['fold']}: validation confusion matrix"),
                folder / "confusion_matrices" / f"fold_{fold['fold']}.png",
            )


def _replace(mlflow, record: Path, uri: str) -> None:
    """Delete the MLflow run a run dir (or sweep dir) was recorded in before, where it is in this store."""
    try:
        before = json.loads(record.read_text())
        if before["tracking_uri"] == uri:
            mlflow.delete_run(before["run_id"])
    except Exception:  # noqa: BLE001 - no record, or its run is gone already: nothing to replace
        pass


def record(plan, result: dict, run_dir: Path, parent: str | None = None) -> str:
    """Record a finished run (`result`: cv_summary.json's or test_metrics.json's content) as one MLflow run, under
    the sweep's `parent` run where given. Returns its run id."""
    from mlflow.entities import Metric, Param

    options = plan.loggers["mlflow"]
    mlflow, experiment = client(options)
    _replace(mlflow, run_dir / MLFLOW_RUN, options["tracking_uri"])
    tags = {"digitnet.run_dir": str(run_dir.resolve()), "digitnet.task": plan.task}
    if parent:
        tags["mlflow.parentRunId"] = parent
    run_id = mlflow.create_run(experiment, tags=tags, run_name=f"{run_dir.parent.name}/{run_dir.name}").info.run_id
    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(value), now, step) for key, points in _metrics(result).items() for step, value in points
    ]
    params = [Param(key, value[:6000]) for key, value in _params(plan.fingerprint_fields()).items()]
    try:
        for start in range(0, max(len(metrics), len(params)), 100):  # MLflow takes 100 params, 1000 metrics a batch
            mlflow.log_batch(run_id, metrics=metrics[start : start + 100], params=params[start : start + 100])
        with tempfile.TemporaryDirectory() as folder:
            _figures(result, run_dir, Path(folder))
            mlflow.log_artifacts(run_id, folder)
        if plan.task == "final":
            mlflow.log_artifact(run_id, str(run_dir / FINAL_CKPT))
    except BaseException:
        mlflow.set_terminated(run_id, "FAILED")  # said so in MLflow, not left as running
        raise
    mlflow.set_terminated(run_id)
    write_json_atomic(run_dir / MLFLOW_RUN, {"tracking_uri": options["tracking_uri"], "run_id": run_id})
    return run_id


def start_sweep(options: dict, sweep_dir: Path, overrides: list[str]) -> str:
    """The parent run of a sweep: the one recorded in the sweep dir (a rerun resumes the sweep), or a new one."""
    with _environment(CHECK_ENVIRONMENT):  # before any job: a store that does not answer is said at once
        mlflow, experiment = client(options)
    try:
        before = json.loads((sweep_dir / MLFLOW_SWEEP).read_text())
        same_store = before["tracking_uri"] == options["tracking_uri"]
        if same_store and mlflow.get_run(before["run_id"]).info.lifecycle_stage == "active":
            return before["run_id"]
    except Exception:  # noqa: BLE001 - none recorded, or not in this store
        pass
    tags = {"digitnet.sweep_dir": str(sweep_dir.resolve()), "digitnet.overrides": " ".join(overrides)}
    name = f"sweep {sweep_dir.parent.name}/{sweep_dir.name}"
    run_id = mlflow.create_run(experiment, tags=tags, run_name=name).info.run_id
    write_json_atomic(sweep_dir / MLFLOW_SWEEP, {"tracking_uri": options["tracking_uri"], "run_id": run_id})
    return run_id


def end_sweep(options: dict, sweep_dir: Path, best: dict | None) -> list[str]:
    """Each finished job of the sweep as a child of its parent run, then the sweep's summary (table, box plot) and
    best mean onto the parent. Returns what could not be recorded."""
    parent = json.loads((sweep_dir / MLFLOW_SWEEP).read_text())["run_id"]
    mlflow, _ = client(options)
    problems = []
    for job_dir, _ in job_dirs(sweep_dir):
        reports = [job_dir / name for name in REPORTS if (job_dir / name).is_file()]
        try:
            plan = read_plan(job_dir) if reports else None
            if plan is not None and "mlflow" in plan.loggers:
                record(plan, json.loads(reports[0].read_text()), job_dir, parent)
        except Exception as exc:  # noqa: BLE001 - one job's record failing keeps none of the others from theirs
            problems.append(f"job {job_dir.name}: {named(exc)}")
    for name in (*SWEEP_SUMMARY, SEARCH_RESULTS):
        if (sweep_dir / name).is_file():
            mlflow.log_artifact(parent, str(sweep_dir / name))
    if best is not None:
        mlflow.log_metric(parent, "best_cv_mean", best["mean"])
        mlflow.set_tag(parent, "digitnet.best_job", f"{best['job']}: {best['overrides']}")
    mlflow.set_terminated(parent)
    return problems
