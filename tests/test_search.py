"""The Optuna search (hparams_search=..., hydra/sweeper=digitnet_optuna): its search words, pruning fold by fold,
resuming a study, trials that cannot run; and sweeps through Ray and submitit_local, sized by their launcher."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONF_DIR, run_cli

optuna = pytest.importorskip("optuna")
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402

from digitnet.engine.cv import Pruned  # noqa: E402
from digitnet.errors import UserError  # noqa: E402
from digitnet.layout import JOURNAL  # noqa: E402
from digitnet.report.sweep_table import read_job  # noqa: E402
from digitnet.search.space import search_space  # noqa: E402
from digitnet.search.study import FoldReporter  # noqa: E402

SEARCH = [
    "hparams_search=lr",
    "data.limit=600",
    "trainer.max_epochs=1",
    "cv.n_folds=3",
    "trainer.enable_progress_bar=false",
]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("optimizer.lr=tag(log, interval(0.0001, 1.0))", FloatDistribution(1e-4, 1.0, log=True)),
        ("optimizer.lr=interval(0.001, 0.1)", FloatDistribution(0.001, 0.1)),
        ("loss.label_smoothing=interval(0, 1)", FloatDistribution(0.0, 1.0)),  # Hydra's interval() is real-valued
        ("data.batch_size=range(16, 65, 16)", IntDistribution(16, 64, step=16)),  # the stop excluded, as in Python
        ("model=choice(baseline, deep)", CategoricalDistribution(("baseline", "deep"))),
        ("model=baseline,deep", CategoricalDistribution(("baseline", "deep"))),
    ],
)
def test_search_words_become_optuna_distributions(override, expected):
    key = override.split("=")[0]
    assert search_space({}, [override]).distributions == {key: expected}


def test_params_lists_and_fixed_overrides():
    space = search_space(
        {"optimizer.lr": "tag(log, interval(0.001, 0.1))", "optimizer.momentum": [0.0, 0.9]},
        ["model=deep", "optimizer.momentum=0.5"],
    )
    # A plain override on the command line is every trial's, and takes its key out of the space.
    assert space.distributions == {"optimizer.lr": FloatDistribution(0.001, 0.1, log=True)}
    assert space.fixed == ["model=deep", "optimizer.momentum=0.5"]
    assert space.overrides({"optimizer.lr": 0.01, "data.download": False, "x": None}) == [
        "model=deep",
        "optimizer.momentum=0.5",
        "optimizer.lr=0.01",
        "data.download=false",
        "x=null",
    ]
    choice = search_space({"optimizer.momentum": [0.0, 0.9]}, []).distributions["optimizer.momentum"]
    assert choice == CategoricalDistribution((0.0, 0.9))


@pytest.mark.parametrize(
    "params, arguments, key",
    [
        ({}, ["optimizer.lr=tag(grid, interval(0.1, 1))"], "optimizer.lr"),  # a tag that means nothing here
        ({}, ["optimizer.lr=tag(log, interval(0, 1))"], "optimizer.lr"),  # log of 0
        ({}, ["optimizer.lr=interval(1, 0.1)"], "optimizer.lr"),  # low above high
        ({}, ["data.limit=range(10, 10)"], "data.limit"),  # empty
        ({}, ["model=glob(*)"], "model"),
        ({}, ["model=deep"], "hydra.sweeper.params"),  # nothing to search
        ({"optimizer.lr": "interval(0.1"}, [], "hydra.sweeper.params"),  # not Hydra's syntax
    ],
)
def test_search_words_that_cannot_be_searched_name_their_key(params, arguments, key):
    with pytest.raises(UserError) as caught:
        search_space(params, arguments)
    assert caught.value.key == key


@pytest.mark.parametrize("preset", ["lr", "recipe"])
def test_presets_choose_the_sweeper_and_search_keys_of_the_config(preset):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hparams_search={preset}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.digitnet_optuna.optuna_sweeper.OptunaSweeper"
    assert sweeper.pruner._target_ == "optuna.pruners.MedianPruner" and sweeper.direction.value == "maximize"
    for key in sweeper.params:  # each searched key is one of the config's, so every trial composes
        assert OmegaConf.select(cfg, key, default="absent") != "absent", key
    assert search_space(OmegaConf.to_container(sweeper.params), []).distributions
    assert cfg.cv.workers == 1 and cfg.cv.parallel is False  # folds end one by one: prunable after each
    if preset == "recipe":
        assert cfg.model.name.value == "deep" and cfg.augment.name.value == "affine" and cfg.tta.name.value == "shift"


def _reporter(study, storage, n_folds):
    """A new trial of `study`, reached as a trial's job reaches it: through the storage, by its number."""
    number = study.ask().number
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)
    return FoldReporter(study, storage, trial_id, n_folds)


