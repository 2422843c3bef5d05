"""Test-time augmentation (tta=shift): the views, the mean, and where it applies (fold scores, the holdout score,
checkpoints, evaluate and predict); never in training or in the learning curves."""

import json

import pytest
import torch

from conftest import ROOT, plan_of
from digitnet.errors import UserError

SAMPLE = ROOT / "samples" / "sample_image.png"


def test_shifted_moves_pixels_and_lets_background_in():
    from digitnet.core.nets import shifted

    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 0, 0], x[0, 0, 27, 27] = 1.0, 2.0
    down_right = shifted(x, 1, 1)
    assert down_right[0, 0, 1, 1] == 1.0 and down_right.sum() == 1.0  # the other pixel left the image: no wrap-around
    up = shifted(x, -1, 0)
    assert up[0, 0, 26, 27] == 2.0 and up.sum() == 2.0
    assert torch.equal(shifted(x, 0, 0), x) and shifted(x, 0, -1).shape == x.shape


def test_shift_tta_is_the_mean_of_the_image_and_its_four_one_pixel_shifts():
    from digitnet.core.nets import ScaledNet, ShiftTTA, with_tta

    torch.manual_seed(0)
    net = ScaledNet("deep", 0.1, 0.3).eval()
    x = torch.rand(4, 1, 28, 28)
    views = [x, torch.zeros_like(x), torch.zeros_like(x), torch.zeros_like(x), torch.zeros_like(x)]
    views[1][..., 1:, :] = x[..., :-1, :]  # down
    views[2][..., :-1, :] = x[..., 1:, :]  # up
    views[3][..., :, 1:] = x[..., :, :-1]  # right
    views[4][..., :, :-1] = x[..., :, 1:]  # left
    with torch.no_grad():
        mean = torch.stack([torch.softmax(net(v), 1) for v in views]).mean(0)
        tta = with_tta(net, "shift")
        assert isinstance(tta, ShiftTTA) and tta.hparams["tta"] == "shift" and tta.hparams["arch"] == "deep"
        assert torch.allclose(torch.softmax(tta(x), 1), mean, atol=1e-6)
        assert not torch.allclose(mean, torch.softmax(net(x), 1), atol=1e-3)  # the views do differ
    assert with_tta(net, "none") is net


def test_tta_is_a_config_group_and_part_of_what_a_fold_depends_on(tmp_path):
    from omegaconf.errors import ConfigKeyError

    from digitnet.engine.folds import FoldStore

    assert plan_of().tta == "none" and plan_of("tta=shift").tta == "shift"
    assert plan_of("experiment=best").tta == "shift" and plan_of("experiment=tutorial").tta == "none"
    store = FoldStore.for_plan(tmp_path, plan_of())
    store.save({"fold": 0, "status": "ok", "score": 0.9, "history": [], "seconds": 1.0}, fold_checkpoint())
    with pytest.raises(UserError) as err:  # a change of tta is refused, naming its key
        FoldStore.for_plan(tmp_path, plan_of("tta=shift")).load(0)
    assert "tta.name" in str(err.value) and err.value.path == tmp_path / "folds" / "fold_0.json"
    with pytest.raises(ConfigKeyError):
        plan_of("tta=shift", "+tta.pixels=2")


