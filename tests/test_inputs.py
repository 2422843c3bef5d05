"""Every bad input gets one line, exit 1, no traceback: checkpoints, predict, evaluate, summarize, output dirs.
In process where the entry points allow, so that the suite stays fast."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, make_synthetic_mnist
from digitnet.errors import UserError
from digitnet.models import DigitClassifier

SAMPLE = ROOT / "samples" / "sample_image.png"


def write_checkpoint(path, change=None):
    model = DigitClassifier(arch="baseline")
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    if change:
        change(ckpt)
    torch.save(ckpt, path)
    return path


def set_hp(key, value):
    return lambda ckpt: ckpt["hyper_parameters"].__setitem__(key, value)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.__setitem__("hyper_parameters", [1, 2]), "hyper_parameters must be a dict"),
    (lambda c: c["hyper_parameters"].__setitem__(3, "x"), "hyper_parameters must be a dict with names as keys"),
    (set_hp("arch", ["deep"]), "unknown architecture ['deep']"),
    (set_hp("arch", None), "unknown architecture None"),
    (set_hp("pixel_mean", "0.1"), "pixel_mean='0.1' is not a finite number"),
    (set_hp("pixel_std", float("nan")), "pixel_std=nan is not a finite number"),
    (set_hp("pixel_std", 0.0), "pixel_std=0.0 must be > 0"),
    (lambda c: c.__setitem__("state_dict", [1]), "state_dict must map names to tensors"),
    (lambda c: c["state_dict"]["net.0.weight"].fill_(float("nan")), "weights hold NaN or infinite values (net.0.weight)"),
    (lambda c: c["state_dict"]["net.4.bias"].fill_(float("inf")), "weights hold NaN or infinite values (net.4.bias)"),
])
def test_malformed_checkpoints_are_one_line(tmp_path, change, message):
    from digitnet.nets import load_checkpoint

    path = write_checkpoint(tmp_path / "bad.ckpt", change)
    with pytest.raises(UserError) as err:
        load_checkpoint(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_predict_isolates_each_image_and_prints_valid_json(tmp_path, capsys):
    from digitnet import predict

    ckpt = write_checkpoint(tmp_path / "model.ckpt")
    nan = np.zeros((40, 40), dtype=np.float32)
    nan[10:30, 18:22], nan[0, 0] = 1.0, np.nan
    Image.fromarray(nan, mode="F").save(tmp_path / "nan.tif")
    assert predict.main([str(ckpt), str(SAMPLE), str(tmp_path / "nan.tif"), str(SAMPLE), "--json"]) == 1
    out, err = capsys.readouterr()
    rows = json.loads(out)  # strict JSON: no NaN
    assert [r["path"] for r in rows] == [str(SAMPLE), str(SAMPLE)]
    assert err.strip().splitlines() == [f"digitnet.predict: error: {tmp_path / 'nan.tif'}: holds pixels that are not "
                                        "numbers (NaN or infinite); save it again as a plain image"]


def test_predict_survives_a_failure_inside_preprocessing(tmp_path, capsys, monkeypatch):
    from digitnet import predict

    ckpt = write_checkpoint(tmp_path / "model.ckpt")
    real = predict.mnist_form
    calls = iter([real, lambda gray: 1 / 0, real])
    monkeypatch.setattr(predict, "mnist_form", lambda gray: next(calls)(gray))
    assert predict.main([str(ckpt), str(SAMPLE), str(SAMPLE), str(SAMPLE)]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2 and "cannot be prepared (ZeroDivisionError" in err


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "0"], "--batch-size 0: must be a positive whole number"),
    (["--batch-size", "-5"], "--batch-size -5: must be a positive whole number"),
    (["--out", "{tmp}"], "is a folder; give a file path such as"),
    (["--out", "{tmp}/afile/metrics.json"], "afile is a file, not a folder"),
    (["--out", "{tmp}/a.json", "--out={tmp}/b.json"], "--out is given twice ({tmp}/a.json and {tmp}/b.json)"),
    (["--batch-size", "10", "--batch", "20"], "--batch-size is given twice (10 and 20); give it once"),
    (["--batch-size", "10", "--batch-size=10"], "--batch-size is given twice (10 and 10); give it once"),
])
def test_evaluate_bad_arguments_before_any_work(tmp_path, capsys, args, message):
    from digitnet import evaluate

    ckpt = write_checkpoint(tmp_path / "model.ckpt")
    (tmp_path / "afile").write_text("x")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(ckpt), "--data-root", str(tmp_path / "nodata"), "--no-download", *args])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.replace("{tmp}", str(tmp_path)) in err[0]
    assert not list(tmp_path.rglob("*.tmp"))


def test_evaluate_needs_only_the_holdout_files(tmp_path, capsys):
    from digitnet import evaluate

    data = make_synthetic_mnist(tmp_path / "mnist")
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (data / name).unlink()
    ckpt = write_checkpoint(tmp_path / "model.ckpt")
    assert evaluate.main([str(ckpt), "--data-root", str(data), "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["n"] == 20
    assert oct((tmp_path / "m.json").stat().st_mode & 0o777) == "0o644"


def test_summarize_names_damaged_files_and_skips_foreign_jobs(tmp_path, capsys):
    from digitnet import summarize

    for job in ("0", "1"):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr=0.0{job}\n")
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    # job 1 is someone else's Hydra job: no plan, no folds. It gets a row, not a traceback.
    assert summarize.main([str(tmp_path)]) == 0
    assert "not started or failed" in (tmp_path / "sweep_summary.md").read_text()
    (tmp_path / "0" / "cv_summary.json").write_text("{")
    with pytest.raises(SystemExit) as stop:
        summarize.main([str(tmp_path)])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / '0' / 'cv_summary.json'} is damaged" in err[-1]


@pytest.mark.parametrize("arg, message", [
    ("hydra.run.dir={tmp}/afile", "afile is a file; choose a folder"),
    ("hydra.run.dir={tmp}/afile/run", "afile is a file, not a folder"),
    ("hydra.sweep.dir=/proc/digitnet/sweep", "cannot be created (No such file or directory)"),
    # a link to nowhere said "cannot be created (File exists)"
    ("hydra.run.dir={tmp}/dangling", "dangling is a broken link (to nowhere); remove it, or choose another folder"),
    ("hydra.run.dir={tmp}/dangling/run", "dangling is a broken link (to nowhere)"),
])
def test_output_dirs_that_cannot_be_folders(tmp_path, capsys, arg, message):
    from digitnet.train import check_output_dirs

    (tmp_path / "afile").write_text("x")
    (tmp_path / "dangling").symlink_to("nowhere")
    with pytest.raises(SystemExit) as stop:
        check_output_dirs([arg.replace("{tmp}", str(tmp_path))])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    check_output_dirs([f"hydra.run.dir={tmp_path}/new/run"])  # a good one passes and leaves nothing made
    assert not (tmp_path / "new").exists()


def test_train_help_names_the_tasks_and_main_options():
    result = subprocess.run([sys.executable, "-m", "digitnet.train", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "powered by Hydra" not in result.stdout
    for text in ("task=...", "cv ", "final ", "model=baseline|batchnorm|deep", "optimizer=sgd|adam|adamw",
                 "data.limit=N", "$DIGITNET_DATA"):
        assert text in result.stdout, text


def test_short_learning_curves_show_points_and_many_jobs_stay_readable():
    from digitnet import report

    fig = report.learning_curves_figure([[{"epoch": 0, "train_loss": 1.0, "val_loss": 1.2, "train_acc": 0.6,
                                           "val_acc": 0.5}]])
    assert all(line.get_marker() == "o" for ax in fig.axes for line in ax.get_lines())
    names = {f"{i}: optimizer.lr=0.{i:03d} model=deep": [0.98, 0.99] for i in range(12)}
    fig = report.boxplot_figure(names, "sweep")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[-1].startswith("0: ") and len(labels) == 12  # one per row, first job on top
    assert fig.get_size_inches()[1] >= 0.35 * 12


@pytest.mark.parametrize("change, message", [
    (set_hp("pixel_std", 10**400), "pixel_std=1000000000"),
    (set_hp("self", 1), None),  # a stray key never reaches the constructor
    (set_hp("scaling", float("nan")), "scaling=nan is not a name"),
    (lambda c: c["state_dict"].__setitem__("net.0.weight", c["state_dict"]["net.0.weight"].to("meta")), "on the meta device"),
    (lambda c: c["state_dict"].__setitem__("net.0.weight", c["state_dict"]["net.0.weight"].to_sparse()), "sparse"),
    (lambda c: c["state_dict"].__setitem__("net.0.weight", c["state_dict"]["net.0.weight"].long()), "torch.int64"),
    (lambda c: c["state_dict"].__setitem__("net.0.weight", c["state_dict"]["net.0.weight"].to(torch.complex64)), "complex64"),
])
def test_odd_checkpoint_contents(tmp_path, change, message):
    from digitnet.nets import load_checkpoint

    path = write_checkpoint(tmp_path / "odd.ckpt", change)
    if message is None:
        assert load_checkpoint(path).hparams["arch"] == "baseline"
        return
    with pytest.raises(UserError) as err:
        load_checkpoint(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_stray_files_in_folds_are_not_ensemble_members(tmp_path):
    from digitnet.nets import model_checkpoints

    folds = tmp_path / "folds"
    folds.mkdir()
    for name in ("fold_0", "fold_1", "fold_x", "fold_-1", "fold_0 copy"):
        write_checkpoint(folds / f"{name}.ckpt")
    for k in (0, 1):
        (folds / f"fold_{k}.json").write_text("{}")
    assert [p.name for p in model_checkpoints(tmp_path)] == ["fold_0.ckpt", "fold_1.ckpt"]


def test_predict_lines_hold_odd_file_names_and_json_stays_valid(tmp_path, capsys):
    from digitnet import predict

    ckpt = write_checkpoint(tmp_path / "model.ckpt")
    odd = tmp_path / "a\nb.png"
    odd.write_bytes(SAMPLE.read_bytes())
    assert predict.main([str(ckpt), str(odd), str(tmp_path / "missing\t.png")]) == 1
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 1 and "a\\nb.png" in out
    assert len(err.strip().splitlines()) == 1 and "missing\\t.png" in err
    with pytest.raises(SystemExit):
        predict.main([str(tmp_path / "none.ckpt"), str(SAMPLE), "--json"])
    assert json.loads(capsys.readouterr().out) == []


def test_evaluate_out_where_nothing_can_be_written(tmp_path, capsys):
    from digitnet import evaluate

    ckpt = write_checkpoint(tmp_path / "model.ckpt")
    with pytest.raises(SystemExit):
        evaluate.main([str(ckpt), "--out", "/proc/metrics.json", "--data-root", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write in /proc" in err[0]




@pytest.mark.parametrize("name", ["sweep_summary.csv", "sweep_summary.md", "sweep_boxplot.png"])
@pytest.mark.parametrize("kind, message", [
    ("folder", "is not a file"),
    ("link to a file outside", "is a symbolic link"),  # writing through it would change that file
    ("dangling link", "is a symbolic link"),
])
def test_summarize_writes_all_or_nothing(tmp_path, capsys, name, kind, message):
    from digitnet import summarize

    sweep = tmp_path / "sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    (sweep / "0" / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    outside = tmp_path / "outside.txt"
    if kind == "folder":
        (sweep / name).mkdir()
    else:
        if kind == "link to a file outside":
            outside.write_text("keep")
        (sweep / name).symlink_to(outside)
    with pytest.raises(SystemExit) as stop:
        summarize.main([str(sweep)])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 1 and len(err) == 1 and f"{sweep / name} {message}" in err[0], err
    assert sorted(p.name for p in sweep.iterdir()) == sorted(["0", "multirun.yaml", name])
    assert outside.read_text() == "keep" if kind == "link to a file outside" else not outside.exists()

def test_the_sweep_table_keeps_one_row_a_job_whatever_its_names(tmp_path):
    from digitnet import summarize

    for job, override in (("0", "hydra.job.name='a|b'"), ("1\nx", "data.root=/d/n\new")):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(f"- {json.dumps(override)}\n")
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    assert summarize.main([str(tmp_path)]) == 0
    rows = [line for line in (tmp_path / "sweep_summary.md").read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == 3 and all(row.replace("\\|", "").count("|") == 11 for row in rows), rows

@pytest.mark.parametrize("damage, message", [
    (lambda s: s.update(fold_scores=["a", "b"], mean="x"), "fold scores for 3 folds"),
    (lambda s: s.update(mean=float("nan")), "mean nan is not an accuracy"),
    (lambda s: s.update(fold_scores=s["fold_scores"][:1]), "1 fold scores for 3 folds"),
    (lambda s: s["folds"][1].update(score="high"), "fold 1: score 'high' is not an accuracy"),
])
def test_summarize_checks_what_the_files_say(tmp_path, capsys, synthetic_root, damage, message):
    from conftest import plan_of
    from digitnet import summarize
    from digitnet.train import run

    job = tmp_path / "0"
    run(plan_of(f"data.root={synthetic_root}", "cv.n_folds=3", "trainer.max_epochs=1", "cv.workers=1"), job)
    (job / ".hydra").mkdir()
    (job / ".hydra" / "overrides.yaml").write_text("- cv.n_folds=3\n")
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    path = job / "cv_summary.json"
    summary = json.loads(path.read_text())
    damage(summary)
    path.write_text(json.dumps(summary))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        summarize.main([str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path} is damaged" in err[0] and message in err[0]


def test_run_dir_files_with_wrong_contents_are_named(tmp_path, synthetic_root):
    from conftest import plan_of
    from digitnet import rundir
    from digitnet.folds import FoldStore

    plan = plan_of(f"data.root={synthetic_root}", "cv.n_folds=2")
    FoldStore.for_plan(tmp_path, plan).save({"fold": 0, "status": "ok", "score": "high", "history": [], "seconds": 1})
    with pytest.raises(UserError, match=r"fold_0.json is damaged \(score 'high' is not an accuracy"):
        rundir.check_compatible(tmp_path, plan)
    FoldStore.for_plan(tmp_path, plan).save({"fold": 0, "status": "ok", "score": float("nan"), "history": [],
                                             "seconds": 1})
    with pytest.raises(UserError, match="score nan is not an accuracy"):
        rundir.check_compatible(tmp_path, plan)
    (tmp_path / "folds" / "fold_0.json").unlink()
    (tmp_path / "plan.json").write_text(json.dumps({**plan.as_dict(), "trainer": "x"}))
    with pytest.raises(UserError, match="plan.json is damaged"):
        rundir.check_compatible(tmp_path, plan)
    (tmp_path / "final.ckpt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="delete it to fit the final model again"):
        rundir.report_existing_final(tmp_path)


def _cv_dir(tmp_path, n=3, arch="baseline"):
    """A CV run dir as digitnet leaves it: folds/fold_K.ckpt beside fold_K.json (its run_key and pixel statistics)."""
    run = tmp_path / "cv"
    (run / "folds").mkdir(parents=True)
    for k in range(n):
        write_checkpoint(run / "folds" / f"fold_{k}.ckpt", set_hp("arch", arch) if arch != "baseline" else None)
        (run / "folds" / f"fold_{k}.json").write_text(json.dumps(
            {"fold": k, "pixel_mean": 0.0, "pixel_std": 1.0,
             "run_key": {"model": arch, "scaling": "normalize", "n_folds": n}}))
    return run


@pytest.mark.parametrize("damage, message", [
    (lambda run: (run / "folds" / "fold_1.ckpt").unlink(),
     "fold 1 finished (fold_1.json) but folds/fold_1.ckpt is missing; restore it, or delete fold_1.json"),
    (lambda run: [(run / "folds" / f"fold_9{s}").write_bytes((run / "folds" / f"fold_0{s}").read_bytes())
                  for s in (".ckpt", ".json")], "fold_9.json is not fold 9 of this run (it says fold 0 of 3)"),
    (lambda run: write_checkpoint(run / "folds" / "fold_2.ckpt", set_hp("pixel_mean", 0.5)),
     "fold_2.ckpt: its pixel_mean is 0.5, but fold_2.json says 0.0; this is not the net that fold trained"),
    (lambda run: write_checkpoint(run / "folds" / "fold_2.ckpt", set_hp("scaling", "standardize")),
     "fold_2.ckpt: its scaling is 'standardize', but fold_2.json says 'normalize'"),
    (lambda run: (run / "folds" / "fold_2.json").write_text(json.dumps(
        {"fold": 2, "run_key": {"model": "deep", "scaling": "normalize", "n_folds": 3}})),
     "holds folds of different configs"),
    (lambda run: (run / "folds" / "fold_2.json").write_text("{broken"), "fold_2.json is damaged; delete it"),
])
def test_a_cv_ensemble_is_exactly_its_runs_finished_folds(tmp_path, damage, message):
    from digitnet.nets import load_model

    run = _cv_dir(tmp_path)
    assert len(load_model([run]).members) == 3
    damage(run)
    with pytest.raises(UserError) as err:
        load_model([run])
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_model_counts_once_in_an_ensemble(tmp_path):
    from digitnet.nets import load_model

    run = _cv_dir(tmp_path)
    with pytest.raises(UserError, match=r"fold_0.ckpt is named twice \(also as .*fold_0.ckpt\); each model counts once"):
        load_model([run, run / "folds" / "fold_0.ckpt"])


@pytest.mark.parametrize("args, message", [
    (["{run}", "{img}", "{other}"], "other.ckpt: models come first; put it before the images"),
    (["{run}", "{img}", "{run}"], "is a run dir (it holds folds), not a folder of images"),
    (["{run}", ""], "an image path is empty ('' among the images); name image files or folders"),
    (["", "{img}"], "the model path is empty; pass a checkpoint, a task=final run dir or a CV run dir"),
    # The image first: it said "no images given after the models", not that the image was read as the model.
    (["{img}", "{other}"], "no images after the models: {img} was read as the model; the model comes first ({other} "
                           "{img})"),
])
def test_predict_reads_models_first_then_images_only(tmp_path, capsys, args, message):
    from digitnet import predict

    run = _cv_dir(tmp_path)
    other = write_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(SystemExit) as exit_:
        predict.main([a.format(run=run, img=SAMPLE, other=other) for a in args])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.count("\n") == 1 and message.format(img=SAMPLE, other=other) in err, err


@pytest.mark.parametrize("out, message", [
    ("{final}/final.ckpt", "give a .json path"),
    ("{final}/test_metrics.json", "is a run dir (it holds final.ckpt), whose own reports this would replace"),
    ("{tmp}/o/confusion_matrix.png", "give a .json path"),
    ("{cv}/mine.json", "is a run dir (it holds folds)"),
])
def test_evaluate_never_writes_over_a_runs_own_files(tmp_path, capsys, out, message):
    from digitnet import evaluate

    final = tmp_path / "final"
    final.mkdir()
    ckpt = write_checkpoint(final / "final.ckpt")
    before = ckpt.read_bytes()
    cv = _cv_dir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        evaluate.main([str(ckpt), "--out", out.format(final=final, tmp=tmp_path, cv=cv), "--data-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.count("\n") == 1 and message in err, err
    assert ckpt.read_bytes() == before and sorted(p.name for p in final.iterdir()) == ["final.ckpt"]


def test_evaluate_checks_its_figure_before_the_work(tmp_path, capsys):
    from digitnet import evaluate

    run = _cv_dir(tmp_path, n=2)
    (run / "ensemble_confusion_matrix.png").mkdir()
    with pytest.raises(SystemExit):
        evaluate.main([str(run), "--data-root", str(tmp_path / "nodata")])  # would fail on the data if it got there
    err = capsys.readouterr().err
    assert "ensemble_confusion_matrix.png is a folder" in err and not (run / "ensemble_metrics.json").exists(), err


def test_serve_shows_a_holdout_score_only_of_the_same_members(tmp_path):
    from digitnet.nets import load_model
    from digitnet.serve import model_info

    run = _cv_dir(tmp_path)
    members = {str(run / "folds" / f"fold_{k}.ckpt"): {"accuracy": 0.99, "loss": 0.1} for k in range(3)}
    (run / "ensemble_metrics.json").write_text(json.dumps({"accuracy": 0.995, "members": members}))
    assert model_info(run, load_model([run]))["holdout_accuracy"] == 0.995
    for name in ("fold_2.ckpt", "fold_2.json"):
        (run / "folds" / name).unlink()
    assert model_info(run, load_model([run]))["holdout_accuracy"] is None
    loose = write_checkpoint(tmp_path / "final" / "other.ckpt") if (tmp_path / "final").mkdir() is None else None
    (tmp_path / "final" / "test_metrics.json").write_text(json.dumps({"accuracy": 0.99}))
    assert model_info(loose, load_model([loose]))["holdout_accuracy"] is None


@pytest.mark.parametrize("name, fold, message", [
    ("fold_1.json", 0, "fold_1.json is damaged (it holds the result of fold 0, and this job has folds 0-1)"),
    ("fold_7.json", 7, "fold_7.json is damaged (it holds the result of fold 7, and this job has folds 0-1)"),
])
def test_summarize_refuses_a_fold_file_of_another_fold(tmp_path, capsys, name, fold, message):
    from digitnet import summarize

    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    (job / "plan.json").write_text(json.dumps({"n_folds": 2, "limit": 0, "cv_seed": 1}))
    (job / "folds").mkdir()
    result = {"fold": 0, "status": "ok", "score": 0.99, "history": [], "seconds": 1.0, "n_val": 1, "n_train": 4}
    (job / "folds" / "fold_0.json").write_text(json.dumps(result))
    (job / "folds" / name).write_text(json.dumps({**result, "fold": fold}))
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    with pytest.raises(SystemExit):
        summarize.main([str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.mark.parametrize("change", [set_hp("pixel_std", 1e-45),
                                    lambda c: [w.mul_(1e37) for w in c["state_dict"].values()]])
def test_evaluate_refuses_a_model_whose_outputs_are_not_finite(tmp_path, capsys, synthetic_root, change):
    """Finite weights can still overflow: evaluate printed "> 9.800" and wrote "loss": NaN, which is not JSON."""
    from digitnet import evaluate

    ckpt = write_checkpoint(tmp_path / "model.ckpt", change)
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(ckpt), "--data-root", str(synthetic_root), "--out", str(tmp_path / "m.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 1 and len(err) == 1, err
    assert f"{ckpt}: the model's outputs are not finite (NaN or inf) for " in err[0]
    assert not (tmp_path / "m.json").exists()


def test_summarize_refuses_a_folder_that_is_no_sweep_and_names_undecodable_job_files(tmp_path, capsys):
    """A hostile try: `summarize outputs/DATE` (run dirs, no sweep) wrote a table with a "best job"; an
    overrides.yaml of bytes ff fe 00 gave "please report"."""
    from digitnet import summarize

    for job in ("10-00-00", "11-00-00"):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    with pytest.raises(SystemExit):
        summarize.main([str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"digitnet.summarize: error: {tmp_path} has no multirun.yaml, so it is no sweep dir (it holds run "
                   "dirs); pass the dir a `-m` run printed (outputs/multirun/DATE/TIME by default)"]
    assert not list(tmp_path.glob("sweep_summary.*"))
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    (tmp_path / "10-00-00" / ".hydra" / "overrides.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SystemExit):
        summarize.main([str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / '10-00-00' / '.hydra' / 'overrides.yaml'} is damaged" in err[0], err


def test_predict_leaves_out_the_run_dirs_inside_a_folder_of_images(tmp_path, capsys):
    """`predict MODEL outputs` predicted the runs' learning curves and confusion matrices as digits."""
    import shutil

    from digitnet import predict

    run = _cv_dir(tmp_path / "outs")
    (run / "learning_curves.png").write_bytes(SAMPLE.read_bytes())
    shutil.copy(SAMPLE, tmp_path / "outs" / "mine.png")
    ckpt = write_checkpoint(tmp_path / "model.ckpt")
    assert predict.main([str(ckpt), str(tmp_path / "outs")]) == 0
    out, err = capsys.readouterr()
    assert [line.split("\t")[0] for line in out.splitlines()] == [str(tmp_path / "outs" / "mine.png")]
    assert err == (f"note: left out 1 run dir(s) inside the folders given ({run}): their figures are no digits\n")


def test_predict_says_when_a_folder_given_holds_no_image(tmp_path, capsys):
    """A folder of checkpoints (a run's folds/) among the images was left out without a word."""
    from digitnet import predict

    ckpt = write_checkpoint(tmp_path / "model.ckpt")
    (tmp_path / "folds").mkdir()
    (tmp_path / "folds" / "fold_0.json").write_text("{}")
    assert predict.main([str(ckpt), str(tmp_path / "folds"), str(SAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{SAMPLE}\t") and err == f"note: no image files in {tmp_path / 'folds'}; left out\n", err
