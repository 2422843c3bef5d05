"""Fold-parallel training computes what the sequential folds compute: same weights, same metrics."""

import json

import lightning.pytorch as pl
import pytest
import torch

from conftest import plan_of, run_cli
from digitnet.core.data import load_mnist
from digitnet.core.nets import NETS, build_net
from digitnet.engine.fit import make_datamodule, make_model
from digitnet.engine.packed import pack, train_folds, unpack


def quiet_trainer(epochs):
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        precision="64-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


@pytest.mark.parametrize("arch", list(NETS))
def test_pack_unpack_round_trip_and_forward(arch):
    torch.manual_seed(0)
    nets = [build_net(arch).eval() for _ in range(3)]
    packed = pack(nets).eval()
    x = torch.rand(3, 4, 28, 28)  # fold k's 4 images in channel k
    out = packed(x.transpose(0, 1))
    assert out.shape == (3, 4, 10)
    for k, net in enumerate(nets):
        assert torch.allclose(out[k], net(x[k][:, None]), atol=1e-5)
        again = unpack(packed, arch, k)
        assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), net.state_dict().values()))


RECIPE = ("augment=affine", "scheduler=onecycle", "loss.label_smoothing=0.1")


# The inner loop keeps the tutorial's three nets and the recipe; the other nets and optimizers (vgg alone takes 11 s)
# run in the full suite.
SLOW = [pytest.mark.slow]


@pytest.mark.parametrize(
    "arch, optimizer, extra",
    [
        *(pytest.param(arch, "sgd", (), marks=SLOW * (arch not in ("baseline", "batchnorm", "deep"))) for arch in NETS),
        pytest.param("batchnorm", "adam", (), marks=SLOW),
        pytest.param("batchnorm", "adamw", (), marks=SLOW),
        ("batchnorm", "sgd", RECIPE),
    ],
)
def test_parallel_equals_sequential(arch, optimizer, extra, mnist_root, tmp_path):
    """Every optimizer that config.plan.PACKABLE_OPTIMIZERS allows in packed mode, and augmentation with an LR schedule
    and label smoothing: the same weights and metrics (each packed fold draws its sequential run's transforms)."""
    # 450 images: 300 to train a fold, 9 batches of 32 and a short one of 12 (train_loss weighed it as a full one).
    plan = plan_of(
        f"model={arch}",
        f"optimizer={optimizer}",
        "data.limit=450",
        "cv.n_folds=3",
        "trainer.max_epochs=2",
        "trainer.accelerator=cpu",
        "trainer.precision=64-true",
        "data.scaling=standardize",
        "data.eval_batch_size=64",
        "cv.parallel=true",
        *extra,
    )
    arrays = load_mnist(mnist_root, download=False)
    folds = [0, 1, 2]
    dms = {k: make_datamodule(plan, arrays, k) for k in folds}
    loggers = {}
    model, _ = train_folds(
        quiet_trainer(2), plan, dms, lambda k: [loggers.setdefault(k, pl.loggers.CSVLogger(tmp_path, version=k))]
    )
    for i, k in enumerate(folds):
        pl.seed_everything(plan.seed + k, verbose=False)
        dm = make_datamodule(plan, arrays, k)
        seq = make_model(plan, dm, k)
        start = {name: value.double().clone() for name, value in seq.net.state_dict().items()}
        trainer = pl.Trainer(
            max_epochs=2,
            accelerator="cpu",
            precision="64-true",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(seq, datamodule=dm)
        mine = unpack(model.net, arch, i).state_dict()
        for name, value in seq.net.state_dict().items():
            # In float64 only the order of summation in grouped kernels differs. Adam's update divides by the
            # gradient's own size, so where a gradient is a near-cancelling sum that rounding shows in its step:
            # measured against how far the weights moved, it is still a billionth (1e-9 of the weights' scale, or
            # 1e-7 of their movement; a real difference in what is computed moves them by percents).
            scale = float(value.abs().max()) + 1e-3
            moved = float((value.double() - start[name]).abs().max())
            diff = float((mine[name].double() - value.double()).abs().max())
            assert diff <= 1e-9 * scale + 1e-7 * moved, (arch, k, name, diff, scale, moved)
        assert len(seq.histories[0]) == len(model.histories[i]) == 2
        for a, b in zip(seq.histories[0], model.histories[i]):
            assert a.keys() == b.keys()
            for key in a:
                assert a[key] == pytest.approx(b[key], abs=1e-6), (arch, k, key)


@pytest.mark.slow
def test_parallel_cli_writes_the_sequential_report(tmp_path, mnist_root):
    common = [
        "data.limit=600",
        "cv.n_folds=3",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        f"data.root={mnist_root}",
    ]
    seq = run_cli("digitnet.train", *common, "cv.parallel=false", f"hydra.run.dir={tmp_path / 'seq'}")
    par = run_cli("digitnet.train", *common, "cv.parallel=true", f"hydra.run.dir={tmp_path / 'par'}")
    assert seq.returncode == 0 and par.returncode == 0, par.stderr[-2000:]
    a = json.loads((tmp_path / "seq" / "cv_summary.json").read_text())
    b = json.loads((tmp_path / "par" / "cv_summary.json").read_text())
    assert a["fold_scores"] == pytest.approx(b["fold_scores"], abs=2e-3)
    assert [len(h) for h in a["history"]] == [len(h) for h in b["history"]]
    assert all(f["parallel_seconds"] > 0 for f in b["folds"])
    # Folds' shares are rounded to ms and their sum to 10 ms, hence the absolute tolerance.
    assert b["train_seconds"] == pytest.approx(b["folds"][0]["parallel_seconds"], rel=0.01, abs=0.011)
    for fold in range(3):
        assert list((tmp_path / "par" / "tb" / f"fold_{fold}").glob("events.out.tfevents.*"))
    assert (tmp_path / "par" / "learning_curves.png").exists()


def test_captured_step_logic_equals_the_plain_step(mnist_root, tmp_path):
    """On CPU the CapturedStep runs without a graph, but with the same warm-up, restore and static buffers."""
    plan = plan_of(
        "model=batchnorm",
        "data.limit=330",
        "cv.n_folds=3",
        "trainer.max_epochs=2",
        "trainer.accelerator=cpu",
        "trainer.precision=64-true",
        "data.batch_size=32",
        "cv.parallel=true",
    )
    arrays = load_mnist(mnist_root, download=False)
    runs = []
    for captured in (False, True):
        dms = {k: make_datamodule(plan, arrays, k) for k in range(3)}
        model, _ = train_folds(
            quiet_trainer(2),
            plan,
            dms,
            lambda k, c=captured: [pl.loggers.CSVLogger(tmp_path, version=f"{c}{k}")],
            captured,
        )
        runs.append(model)
    eager, graphed = runs
    assert graphed.captured_step is not None and not graphed.automatic_optimization
    # 220 training images per fold: 6 full batches of 32 replayed, then a short batch of 28 run eagerly.
    for a, b in zip(eager.net.state_dict().values(), graphed.net.state_dict().values()):
        assert torch.allclose(a.double(), b.double(), atol=1e-12, rtol=0)
    assert eager.histories == graphed.histories