@pytest.mark.slow
def test_tta_scores_folds_and_the_holdout_and_travels_in_checkpoints(tmp_path, mnist_root, capsys):
    from digitnet import evaluate, predict
    from digitnet.core.checkpoints import load_checkpoint, load_model, with_tta
    from digitnet.core.data import load_mnist
    from digitnet.engine.fit import make_datamodule
    from digitnet.report.results import confusion, holdout_metrics
    from digitnet.train import run

    plan = plan_of(
        "tta=shift", "data.limit=600", "cv.n_folds=2", "trainer.max_epochs=1", f"data.root={mnist_root}", "cv.workers=1"
    )
    summary = run(plan, tmp_path / "cv")
    lines = capsys.readouterr().out
    arrays = load_mnist(mnist_root, download=False)
    for fold, result in enumerate(summary["folds"]):
        ckpt = tmp_path / "cv" / "folds" / f"fold_{fold}.ckpt"
        assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["tta"] == "shift"
        # The fold's score is its net's with TTA on its validation images; the learning curve's last val_acc is
        # without, and is kept beside it.
        dm = make_datamodule(plan, arrays, fold)
        matrix = confusion(with_tta(load_checkpoint(ckpt), "shift"), dm.val_x, dm.val_y)
        assert result["score"] == pytest.approx(float(matrix.trace() / matrix.sum()), abs=1e-9)
        assert matrix.tolist() == result["confusion_matrix"] and result["tta"] == "shift"
        # Without TTA, scored the same way (full precision), so the two differ by TTA alone; in float32 that is
        # the last validation epoch's figure too.
        plain = confusion(load_checkpoint(ckpt), dm.val_x, dm.val_y)
        assert result["score_without_tta"] == pytest.approx(float(plain.trace() / plain.sum()), abs=1e-9)
        assert result["score_without_tta"] == pytest.approx(result["history"][-1]["val_acc"], abs=1e-6)
        assert f"(fold {fold}; tta=shift, {100 * result['score_without_tta']:.3f} without)" in lines
    assert summary["tta"] == "shift" and summary["fold_scores_without_tta"] == [
        f["score_without_tta"] for f in summary["folds"]
    ]
    assert f"(tta=shift; {100 * summary['mean_without_tta']:.3f} without)" in lines
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "cv" / "tb" / "fold_0")).Reload()
    assert events.Scalars("fold/score")[0].value == pytest.approx(summary["folds"][0]["score"])

    # evaluate and predict apply the checkpoints' own tta; --tta overrides it.
    assert load_model([tmp_path / "cv"]).hparams["tta"] == "shift"
    assert load_model([tmp_path / "cv"], "none").hparams["tta"] == "none"
    out = tmp_path / "none.json"
    assert (
        evaluate.main([str(tmp_path / "cv"), "--data-root", str(mnist_root), "--tta", "none", "--out", str(out)]) == 0
    )
    assert evaluate.main([str(tmp_path / "cv"), "--data-root", str(mnist_root)]) == 0
    assert "tta=shift" in capsys.readouterr().out
    with_shift = json.loads((tmp_path / "cv" / "ensemble_metrics.json").read_text())
    without = json.loads(out.read_text())
    assert with_shift["tta"] == "shift" and without["tta"] == "none"
    assert with_shift["accuracy"] != without["accuracy"]  # 10,000 images: the two ways differ somewhere
    # --tta other than the run's own never replaces the run's report; serve shows a recorded score only for its tta.
    assert evaluate.main([str(tmp_path / "cv"), "--data-root", str(mnist_root), "--tta", "none"]) == 0
    assert "its ensemble_metrics.json is left as it is; add --out FILE.json" in capsys.readouterr().err
    assert json.loads((tmp_path / "cv" / "ensemble_metrics.json").read_text()) == with_shift
    from digitnet.web.app import model_info

    assert model_info(tmp_path / "cv", load_model([tmp_path / "cv"]))["holdout_accuracy"] == with_shift["accuracy"]
    assert model_info(tmp_path / "cv", load_model([tmp_path / "cv"], "none"))["holdout_accuracy"] is None
    assert predict.main([str(tmp_path / "cv"), str(SAMPLE), "--json"]) == 0
    shift_probability = json.loads(capsys.readouterr().out)[0]["probability"]
    assert predict.main([str(tmp_path / "cv"), str(SAMPLE), "--json", "--tta", "none"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["probability"] != shift_probability

    # task=final: the holdout score is the saved model's with TTA, and the checkpoint says so.
    final = plan_of("task=final", "tta=shift", "data.limit=600", "trainer.max_epochs=1", f"data.root={mnist_root}")
    capsys.readouterr()
    metrics = run(final, tmp_path / "final")
    saved = json.loads((tmp_path / "final" / "test_metrics.json").read_text())
    assert (
        saved["accuracy_without_tta"]
        == holdout_metrics(load_model([tmp_path / "final"], "none"), arrays.test_x, arrays.test_y)["accuracy"]
    )
    assert (
        f"> {100 * saved['accuracy']:.3f}  (tta=shift, {100 * saved['accuracy_without_tta']:.3f} without)"
        in capsys.readouterr().out.splitlines()
    )
    model = load_model([tmp_path / "final"])
    assert saved["tta"] == "shift" and model.hparams["tta"] == "shift"
    assert saved["accuracy"] == holdout_metrics(model, arrays.test_x, arrays.test_y)["accuracy"]
    assert metrics is not None


def fold_checkpoint(arch: str = "baseline", fold: int = 0) -> dict:
    """A finished fold's net of a tta=none run, as the runners save it."""
    from digitnet.core.checkpoints import checkpoint_dict
    from digitnet.core.nets import build_net

    return checkpoint_dict(
        build_net(arch), {"arch": arch, "scaling": "normalize", "pixel_mean": 0.0, "pixel_std": 1.0, "fold": fold}
    )


def test_a_checkpoint_with_an_unknown_tta_is_refused_as_damaged(tmp_path):
    from digitnet.core.checkpoints import checkpoint_dict, load_checkpoint, save_checkpoint
    from digitnet.core.nets import build_net

    path = tmp_path / "odd.ckpt"
    save_checkpoint(path, checkpoint_dict(build_net("baseline"), {"arch": "baseline", "tta": "flip"}))
    with pytest.raises(UserError) as err:
        load_checkpoint(path)
    assert err.value.path == path


def test_a_bad_tta_option_is_one_line(capsys):
    from digitnet import evaluate

    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["some.ckpt", "--tta", "flip"])
    assert exit_.value.code == 2 and "--tta" in capsys.readouterr().err  # argparse's own usage error


def test_fold_files_and_nets_must_agree_with_the_runs_tta(tmp_path):
    """A fold file or net edited or copied from a run of another tta was resumed and evaluated as it was."""
    from digitnet.core.checkpoints import checkpoint_dict, load_model
    from digitnet.core.nets import build_net
    from digitnet.engine.folds import FoldStore

    store = FoldStore.for_plan(tmp_path, plan_of("tta=shift"))
    result = {
        "fold": 0,
        "status": "ok",
        "score": 0.9,
        "score_without_tta": 0.8,
        "tta": "shift",
        "history": [],
        "seconds": 1.0,
    }
    shift_net = checkpoint_dict(
        build_net("baseline"), {"arch": "baseline", "scaling": "normalize", "fold": 0, "tta": "shift"}
    )
    store.save(result, shift_net)
    assert store.load(0) == result
    store.save(result, fold_checkpoint())  # a net of a tta=none run
    for refuse in (store.load, lambda k: load_model([tmp_path])):
        with pytest.raises(UserError) as err:
            refuse(0)
        assert err.value.path == store.checkpoint(0)
    for edited in ({**result, "tta": ["x"]}, {k: v for k, v in result.items() if k != "tta"}):
        store.save(edited, shift_net)
        with pytest.raises(UserError) as err:
            store.load(0)
        assert err.value.path == store.path(0)


def test_a_group_set_to_a_plain_value_is_refused_by_the_schema():
    """`tta: shift` in an experiment file (for `- override /tta: shift`) made the run quietly use no TTA."""
    from omegaconf.errors import ValidationError

    from conftest import compose_cfg
    from digitnet.config.plan import make_plan

    cfg = compose_cfg()
    with pytest.raises(ValidationError):
        cfg.tta = "shift"
        make_plan(cfg, cuda_available=False, cores=2, tty=False)
    assert plan_of("~tta").tta == "none"  # the group removed: its default


def test_a_saved_final_model_is_scored_only_under_its_own_config(tmp_path):
    """With plan.json gone, a stopped final run's checkpoint was scored under whatever config came, and its
    test_metrics.json then named the config's model and tta, not the checkpoint's."""
    from digitnet.core.checkpoints import checkpoint_dict, save_checkpoint
    from digitnet.core.nets import build_net

    save_checkpoint(
        tmp_path / "final.ckpt", checkpoint_dict(build_net("baseline"), {"arch": "baseline", "tta": "shift"})
    )
    from digitnet.engine.rundir import check_compatible

    # Without plan.json, which config trained final.ckpt cannot be told: refused before anything is scored.
    with pytest.raises(UserError):
        check_compatible(tmp_path, plan_of("task=final", "model=baseline", "tta=shift"))
    # With its plan.json, another config is refused at the same boundary, naming the key; score_saved trusts it.
    from digitnet.layout import write_json_atomic

    write_json_atomic(tmp_path / "plan.json", plan_of("task=final", "model=baseline", "tta=shift").as_dict())
    for overrides, key in ((["model=deep", "tta=shift"], "model.name"), (["model=baseline"], "tta.name")):
        with pytest.raises(UserError) as err:
            check_compatible(tmp_path, plan_of("task=final", *overrides))
        assert key in str(err.value)


def test_an_ensemble_of_models_trained_for_different_tta_says_so(tmp_path):
    from digitnet.core.checkpoints import checkpoint_dict, load_model, save_checkpoint
    from digitnet.core.nets import build_net

    for name, tta in (("a.ckpt", "shift"), ("b.ckpt", "none")):
        save_checkpoint(tmp_path / name, checkpoint_dict(build_net("baseline"), {"arch": "baseline", "tta": tta}))
    mixed = load_model([tmp_path / "a.ckpt", tmp_path / "b.ckpt"])
    assert mixed.hparams["tta"] == "none/shift" and len(mixed.notes) == 1
    one_way = load_model([tmp_path / "a.ckpt", tmp_path / "b.ckpt"], "shift")
    assert one_way.hparams["tta"] == "shift" and one_way.notes == [] and one_way.own_tta == "none/shift"


def test_serve_applies_the_checkpoints_tta_or_its_own_tta_option(tmp_path):
    from fastapi.testclient import TestClient

    from digitnet import serve
    from digitnet.core.checkpoints import checkpoint_dict, save_checkpoint
    from digitnet.core.nets import build_net
    from digitnet.web.app import create_app

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.ckpt", checkpoint_dict(build_net("baseline"), {"arch": "baseline", "tta": "shift"}))
    answers = {}
    for tta in (None, "none"):
        client = TestClient(create_app(tmp_path / "m.ckpt", tta))
        answers[tta] = client.post(
            "/api/predict", files=[("files", ("7.png", SAMPLE.read_bytes(), "image/png"))]
        ).json()
        assert client.get("/api/model").json()["tta"] == (tta or "shift")
    assert answers[None]["results"][0]["probability"] != answers["none"]["results"][0]["probability"]
    with pytest.raises(SystemExit):
        serve.main([str(tmp_path / "m.ckpt"), "--tta", "flip"])
