"""`python -m digitnet.train` through the real CLI: bad input ends with a message naming what is wrong, exit 1, no
traceback and no run dir; a run that gives nothing usable exits 3; and an end-to-end CV on real MNIST."""

import json
from pathlib import Path

import pytest

from conftest import plan_of, run_cli
from digitnet.errors import NO_RESULT


def refused(result, *named: str) -> None:
    """Exit 1, no traceback, and every `named` field (a key, a file, an option) in the message."""
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.stderr.startswith("digitnet.train: error: "), result.stderr
    for name in named:
        assert name in result.stderr, (name, result.stderr)


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, named",
    [
        ("optimizer.lr=0", ["optimizer.lr"]),
        ("data.limit=abc", ["data.limit"]),
        ("+data.foo=1", ["data.foo"]),
        ("model=resnet", ["model", "baseline", "deep", "vgg"]),
        ("data.limitt=5", ["data.limitt"]),
        ("optimizer._target_=torch.optim.Foo", ["optimizer._target_"]),
        ("+trainer.max_epoch=3", ["max_epoch"]),
    ],
)
def test_bad_values_are_refused_before_any_work(tmp_path, override, named):
    result = run_cli("digitnet.train", override, f"hydra.run.dir={tmp_path / 'run'}", f"data.root={tmp_path / 'no'}")
    refused(result, *named)
    assert not (tmp_path / "run").exists() and not (tmp_path / "no").exists()


@pytest.mark.slow
def test_a_run_dir_that_cannot_be_resolved_or_made_is_named(tmp_path):
    refused(
        run_cli("digitnet.train", f"hydra.run.dir={tmp_path}/${{oc.env:DIGITNET_SURELY_UNSET}}"),
        "DIGITNET_SURELY_UNSET",
    )
    (tmp_path / "afile").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for where in ("afile", "afile/run", "dangling"):
        refused(run_cli("digitnet.train", f"hydra.run.dir={tmp_path / where}"), str(tmp_path / where.split("/")[0]))


@pytest.mark.slow
def test_config_files_of_your_own_that_are_no_mapping_are_named(tmp_path):
    """Hydra's own errors for these name no file (a UnicodeDecodeError, "Invalid loaded object type: int"), or come
    as a traceback (broken YAML)."""
    folder = tmp_path / "optimizer"
    folder.mkdir()
    (folder / "broken.yaml").write_text("lr: [0.1\nmomentum: 0.9\n")
    (folder / "latin.yaml").write_bytes("_target_: torch.optim.SGD # caf\u00e9\n".encode("latin-1"))
    (folder / "number.yaml").write_text("42\n")
    (folder / "mine.yaml").write_text("defaults:\n  - /schema/optimizer/sgd@_here_\n  - _self_\nlr: 0.2\n")
    for option in ("broken", "latin", "number"):
        refused(
            run_cli("digitnet.train", "--config-dir", tmp_path, f"optimizer={option}", "--cfg", "job"),
            str(folder / f"{option}.yaml"),
        )
    (folder / "broken.yaml").unlink()
    (folder / "latin.yaml").unlink()
    (folder / "number.yaml").unlink()
    (folder / "listed.yaml").write_text("- lr\n- 0.1\n")
    refused(
        run_cli("digitnet.train", "--config-dir", tmp_path, "optimizer=listed", f"hydra.run.dir={tmp_path / 'r'}"),
        "optimizer",
    )
    shown = run_cli("digitnet.train", "--config-dir", tmp_path, "optimizer=mine", "--cfg", "job")
    assert shown.returncode == 0 and "lr: 0.2" in shown.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [
        ["--cfg", "job", "--resolve", "optimizer.lr=${oc.env:DIGITNET_NOPE}"],
        ["--shell-completion"],
        ["-m", "optimizer.lr=interval(0.001,0.1)"],
    ],
)
def test_hydras_own_failures_are_no_traceback(tmp_path, argv):
    refused(run_cli("digitnet.train", *argv, f"hydra.sweep.dir={tmp_path / 's'}"))
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_a_usage_error_is_hydras_argparse_exit_2():
    result = run_cli("digitnet.train", "--bogus-flag")
    assert result.returncode == 2 and "--bogus-flag" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "choice, extra",
    [
        ("hydra/launcher=joblib", "joblib"),
        ("hydra/launcher=submitit_slurm", "slurm"),
        ("hydra/launcher=ray", "ray"),
        ("hparams_search=lr", "optuna"),
    ],
)
def test_a_plugin_that_is_missing_names_the_extra(monkeypatch, capsys, choice, extra):
    """Hydra says only that the launcher option is unknown; the fix is digitnet's extra."""
    import importlib.util

    from digitnet import train

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(SystemExit) as exit_:
        train._check_plugins_installed(["-m", choice, "seed=1,2"])
    assert exit_.value.code == 1 and f"digitnet[{extra}]" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("lr, field", [("1e-9", "n_at_chance"), ("1e6", "n_diverged")])
