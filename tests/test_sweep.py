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
    result = run_cli(
        "digitnet.train", "-m", "optimizer.lr=1e6,0.01", *TINY, f"data.root={mnist_root}", f"hydra.sweep.dir={sweep}"
    )
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
    md = (sweep / "sweep_summary.md").read_text()
    assert "Best: job 1 (optimizer.lr=0.01)" in md and "not job 0" in md  # best of the finished, said so
    assert "Nadeau-Bengio" in md and "| diverged |" in md

    # The summary can be rebuilt on demand, with the same table.
    (sweep / "sweep_summary.md").unlink()
    again = run_cli("digitnet.summarize", sweep)
    assert again.returncode == 0 and (sweep / "sweep_summary.md").read_text() == md

    # A job resumed with a plain command, its overrides in other words and order, keeps its label in the table.
    labels = (sweep / "1" / ".hydra" / "overrides.yaml").read_text()
    resumed = run_cli(
        "digitnet.train", f"data.root={mnist_root}", *TINY, "optimizer.lr=1e-2", f"hydra.run.dir={sweep / '1'}"
    )
    assert resumed.returncode == 0 and "finished earlier" in resumed.stdout, resumed.stdout + resumed.stderr[-2000:]
    assert (sweep / "1" / ".hydra" / "overrides.yaml").read_text() == labels
    assert run_cli("digitnet.summarize", sweep).returncode == 0
    assert [r["overrides"] for r in csv.DictReader(open(sweep / "sweep_summary.csv"))] == [r["overrides"] for r in rows]


@pytest.mark.slow
def test_paired_test_against_the_best_job(tmp_path, mnist_root):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "digitnet.train",
        "-m",
        "optimizer.lr=0.05,0.001",
        "data.limit=900",
        "cv.n_folds=3",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        f"data.root={mnist_root}",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["overrides"]: r for r in csv.DictReader(open(sweep / "sweep_summary.csv"))}
    best, other = rows["optimizer.lr=0.05"], rows["optimizer.lr=0.001"]
    assert float(best["mean"]) > float(other["mean"])
    assert best["p_value"] == "" and 0 <= float(other["p_value"]) <= 1
    assert float(other["delta_vs_best"]) < 0 and "Nadeau-Bengio" in other["test"]


