"""Multirun summaries, divergence, resume and launcher configs, through the real CLI on real MNIST."""

import csv
import json
import signal
import subprocess
import sys
import time

import pytest
from hydra import compose, initialize_config_dir

from conftest import CONF_DIR, run_cli

TINY = ["data.limit=600", "cv.n_folds=2", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]


@pytest.mark.slow
def test_two_job_multirun_with_a_diverging_job(tmp_path, mnist_root):
    sweep = tmp_path / "sweep"
    # lr=1e6 blows the loss up to inf/NaN within a few steps; the sweep must go on to the next job.
    result = run_cli("digitnet.train", "-m", "optimizer.lr=1e6,0.01", *TINY, f"data.root={mnist_root}",
                     f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        for name in ("cv_summary.json", "learning_curves.png", "cv_boxplot.png", "samples.png"):
            assert (sweep / job / name).is_file(), (job, name)
    for name in ("sweep_summary.csv", "sweep_summary.md", "sweep_boxplot.png"):
        assert (sweep / name).is_file()
    diverged = json.loads((sweep / "0" / "cv_summary.json").read_text())
    assert diverged["status"] == "diverged" and diverged["mean"] is None and diverged["n_diverged"] >= 1
    assert "loss became" in diverged["folds"][0]["reason"]
    # Stopped at once: far fewer than the fold's 15 batches of history.
    assert diverged["folds"][0]["history"] == []
    rows = list(csv.DictReader(open(sweep / "sweep_summary.csv")))
    assert [r["overrides"] for r in rows] == ["optimizer.lr=1000000.0", "optimizer.lr=0.01"]
    assert [r["status"] for r in rows] == ["diverged", "ok"]
    ok = json.loads((sweep / "1" / "cv_summary.json").read_text())
    assert float(rows[1]["mean"]) == pytest.approx(ok["mean"])
    assert "Best job: 1 (optimizer.lr=0.01)" in result.stdout
    md = (sweep / "sweep_summary.md").read_text()
    assert "Nadeau-Bengio" in md and "| diverged |" in md

    # The summary can be rebuilt on demand, with the same table.
    (sweep / "sweep_summary.md").unlink()
    again = run_cli("digitnet.summarize", sweep)
    assert again.returncode == 0 and (sweep / "sweep_summary.md").read_text() == md

    # A job resumed with a plain command, its overrides in other words and order, keeps its label in the table.
    labels = (sweep / "1" / ".hydra" / "overrides.yaml").read_text()
    resumed = run_cli("digitnet.train", f"data.root={mnist_root}", *TINY, "optimizer.lr=1e-2", f"hydra.run.dir={sweep / '1'}")
    assert resumed.returncode == 0 and "finished earlier" in resumed.stdout, resumed.stdout + resumed.stderr[-2000:]
    assert (sweep / "1" / ".hydra" / "overrides.yaml").read_text() == labels
    assert run_cli("digitnet.summarize", sweep).returncode == 0
    assert [r["overrides"] for r in csv.DictReader(open(sweep / "sweep_summary.csv"))] == [r["overrides"] for r in rows]


@pytest.mark.slow
def test_paired_test_against_the_best_job(tmp_path, mnist_root):
    sweep = tmp_path / "sweep"
    result = run_cli("digitnet.train", "-m", "optimizer.lr=0.05,0.001", "data.limit=900", "cv.n_folds=3",
                     "trainer.max_epochs=1", "trainer.enable_progress_bar=false", f"data.root={mnist_root}",
                     f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["overrides"]: r for r in csv.DictReader(open(sweep / "sweep_summary.csv"))}
    best, other = rows["optimizer.lr=0.05"], rows["optimizer.lr=0.001"]
    assert float(best["mean"]) > float(other["mean"])
    assert best["p_value"] == "" and 0 <= float(other["p_value"]) <= 1
    assert float(other["delta_vs_best"]) < 0 and "Nadeau-Bengio" in other["test"]


def test_summarize_rejects_a_non_sweep_dir(tmp_path):
    result = run_cli("digitnet.summarize", tmp_path)
    assert result.returncode == 1
    assert "holds no Hydra job dirs" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_resume_after_interrupt_gives_the_same_result(tmp_path, mnist_root, workers):
    args = ["data.limit=1500", "cv.n_folds=3", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
            f"data.root={mnist_root}", f"cv.workers={workers}"]
    reference = run_cli("digitnet.train", *args, f"hydra.run.dir={tmp_path / 'reference'}")
    assert reference.returncode == 0, reference.stderr[-2000:]

    run_dir = tmp_path / "interrupted"
    # Ctrl-C must reach the run even when the tests were started in the background (`cmd &` ignores SIGINT in
    # what it starts, and Python keeps an ignored SIGINT ignored).
    proc = subprocess.Popen([sys.executable, "-m", "digitnet.train", *args, f"hydra.run.dir={run_dir}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not (run_dir / "folds" / "fold_0.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # Ctrl-C, in the middle of fold 1 (and 2, with workers)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("digitnet.train: interrupted; rerun the same command to resume")
    assert (run_dir / "folds" / "fold_0.json").exists() and not (run_dir / "cv_summary.json").exists()
    assert not list((run_dir / "folds").glob("*.tmp"))

    resumed = run_cli("digitnet.train", *args, f"hydra.run.dir={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "(fold 0, finished earlier)" in resumed.stdout
    # The interrupted fold's TensorBoard run was started afresh: one attempt's events, not two.
    assert len(list((run_dir / "tb" / "fold_1").glob("events.out.tfevents.*"))) == len(
        list((tmp_path / "reference" / "tb" / "fold_1").glob("events.out.tfevents.*")))
    a = json.loads((tmp_path / "reference" / "cv_summary.json").read_text())
    b = json.loads((run_dir / "cv_summary.json").read_text())
    assert a["fold_scores"] == b["fold_scores"] and a["mean"] == b["mean"]
    assert a["resumed_folds"] == 0 and b["resumed_folds"] >= 1

    # A different config in the same dir is refused rather than mixed in.
    clash = run_cli("digitnet.train", *args, "optimizer.lr=0.1", f"hydra.run.dir={run_dir}")
    assert clash.returncode == 1 and "fold_0.json was trained with another config (optimizer.lr=0.01 there, 0.1 now)" in clash.stderr


@pytest.mark.parametrize("launcher, target", [
    ("joblib", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
    ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
])
def test_launcher_configs_compose(launcher, target):
    pytest.importorskip(f"hydra_plugins.hydra_{launcher.split('_')[0]}_launcher")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={launcher}", "model=deep"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == target
    assert cfg.hydra.callbacks.sweep_summary._target_ == "digitnet.sweep.SweepSummaryCallback"
