"""The logger group: TensorBoard as ever, Lightning's CSV logs, and MLflow runs recorded from the results on disk."""

import json

import pytest

from conftest import plan_of, run_cli

pytest.importorskip("mlflow", reason='the [mlflow] extra: pip install -e ".[mlflow]"')


def store(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    return uri, MlflowClient(uri)


def runs(client, experiment="digitnet"):
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


@pytest.mark.slow
def test_a_cv_run_is_one_mlflow_run_beside_its_tensorboard_logs(tmp_path, synthetic_root, capsys):
    from digitnet.train import run

    uri, client = store(tmp_path)
    plan = plan_of(
        f"data.root={synthetic_root}",
        "cv.n_folds=2",
        "trainer.max_epochs=2",
        "logger=[tensorboard,mlflow]",
        f"logger.mlflow.tracking_uri={uri}",
        "cv.workers=1",
    )
    summary = run(plan, tmp_path / "run")
    assert {p.name for p in (tmp_path / "run" / "tb").iterdir()} == {"fold_0", "fold_1", "cv"}  # as without MLflow
    (recorded,) = runs(client)
    assert recorded.info.status == "FINISHED" and recorded.data.metrics["cv_mean"] == pytest.approx(summary["mean"])
    assert recorded.data.params["optimizer.lr"] == "0.01" and recorded.data.params["model"] == "baseline"
    assert recorded.data.tags["digitnet.run_dir"] == str((tmp_path / "run").resolve())
    history = client.get_metric_history(recorded.info.run_id, "fold_1/val_acc")
    assert [(m.step, m.value) for m in history] == [
        (e["epoch"], pytest.approx(e["val_acc"])) for e in summary["folds"][1]["history"]
    ]
    files = {a.path for a in client.list_artifacts(recorded.info.run_id)}
    assert {"learning_curves.png", "cv_boxplot.png", "cv_summary.json", "confusion_matrices"} <= files
    assert len(client.list_artifacts(recorded.info.run_id, "confusion_matrices")) == 2
    run(plan, tmp_path / "run")  # a rerun (every fold finished earlier) is recorded again, in place of the first
    (again,) = runs(client)
    assert again.info.run_id != recorded.info.run_id
    assert json.loads((tmp_path / "run" / "mlflow_run.json").read_text())["run_id"] == again.info.run_id


def test_a_final_fit_records_its_holdout_score_and_checkpoint(tmp_path, synthetic_root):
    from digitnet.train import run

    uri, client = store(tmp_path)
    metrics = run(
        plan_of(
            f"data.root={synthetic_root}",
            "task=final",
            "trainer.max_epochs=1",
            "logger=[mlflow]",
            f"logger.mlflow.tracking_uri={uri}",
            "logger.mlflow.experiment_name=final",
        ),
        tmp_path / "run",
    )
    (recorded,) = runs(client, "final")
    assert recorded.data.metrics["holdout_accuracy"] == pytest.approx(metrics["accuracy"])
    assert "final.ckpt" in {a.path for a in client.list_artifacts(recorded.info.run_id)}
    assert not (tmp_path / "run" / "tb").exists()  # TensorBoard not selected


def test_csv_logs_each_folds_epochs(tmp_path, synthetic_root):
    import csv

    from digitnet.train import run

    summary = run(
        plan_of(f"data.root={synthetic_root}", "cv.n_folds=2", "trainer.max_epochs=2", "logger=[csv]", "cv.workers=1"),
        tmp_path / "run",
    )
    for fold in (0, 1):
        rows = list(csv.DictReader(open(tmp_path / "run" / "csv" / f"fold_{fold}" / "metrics.csv")))
        val = [float(r["val_acc"]) for r in rows if r.get("val_acc")]
        assert val == [pytest.approx(e["val_acc"]) for e in summary["folds"][fold]["history"]]
    assert not (tmp_path / "run" / "tb").exists()


def test_a_store_that_fails_after_the_run_costs_none_of_its_results(tmp_path, synthetic_root, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    from digitnet.train import run

    uri, client = store(tmp_path)

    def refuse(*args, **kwargs):
        raise ConnectionError("the tracking server went away")

    monkeypatch.setattr(MlflowClient, "log_batch", refuse)
    summary = run(
        plan_of(
            f"data.root={synthetic_root}",
            "cv.n_folds=2",
            "trainer.max_epochs=1",
            "logger=[mlflow]",
            f"logger.mlflow.tracking_uri={uri}",
            "cv.workers=1",
        ),
        tmp_path / "run",
    )
    assert json.loads((tmp_path / "run" / "cv_summary.json").read_text())["mean"] == summary["mean"]
    assert "MLflow" in capsys.readouterr().out and not (tmp_path / "run" / "mlflow_run.json").exists()
    (recorded,) = runs(client)
    assert recorded.info.status == "FAILED"  # said so in MLflow too


@pytest.mark.parametrize(
    "overrides, key",
    [
        (
            ["logger=[mlflow]", "logger.mlflow.tracking_uri=sqlite:////proc/digitnet/mlflow.db"],
            "logger.mlflow.tracking_uri",
        ),
        (
            ["logger=[mlflow]", "logger.mlflow.tracking_uri=TMP/mlruns"],
            "logger.mlflow.tracking_uri",
        ),  # MLflow 3's file store
        (["logger.mlflow.experiment_name=mine"], "logger.mlflow.experiment_name"),  # mlflow not selected: would be lost
        (
            ["logger=[mlflow]", "logger.mlflow.tracking_uri=http://127.0.0.1:9"],
            "logger.mlflow.tracking_uri",
        ),  # no server
        (["logger=[mlflow]", "logger.mlflow.experiment_name= "], "logger.mlflow.experiment_name"),
    ],
)
def test_a_store_mlflow_cannot_use_is_refused_before_any_work(tmp_path, synthetic_root, overrides, key):
    import time

    from digitnet.errors import ConfigError
    from digitnet.train import run

    start = time.monotonic()
    with pytest.raises(ConfigError) as err:
        run(
            plan_of(f"data.root={synthetic_root}", *(o.replace("TMP", str(tmp_path)) for o in overrides)),
            tmp_path / "run",
        )
    assert err.value.key == key and not (tmp_path / "run").exists()
    assert time.monotonic() - start < 60  # MLflow's own retries of a server that does not answer take minutes


@pytest.mark.slow
def test_a_sweeps_jobs_are_children_of_one_parent_run(tmp_path, synthetic_root):
    uri, client = store(tmp_path)
    done = run_cli(
        "digitnet.train",
        "-m",
        f"data.root={synthetic_root}",
        "cv.n_folds=2",
        "trainer.max_epochs=1",
        "logger=[tensorboard,mlflow]",
        f"logger.mlflow.tracking_uri={uri}",
        "optimizer.lr=0.01,0.05",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    recorded = runs(client)
    (parent,) = [r for r in recorded if "digitnet.sweep_dir" in r.data.tags]
    children = [r for r in recorded if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.params["optimizer.lr"] for r in children) == ["0.01", "0.05"] and len(recorded) == 3
    assert parent.data.metrics["best_cv_mean"] == max(r.data.metrics["cv_mean"] for r in children)
    assert "sweep_summary.md" in {a.path for a in client.list_artifacts(parent.info.run_id)}


@pytest.mark.slow
def test_the_default_store_is_the_callers_also_when_hydra_changes_into_the_run_dir(tmp_path, synthetic_root):
    done = run_cli(
        "digitnet.train",
        f"data.root={synthetic_root}",
        "cv.n_folds=2",
        "trainer.max_epochs=1",
        "logger=[mlflow]",
        "hydra.job.chdir=true",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    from mlflow.tracking import MlflowClient

    (recorded,) = runs(MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"))
    assert (
        recorded.data.tags["digitnet.run_dir"] == str(tmp_path / "run") and not (tmp_path / "run" / "outputs").exists()
    )


@pytest.mark.slow
def test_a_run_dir_records_into_one_store_wherever_it_is_resumed_from(tmp_path, synthetic_root):
    """The default store, sqlite:///outputs/mlflow.db, is relative: a rerun from another working dir recorded the
    same run dir into a second store, without a word. The plan settles it once; another store is refused."""
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir(), there.mkdir()
    args = [f"data.root={synthetic_root}", "cv.n_folds=2", "trainer.max_epochs=1", "logger=[tensorboard,mlflow]"]
    done = run_cli("digitnet.train", *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=here)
    assert done.returncode == 0, done.stderr
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert plan["loggers"]["mlflow"]["tracking_uri"] == f"sqlite:///{here / 'outputs' / 'mlflow.db'}"
    again = run_cli("digitnet.train", *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=there)
    assert again.returncode == 1 and "logger.mlflow.tracking_uri" in again.stderr, again.stderr
    assert str(here / "outputs" / "mlflow.db") in again.stderr and not (there / "outputs").exists()
    assert len(runs(__import__("mlflow").tracking.MlflowClient(plan["loggers"]["mlflow"]["tracking_uri"]))) == 1
