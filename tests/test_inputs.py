"""Bad input to the model commands: checkpoints, CV run dirs as ensembles, predict's and evaluate's arguments. Each is
refused naming the file (UserError.path) or the option, exit 1, no traceback; in process, so that the suite stays
fast."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, make_synthetic_mnist, write_idx
from digitnet.core.module import DigitClassifier
from digitnet.errors import UserError

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


def set_weight(convert):
    return lambda c: c["state_dict"].__setitem__("net.0.weight", convert(c["state_dict"]["net.0.weight"]))


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.__setitem__("hyper_parameters", [1, 2]),
        lambda c: c["hyper_parameters"].__setitem__(3, "x"),
        set_hp("arch", ["deep"]),
        set_hp("arch", None),
        set_hp("pixel_mean", "0.1"),
        set_hp("pixel_std", float("nan")),
        set_hp("pixel_std", 0.0),
        set_hp("pixel_std", 10**400),
        set_hp("scaling", float("nan")),
        set_hp("tta", "flip"),
        lambda c: c.__setitem__("state_dict", [1]),
        lambda c: c["state_dict"]["net.0.weight"].fill_(float("nan")),
        lambda c: c["state_dict"]["net.4.bias"].fill_(float("inf")),
        set_weight(lambda w: w.to("meta")),
        set_weight(lambda w: w.to_sparse()),
        set_weight(lambda w: w.long()),
        set_weight(lambda w: w.to(torch.complex64)),
        set_weight(lambda w: w[:3]),
    ],
)
def test_damaged_checkpoints_are_refused_naming_the_file(tmp_path, change):
    from digitnet.core.checkpoints import load_checkpoint

    path = write_checkpoint(tmp_path / "bad.ckpt", change)
    with pytest.raises(UserError) as err:
        load_checkpoint(path)
    assert err.value.path == path and "\n" not in str(err.value)


def test_a_stray_hparam_never_reaches_the_net(tmp_path):
    from digitnet.core.checkpoints import load_checkpoint

    assert load_checkpoint(write_checkpoint(tmp_path / "odd.ckpt", set_hp("self", 1))).hparams["arch"] == "baseline"


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
    errors = [line for line in err.splitlines() if not line.startswith("note: ")]  # a random net's readings are unsure
    assert len(errors) == 1 and str(tmp_path / "nan.tif") in errors[0]


def test_predict_survives_a_failure_inside_preprocessing(tmp_path, capsys, monkeypatch):
    from digitnet import predict
    from digitnet.core import inference

    ckpt = write_checkpoint(tmp_path / "model.ckpt")
    real = inference.mnist_form
    calls = iter([real, lambda gray: 1 / 0, real])
    monkeypatch.setattr(inference, "mnist_form", lambda gray, notes=None: next(calls)(gray))
    assert predict.main([str(ckpt), str(SAMPLE), str(SAMPLE), str(SAMPLE)]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2 and "ZeroDivisionError" in err  # the one image's line names what broke


def test_predict_lines_hold_odd_file_names_and_json_stays_valid(tmp_path, capsys):
    from digitnet import predict

    ckpt = write_checkpoint(tmp_path / "model.ckpt")
    odd = tmp_path / "a\nb.png"
    odd.write_bytes(SAMPLE.read_bytes())
    assert predict.main([str(ckpt), str(odd), str(tmp_path / "missing\t.png")]) == 1
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 1 and "a\\nb.png" in out
    errors = [line for line in err.splitlines() if not line.startswith("note: ")]
    assert len(errors) == 1 and "missing\\t.png" in errors[0]
    with pytest.raises(SystemExit):
        predict.main([str(tmp_path / "none.ckpt"), str(SAMPLE), "--json"])
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize("args", [["--batch-size", "0"], ["--batch-size", "-5"], ["--top-k", "11"], ["--tta", "flip"]])
def test_predict_usage_errors_are_argparses(tmp_path, capsys, args):
    from digitnet import predict

    with pytest.raises(SystemExit) as stop:
        predict.main([str(write_checkpoint(tmp_path / "m.ckpt")), str(SAMPLE), *args])
    assert stop.value.code == 2 and args[0] in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, named",
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--out", "{tmp}"], "{tmp}"),
        (["--out", "{tmp}/afile/metrics.json"], "afile"),
        (["--out", "/proc/metrics.json"], "/proc"),
    ],
)
def test_evaluate_bad_arguments_before_any_work(tmp_path, capsys, args, named):
    from digitnet import evaluate

    ckpt = write_checkpoint(tmp_path / "model.ckpt")
    (tmp_path / "afile").write_text("x")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(ckpt), "--data-root", str(tmp_path / "nodata"), "--no-download", *args])
    assert stop.value.code in (1, 2) and named.replace("{tmp}", str(tmp_path)) in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.tmp")) and not (tmp_path / "nodata").exists()


def test_evaluate_needs_only_the_holdout_files_and_keeps_each_outs_figure(tmp_path, capsys):
    """Two --out JSONs in one folder both wrote confusion_matrix.png: the first figure was silently replaced."""
    from digitnet import evaluate

    data = make_synthetic_mnist(tmp_path / "mnist")
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (data / name).unlink()
    ckpt = write_checkpoint(tmp_path / "model.ckpt")
    for name in ("a", "b"):
        assert evaluate.main([str(ckpt), "--data-root", str(data), "--out", str(tmp_path / "o" / f"{name}.json")]) == 0
    assert json.loads((tmp_path / "o" / "a.json").read_text())["n"] == 20
    assert (tmp_path / "o" / "a.png").is_file() and (tmp_path / "o" / "b.png").is_file()
    assert oct((tmp_path / "o" / "a.json").stat().st_mode & 0o777) == "0o644"
    capsys.readouterr()
    assert evaluate.main([str(ckpt), "--data-root", str(data), "--out", str(tmp_path / "o" / "a.json")]) == 0
    assert str(tmp_path / "o" / "a.json") in capsys.readouterr().err  # replacing its own earlier file is said


def test_a_class_without_holdout_images_has_no_accuracy(tmp_path, capsys):
    from digitnet import evaluate

    data = make_synthetic_mnist(tmp_path / "mnist")
    write_idx(data / "t10k-labels-idx1-ubyte", np.arange(20) % 9, 2049)  # no 9 in the holdout
    ckpt = write_checkpoint(tmp_path / "model.ckpt")
    assert evaluate.main([str(ckpt), "--data-root", str(data), "--out", str(tmp_path / "m.json")]) == 0
    per_class = json.loads((tmp_path / "m.json").read_text())["per_class_accuracy"]
    assert per_class["9"] is None and all(per_class[str(d)] is not None for d in range(9))
    assert "9:n/a" in capsys.readouterr().out


@pytest.mark.parametrize(
    "change", [set_hp("pixel_std", 1e-45), lambda c: [w.mul_(1e37) for w in c["state_dict"].values()]]
)
def test_evaluate_refuses_a_model_whose_outputs_are_not_finite(tmp_path, capsys, synthetic_root, change):
    """Finite weights can still overflow: evaluate printed "> 9.800" and wrote "loss": NaN, which is not JSON."""
    from digitnet import evaluate

    ckpt = write_checkpoint(tmp_path / "model.ckpt", change)
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(ckpt), "--data-root", str(synthetic_root), "--out", str(tmp_path / "m.json")])
    assert stop.value.code == 1 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "m.json").exists()


def _cv_dir(tmp_path, n=3, arch="baseline"):
    """A CV run dir as digitnet leaves it: folds/fold_K.ckpt beside fold_K.json (its run_key and pixel statistics)."""
    run = tmp_path / "cv"
    (run / "folds").mkdir(parents=True)
    for k in range(n):
        write_checkpoint(run / "folds" / f"fold_{k}.ckpt", set_hp("arch", arch) if arch != "baseline" else None)
        (run / "folds" / f"fold_{k}.json").write_text(
            json.dumps(
                {
                    "fold": k,
                    "status": "ok",
                    "score": 0.9,
                    "seconds": 1.0,
                    "history": [],
                    "pixel_mean": 0.0,
                    "pixel_std": 1.0,
                    "run_key": {"model": arch, "scaling": "normalize", "n_folds": n},
                }
            )
        )
    return run


def test_stray_files_in_folds_are_not_ensemble_members(tmp_path):
    from digitnet.core.checkpoints import model_files

    run = _cv_dir(tmp_path, n=2)
    for name in ("fold_x", "fold_-1", "fold_0 copy"):
        write_checkpoint(run / "folds" / f"{name}.ckpt")
    assert [p.name for p in model_files(run)[0]] == ["fold_0.ckpt", "fold_1.ckpt"]


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda run: (run / "folds" / "fold_1.ckpt").unlink(), None),
        (
            lambda run: [
                (run / "folds" / f"fold_9{s}").write_bytes((run / "folds" / f"fold_0{s}").read_bytes())
                for s in (".ckpt", ".json")
            ],
            "fold_9.json",
        ),
        (lambda run: write_checkpoint(run / "folds" / "fold_2.ckpt", set_hp("pixel_mean", 0.5)), "fold_2.ckpt"),
        (lambda run: write_checkpoint(run / "folds" / "fold_2.ckpt", set_hp("scaling", "standardize")), "fold_2.ckpt"),
        (
            lambda run: (run / "folds" / "fold_2.json").write_text(
                json.dumps(
                    {
                        "fold": 2,
                        "status": "ok",
                        **{"score": 0.9, "seconds": 1.0, "history": []},
                        "run_key": {"model": "deep", "scaling": "normalize", "n_folds": 3},
                    }
                )
            ),
            "folds",
        ),
        (lambda run: (run / "folds" / "fold_2.json").write_text("{broken"), "fold_2.json"),
    ],
)
def test_a_cv_ensemble_is_exactly_its_runs_finished_folds(tmp_path, damage, named):
    from digitnet.core.checkpoints import load_model

    run = _cv_dir(tmp_path)
    assert len(load_model([run]).members) == 3
    damage(run)
    with pytest.raises(UserError) as err:
        load_model([run])
    assert "\n" not in str(err.value) and (named is None or err.value.path.name == named)


def test_diverged_folds_are_left_out_of_the_ensemble_with_a_note(tmp_path):
    """A run whose folds diverged could not be evaluated: "fold_0.ckpt is missing; restore it", which cannot help."""
    from digitnet.core.checkpoints import load_model

    run = _cv_dir(tmp_path)
    for k in (0, 2):
        (run / "folds" / f"fold_{k}.ckpt").unlink()
        result = json.loads((run / "folds" / f"fold_{k}.json").read_text())
        (run / "folds" / f"fold_{k}.json").write_text(json.dumps({**result, "status": "diverged"}))
    model = load_model([run])
    assert not hasattr(model, "members")  # one fold left: its net, not an ensemble
    assert len(model.notes) == 2 and all(f"fold {k}" in note for k, note in zip((0, 2), model.notes))
    (run / "folds" / "fold_1.ckpt").unlink()
    (run / "folds" / "fold_1.json").write_text(json.dumps({**result, "fold": 1, "status": "diverged"}))
    with pytest.raises(UserError) as err:
        load_model([run])
    assert err.value.path == run


def test_a_model_counts_once_in_an_ensemble(tmp_path):
    from digitnet.core.checkpoints import load_model

    run = _cv_dir(tmp_path)
    with pytest.raises(UserError) as err:
        load_model([run, run / "folds" / "fold_0.ckpt"])
    assert err.value.path == run / "folds" / "fold_0.ckpt"


@pytest.mark.parametrize(
    "args, named",
    [
        (["{run}", "{img}", "{other}"], "{other}"),
        (["{run}", "{img}", "{run}"], "{run}"),
        (["{run}", ""], "''"),
        (["", "{img}"], "model path"),
        (["{img}", "{other}"], "{img}"),  # the image first: read as the model, said so
    ],
)
def test_predict_reads_models_first_then_images_only(tmp_path, capsys, args, named):
    from digitnet import predict

    run = _cv_dir(tmp_path)
    other = write_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(SystemExit) as exit_:
        predict.main([a.format(run=run, img=SAMPLE, other=other) for a in args])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.count("\n") == 1 and named.format(run=run, img=SAMPLE, other=other) in err, err


@pytest.mark.parametrize(
    "out", ["{final}/final.ckpt", "{final}/test_metrics.json", "{tmp}/o/confusion_matrix.png", "{cv}/mine.json"]
)
def test_evaluate_never_writes_over_a_runs_own_files(tmp_path, capsys, out):
    from digitnet import evaluate

    final = tmp_path / "final"
    final.mkdir()
    ckpt = write_checkpoint(final / "final.ckpt")
    before = ckpt.read_bytes()
    cv = _cv_dir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        evaluate.main([str(ckpt), "--out", out.format(final=final, tmp=tmp_path, cv=cv), "--data-root", str(tmp_path)])
    assert exit_.value.code == 1 and capsys.readouterr().err.count("\n") == 1
    assert ckpt.read_bytes() == before and sorted(p.name for p in final.iterdir()) == ["final.ckpt"]


def test_evaluate_checks_its_figure_before_the_work(tmp_path, capsys):
    from digitnet import evaluate

    run = _cv_dir(tmp_path, n=2)
    (run / "ensemble_confusion_matrix.png").mkdir()
    with pytest.raises(SystemExit):
        evaluate.main([str(run), "--data-root", str(tmp_path / "nodata")])  # would fail on the data if it got there
    assert str(run / "ensemble_confusion_matrix.png") in capsys.readouterr().err
    assert not (run / "ensemble_metrics.json").exists()


def test_serve_shows_a_holdout_score_only_of_the_same_members(tmp_path):
    from digitnet.core.checkpoints import load_model
    from digitnet.web.app import model_info

    run = _cv_dir(tmp_path)
    members = {str(run / "folds" / f"fold_{k}.ckpt"): {"accuracy": 0.99, "loss": 0.1} for k in range(3)}
    (run / "ensemble_metrics.json").write_text(json.dumps({"accuracy": 0.995, "members": members}))
    assert model_info(run, load_model([run]))["holdout_accuracy"] == 0.995
    for name in ("fold_2.ckpt", "fold_2.json"):
        (run / "folds" / name).unlink()
    assert model_info(run, load_model([run]))["holdout_accuracy"] is None
    (tmp_path / "final").mkdir()
    loose = write_checkpoint(tmp_path / "final" / "other.ckpt")
    (tmp_path / "final" / "test_metrics.json").write_text(json.dumps({"accuracy": 0.99}))
    assert model_info(loose, load_model([loose]))["holdout_accuracy"] is None


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
    assert str(run) in err  # a note names what was left out


def test_predict_says_when_a_folder_given_holds_no_image(tmp_path, capsys):
    """A folder of checkpoints (a run's folds/) among the images was left out without a word."""
    from digitnet import predict

    ckpt = write_checkpoint(tmp_path / "model.ckpt")
    (tmp_path / "folds").mkdir()
    (tmp_path / "folds" / "fold_0.json").write_text("{}")
    assert predict.main([str(ckpt), str(tmp_path / "folds"), str(SAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{SAMPLE}\t") and str(tmp_path / "folds") in err


def test_short_learning_curves_show_points_and_many_jobs_stay_readable():
    from digitnet.report import figures

    fig = figures.learning_curves_figure(
        [[{"epoch": 0, "train_loss": 1.0, "val_loss": 1.2, "train_acc": 0.6, "val_acc": 0.5}]]
    )
    assert all(line.get_marker() == "o" for ax in fig.axes for line in ax.get_lines())
    names = {f"{i}: optimizer.lr=0.{i:03d} model=deep": [0.98, 0.99] for i in range(12)}
    fig = figures.boxplot_figure(names, "sweep")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[-1].startswith("0: ") and len(labels) == 12  # one per row, first job on top
    assert fig.get_size_inches()[1] >= 0.35 * 12
