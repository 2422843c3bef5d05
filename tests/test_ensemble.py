"""Fold checkpoints and the free ensemble of a CV run: saved by every runner, loaded safely, scored and used."""

import json
import re

import pytest
import torch

from conftest import ROOT, plan_of

SAMPLE = ROOT / "samples" / "sample_image.png"


def test_ensemble_probabilities_are_the_mean_of_its_members():
    from digitnet.core.nets import Ensemble, ScaledNet

    torch.manual_seed(0)
    members = [ScaledNet("baseline").eval() for _ in range(3)]
    ensemble = Ensemble(members, ["a", "b", "c"]).eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        mean = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0)
        assert torch.allclose(torch.softmax(ensemble(x), 1), mean, atol=1e-6)
    assert ensemble.hparams["arch"] == "ensemble of 3 baseline"


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["cv.workers=1", "cv.workers=2", "cv.parallel=true"])
def test_every_runner_saves_fold_checkpoints_that_load_safely(tmp_path, mnist_root, runner, capsys):
    from digitnet.core.checkpoints import load_checkpoint
    from digitnet.core.nets import with_tta
    from digitnet.train import run

    plan = plan_of(
        "data.limit=600",
        "cv.n_folds=2",
        "trainer.max_epochs=1",
        f"data.root={mnist_root}",
        runner,
        "data.scaling=standardize",
        "tta=shift",
    )
    summary = run(plan, tmp_path / "run")
    if plan.runner == "packed":  # its epoch line had been empty: each fold's figures, in fold order
        line = next(x for x in capsys.readouterr().out.splitlines() if "epoch 1/1" in x)
        accs = [f"{100 * f['history'][-1]['val_acc']:.2f}" for f in summary["folds"]]
        assert re.search(r"val_acc (\d\.\d{4}) (\d\.\d{4})$", line), line
        assert [f"{100 * float(x):.2f}" for x in line.split("val_acc ")[1].split()] == accs
    for fold in range(2):
        path = tmp_path / "run" / "folds" / f"fold_{fold}.ckpt"
        raw = torch.load(path, map_location="cpu", weights_only=True)
        hp = raw["hyper_parameters"]
        assert hp["arch"] == "baseline" and hp["scaling"] == "standardize" and hp["optimizer"] == plan.optimizer
        assert hp["pixel_mean"] == summary["folds"][fold]["pixel_mean"] and hp["fold"] == fold and hp["tta"] == "shift"
        # The saved net, with the run's test-time augmentation, reproduces the fold's validation confusion matrix.
        from digitnet.core.data import load_mnist
        from digitnet.engine.fit import make_datamodule
        from digitnet.report.results import confusion

        dm = make_datamodule(plan, load_mnist(mnist_root, download=False), fold)
        matrix = confusion(with_tta(load_checkpoint(path), "shift"), dm.val_x, dm.val_y).tolist()
        assert matrix == summary["folds"][fold]["confusion_matrix"]


@pytest.mark.slow  # runs the CLI (or a CV); `-m "not slow"` stays under 3 minutes
def test_evaluate_and_predict_use_a_cv_run_dir_as_an_ensemble(tmp_path, mnist_root, capsys):
    from digitnet import evaluate, predict
    from digitnet.train import run

    run_dir = tmp_path / "run"
    run(
        plan_of("data.limit=1500", "cv.n_folds=3", "trainer.max_epochs=1", f"data.root={mnist_root}", "cv.workers=1"),
        run_dir,
    )
    capsys.readouterr()
    assert evaluate.main([str(run_dir), "--data-root", str(mnist_root)]) == 0
    out = capsys.readouterr().out
    assert out.count("folds/fold_") == 3 and "ensemble (mean of softmax)" in out
    metrics = json.loads((run_dir / "ensemble_metrics.json").read_text())
    assert metrics["model"] == "ensemble of 3 baseline" and len(metrics["members"]) == 3 and metrics["n"] == 10000
    assert metrics["accuracy"] >= min(m["accuracy"] for m in metrics["members"].values()) - 0.01
    assert (run_dir / "ensemble_confusion_matrix.png").is_file()

    assert predict.main([str(run_dir), str(SAMPLE), "--json"]) == 0
    from_dir = json.loads(capsys.readouterr().out)
    assert set(from_dir[0]) == {
        "path",
        "digit",
        "probability",
        "top",
        "unsure",
        "notes",
    }  # the same fields as for one checkpoint
    folds = sorted(str(p) for p in (run_dir / "folds").glob("fold_*.ckpt"))
    assert predict.main([folds[0], *folds[1:], str(SAMPLE), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == from_dir  # several checkpoints: the same ensemble

    # Fold nets swapped between folds (their pixel statistics alike under normalize) went unnoticed.
    a, b = run_dir / "folds" / "fold_0.ckpt", run_dir / "folds" / "fold_1.ckpt"
    a_bytes = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(a_bytes)
    with pytest.raises(SystemExit) as exit_:
        evaluate.main([str(run_dir), "--data-root", str(mnist_root)])
    assert exit_.value.code == 1 and "its fold is 1, but fold_0.json says 0" in capsys.readouterr().err


def test_partial_saves_are_removed(tmp_path):
    """A fold worker terminated while writing its checkpoint (Ctrl-C) had left folds/.fold_1.ckpt.tmp behind."""
    from digitnet.core.checkpoints import save_checkpoint
    from digitnet.engine.folds import FoldStore

    store = FoldStore(tmp_path, {"any": "key"})
    (tmp_path / "folds").mkdir()
    for name in (".fold_1.ckpt.tmp", ".fold_1.json.abc123.tmp", ".fold_2.ckpt.tmp"):
        (tmp_path / "folds" / name).write_bytes(b"half")
    store.start_afresh(1)
    assert sorted(p.name for p in (tmp_path / "folds").iterdir()) == [".fold_2.ckpt.tmp"]
    store.remove_partial_files()
    assert not list((tmp_path / "folds").iterdir())

    class Interrupted:
        def __reduce__(self):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "folds" / "fold_3.ckpt", {"x": Interrupted()})
    assert not list((tmp_path / "folds").iterdir())


def test_a_partly_finished_cv_run_says_its_ensemble_is_part_of_one(tmp_path, capsys, synthetic_root):
    from conftest import plan_of
    from digitnet.core.checkpoints import cv_members
    from digitnet.train import run

    run(plan_of(f"data.root={synthetic_root}", "cv.n_folds=3", "trainer.max_epochs=1", "cv.workers=1"), tmp_path)
    capsys.readouterr()
    for suffix in (".json", ".ckpt"):  # as a run interrupted in fold 1 leaves it
        (tmp_path / "folds" / f"fold_1{suffix}").unlink()
    members, notes = cv_members(tmp_path)
    assert [p.name for p in members] == ["fold_0.ckpt", "fold_2.ckpt"] and len(notes) == 1
    assert capsys.readouterr().err == ""  # a library call prints nothing; the entry points say it, once
    from digitnet import predict

    assert predict.main([str(tmp_path), str(SAMPLE)]) == 0
    run_notes = [line for line in capsys.readouterr().err.splitlines() if str(tmp_path) in line]
    assert len(run_notes) == 1 and run_notes[0].startswith("note: ") and "fold 1" in run_notes[0]