def test_summarize_rejects_a_non_sweep_dir(tmp_path, capsys):
    from digitnet import summarize
    from digitnet.errors import UserError
    from digitnet.report.sweep_table import summarize as write

    for prepare in (lambda: None, lambda: (tmp_path / "multirun.yaml").mkdir()):
        prepare()
        with pytest.raises(SystemExit) as exit_:
            summarize.main([str(tmp_path)])
        assert exit_.value.code == 1 and str(tmp_path) in capsys.readouterr().err
    (tmp_path / "multirun.yaml").rmdir()
    (tmp_path / "multirun.yaml").write_text("{}\n")
    with pytest.raises(UserError):  # a sweep that never started a job
        write(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_resume_after_interrupt_gives_the_same_result(tmp_path, mnist_root, workers):
    args = [
        "data.limit=1500",
        "cv.n_folds=3",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        f"data.root={mnist_root}",
        f"cv.workers={workers}",
    ]
    reference = run_cli("digitnet.train", *args, f"hydra.run.dir={tmp_path / 'reference'}")
    assert reference.returncode == 0, reference.stderr[-2000:]

    run_dir = tmp_path / "interrupted"
    # Ctrl-C must reach the run even when the tests were started in the background (`cmd &` ignores SIGINT in
    # what it starts, and Python keeps an ignored SIGINT ignored).
    proc = subprocess.Popen(
        [sys.executable, "-m", "digitnet.train", *args, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
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
        list((tmp_path / "reference" / "tb" / "fold_1").glob("events.out.tfevents.*"))
    )
    a = json.loads((tmp_path / "reference" / "cv_summary.json").read_text())
    b = json.loads((run_dir / "cv_summary.json").read_text())
    assert a["fold_scores"] == b["fold_scores"] and a["mean"] == b["mean"]
    assert a["resumed_folds"] == 0 and b["resumed_folds"] >= 1

    # A different config in the same dir is refused rather than mixed in.
    clash = run_cli("digitnet.train", *args, "optimizer.lr=0.1", f"hydra.run.dir={run_dir}")
    assert clash.returncode == 1 and "fold_0.json" in clash.stderr and "optimizer.lr" in clash.stderr


@pytest.mark.parametrize(
    "launcher, target",
    [
        ("joblib", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
        ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
    ],
)
def test_launcher_configs_compose(launcher, target):
    pytest.importorskip(f"hydra_plugins.hydra_{launcher.split('_')[0]}_launcher")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="config", overrides=[f"hydra/launcher={launcher}", "model=deep"], return_hydra_config=True
        )
    assert cfg.hydra.launcher._target_ == target
    assert cfg.hydra.callbacks.sweep._target_ == "digitnet.sweep_callback.SweepCallback"


def _fake_sweep(sweep, jobs, subdir="${hydra.job.num}", task=None):
    """A sweep dir as a finished `-m` run leaves it (multirun.yaml, N/.hydra/overrides.yaml), without training."""
    from omegaconf import OmegaConf

    sweep.mkdir(parents=True)
    OmegaConf.save(
        OmegaConf.create(
            {"hydra": {"sweep": {"dir": str(sweep), "subdir": subdir}, "overrides": {"task": task or ["seed=1,2"]}}}
        ),
        sweep / "multirun.yaml",
    )
    for number, overrides in enumerate(jobs):
        (sweep / str(number) / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create(overrides), sweep / str(number) / ".hydra" / "overrides.yaml")
    return {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()}


def _refused_untouched(result, before, *named):
    """Exit 1 with one line naming each of `named` (a key, a path), and every file as it was."""
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr and all(name in result.stderr for name in named), result.stderr
    after = {p: p.read_bytes() for p in before}
    assert after == before and all(p.exists() for p in before)


@pytest.mark.parametrize(
    "damage, argv, message",
    [
        # multirun.yaml unreadable: Hydra would overwrite it with the refused sweep, and the real one could not resume.
        ("multirun", ["seed=1,2"], "multirun.yaml"),
        # multirun.yaml gone: the job dirs still say which sweep this is.
        ("no-multirun", ["seed=3,4"], "seed=1"),
        ("none", ["seed=1,2", "hydra.sweep.subdir=j${hydra.job.num}"], "j${hydra.job.num}"),
        ("run-dir", ["seed=1,2"], "hydra.sweep.dir"),
    ],
)
def test_a_sweep_dir_keeps_its_own_sweep(tmp_path, damage, argv, message):
    sweep = tmp_path / "sweep"
    _fake_sweep(sweep, [["seed=1"], ["seed=2"]])
    if damage == "multirun":
        (sweep / "multirun.yaml").write_text("hydra: [unclosed\n")
    if damage == "no-multirun":
        (sweep / "multirun.yaml").unlink()
    if damage == "run-dir":
        (sweep / "plan.json").write_text("{}")
    before = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()}
    result = run_cli("digitnet.train", "-m", *argv, f"hydra.sweep.dir={sweep}")
    _refused_untouched(result, before, message)
    assert not (sweep / "2").exists() and not (sweep / "sweep_summary.md").exists()


@pytest.mark.parametrize("subdir", ["same", "${model.name}"])
def test_a_sweep_subdir_without_the_job_number_is_refused(tmp_path, subdir):
    """Jobs sharing a folder: job 1 then failed on job 0's folds."""
    result = run_cli(
        "digitnet.train", "-m", "seed=1,2", f"hydra.sweep.subdir={subdir}", f"hydra.sweep.dir={tmp_path / 's'}"
    )
    _refused_untouched(result, {}, "hydra.sweep.subdir")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("where, message", [("", "hydra.run.dir="), ("7", "hydra.run.dir=")])
def test_a_single_run_does_not_write_into_a_sweep(tmp_path, synthetic_root, where, message):
    sweep = tmp_path / "sweep"
    before = _fake_sweep(sweep, [["seed=1"], ["seed=2"]])
    result = run_cli(
        "digitnet.train",
        f"data.root={synthetic_root}",
        "cv.n_folds=2",
        "trainer.max_epochs=1",
        f"hydra.run.dir={sweep / where}",
    )
    _refused_untouched(result, before, message)
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "multirun.yaml"]