def test_folds_that_learned_nothing_or_diverged_exit_3_with_their_report(tmp_path, mnist_root, lr, field):
    """Scripts and clusters saw exit 0 for a run without a usable result."""
    run_dir = tmp_path / "run"
    result = run_cli(
        "digitnet.train",
        f"optimizer.lr={lr}",
        "data.limit=300",
        "trainer.max_epochs=1",
        "cv.n_folds=2",
        "cv.workers=1",
        f"data.root={mnist_root}",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == NO_RESULT and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert json.loads((run_dir / "cv_summary.json").read_text())[field] == 2


@pytest.mark.slow
def test_a_profiler_writes_its_report_into_the_run_dir(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    result = run_cli(
        "digitnet.train",
        "+trainer.profiler=simple",
        "data.limit=300",
        "trainer.max_epochs=1",
        "cv.n_folds=2",
        "cv.workers=1",
        f"data.root={mnist_root}",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    reports = sorted((run_dir / "profiler").glob("*"))
    assert len(reports) == 2 and all(r.stat().st_size > 0 for r in reports)
    assert all(str(r) in result.stdout for r in reports)


@pytest.mark.slow
def test_with_hydra_job_chdir_a_relative_data_root_is_the_callers(tmp_path, mnist_root):
    (tmp_path / "mn").symlink_to(mnist_root)
    result = run_cli(
        "digitnet.train",
        "hydra.job.chdir=true",
        "data.root=mn",
        "data.limit=300",
        "cv.n_folds=2",
        "trainer.max_epochs=1",
        "cv.workers=1",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "plan.json").read_text())["data_root"] == str(tmp_path / "mn")


@pytest.mark.slow
def test_help_names_the_tasks_and_main_options():
    result = run_cli("digitnet.train", "--help")
    assert result.returncode == 0, result.stderr
    for text in (
        "task=...",
        "cv ",
        "final ",
        "model=baseline|batchnorm|deep",
        "optimizer=sgd|adam|adamw",
        "data.limit=N",
        "$DIGITNET_DATA",
    ):
        assert text in result.stdout, text


def test_run_in_process_reports_the_plan_it_ran(tmp_path, synthetic_root, capsys):
    """run(plan) is the pure entry point behind @hydra.main: plan in, summary out, everything in run_dir."""
    from digitnet.train import run

    plan = plan_of(
        f"data.root={synthetic_root}", "cv.n_folds=2", "trainer.max_epochs=1", "cv.workers=1", "data.batch_size=10"
    )
    summary = run(plan, tmp_path / "run")
    assert summary["n"] == 2 and summary["plan"]["runner"] == "sequential" and summary["plan"]["data_digest"]
    assert {k: v for k, v in summary["plan"].items() if k != "data_digest"} == {
        k: v for k, v in plan.as_dict().items() if k != "data_digest"
    }
    out = capsys.readouterr().out
    assert plan.describe() in out and "Accuracy: mean=" in out
    assert "fold 0 of 2, epoch 1/1: train_loss" in out and "\r" not in out and "(fold 0)" in out
    saved = json.loads((tmp_path / "run" / "folds" / "fold_0.json").read_text())
    assert saved["run_key"]["data_digest"] == summary["plan"]["data_digest"]
    assert oct((tmp_path / "run" / "cv_summary.json").stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's 0600


@pytest.mark.slow
def test_cv_end_to_end_on_real_mnist(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    result = run_cli(
        "digitnet.train",
        "data.limit=2500",
        "trainer.max_epochs=1",
        f"data.root={mnist_root}",
        f"hydra.run.dir={run_dir}",
        "trainer.enable_progress_bar=false",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    fold_lines = [line for line in result.stdout.splitlines() if line.startswith("> ")]
    summary = json.loads((run_dir / "cv_summary.json").read_text())
    assert len(fold_lines) == 5 and summary["n"] == 5 and summary["status"] == "ok" and summary["model"] == "baseline"
    assert min(summary["fold_scores"]) > 0.75  # 2,000 training images, one epoch: far above chance
    assert summary["mean"] == pytest.approx(sum(summary["fold_scores"]) / 5)
    shown = {int(line.split("(fold ")[1].rstrip(")")): line.split()[1] for line in fold_lines}  # any order
    assert [f"{100 * s:.3f}" for s in summary["fold_scores"]] == [shown[k] for k in range(5)]
    plan = summary["plan"]
    assert plan["limit"] == 2500 and plan["device"] == "cpu" and plan["eval_batch_size"] == 250
    assert "auto" not in json.dumps(plan) and json.loads((run_dir / "plan.json").read_text()) == plan
    log = (run_dir / "train.log").read_text()
    assert all(line in log for line in fold_lines) and "Accuracy: mean=" in log
    for name in ("learning_curves.png", "cv_boxplot.png", "samples.png"):
        assert (run_dir / name).stat().st_size > 5000
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    tb = EventMultiplexer()
    tb.AddRunsFromDirectory(str(run_dir / "tb"))
    tb.Reload()
    assert list(tb.PluginRunToTagToContent("hparams")) == ["cv"]  # one HPARAMS entry per job
    assert set(tb.Runs()["cv"]["scalars"]) == {"hp/cv_mean", "hp/cv_std"}
    fold0 = tb.Runs()["fold_0"]
    assert {"train_loss", "train_acc", "val_loss", "val_acc"} <= set(fold0["scalars"]) and "hp_metric" not in fold0[
        "scalars"
    ]
    assert {"samples/validation", "confusion_matrix/validation"} <= set(fold0["images"])
    assert len(tb.Scalars("fold_0", "val_acc")) == 1  # one point per epoch
    assert "GPU available" not in result.stdout + result.stderr  # quiet: no device banners


@pytest.mark.slow
def test_the_collector_waits_for_the_imports_and_then_collects(tmp_path, synthetic_root):
    """A CLI process collects no garbage while it imports (startup.py); a run that left it off would hold every
    cycle it made until it exits."""
    import subprocess
    import sys

    script = f"""
import gc
from digitnet import startup
startup.start_process()
assert not gc.isenabled()
from conftest import plan_of
from digitnet.train import run
run(plan_of("data.root={synthetic_root}", "cv.n_folds=2", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"),
    r"{tmp_path / "run"}")
assert gc.isenabled() and gc.get_freeze_count() > 0
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parent, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
