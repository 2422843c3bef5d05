"""task=final -> evaluate -> predict, on real MNIST; checkpoints and bad input through the real CLIs."""

import gzip
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, run_cli
from digitnet.core.module import DigitClassifier
from digitnet.errors import UserError

SAMPLE = ROOT / "samples" / "sample_image.png"


def save_plain_checkpoint(path, arch="baseline", **hparams):
    """A checkpoint in the shape Lightning writes (state_dict + hyper_parameters), random weights."""
    model = DigitClassifier(arch=arch)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {**dict(model.hparams), **hparams}}, path)
    return path


@pytest.fixture(scope="module")
def final_run(tmp_path_factory, mnist_root):
    run_dir = tmp_path_factory.mktemp("final") / "run"
    result = run_cli(
        "digitnet.train",
        "task=final",
        "data.limit=6000",
        "trainer.max_epochs=1",
        "data.scaling=standardize",
        f"data.root={mnist_root}",
        f"hydra.run.dir={run_dir}",
        "trainer.enable_progress_bar=false",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


@pytest.mark.slow
def test_final_writes_checkpoint_metrics_and_figure(final_run):
    run_dir, result = final_run
    metrics = json.loads((run_dir / "test_metrics.json").read_text())
    assert metrics["n"] == 10000 and metrics["n_train"] == 6000
    assert metrics["accuracy"] > 0.85
    assert f"> {100 * metrics['accuracy']:.3f}" in result.stdout.splitlines()
    assert f"Checkpoint: {run_dir / 'final.ckpt'}" in result.stdout
    assert metrics["plan"]["task"] == "final" and metrics["plan"]["device"] == "cpu"
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 10000
    assert matrix.sum(1).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / 10000)
    assert metrics["per_class_accuracy"]["1"] == pytest.approx(matrix[1, 1] / 1135, abs=1e-6)
    assert (run_dir / "confusion_matrix.png").stat().st_size > 5000


def test_the_confusion_matrix_counts_true_digits_by_row():
    from sklearn.metrics import confusion_matrix as sklearns

    from digitnet.report.results import confusion_matrix

    rng = np.random.default_rng(0)
    y, preds = rng.integers(0, 9, 500), rng.integers(0, 10, 500)  # digit 9 never true: its row is zeros
    matrix = confusion_matrix(torch.from_numpy(preds), torch.from_numpy(y))
    assert matrix.dtype == torch.int64 and matrix.tolist() == sklearns(y, preds, labels=range(10)).tolist()