def test_a_trial_is_pruned_after_the_fold_that_falls_below_the_median():
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(
        storage=storage, direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1)
    )
    good = study.ask()
    for step, value in enumerate([0.9, 0.92, 0.91]):
        good.report(value, step)
    study.tell(good, 0.91)
    reporter = _reporter(study, storage, n_folds=3)
    reporter.after_fold({"fold": 0, "status": "diverged", "score": None})  # no score to report
    with pytest.raises(Pruned) as caught:  # folds end in any order: step 0 is the first that ended
        reporter.after_fold({"fold": 2, "status": "ok", "score": 0.5})
    assert (caught.value.fold, caught.value.value) == (2, 0.5)
    # Optuna's median pruner weighs a trial's best running value: a strong first fold carries it.
    strong = _reporter(study, storage, n_folds=3)
    strong.after_fold({"fold": 0, "status": "ok", "score": 0.95})
    strong.after_fold({"fold": 1, "status": "ok", "score": 0.5})
    assert strong.scores == [0.95, 0.5]
    # A trial that trained every fold has its result: never pruned after its last fold.
    weak = _reporter(study, storage, n_folds=1)
    weak.after_fold({"fold": 0, "status": "ok", "score": 0.1})
    assert study.pruner.prune(study, storage.get_trial(weak.trial_id))


def test_summary_rows_of_pruned_and_refused_trials(tmp_path):
    pruned = tmp_path / "3"
    (pruned / ".hydra").mkdir(parents=True)
    (pruned / ".hydra" / "overrides.yaml").write_text("- optimizer.lr=0.5\n")
    (pruned / "pruned.json").write_text(json.dumps({"fold": 0, "value": 0.2, "folds": []}))
    assert read_job(pruned)["status"] == "pruned after fold 0"
    (pruned / "pruned.json").write_text("[1, 2]")
    with pytest.raises(UserError) as caught:
        read_job(pruned)
    assert caught.value.path == pruned / "pruned.json"
    # Refused before it started (its values made no plan): the sweep's plan of it labels the row.
    refused = tmp_path / "4"
    refused.mkdir()
    (refused / "failure.json").write_text(json.dumps({"error": "optimizer.momentum=1.5: ...", "type": "ConfigError"}))
    job = read_job(refused, ["optimizer.momentum=1.5"])
    assert job["override_list"] == ["optimizer.momentum=1.5"] and job["status"].startswith("failed: optimizer.momentum")


@pytest.mark.parametrize(
    "launcher, environ, share",
    [
        (
            {
                "_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
                "cpus_per_task": None,
            },
            {},
            (1, None),
        ),  # every job at once on the whole machine: 1 core, as SLURM gives when unset
        (
            {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", "cpus_per_task": 3},
            {},
            (3, None),
        ),
        (
            {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"},
            {"SLURM_CPUS_PER_TASK": "2"},
            (2, None),
        ),
        ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, {}, (None, None)),  # torch's view
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}, {}, (None, None)),
    ],
)
def test_a_sweep_job_takes_the_cores_its_launcher_gave_it(launcher, environ, share):
    from digitnet.train import launcher_share

    assert launcher_share(OmegaConf.create(launcher), environ, threads=8) == share
    assert launcher_share(OmegaConf.create(launcher), environ, threads=1)[0] in (None, 1)  # never above torch's


def _rows(sweep):
    return list(csv.DictReader(open(sweep / "sweep_summary.csv")))


def _state(sweep):
    """Every file of the sweep dir but its summary (rewritten, with the same content) and the lock."""
    return {
        p.relative_to(sweep): p.stat().st_mtime_ns
        for p in sweep.rglob("*")
        if p.is_file()
        and p.name not in ("sweep_summary.csv", "sweep_summary.md", "sweep_boxplot.png", ".digitnet.lock")
    }