def test_summary_errors_at_the_sweeps_end_are_one_line(tmp_path, capsys):
    from omegaconf import OmegaConf

    from digitnet.sweep_callback import SweepCallback

    sweep = tmp_path / "sweep"
    _fake_sweep(sweep, [["seed=1"], ["seed=2"]])
    (sweep / "1" / ".hydra" / "overrides.yaml").write_text("- [unclosed\n")
    with pytest.raises(SystemExit) as exit_:  # Hydra turns a callback's exceptions into warnings and exits 0
        SweepCallback().on_multirun_end(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.count("\n") == 1 and str(sweep / "1" / ".hydra" / "overrides.yaml") in err


def test_summarize_refuses_a_job_that_ran_but_lost_its_overrides(tmp_path):
    """A job dir without .hydra/ was left out of the table without a word, and another job named the best."""
    sweep = tmp_path / "sweep"
    before = _fake_sweep(sweep, [["seed=1"], ["seed=2"]])
    (sweep / "0" / "plan.json").write_text("{}")
    (sweep / "0" / ".hydra" / "overrides.yaml").unlink()
    (sweep / "0" / ".hydra").rmdir()
    before = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()}
    result = run_cli("digitnet.summarize", sweep)
    _refused_untouched(result, before, str(sweep / "0" / ".hydra" / "overrides.yaml"))
    assert not (sweep / "sweep_summary.md").exists()


def test_a_resumed_job_rewrites_a_damaged_overrides_yaml(tmp_path):
    from omegaconf import OmegaConf

    from digitnet.engine.rundir import write_hydra_files

    hydra_cfg = OmegaConf.create({"hydra": {"overrides": {"task": ["seed=2"]}}})
    for content, kept in [("- seed=1\n", True), ("- [unclosed\n", False), ("{a: 1}\n", False)]:
        path = tmp_path / ".hydra" / "overrides.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(content)
        write_hydra_files(tmp_path, OmegaConf.create({"seed": 2}), hydra_cfg)
        assert (path.read_text() == content) == kept and OmegaConf.load(path) is not None


