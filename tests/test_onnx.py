"""Export to ONNX: the graph scores the holdout as evaluate does, at any batch size, and predict and serve run it
without torch."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, plan_of

SAMPLE = ROOT / "samples" / "sample_image.png"
pytest.importorskip("onnxruntime", reason='the [onnx] extra: pip install -e ".[onnx]"')


@pytest.fixture(scope="module")
def exported(tmp_path_factory, mnist_root, trained_checkpoint):
    """A task=final checkpoint and a 3-fold CV run with tta=shift, each exported."""
    from digitnet import export
    from digitnet.train import run

    out = tmp_path_factory.mktemp("onnx")
    run(
        plan_of(
            f"data.root={mnist_root}",
            "data.limit=600",
            "cv.n_folds=3",
            "trainer.max_epochs=1",
            "tta=shift",
            "cv.workers=1",
        ),
        out / "cv",
    )
    assert export.main([str(trained_checkpoint), str(out / "final.onnx")]) == 0
    assert export.main([str(out / "cv"), str(out / "cv.onnx")]) == 0
    return {"final": (trained_checkpoint, out / "final.onnx"), "cv": (out / "cv", out / "cv.onnx")}


@pytest.fixture
def checkpoint(tmp_path):
    """An untrained baseline in final.ckpt's format: enough for what is refused."""
    from digitnet.core.checkpoints import checkpoint_dict, save_checkpoint
    from digitnet.core.nets import ScaledNet

    path = tmp_path / "untrained.ckpt"
    save_checkpoint(
        path, checkpoint_dict(ScaledNet("baseline").net, {"arch": "baseline", "pixel_mean": 0.0, "pixel_std": 1.0})
    )
    return path


def holdout(mnist_root):
    from digitnet.core.data import load_mnist

    arrays = load_mnist(mnist_root, download=False, holdout_only=True)
    return (arrays.test_x.numpy()[:, None] / np.float32(255)).astype(np.float32), arrays.test_y.numpy()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["final", "cv"])