@pytest.mark.slow
def test_a_search_prunes_fold_by_fold_and_a_rerun_changes_nothing(tmp_path, mnist_root):
    sweep = tmp_path / "search"
    args = [*SEARCH, f"data.root={mnist_root}", f"hydra.sweep.dir={sweep}"]
    result = run_cli("digitnet.train", *args, "hydra.sweeper.n_trials=8")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(sweep)
    assert [r["job"] for r in rows] == [str(n) for n in range(8)]
    pruned = [r for r in rows if r["status"].startswith("pruned after fold")]
    assert pruned, [r["status"] for r in rows]
    for row in pruned:  # stopped early: fewer fold files than folds, and no report of a finished run
        job = sweep / row["job"]
        assert len(list((job / "folds").glob("fold_*.json"))) < 3 and not (job / "cv_summary.json").exists()
        assert row["status"] == f"pruned after fold {json.loads((job / 'pruned.json').read_text())['fold']}"
    results = yaml.safe_load((sweep / "search_results.yaml").read_text())
    ok = [r for r in rows if r["status"].startswith("ok")]
    assert results["n_trials"] == 8 and results["n_pruned"] == len(pruned)
    failed = [r for r in rows if r["status"].startswith("failed")]
    diverged = [r for r in rows if r["status"] == "diverged"]
    assert results["n_failed"] == len(failed) and results["n_diverged"] == len(diverged)
    assert results["n_trials"] == len(ok) + len(pruned) + len(diverged) + len(failed)
    best = max(ok, key=lambda r: float(r["mean"]))
    assert results["best_value"] == pytest.approx(float(best["mean"]))
    assert best["overrides"] == f"optimizer.lr={results['best_params']['optimizer.lr']}"
    study = optuna.load_study(
        study_name="digitnet",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(sweep / "optuna_journal.log"))
        ),
    )
    assert [t.number for t in study.trials] == list(range(8))  # trial N is job N

    # The same command again: a finished study adds nothing and changes no file.
    before = _state(sweep)
    again = run_cli("digitnet.train", *args, "hydra.sweeper.n_trials=8")
    assert again.returncode == 0, again.stderr[-2000:]
    assert _state(sweep) == before and _rows(sweep) == rows

    # More trials resume the study; another search space into the same dir is refused, changing nothing.
    more = run_cli("digitnet.train", *args, "hydra.sweeper.n_trials=9")
    assert more.returncode == 0 and _rows(sweep)[:8] == rows and len(_rows(sweep)) == 9, more.stderr[-2000:]
    before = _state(sweep)
    other = run_cli("digitnet.train", *args, "hydra.sweeper.n_trials=10", "hydra.sweeper.sampler.seed=2")
    assert other.returncode == 1 and "Traceback" not in other.stderr and "optuna_journal.log" in other.stderr
    assert _state(sweep) == before


@pytest.mark.slow
def test_a_trial_that_cannot_run_is_recorded_and_the_search_goes_on(tmp_path, mnist_root):
    sweep = tmp_path / "search"
    # Every choice is tried (BruteForceSampler); momentum 1.5 makes no plan.
    result = run_cli(
        "digitnet.train",
        *SEARCH,
        f"data.root={mnist_root}",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler._target_=optuna.samplers.BruteForceSampler",
        "~hydra.sweeper.sampler.n_startup_trials",
        "hydra.sweeper.params=null",
        "optimizer.momentum=1.5,0.5",
    )
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr[-3000:]
    rows = {r["overrides"]: r for r in _rows(sweep)}
    assert rows["optimizer.momentum=1.5"]["status"].startswith("failed: optimizer.momentum")
    assert rows["optimizer.momentum=0.5"]["status"] == "ok"
    results = yaml.safe_load((sweep / "search_results.yaml").read_text())
    assert results["n_failed"] == 1 and results["best_params"] == {"optimizer.momentum": 0.5}