@pytest.mark.parametrize(
    "launcher, named",
    [
        (["hydra/launcher=joblib", "hydra.launcher.n_jobs=0"], "hydra.launcher"),
        (["hydra/launcher=joblib", "hydra.launcher.backend=bogus"], "hydra.launcher.backend"),
        (["hydra/launcher=joblib", "hydra.launcher.prefer=bogus"], "hydra.launcher"),
        (["hydra/launcher=joblib", "hydra.launcher.batch_size=0"], "hydra.launcher"),
        (["hydra/launcher=joblib", "+hydra.launcher.bogus=1"], "hydra.launcher.bogus"),
        (["hydra/launcher=joblib", "hydra.launcher.timeout=3"], "hydra.launcher.timeout"),
        (["hydra/launcher=joblib", "hydra.launcher.verbose=x"], "hydra.launcher.verbose"),
        (["hydra/launcher=submitit_slurm"], "sbatch"),
    ],
)
def test_a_launcher_that_cannot_run_is_refused_before_any_file(tmp_path, launcher, named):
    import shutil

    pytest.importorskip(f"hydra_plugins.hydra_{launcher[0].split('=')[1].split('_')[0]}_launcher")
    if "submitit" in launcher[0] and shutil.which("sbatch"):
        pytest.skip("this machine has SLURM")
    result = run_cli("digitnet.train", "-m", "seed=1,2", *launcher, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 1 and "Traceback" not in result.stderr and named in result.stderr, result.stderr
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("sweep", [[], ["-m", "seed=1,2"]])
def test_an_unknown_hydra_group_choice_lists_the_choices(tmp_path, sweep):
    result = run_cli(
        "digitnet.train",
        *sweep,
        "hydra/launcher=nope",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr  # Hydra's own message lists the choices
    assert all(name in result.stderr for name in ("hydra/launcher", "basic", "joblib"))
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


def test_a_sweep_whose_summary_cannot_be_written_is_refused_before_any_job(tmp_path):
    (tmp_path / "sweep" / "sweep_summary.md").mkdir(parents=True)
    result = run_cli("digitnet.train", "-m", "seed=1,2", "cv.n_folds=2", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    _refused_untouched(result, {}, str(tmp_path / "sweep" / "sweep_summary.md"))
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["sweep_summary.md"]


@pytest.mark.parametrize(
    "sweep, message",
    [
        (["seed=1,1"], "seed=1"),
        pytest.param(["model=deep,baseline", "optimizer.lr=0.1,0.1"], "optimizer.lr=0.1", marks=pytest.mark.slow),
    ],
)
def test_a_sweep_that_would_train_one_run_twice_is_refused(tmp_path, mnist_root, sweep, message):
    # tiny jobs: were the check gone, this fails in seconds instead of training full CVs
    result = run_cli(
        "digitnet.train",
        "-m",
        *sweep,
        "data.limit=300",
        "cv.n_folds=2",
        "trainer.max_epochs=1",
        f"data.root={mnist_root}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    _refused_untouched(result, {}, message, "sweep jobs 0")
    assert not (tmp_path / "sweep").exists()


def test_a_sweep_dir_inside_a_run_dir_is_refused_before_hydra_writes_into_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "plan.json").write_text("{}")
    result = run_cli("digitnet.train", "-m", "seed=1,2", *TINY, f"hydra.sweep.dir={run / 'sweep'}")
    _refused_untouched(result, {}, str(run / "sweep"))
    assert sorted(p.name for p in run.iterdir()) == ["plan.json"]


def test_a_sweep_job_whose_config_file_is_not_utf8_names_the_file(tmp_path):
    """The sweep check printed Python's "'utf-8' codec can't decode byte 0xe9" and no file."""
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "latin.yaml").write_bytes("name: deep # caf\u00e9\n".encode("latin-1"))
    result = run_cli(
        "digitnet.train",
        f"--config-dir={tmp_path / 'conf'}",
        "-m",
        "model=latin,deep",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    _refused_untouched(result, {}, "sweep job 0", str(tmp_path / "conf" / "model" / "latin.yaml"))
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_a_sweep_with_test_time_augmentation_ends_with_its_summary(tmp_path, mnist_root):
    """Every sweep of the recipe (tta=shift) ended without a table: the summary check read the folds' tta against a
    run key they do not carry."""
    sweep = tmp_path / "sweep"
    result = run_cli(
        "digitnet.train",
        "-m",
        "tta=shift",
        "optimizer.lr=0.01,0.05",
        "data.limit=300",
        "trainer.max_epochs=1",
        "cv.n_folds=2",
        "cv.workers=1",
        f"data.root={mnist_root}",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(open(sweep / "sweep_summary.csv")))
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert run_cli("digitnet.summarize", sweep).returncode == 0


def _two_job_sweep(tmp_path, root, *extra):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "digitnet.train",
        "-m",
        *extra,
        "cv.n_folds=2",
        "trainer.max_epochs=1",
        "cv.workers=1",
        "data.batch_size=20",
        f"data.root={root}",
        f"hydra.sweep.dir={sweep}",
    )
    return sweep, result


@pytest.mark.slow
def test_a_job_that_fails_at_run_time_is_recorded_and_the_sweep_goes_on(tmp_path):
    """Standardizing images of one shade fails inside the job: the sweep used to end there without a summary."""
    import numpy as np

    from conftest import write_idx
    from digitnet.errors import NO_RESULT

    root = tmp_path / "flat"
    root.mkdir()
    for prefix, n in (("train", 60), ("t10k", 10)):
        write_idx(root / f"{prefix}-images-idx3-ubyte", np.full((n, 28, 28), 9), 2051)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, 2049)
    sweep, result = _two_job_sweep(tmp_path, root, "data.scaling=standardize,normalize")
    assert result.returncode == NO_RESULT and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert json.loads((sweep / "0" / "failure.json").read_text())["error"]
    rows = list(csv.DictReader(open(sweep / "sweep_summary.csv")))
    assert rows[0]["status"].startswith("failed") and rows[1]["status"].startswith("ok")
    assert (sweep / "1" / "cv_summary.json").is_file()


@pytest.mark.slow
def test_the_summary_rebuilds_lost_jobs_and_lists_jobs_that_never_ran(tmp_path, synthetic_root):
    import shutil

    from digitnet.report.sweep_table import summarize

    sweep, result = _two_job_sweep(tmp_path, synthetic_root, "seed=1,2,3")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {r["job"]: r for r in csv.DictReader(open(sweep / "sweep_summary.csv"))}
    (sweep / "0" / "cv_summary.json").unlink()  # lost; its fold files remain
    shutil.rmtree(sweep / "2")  # never ran (or deleted)
    again = {j["job"]: j for j in summarize(sweep, quiet=True)["jobs"]}
    assert again["0"]["status"].startswith("ok") and again["0"]["mean"] == pytest.approx(float(rows["0"]["mean"]))
    assert again["2"]["status"] == "not started" and again["2"]["override_list"]
    assert "not job 2" in (sweep / "sweep_summary.md").read_text()


def test_summarize_of_a_path_that_does_not_exist_says_so(tmp_path):
    """It said the path "has no multirun.yaml, so it is no sweep dir"."""
    result = run_cli("digitnet.summarize", tmp_path / "nowhere")
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert str(tmp_path / "nowhere") in result.stderr and "multirun.yaml" not in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_the_readmes_launcher_lines_compose_as_written():
    """The README's Ray line lacked the `+` its keys need: Hydra refused it as written."""
    import re

    from omegaconf import OmegaConf

    from conftest import ROOT

    section = (ROOT / "README.md").read_text().split("## Scaling out")[1].split("\n## ")[0]
    bullets = [" ".join(b.split()) for b in section.split("\n- ")]
    tried = []
    for bullet in bullets:
        launcher = re.search(r"hydra/launcher=(\w+)", bullet)
        if not launcher:
            continue
        plugin = {"joblib": "hydra_joblib_launcher", "ray": "hydra_ray_launcher"}.get(
            launcher[1], "hydra_submitit_launcher"
        )
        pytest.importorskip(f"hydra_plugins.{plugin}")
        spans = re.findall(r"`([^`]*)`", bullet)
        words = [w for s in spans for w in s.split() if re.match(r"\+?hydra\.launcher\.[\w.]+=", w)]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", [f"hydra/launcher={launcher[1]}", *words], return_hydra_config=True)
        tried.append((launcher[1], len(words)))
        for word in words:
            key, _, value = word.lstrip("+").partition("=")
            assert str(OmegaConf.select(cfg, key)) == value, word
    assert [name for name, _ in tried] == ["joblib", "ray", "submitit_slurm"] and all(n for _, n in tried), tried


def test_a_damaged_sweep_jobs_file_gets_the_advice_that_fits_it(tmp_path):
    """It was told what fits a fold file: "a fold file retrains on the next run of that job"."""
    sweep = tmp_path / "sweep"
    _fake_sweep(sweep, [["seed=1"], ["seed=2"]])
    (sweep / "sweep_jobs.json").write_text("{")
    result = run_cli("digitnet.summarize", sweep)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert str(sweep / "sweep_jobs.json") in result.stderr and "fold" not in result.stderr.split("; ", 1)[1]
