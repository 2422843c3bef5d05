import math

import pytest
import torch
from torch import nn

from digitnet.core.module import DigitClassifier
from digitnet.core.nets import NETS, build_net, count_parameters


@pytest.mark.parametrize(
    "name, expected",
    [("baseline", 542_230), ("batchnorm", 542_494), ("deep", 159_254), ("deepbn", 188_810), ("vgg", 198_122)],
)
def test_parameter_counts(name, expected):
    # baseline and deep: the tutorial's Keras summaries; batchnorm = baseline + 2*32 + 2*100 (gamma, beta);
    # deepbn = deep with a Dense128 head (+28*1024 + 28 + 28*10) + 2*(32+64+64+128) BatchNorm weights;
    # vgg = deepbn + a Conv32 (32*32*9 + 32) + its BatchNorm (2*32), on 4x4x64 features as deepbn.
    assert count_parameters(build_net(name)) == expected


@pytest.mark.parametrize("name", list(NETS))
def test_output_shape_and_logits(name):
    model = DigitClassifier(arch=name).eval()
    out = model(torch.rand(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert not torch.allclose(out.softmax(1).sum(1), out.sum(1))  # logits, not probabilities


@pytest.mark.parametrize("name", list(NETS))
def test_initialisation_he_glorot_zero_bias(name):
    torch.manual_seed(0)
    layers = [m for m in build_net(name) if isinstance(m, (nn.Conv2d, nn.Linear))]
    for layer in layers:
        assert float(layer.bias.detach().abs().max()) == 0.0
        fan_in = layer.weight[0].numel()
        fan_out = (
            layer.weight.shape[0] * layer.weight[0, 0].numel()
            if isinstance(layer, nn.Conv2d)
            else layer.weight.shape[0]
        )
        if layer is layers[-1]:
            bound = math.sqrt(6 / (fan_in + fan_out))  # Glorot uniform
        else:
            bound = math.sqrt(6 / fan_in)  # He uniform
        w = layer.weight.detach()
        assert float(w.abs().max()) <= bound
        assert float(w.abs().max()) > 0.9 * bound  # uniform over the whole range, not a narrower default
        assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.15)


def test_batchnorm_follows_activations():
    kinds = [type(m).__name__ for m in build_net("batchnorm")]
    assert kinds[:3] == ["Conv2d", "ReLU", "BatchNorm2d"]
    assert kinds[-4:] == ["Linear", "ReLU", "BatchNorm1d", "Linear"]


def test_deepbn_dropout_trains_only_and_keeps_the_weight_names():
    torch.manual_seed(0)
    with_dropout, without = build_net("deepbn", 0.5), build_net("deepbn")
    assert with_dropout.state_dict().keys() == without.state_dict().keys()  # a checkpoint loads whatever the rate
    kinds = [type(m).__name__ for m in without]
    assert kinds.count("BatchNorm2d") == 3 and kinds[-6:] == [
        "Dropout",
        "Linear",
        "ReLU",
        "BatchNorm1d",
        "Dropout",
        "Linear",
    ]
    x = torch.rand(8, 1, 28, 28)
    with_dropout.train()
    assert not torch.equal(with_dropout(x), with_dropout(x))  # fresh masks each training step
    with_dropout.eval()
    assert torch.equal(with_dropout(x), with_dropout(x))
    model = DigitClassifier(arch="deepbn", dropout=0.25)
    assert [m.p for m in model.net if isinstance(m, nn.Dropout)] == [0.25, 0.25]


def test_scaling_is_applied_inside_the_model():
    torch.manual_seed(0)
    a = DigitClassifier(arch="baseline", pixel_mean=0.0, pixel_std=1.0).eval()
    b = DigitClassifier(arch="baseline", pixel_mean=0.25, pixel_std=0.5).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(b(x), a((x - 0.25) / 0.5), atol=1e-6)


def test_every_arch_name_has_a_net_and_a_config_option():
    """One list of nets (names.Arch): the nets, the model group's options and the schema agree."""
    from pathlib import Path

    from digitnet.names import Arch, names

    conf = Path(__file__).resolve().parents[1] / "conf" / "model"
    assert sorted(NETS) == sorted(names(Arch)) == sorted(p.stem for p in conf.glob("*.yaml"))


def test_hparams_are_plain_values():
    model = DigitClassifier(arch="deep", optimizer={"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9})

    def plain(v):
        return isinstance(v, (str, int, float, bool, type(None))) or (
            isinstance(v, dict) and all(plain(x) for x in v.values())
        )

    assert all(plain(v) for v in dict(model.hparams).values())
    optimizer = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["lr"] == 0.1


def test_a_float64_run_reports_its_folds(tmp_path, synthetic_root):
    """trainer.precision=64-true trained, then failed on its confusion matrix: float32 images into a float64 net."""
    from conftest import plan_of
    from digitnet.train import run

    summary = run(
        plan_of(
            f"data.root={synthetic_root}",
            "cv.n_folds=2",
            "trainer.max_epochs=1",
            "cv.workers=1",
            "trainer.precision=64-true",
        ),
        tmp_path / "run",
    )
    assert summary["n"] == 2 and all(sum(map(sum, f["confusion_matrix"])) > 0 for f in summary["folds"])


# The plan refuses the last two cases' settings; a Trainer built with them shows that the counts are not trusted there.
@pytest.mark.parametrize(
    "overrides, trainer, counted",
    [
        ((), {}, True),
        (("trainer.precision=64-true", "trainer.num_sanity_val_steps=1"), {}, True),  # a sanity pass, then the real one
        (("trainer.precision=bf16-mixed",), {}, False),  # the matrix is scored at full precision
        (("data.eval_batch_size=8",), {"limit_val_batches": 2}, False),  # a pass over some of the validation images
        (("trainer.max_epochs=3",), {"check_val_every_n_epoch": 2}, False),  # a pass before the last training step
    ],
)
def test_the_last_validation_pass_gives_the_confusion_matrix_only_when_it_scored_the_trained_net(
    overrides, trainer, counted, synthetic_root
):
    from conftest import plan_of
    from digitnet.core.data import load_mnist
    from digitnet.core.module import fit
    from digitnet.engine.fit import make_datamodule, make_model, make_trainer
    from digitnet.report.results import confusion

    arrays = load_mnist(synthetic_root)
    plan = plan_of(
        f"data.root={synthetic_root}",
        "cv.n_folds=2",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        *overrides,
    ).for_data(arrays)
    dm = make_datamodule(plan, arrays, 0)
    model = make_model(plan, dm, 0)
    fit(make_trainer(plan, False, [], "fold 0", **trainer), model, datamodule=dm)
    matrix = model.last_confusion(len(dm.val_y))
    assert (matrix is not None) == counted
    if counted:
        assert matrix.tolist() == confusion(model, dm.val_x, dm.val_y, plan.eval_batch_size).tolist()
        model.val_counts_device = "cuda"  # a GPU's pass (TF32 convolutions) is not the CPU's second pass
        assert model.last_confusion(len(dm.val_y)) is None