@pytest.mark.slow
def test_an_interrupted_search_resumes_its_running_trial(tmp_path, mnist_root):
    sweep = tmp_path / "search"
    args = [
        "hparams_search=lr",
        "data.limit=3000",
        "trainer.max_epochs=2",
        "cv.n_folds=3",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.pruner=null",
        "trainer.enable_progress_bar=false",
        f"data.root={mnist_root}",
        f"hydra.sweep.dir={sweep}",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "digitnet.train", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while not (sweep / "1" / "folds" / "fold_0.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert not (sweep / "search_results.yaml").exists()

    resumed = run_cli("digitnet.train", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "1 resumed" in resumed.stdout and "(fold 0, finished earlier)" in resumed.stdout
    rows = _rows(sweep)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert yaml.safe_load((sweep / "search_results.yaml").read_text())["n_trials"] == 2


def _processes(*names):
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in listing if any(name in line for name in names)]


ENGINE_SWEEP = ["-m", "optimizer.lr=0.01,0.05", "data.limit=600", "cv.n_folds=2", "trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory, mnist_root):
    sweep = tmp_path_factory.mktemp("basic") / "sweep"
    result = run_cli("digitnet.train", *ENGINE_SWEEP, f"data.root={mnist_root}", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    return _rows(sweep)


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher, plugin, leftovers",
    [
        ("ray", "hydra_plugins.hydra_ray_launcher", ("raylet", "gcs_server", "ray::", "dashboard", "RuntimeEnvAgent")),
        ("submitit_local", "hydra_plugins.hydra_submitit_launcher", ("submitit.local._local",)),
    ],
)
def test_a_sweep_through_a_real_engine_ends_as_with_the_basic_launcher(
    tmp_path, mnist_root, basic_sweep, launcher, plugin, leftovers
):
    pytest.importorskip(plugin)
    if _processes(*leftovers):
        pytest.skip(f"{launcher} processes were running before the test")
    sweep = tmp_path / launcher
    result = run_cli(
        "digitnet.train",
        *ENGINE_SWEEP,
        f"hydra/launcher={launcher}",
        f"data.root={mnist_root}",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(sweep)
    assert (
        [(r["overrides"], r["status"]) for r in rows]
        == [(r["overrides"], r["status"]) for r in basic_sweep]
        == [("optimizer.lr=0.01", "ok"), ("optimizer.lr=0.05", "ok")]
    )
    for a, b in zip(basic_sweep, rows):  # 1 thread a job there, all the cores here: the same folds within a few images
        assert float(b["mean"]) == pytest.approx(float(a["mean"]), abs=0.01)
    plans = [json.loads((sweep / job / "plan.json").read_text()) for job in ("0", "1")]
    assert [p["threads"] for p in plans] == [1, 1]  # the launcher's share, not the machine's cores
    time.sleep(1)
    assert not _processes(*leftovers)


@pytest.mark.slow
def test_search_trials_run_in_parallel_through_a_launcher(tmp_path, mnist_root):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "search"
    result = run_cli(
        "digitnet.train",
        *SEARCH,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=4",
        f"data.root={mnist_root}",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(_rows(sweep)) == 4
    share = max(1, len(os.sched_getaffinity(0)) // 2)  # joblib's: the cores over its n_jobs
    assert all(json.loads((sweep / j / "plan.json").read_text())["threads"] <= share for j in "0123")


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, key",
    [
        ("optimizer.lrr=interval(0.1,1)", "optimizer.lrr"),  # a key the config lacks: every trial would fail
        ("trainer.max_epochs=interval(1,3)", "trainer.max_epochs"),  # real values for a whole-number key
        ("task=final", "task"),  # the holdout never chooses settings
        ("hydra.sweep.subdir=${hydra.job.num}_x", "hydra.sweep.subdir"),  # trial N is job dir N
        ("hydra.sweeper.sampler._target_=optuna.pruners.MedianPruner", "hydra.sweeper.sampler"),
    ],
)
def test_a_search_that_cannot_run_is_refused_before_any_trial(tmp_path, override, key):
    sweep = tmp_path / "search"
    result = run_cli("digitnet.train", *SEARCH, override, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 1 and key in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not sweep.exists()


@pytest.mark.parametrize(
    "conf, subdir, key",
    [
        ({"n_trials": 0, "n_jobs": 1}, "${hydra.job.num}", "hydra.sweeper.n_trials"),
        ({"n_trials": 4, "n_jobs": -1}, "${hydra.job.num}", "hydra.sweeper.n_jobs"),
        ({"n_trials": 4, "n_jobs": 1}, "trial_${hydra.job.num}", "hydra.sweep.subdir"),
    ],
)
def test_search_settings_that_cannot_run_name_their_key(conf, subdir, key):
    from digitnet.search.study import Search

    search = Search(conf)
    search.config = OmegaConf.create({"hydra": {"sweep": {"subdir": subdir}}})
    with pytest.raises(UserError) as caught:
        search._check_settings()
    assert caught.value.key == key


@pytest.mark.parametrize(
    "pruner, kind",
    [(None, optuna.pruners.NopPruner), ({"_target_": "optuna.pruners.MedianPruner"}, optuna.pruners.MedianPruner)],
)
def test_a_trials_job_reports_to_the_sweep_dirs_study_with_the_sweepers_pruner(tmp_path, pruner, kind):
    """A job knows it is trial N because the sweeper set it (hydra.job.env_set), never from the sweeper's name."""
    from digitnet.search.study import STUDY, TRIAL, job_reporter

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / JOURNAL)))
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    study.ask(), study.ask()
    sweeper = {"_target_": "hydra_plugins.digitnet_optuna.optuna_sweeper.OptunaSweeper", "pruner": pruner}
    hydra_cfg = OmegaConf.create(
        {"sweeper": sweeper, "sweep": {"dir": str(tmp_path)}, "job": {"num": 1, "env_set": {TRIAL: "1"}}}
    )
    reporter = job_reporter(hydra_cfg, n_folds=3)
    assert storage.get_trial(reporter.trial_id).number == 1 and isinstance(reporter.study.pruner, kind)
    reporter.after_fold({"fold": 0, "status": "ok", "score": 0.5})
    assert study.trials[1].intermediate_values == {0: 0.5}
    resumed = job_reporter(hydra_cfg, n_folds=3)  # a resumed trial reports its finished folds again: kept once
    resumed.after_fold({"fold": 0, "status": "ok", "score": 0.7})
    assert study.trials[1].intermediate_values == {0: 0.5}
    # The search's own sweeper, but no trial set: a job of it that is no trial (none exists), so nothing reported.
    untold = OmegaConf.create({"sweeper": sweeper, "sweep": {"dir": str(tmp_path)}, "job": {"num": 1, "env_set": {}}})
    assert job_reporter(untold, n_folds=3) is None


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda sweep: (sweep / "0" / ".hydra").mkdir(parents=True), "optuna_journal.log"),  # another sweep's jobs
        (
            lambda sweep: (sweep / "optuna_journal.log").write_text('{"op_code": 0, "worker_id": "x"}\n[1, 2]\n{}\n'),
            "optuna_journal.log",
        ),
        (lambda sweep: (sweep / "sweep_jobs.json").write_text("{"), "sweep_jobs.json"),
    ],
)
def test_a_sweep_dir_that_is_not_this_searchs_is_refused_as_it_is(tmp_path, damage, named):
    sweep = tmp_path / "search"
    sweep.mkdir()
    damage(sweep)
    before = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()}
    result = run_cli("digitnet.train", *SEARCH, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 1 and named in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file() and p.name != ".digitnet.lock"} == before