@pytest.mark.slow
def test_checkpoint_loads_with_weights_only(final_run):
    run_dir, _ = final_run
    ckpt = torch.load(run_dir / "final.ckpt", map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    assert hp["arch"] == "baseline" and hp["scaling"] == "standardize"
    assert 0.1 < hp["pixel_mean"] < 0.2 and 0.25 < hp["pixel_std"] < 0.35  # MNIST's own statistics
    assert hp["optimizer"] == {"_target_": "torch.optim.SGD", "lr": 0.01, "momentum": 0.9}


@pytest.mark.slow
def test_evaluate_rebuilds_from_the_checkpoint_alone(final_run, mnist_root, tmp_path):
    run_dir, _ = final_run
    out = tmp_path / "eval" / "metrics.json"
    # Run from an unrelated folder with no config around: the checkpoint alone decides net and scaling.
    result = run_cli("digitnet.evaluate", run_dir / "final.ckpt", "--data-root", mnist_root, "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    again = json.loads(out.read_text())
    first = json.loads((run_dir / "test_metrics.json").read_text())
    assert again["accuracy"] == first["accuracy"] and again["confusion_matrix"] == first["confusion_matrix"]
    assert f"> {100 * first['accuracy']:.3f}" in result.stdout
    assert out.with_suffix(".png").exists()  # the figure is named after its JSON


@pytest.mark.slow
def test_predict_sample_and_real_test_digits(final_run, mnist_root, tmp_path):
    run_dir, _ = final_run
    raw = gzip.decompress((mnist_root / "t10k-images-idx3-ubyte.gz").read_bytes())[16:]
    images = np.frombuffer(raw, np.uint8).reshape(-1, 28, 28)[1:21]
    labels = list(gzip.decompress((mnist_root / "t10k-labels-idx1-ubyte.gz").read_bytes())[9:29])
    plain, paper = tmp_path / "plain", tmp_path / "paper"
    plain.mkdir(), paper.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(plain / f"{i:02d}.png")
        # The same digit as a person might have it: dark ink on white paper, bigger, off-centre, in RGB.
        big = Image.fromarray(255 - img).resize((112, 112), Image.BICUBIC)
        canvas = Image.new("RGB", (200, 150), (255, 255, 255))
        canvas.paste(big.convert("RGB"), (70, 20))
        canvas.save(paper / f"{i:02d}.jpg", quality=92)

    result = run_cli("digitnet.predict", run_dir / "final.ckpt", SAMPLE, plain, "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows[0]["path"].endswith("sample_image.png") and rows[0]["digit"] == 7
    assert [r["path"] for r in rows[1:]] == [str(plain / f"{i:02d}.png") for i in range(20)]
    assert sum(r["digit"] == y for r, y in zip(rows[1:], labels)) >= 17
    assert all(0 <= r["probability"] <= 1 and r["top"][0]["digit"] == r["digit"] for r in rows)

    result = run_cli("digitnet.predict", run_dir / "final.ckpt", paper, "--top-k", "3")
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert len(rows) == 20 and all(len(row) == 5 for row in rows)
    assert sum(int(row[1]) == y for row, y in zip(rows, labels)) >= 16

    result = run_cli("digitnet.predict", run_dir / "final.ckpt", SAMPLE, "--no-preprocess")
    assert result.returncode == 0 and result.stdout.split("\t")[1] == "7"


def test_bad_images_fail_alone_and_exit_1(tmp_path):
    ckpt = save_plain_checkpoint(tmp_path / "random.ckpt")
    good = tmp_path / "good.png"
    shutil.copy(SAMPLE, good)
    (tmp_path / "notes.png").write_text("this is not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "truncated.png").write_bytes(SAMPLE.read_bytes()[:120])
    Image.new("L", (64, 64), 255).save(tmp_path / "blank.png")
    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png")  # 400 Mpx, a few kB on disk
    bad = ["notes.png", "empty.png", "truncated.png", "blank.png", "bomb.png", "missing.png"]
    result = run_cli("digitnet.predict", ckpt, good, *[tmp_path / b for b in bad])
    assert result.returncode == 1
    assert result.stdout.startswith(str(good) + "\t")
    errors = [line for line in result.stderr.splitlines() if not line.startswith("note: ")]  # a random net: unsure
    assert len(errors) == len(bad), result.stderr
    for name, line in zip(bad, errors):
        assert line.startswith(f"digitnet.predict: error: {tmp_path / name}: ")
    assert "decompression-bomb" in errors[4] and "no digit found" in errors[3] and "no such file" in errors[5]
    assert "Traceback" not in result.stderr


class Payload:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['PAYLOAD_MARK'], 'w').write('ran')",))


def bad_checkpoint(ckpt, kind) -> None:
    """Write a bad checkpoint of this kind to ckpt."""
    import zipfile

    if kind == "not-a-checkpoint":
        with zipfile.ZipFile(ckpt, "w") as archive:
            archive.writestr("notes.txt", "a zip, but no torch checkpoint")
        return
    if kind == "truncated":  # said "not a PyTorch checkpoint; pass a digitnet .ckpt", a wrong fix
        save_plain_checkpoint(ckpt, arch="baseline")
        ckpt.write_bytes(ckpt.read_bytes()[:5000])
        return
    if kind in ("code-payload", "old-pickle"):  # protocol 4: torch's 2-line warning came before the refusal
        torch.save(
            {"state_dict": {}, "hyper_parameters": {"arch": "deep"}, "x": Payload()},
            ckpt,
            pickle_protocol=2 if kind == "code-payload" else 4,
            _use_new_zipfile_serialization=kind != "old-pickle",
        )
        return
    save_plain_checkpoint(ckpt, arch="baseline")
    state = torch.load(ckpt, weights_only=True)
    if kind == "unknown-arch":
        state["hyper_parameters"]["arch"] = "resnet50"
        torch.save(state, ckpt)
        return
    assert kind == "bad-scaling"  # was accepted, and evaluate printed scaling=bogus
    state["hyper_parameters"]["scaling"] = "bogus"
    torch.save(state, ckpt)


@pytest.mark.parametrize(
    "kind", ["truncated", "old-pickle", "bad-scaling", "not-a-checkpoint", "code-payload", "unknown-arch"]
)
def test_damaged_checkpoints_are_one_line_in_process(tmp_path, kind, capsys, monkeypatch):
    """The same refusals as below, without the two processes a kind (predict and evaluate share load_checkpoint)."""
    from digitnet.core.checkpoints import load_checkpoint

    ckpt, mark = tmp_path / "model.ckpt", tmp_path / "payload_ran"
    monkeypatch.setenv("PAYLOAD_MARK", str(mark))
    bad_checkpoint(ckpt, kind)
    with pytest.raises(UserError) as err:
        load_checkpoint(ckpt)
    assert err.value.path == ckpt and "\n" not in str(err.value) and capsys.readouterr().err == ""
    assert not mark.exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["not-a-checkpoint", "code-payload", "unknown-arch", "missing"])
def test_bad_checkpoints_are_refused_and_never_executed(tmp_path, kind):

    ckpt, mark = tmp_path / "model.ckpt", tmp_path / "payload_ran"
    if kind == "missing":
        ckpt = tmp_path / "nope.ckpt"
    else:
        bad_checkpoint(ckpt, kind)
    for module, args in (("digitnet.predict", [SAMPLE]), ("digitnet.evaluate", ["--data-root", tmp_path / "none"])):
        result = run_cli(module, ckpt, *args, env={"PAYLOAD_MARK": str(mark)})
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(ckpt) in lines[0], result.stderr
        assert "\x1b" not in lines[0] and "can still be loaded" not in lines[0]  # torch's bold how-to, unsafe here
        assert not mark.exists()


@pytest.mark.slow
def test_a_final_fit_says_each_epoch_when_stdout_is_no_terminal(tmp_path, mnist_root):
    """nohup, SLURM or a pipe: 12 minutes of `experiment=best task=final` must not pass in silence."""
    args = ["task=final", "data.limit=600", "trainer.max_epochs=2", f"data.root={mnist_root}"]
    result = run_cli("digitnet.train", *args, f"hydra.run.dir={tmp_path / 'run'}")  # stdout: a pipe
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr[-2000:]
    assert [line.split(":")[0] for line in lines if "epoch" in line] == ["final fit, epoch 1/2", "final fit, epoch 2/2"]
    assert lines.index(next(x for x in lines if "epoch 2/2" in x)) < lines.index(
        next(x for x in lines if x.startswith(">"))
    )