def test_onnxruntimes_holdout_accuracy_is_evaluates_at_batch_1_and_1000(exported, kind, mnist_root, capsys):
    from digitnet import evaluate
    from digitnet.core.onnxmodel import OnnxModel

    source, onnx_file = exported[kind]
    assert evaluate.main([str(source), "--data-root", str(mnist_root), "--no-download"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("> "))
    model, (x, y) = OnnxModel(onnx_file), holdout(mnist_root)
    assert model.hparams["tta"] == ("shift" if kind == "cv" else "none")
    assert len(model.hparams["members"]) == (3 if kind == "cv" else 0)
    batched = np.concatenate([model.predict_proba(x[i : i + 1000]) for i in range(0, len(x), 1000)])
    assert batched.shape == (10_000, 10) and np.allclose(batched.sum(1), 1, atol=1e-5)
    assert line == f"> {100 * float((batched.argmax(1) == y).mean()):.3f}"
    single = np.concatenate([model.predict_proba(x[i : i + 1]) for i in range(2000)])  # batch 1: a fifth of them
    assert np.abs(single - batched[:2000]).max() < 1e-4 and (single.argmax(1) == batched[:2000].argmax(1)).all()

    import torch

    from digitnet.core.checkpoints import load_model
    from digitnet.report.results import predict_logits

    with torch.no_grad():
        torch_p = torch.softmax(predict_logits(load_model([str(source)]), torch.from_numpy(x[:2000])), 1).numpy()
    assert np.abs(torch_p - batched[:2000]).max() < 1e-4


@pytest.mark.slow
def test_predict_and_serve_run_an_onnx_model_as_its_checkpoint_without_torch(exported):
    from fastapi.testclient import TestClient

    from digitnet.web import app as web

    source, onnx_file = exported["cv"]
    code = (
        "import json, sys; from digitnet import predict; code = predict.main([sys.argv[1], sys.argv[2], '--json', "
        "'--top-k', '3']); print(json.dumps(sorted(m for m in ('torch', 'lightning') if m in sys.modules)))"
    )
    rows = {}
    for model in (onnx_file, source):
        done = subprocess.run([sys.executable, "-c", code, str(model), str(SAMPLE)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        *listing, imported = done.stdout.strip().splitlines()
        rows[model], heavy = json.loads("\n".join(listing)), json.loads(imported)
        assert (heavy == []) == (model == onnx_file)
    (a,), (b,) = rows[onnx_file], rows[source]
    assert a["digit"] == b["digit"] == 7 and [t["digit"] for t in a["top"]] == [t["digit"] for t in b["top"]]
    assert abs(a["probability"] - b["probability"]) < 1e-4
    client = TestClient(web.create_app(web.find_checkpoint(onnx_file)))
    info = client.get("/api/model").json()
    assert (info["arch"], info["tta"], info["checkpoint"]) == ("ensemble of 3 baseline", "shift", str(onnx_file))
    assert info["parameters"] == 3 * 542_230
    answer = client.post("/api/predict", files=[("files", ("seven.png", SAMPLE.read_bytes(), "image/png"))]).json()
    assert answer["results"][0]["digit"] == 7 and len(answer["results"][0]["probabilities"]) == 10


def test_what_is_not_a_digitnet_onnx_model_is_refused_naming_the_file(tmp_path, checkpoint):
    import torch

    from digitnet import export
    from digitnet.core.inference import load_predictor
    from digitnet.errors import UserError

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf" * 10)
    plain = tmp_path / "plain.onnx"  # a real ONNX model, without digitnet's metadata: its output could be logits
    torch.onnx.export(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval(),
        (torch.rand(2, 1, 28, 28),),
        plain,
        input_names=["images"],
        output_names=["probabilities"],
        dynamo=True,
    )
    for path in (garbage, plain, tmp_path / "missing.onnx"):
        with pytest.raises(UserError) as err:
            load_predictor([str(path)])
        assert err.value.path == path
    good = tmp_path / "good.onnx"
    assert export.main([str(checkpoint), str(good)]) == 0
    with pytest.raises(UserError) as err:  # the graph holds its test-time augmentation
        load_predictor([str(good)], tta="shift")
    assert (err.value.key, err.value.value) == ("tta", "shift")
    with pytest.raises(UserError) as err:  # an ONNX model runs alone
        load_predictor([str(checkpoint), str(good)])
    assert err.value.path == good


def test_export_refuses_bad_paths_before_any_work(tmp_path, checkpoint, capsys):
    from digitnet import export

    with pytest.raises(SystemExit) as exit_:
        export.main([str(checkpoint), str(tmp_path / "model.pt")])
    assert exit_.value.code == 2  # argparse's usage error
    capsys.readouterr()
    (tmp_path / "folder.onnx").mkdir()
    for model, out in ((checkpoint, tmp_path / "folder.onnx"), (tmp_path / "none.ckpt", tmp_path / "a.onnx")):
        with pytest.raises(SystemExit) as exit_:
            export.main([str(model), str(out)])
        assert exit_.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith("digitnet.export: error: ") and len(err.splitlines()) == 1
    assert not (tmp_path / "a.onnx").exists() and not list(tmp_path.glob(".*tmp"))


@pytest.mark.slow
def test_an_onnx_model_given_to_evaluate_or_export_is_named_as_one(exported, tmp_path, capsys):
    """Both said "holds objects other than weights ... the file is damaged or not digitnet's" of digitnet's own
    export; the advice is where an .onnx model goes."""
    from digitnet import evaluate, export

    onnx_model = exported["final"][1]
    for command, args in ((evaluate, [str(onnx_model)]), (export, [str(onnx_model), str(tmp_path / "again.onnx")])):
        with pytest.raises(SystemExit) as exit_:
            command.main(args)
        err = capsys.readouterr().err
        assert exit_.value.code == 1 and len(err.splitlines()) == 1 and str(onnx_model) in err
        assert "predict" in err and "damaged" not in err, err
    assert not (tmp_path / "again.onnx").exists()


@pytest.mark.slow
def test_export_into_a_folder_not_made_yet_writes_there(exported, tmp_path, capsys):
    """It worked for seconds, then failed naming its hidden temp file, .out.onnx.tmp."""
    from digitnet import export

    out = tmp_path / "missing" / "dir" / "out.onnx"
    assert export.main([str(exported["final"][0]), str(out)]) == 0
    assert out.is_file() and not list(out.parent.glob(".*tmp"))


def test_export_help_says_its_whole_description(capsys):
    from digitnet import export

    with pytest.raises(SystemExit):
        export.parse_args(["--help"])
    description = capsys.readouterr().out.split("\n\n")[1]  # argparse: usage, description, arguments
    assert description.rstrip().endswith(".") and "torch" in description, description