@pytest.mark.parametrize("value", ["deep", "a,b", "1", "true", "null", "it's", "a b", 0.5, True, None, 3])
def test_a_sampled_value_reads_back_as_itself_in_its_override(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from digitnet.search.space import value_text

    override = OverridesParser.create().parse_override(f"key={value_text(value)}")
    assert not override.is_sweep_override() and override.value() == value and type(override.value()) is type(value)


@pytest.fixture(scope="session")
def finished_search(tmp_path_factory, mnist_root):
    """A search of 3 trials, run once; each test below takes a copy of its sweep dir."""
    sweep = tmp_path_factory.mktemp("finished") / "search"
    result = run_cli(
        "digitnet.train", *SEARCH, f"data.root={mnist_root}", f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_trials=3"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep


def _rerun_refused(sweep, mnist_root, named: list[str], n_trials: int = 5):
    """The same search command again into a damaged copy: refused, naming the files that disagree, changing none."""
    before = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file() and p.name != ".digitnet.lock"}
    result = run_cli(
        "digitnet.train",
        *SEARCH,
        f"data.root={mnist_root}",
        f"hydra.sweep.dir={sweep}",
        f"hydra.sweeper.n_trials={n_trials}",
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert all(name in result.stderr for name in named), result.stderr
    assert {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file() and p.name != ".digitnet.lock"} == before


@pytest.mark.slow
def test_an_emptied_study_beside_its_job_dirs_is_refused(finished_search, tmp_path, mnist_root):
    """Taken as a new study, its trials proposed new values and took the old job dirs' scores for them."""
    sweep = tmp_path / "search"
    shutil.copytree(finished_search, sweep)
    (sweep / JOURNAL).write_bytes(b"")
    _rerun_refused(sweep, mnist_root, [JOURNAL, "job dirs"])


@pytest.mark.slow
def test_a_study_whose_last_record_was_cut_short_is_refused(finished_search, tmp_path, mnist_root):
    """Optuna passed over the torn line and glued the next record onto it; two reruns later nothing read."""
    sweep = tmp_path / "search"
    shutil.copytree(finished_search, sweep)
    torn = (sweep / JOURNAL).read_bytes()[:-20]
    (sweep / JOURNAL).write_bytes(torn)
    whole = torn.rfind(b"\n") + 1  # the bytes of the records before the torn one
    _rerun_refused(
        sweep, mnist_root, [str(sweep / JOURNAL), f"line {torn.count(bytes([10])) + 1}", f"truncate -s {whole}"]
    )


@pytest.mark.slow
def test_a_study_without_its_job_dirs_is_refused(finished_search, tmp_path, mnist_root):
    """A journal copied alone: every trial was reported as failed, and the search exited "no job gave a usable
    result"."""
    sweep = tmp_path / "search"
    sweep.mkdir()
    shutil.copy(finished_search / JOURNAL, sweep / JOURNAL)
    _rerun_refused(sweep, mnist_root, [JOURNAL, str(sweep / "0")])


@pytest.mark.slow
def test_a_job_dir_of_other_parameters_than_its_trial_is_refused(finished_search, tmp_path, mnist_root):
    """The study and a job dir are two records of one trial: job dir 1 holding another lr is another search's."""
    sweep = tmp_path / "search"
    shutil.copytree(finished_search, sweep)
    overrides = sweep / "1" / ".hydra" / "overrides.yaml"
    saved = yaml.safe_load(overrides.read_text())
    overrides.write_text(
        yaml.safe_dump([o if not o.startswith("optimizer.lr=") else "optimizer.lr=0.5" for o in saved])
    )
    _rerun_refused(sweep, mnist_root, [JOURNAL, str(overrides)])


@pytest.mark.slow
def test_the_search_results_agree_with_the_study_and_the_table(finished_search):
    results = yaml.safe_load((finished_search / "search_results.yaml").read_text())
    rows = _rows(finished_search)
    statuses = [r["status"] for r in rows]
    assert results["n_trials"] == len(rows) == 3
    assert results["n_complete"] == sum(s.startswith("ok") for s in statuses)
    assert results["n_pruned"] == sum(s.startswith("pruned") for s in statuses)
    assert not any(s.startswith("failed") for s in statuses)


@pytest.mark.slow
def test_a_diverged_trial_is_a_result_of_the_search_not_a_failure(tmp_path, mnist_root):
    """guarantees.md said a diverged trial fails the search (exit 3), search.md that it counts as pruned, and the
    search exited 0 with it counted among the failed. It is the search's finding: exit 0, counted apart."""
    args = [
        *SEARCH,
        f"data.root={mnist_root}",
        f"hydra.sweep.dir={tmp_path / 's'}",
        "optimizer.lr=choice(0.01,1000.0)",  # SGD at lr 1000 blows up at once
        "hydra.sweeper.sampler._target_=optuna.samplers.BruteForceSampler",
        "~hydra.sweeper.sampler.n_startup_trials",
        "hydra.sweeper.n_trials=2",
    ]
    for _ in range(2):  # and the same when resumed
        result = run_cli("digitnet.train", *args)
        assert result.returncode == 0, result.stderr[-3000:]
        results = yaml.safe_load((tmp_path / "s" / "search_results.yaml").read_text())
        assert (results["n_complete"], results["n_diverged"], results["n_failed"]) == (1, 1, 0), results
        assert sorted(r["status"] for r in _rows(tmp_path / "s")) == ["diverged", "ok"]
