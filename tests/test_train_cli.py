"""`python -m digitnet.train` through the real CLI: config errors, and an end-to-end CV on real MNIST."""

import json

import pytest

from conftest import compose_cfg, run_cli


def test_missing_data_without_download_is_one_line(tmp_path):
    result = run_cli("digitnet.train", "data.download=false", f"data.root={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "MNIST files missing" in result.stderr and "train-images-idx3-ubyte" in result.stderr


def test_config_composes_with_the_documented_names():
    cfg = compose_cfg("model=deep", "optimizer.lr=0.1", "trainer.max_epochs=3", "data.scaling=standardize")
    assert cfg.model.name == "deep" and cfg.task == "cv" and cfg.seed == 1
    assert (cfg.optimizer.lr, cfg.optimizer.momentum) == (0.1, 0.9)
    assert cfg.trainer.max_epochs == 3 and cfg.trainer.accelerator == "auto"
    assert (cfg.cv.n_folds, cfg.cv.seed, cfg.data.batch_size, cfg.data.limit) == (5, 1, 32, 0)
    assert cfg.data.download is True


@pytest.mark.parametrize("arg", ["experiment=bestt", "augment=afine", "scheduler=cos", "model=deepnb", "tta=shfit"])
def test_every_group_choice_is_checked(arg, capsys):
    """experiment is an optional group in many templates: Hydra then skips a misspelled preset without a word and
    trains the defaults. Every group of conf/ gets the one-line check, and experiment is not optional."""
    from pathlib import Path

    from digitnet import train

    conf = Path(train.__file__).resolve().parents[2] / "conf"
    assert set(train.GROUPS) == {p.name for p in conf.iterdir() if p.is_dir() and p.name not in ("hydra", "__pycache__")}
    with pytest.raises(SystemExit) as exit_:
        train.check_group_choices([arg])
    assert exit_.value.code == 1
    assert f"{arg} is unknown; use one of" in capsys.readouterr().err
    assert "optional experiment" not in (conf / "config.yaml").read_text()


@pytest.mark.parametrize("argv, message", [
    (["+experiment=best"], "+experiment=best: experiment is in the defaults list already; write experiment=best (no +)"),
    (["-m", "augment=choice(affine,afine)"], "augment=afine is unknown; use one of affine, none"),
    (["-m", "experiment=tutorial, bset"], "experiment=bset is unknown; use one of best, tutorial"),
    (["experiment=null"], "experiment=null: the defaults need no preset; leave experiment= out, or name them "
                         "experiment=tutorial"),
    (["-m", "model='deep,baseline'"], "model='deep,baseline': quotes make one name of it, and model has no choice "
                                      "deep,baseline; to sweep, write -m model=deep,baseline"),
    (["model=vgg,"], "model=vgg,: an empty choice after a comma; remove the comma"),  # was "model= is unknown"
])
def test_group_choice_check_reads_hydra_syntax(argv, message, capsys):
    from digitnet import train

    with pytest.raises(SystemExit):
        train.check_group_choices(argv)
    err = capsys.readouterr().err
    assert err.startswith(f"digitnet.train: error: {message}") and err.count("\n") == 1, err


def test_quoted_and_spaced_choices_are_valid_hydra():
    from digitnet import train

    train.check_group_choices(["experiment='best'", "-m", "augment=none, affine", "model=choice(deep, 'deepbn')"])


@pytest.mark.parametrize("argv, message", [
    (["model.dropout=0.25"], "model.dropout=0.25: only model=deepbn has dropout layers; add model=deepbn"),
    (["-m", "model=deep,deepbn", "model.dropout=0.25"], "model.dropout=0.25: only model=deepbn has dropout layers"),
    (["model=deep,deepbn"], "Ambiguous value for argument 'model=deep,deepbn': to sweep, add -m (--multirun) before"),
    # Hydra lets the later of two overrides of one key win: the sweep would silently become one job.
    (["-m", "optimizer.lr=0.1,0.2", "optimizer.lr=0.3"], "optimizer.lr is given twice (optimizer.lr=0.1,0.2 and "
                                                         "optimizer.lr=0.3); give it once"),
    (["Model=deep"], "Could not override 'Model': no such key; keys are lower case: model=deep"),
    (["model=baseline", "model.name=deep"], "model.name=deep: the net is chosen with the model group; write model=deep"),
    (["--cfg", "job", "model=vgg", "model.dropout=0.0"], "model.dropout=0.0: only model=deepbn has dropout layers"),
    (["-c", "job", "--resolve", "-p", "model", "Model=deep"], "no such key; keys are lower case: model=deep"),
    (["model.name=resnet"], "model.name=resnet: the net is chosen with the model group; write "
                            "model=baseline|batchnorm|deep|deepbn|vgg"),  # it said "write model=resnet", unknown too
    (["hydra.run.dir=${nope.key}"], "hydra.run.dir=${nope.key} cannot be resolved (Interpolation key 'nope.key' not "
                                    "found); use a plain folder"),
    (["-m", "seed=1,2", "hydra.sweep.dir=out/${now:}"], "hydra.sweep.dir=out/${now:} cannot be resolved"),
    (["-m", "seed=1,2", "hydra/launcher=joblib,basic"], "hydra/launcher=joblib,basic: Hydra's own settings cannot be "
                                                        "swept; run one sweep for each value"),
    (["hydra.job.chdir=true,false"], "hydra.job.chdir=true,false: Hydra's own settings cannot be swept"),
    (["-m", "seed=1,2", "~hydra/launcher"], "~hydra/launcher: Hydra's own config groups cannot be removed; choose "
                                            "one, e.g. hydra/launcher=basic"),
    (["hydra/launcher="], "hydra/launcher= is unknown; use one of basic, "),
    (["hydra/launcher=null"], "hydra/launcher=null: a config group needs a choice; use one of basic, joblib, "),
    (["data.limit"], "data.limit: an override is key=value (e.g. data.limit=...); to remove a key write ~data.limit"),
    (["+data.limit"], "to remove a key write ~data.limit"),
    (["-m", "seed=1,2", "hydra/sweeper=null"], "hydra/sweeper=null: a config group needs a choice; use one of basic"),
])
def test_composition_errors_are_one_line_with_the_fix(argv, message, capsys):
    from digitnet import train

    with pytest.raises(SystemExit) as exit_:
        train.check_composes(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.count("\n") == 1 and message in err, err


def test_a_sweep_job_that_cannot_compose_is_one_line_before_any_job(tmp_path):
    result = run_cli("digitnet.train", "-m", "optimizer=sgd,adam", "optimizer.momentum=0.5",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "sweep job 1 (optimizer=adam optimizer.momentum=0.5)" in result.stderr
    assert "Could not override 'optimizer.momentum': no such key" in result.stderr
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("overrides, message", [
    (["model=glob(zz*)"], "model=glob(zz*) gives no value to sweep; model's choices: baseline, batchnorm, deep, deepbn"),
    (["optimizer.lr=range(0)"], "optimizer.lr=range(0) gives no value to sweep"),
    (["model=range(1,3)"], "model=range(1,3) gives 1, which is not one of model's choices (baseline,"),
    (["model=sort(deep,zz)"], "model=sort(deep,zz) gives zz, which is not one of model's choices"),
    (["optimizer.lr=range(1,3,0)"], "optimizer.lr=range(1,3,0): range() arg 3 must not be zero"),
    (["optimizer.lr=interval(0.001,0.1)"], "optimizer.lr=interval(0.001,0.1): the basic sweeper runs lists, range() "
                                           "and glob(), not interval(); list the values"),
])
def test_a_sweep_the_basic_sweeper_cannot_run_is_one_user_error(overrides, message):
    from hydra.core.global_hydra import GlobalHydra

    from digitnet.errors import UserError
    from digitnet.sweep import sweep_jobs
    from digitnet.train import _config_context

    with _config_context(), pytest.raises(UserError) as err:
        sweep_jobs(overrides, GlobalHydra.instance().config_loader())
    assert message in str(err.value) and "\n" not in str(err.value)


def test_sweep_jobs_are_the_basic_sweepers(tmp_path):
    from hydra.core.global_hydra import GlobalHydra

    from digitnet.sweep import sweep_jobs
    from digitnet.train import _config_context

    with _config_context():
        jobs = sweep_jobs(["model=glob(b*)", "optimizer.lr=range(1,3)", "seed=2"], GlobalHydra.instance().config_loader())
    assert jobs == [[f"model={m}", f"optimizer.lr={lr}", "seed=2"] for m in ("baseline", "batchnorm") for lr in (1, 2)]


@pytest.mark.parametrize("override, message", [
    ("model=glob(zz*)", "model=glob(zz*) gives no value to sweep"),
    ("optimizer.lr=tag(a,0.1,0.2)", "'optimizer.lr=tag(a,0.1,0.2)': mismatch type argument args[1]"),
])
def test_a_sweep_that_makes_no_job_leaves_no_files(tmp_path, override, message):
    result = run_cli("digitnet.train", "-m", override, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_cv_end_to_end_on_real_mnist(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    result = run_cli(
        "digitnet.train", "data.limit=2500", "trainer.max_epochs=1", f"data.root={mnist_root}",
        f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    fold_lines = [l for l in result.stdout.splitlines() if l.startswith("> ")]
    assert len(fold_lines) == 5
    assert "Accuracy: mean=" in result.stdout and ", n=5" in result.stdout
    summary = json.loads((run_dir / "cv_summary.json").read_text())
    assert summary["model"] == "baseline" and summary["n"] == 5 and summary["status"] == "ok"
    assert len(summary["fold_scores"]) == 5 and len(summary["history"]) == 5
    # 2,000 training images and one epoch: far above the 10% of chance.
    assert min(summary["fold_scores"]) > 0.75
    assert summary["mean"] == pytest.approx(sum(summary["fold_scores"]) / 5)
    # Folds can end in any order (fold workers, the CPU default), so each line names its fold.
    shown = {}
    for i, line in enumerate(fold_lines):
        score, _, label = line.partition("  (fold ")
        shown[int(label.rstrip(")"))] = score
    assert [f"> {100 * s:.3f}" for s in summary["fold_scores"]] == [shown[k] for k in range(5)]
    assert {"train_loss", "train_acc", "val_loss", "val_acc"} <= set(summary["history"][0][0])
    # The report says what ran (finding 7): the plan, every auto settled.
    plan = summary["plan"]
    assert plan["limit"] == 2500 and plan["runner"] in ("sequential", "processes") and plan["device"] == "cpu"
    assert plan["eval_batch_size"] == 250 and "auto" not in json.dumps(plan)
    assert json.loads((run_dir / "plan.json").read_text()) == plan
    # The result lines also reach Hydra's train.log, which was empty.
    log = (run_dir / "train.log").read_text()
    assert all(line in log for line in fold_lines) and "Accuracy: mean=" in log
    for name in ("learning_curves.png", "cv_boxplot.png", "samples.png"):
        assert (run_dir / name).stat().st_size > 5000
    for fold in range(5):
        assert list((run_dir / "tb" / f"fold_{fold}").glob("events.out.tfevents.*"))
    # TensorBoard: HPARAMS filled once per job (the cv run), Lightning's empty hp_metric off, images per fold.
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    tb = EventMultiplexer()
    tb.AddRunsFromDirectory(str(run_dir / "tb"))
    tb.Reload()
    assert list(tb.PluginRunToTagToContent("hparams")) == ["cv"]
    assert set(tb.Runs()["cv"]["scalars"]) == {"hp/cv_mean", "hp/cv_std"}
    fold0 = tb.Runs()["fold_0"]
    assert {"train_loss", "train_acc", "val_loss", "val_acc"} <= set(fold0["scalars"]) and "hp_metric" not in fold0["scalars"]
    assert {"samples/validation", "confusion_matrix/validation"} <= set(fold0["images"])
    assert len(tb.Scalars("fold_0", "val_acc")) == 1  # one point per epoch
    # Quiet logs: no device banners, no loader-worker advice.
    assert "does not have many workers" not in result.stderr
    assert "GPU available" not in result.stdout + result.stderr


def test_run_in_process_reports_the_plan_it_ran(tmp_path, synthetic_root, capsys):
    """run(plan) is the pure entry point behind @hydra.main: plan in, summary out, everything in run_dir."""
    from conftest import plan_of
    from digitnet.train import run

    plan = plan_of(f"data.root={synthetic_root}", "cv.n_folds=2", "trainer.max_epochs=1", "cv.workers=1",
                   "data.batch_size=10")  # a batch within a fold: no note, so the plan runs as made
    summary = run(plan, tmp_path / "run")
    assert summary["n"] == 2 and summary["plan"] == plan.as_dict() and summary["plan"]["runner"] == "sequential"
    out = capsys.readouterr().out
    assert plan.describe() in out and "> " in out and "Accuracy: mean=" in out
    # Not a terminal: a line per epoch, no progress bar redraws; folds numbered as their files everywhere.
    assert "fold 0 of 2, epoch 1/1: train_loss" in out and "\r" not in out and "(fold 0)" in out
    saved = json.loads((tmp_path / "run" / "folds" / "fold_0.json").read_text())
    assert saved["run_key"] == plan.fingerprint_fields()
    assert oct((tmp_path / "run" / "cv_summary.json").stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's 0600


def test_an_optimizer_that_cannot_be_imported_leaves_no_trace(tmp_path):
    """hydra.utils.get_class logged its failure to the console and into the run dir's train.log (a finished run's
    log too) before digitnet's one line."""
    result = run_cli("digitnet.train", "optimizer._target_=torch.optim.Foo", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1 and result.stdout == "" and result.stderr == (
        "digitnet.train: error: optimizer._target_=torch.optim.Foo cannot be imported; choose optimizer=sgd|adam|adamw\n")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, message", [
    (["--bogus-flag"], "unrecognized arguments: --bogus-flag (see --help; settings are key=value overrides)"),
    (["-c", "bogus"], "argument --cfg/-c: invalid choice: 'bogus' (choose from 'job', 'hydra', 'all')"),
    (["model=deep", "--multirun=yes"], "argument --multirun/-m: ignored explicit argument 'yes'"),
    (["--multi", "data.limit=300", "-c", "job"], "--multirun and --cfg: give one of them"),  # was a traceback
    (["--info=config", "-c", "job"], "--cfg and --info: give one of them"),
    (["-m", "--cfg", "job", "model=baseline,deep"], "--multirun and --cfg: give one of them"),
    (["-cd", "no/such/dir", "optimizer=x"], "--config-dir no/such/dir: no such folder"),
    (["data.limit=3", "--config-dir", ".", "optimizer=x"], "unrecognized arguments: optimizer=x: Hydra's flags "
                                                          "(--config-dir, --cfg, ...) come before the key=value"),
])
def test_a_bad_hydra_flag_is_one_line_and_exit_1(argv, message, capsys):
    """Hydra's argparse printed its 8-line usage and exited 2; the other entry points give one line and 1."""
    from digitnet import train

    with pytest.raises(SystemExit) as exit_:
        train.check_flags(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.count("\n") == 1 and message in err, err
    train.check_flags(["--cfg", "job", "model=deep", "hydra.run.dir=x"])  # good ones pass


def test_a_config_dir_of_your_own_is_checked_like_the_packaged_configs(tmp_path, capsys):
    """With --config-dir, a YAML syntax error was an 89-line traceback and an unknown choice Hydra's 14 lines."""
    from digitnet import train

    (tmp_path / "optimizer").mkdir()
    (tmp_path / "optimizer" / "broken.yaml").write_text("lr: [0.1\nmomentum: 0.9\n")
    (tmp_path / "optimizer" / "mine.yaml").write_text("_target_: torch.optim.SGD\nlr: 0.2\n")
    # Hydra's UnicodeDecodeError named no file.
    (tmp_path / "optimizer" / "latin.yaml").write_bytes("_target_: torch.optim.SGD # caf\u00e9\n".encode("latin-1"))
    for argv, message in (
            (["--config-dir", str(tmp_path), "optimizer=broken"],
             f"{tmp_path / 'optimizer' / 'broken.yaml'}, line 2: not valid YAML (expected ',' or ']', but got ':'); "
             "fix the file"),
            ([f"--config-dir={tmp_path}", "optimizer=nosuch"],
             "optimizer=nosuch is unknown; use one of adam, adamw, broken, latin, mine, sgd"),
            (["-cd", str(tmp_path), "optimizer=latin"],
             f"{tmp_path / 'optimizer' / 'latin.yaml'}: not UTF-8 text (byte 0xe9 at offset 31); save it as UTF-8"),
            (["-cd", str(tmp_path), "optimizer=mine", "optimizer.lr=x"], None),
            # --config-dir twice (the last counts), or beside a hydra.searchpath: Hydra's traceback was let through.
            (["--config-dir", "/nonexistent", "--config-dir", str(tmp_path), "optimizer=broken"],
             f"{tmp_path / 'optimizer' / 'broken.yaml'}, line 2: not valid YAML"),
            (["--config-dir", str(tmp_path), "hydra.searchpath=[pkg://digitnet.conf]", "optimizer=broken"],
             f"{tmp_path / 'optimizer' / 'broken.yaml'}, line 2: not valid YAML")):
        if message is None:
            train.check_composes(argv)  # composes; the bad value is make_plan's to refuse
            continue
        with pytest.raises(SystemExit) as exit_:
            train.check_composes(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 1 and err.startswith(f"digitnet.train: error: {message}") and err.count("\n") == 1, err


@pytest.mark.slow  # runs the CLI (or a CV); `-m "not slow"` stays under 3 minutes
def test_an_empty_or_list_option_file_of_your_own_is_named(tmp_path):
    """Hydra composes an empty or list-shaped option file to nothing: the plan then said "model.name is missing from
    the config", naming no file. Single runs and sweeps now name it."""
    from conftest import run_cli

    (tmp_path / "cd" / "model").mkdir(parents=True)
    (tmp_path / "cd" / "optimizer").mkdir()
    (tmp_path / "cd" / "model" / "mine.yaml").write_text("# nothing yet\n")
    (tmp_path / "cd" / "optimizer" / "mine.yaml").write_text("- lr\n- 0.1\n")
    empty = f"{tmp_path / 'cd' / 'model' / 'mine.yaml'} is empty, so model=mine sets nothing; write model keys into it"
    listed = f"{tmp_path / 'cd' / 'optimizer' / 'mine.yaml'} holds a list, not keys, so optimizer=mine sets nothing"
    for args, message in ((["model=mine", f"hydra.run.dir={tmp_path / 'run'}"], empty),
                          (["-m", "optimizer=sgd,mine", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                           f"sweep job 1 (optimizer=mine): {listed}")):
        proc = run_cli("digitnet.train", "--config-dir", tmp_path / "cd", *args, cwd=tmp_path)
        assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith(f"digitnet.train: error: {message}"), proc.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


def test_option_and_experiment_files_that_leave_a_group_without_keys_are_named(tmp_path, capsys):
    """A number in an option file was Hydra's "Invalid loaded object type: int"; an empty data option or `data: null`
    in an experiment was "Could not override 'data.limit'", whose advice (+data.limit) failed too."""
    from digitnet import train

    for group, name, text in (("tta", "num", "42\n"), ("data", "empty", ""), ("experiment", "nuldata",
                              "# @package _global_\ndata: null\n"), ("experiment", "listtta",
                              "# @package _global_\ndefaults:\n  - override /tta: list\n"), ("tta", "list", "- a\n")):
        (tmp_path / group).mkdir(exist_ok=True)
        (tmp_path / group / f"{name}.yaml").write_text(text)
    for argv, message in (
            (["tta=num"], f"{tmp_path / 'tta' / 'num.yaml'} holds a number, not keys, so tta=num sets nothing"),
            (["data=empty", "data.limit=600"], f"{tmp_path / 'data' / 'empty.yaml'} is empty, so data=empty sets nothing"),
            (["experiment=nuldata", "data.limit=600"], f"{tmp_path / 'experiment' / 'nuldata.yaml'} sets data: null, but "
             "data is a config group; choose its option in the file's defaults list (- override /data: NAME)"),
            (["experiment=listtta", "tta.name=shift"], f"{tmp_path / 'tta' / 'list.yaml'} holds a list, not keys")):
        with pytest.raises(SystemExit) as exit_:
            train.check_composes(["--config-dir", str(tmp_path), *argv])
        err = capsys.readouterr().err
        assert exit_.value.code == 1 and err.startswith(f"digitnet.train: error: {message}") and err.count("\n") == 1, err


def test_with_hydra_job_chdir_a_relative_data_root_is_the_callers(tmp_path):
    """hydra.job.chdir=true moved the run into its run dir, and data.root=mn was looked for there ("MNIST files
    missing in mn" while ./mn held them)."""
    from conftest import compose_cfg
    from digitnet.train import _root_from_caller

    cfg = compose_cfg("data.root=mn")
    _root_from_caller(cfg, str(tmp_path))
    assert cfg.data.root == str(tmp_path / "mn")
    cfg = compose_cfg("data.root=/abs/mn")
    _root_from_caller(cfg, str(tmp_path))
    assert cfg.data.root == "/abs/mn"
