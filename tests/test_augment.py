"""Augmentation and the recipe's config groups: reproducible, per fold, training batches only."""

import lightning.pytorch as pl
import pytest
import torch

from conftest import compose_cfg, plan_of
from digitnet.core.augment import AffineAugment, make_augment


def batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 8:20, 12:16] = torch.rand(n, 1, 12, 4, generator=g)
    return x


def test_same_seed_same_batch_other_folds_differ():
    x = batch()
    a, b, other = AffineAugment(1), AffineAugment(1), AffineAugment(2)
    first = a(x)
    assert torch.equal(first, b(x))
    assert not torch.allclose(first, other(x))
    assert not torch.allclose(first, a(x))  # the next batch draws new transforms


def test_shape_range_and_ink_are_kept():
    x = batch()
    out = AffineAugment(0, degrees=15, scale=0.1, shift=0.1)(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert (out.sum((1, 2, 3)) / x.sum((1, 2, 3))).sub(1).abs().max() < 0.35  # moved, not lost
    still = AffineAugment(0, degrees=0, scale=0, shift=0)(x)
    assert torch.allclose(still, x, atol=1e-5)  # the identity transform changes nothing
    assert make_augment({"name": "none"}, 0) is None


def test_validation_batches_are_never_augmented():
    from digitnet.core.module import DigitClassifier

    model = DigitClassifier(augment={"name": "affine", "degrees": 10, "scale": 0.1, "shift": 0.1})

    def refuse(x):
        raise AssertionError("validation went through the augmentation")

    model.augment = refuse
    model.trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    model.validation_step((batch(), torch.zeros(16, dtype=torch.long)), 0)
    assert model.val_totals[2, 0] == 16  # the batch was scored


def test_experiment_tutorial_is_exactly_the_defaults():
    assert compose_cfg("experiment=tutorial") == compose_cfg()
    assert plan_of("experiment=tutorial") == plan_of()
    plan = plan_of("augment=affine", "scheduler=onecycle", "loss.label_smoothing=0.1")
    assert plan.augment == {"name": "affine", "degrees": 10.0, "scale": 0.1, "shift": 0.1}
    assert plan.scheduler == {"name": "onecycle", "pct_start": 0.25} and plan.label_smoothing == 0.1
    assert plan.fingerprint() != plan_of().fingerprint()


@pytest.mark.parametrize("preset", ["tutorial", "best"])
def test_every_value_an_experiment_sets_reaches_the_config(preset):
    """conf/config.yaml's own values (seed, loss) had been merged after the groups, so experiment=best's
    loss.label_smoothing=0.1 was silently replaced by the default 0.0."""
    from pathlib import Path

    from omegaconf import OmegaConf

    path = Path(__file__).resolve().parents[1] / "conf" / "experiment" / f"{preset}.yaml"
    values = OmegaConf.to_container(OmegaConf.load(path))
    values.pop("defaults")
    cfg = OmegaConf.to_container(compose_cfg(f"experiment={preset}"), enum_to_str=True)

    def check(expected, composed, where):
        for key, value in expected.items():
            if isinstance(value, dict):
                check(value, composed[key], f"{where}{key}.")
            else:
                assert composed[key] == value, f"{where}{key}"

    check(values, cfg, "")


def test_experiment_best_is_the_documented_recipe():
    plan = plan_of("experiment=best")
    assert (plan.model, plan.augment["name"], plan.scheduler["name"]) == ("deep", "affine", "onecycle")
    assert plan.label_smoothing == 0.1 and plan.optimizer["lr"] == 0.05 and plan.trainer["max_epochs"] == 30
    assert plan.augment == {"name": "affine", "degrees": 10.0, "scale": 0.15, "shift": 0.1}


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["augment=affine", "augment.degrees=200"], "augment.degrees"),
        (["loss.label_smoothing=1"], "loss.label_smoothing"),
        (["augment=affine", "cv.cuda_graph=true", "cv.parallel=true"], "cv.cuda_graph"),
    ],
)
def test_recipe_values_are_checked(overrides, key):
    from digitnet.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        plan_of(*overrides)
    assert err.value.key == key
    with pytest.raises(ConfigError) as err:  # the captured step has no augmentation
        plan_of("augment=affine", "cv.cuda_graph=true", cuda_available=True)
    assert err.value.key == "cv.cuda_graph"


@pytest.mark.parametrize("override", ["augment.name=elastic", "scheduler.name=step"])
def test_unknown_recipe_names_are_the_schemas_to_refuse(override):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        plan_of(override)


@pytest.mark.parametrize("pct_start", [0.25, 0.5, 0.1, 0.3])
def test_onecycle_runs_for_any_number_of_steps(pct_start):
    """4 steps at pct_start 0.25 (a fold of 480 images at batch 128, 1 epoch) was a ZeroDivisionError inside
    OneCycleLR, in a fold worker."""
    from digitnet.core.schedules import lr_scheduler

    for total in range(1, 25):
        param = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([param], lr=0.1, momentum=0.9)
        sched = lr_scheduler(opt, 0.1, {"name": "onecycle", "pct_start": pct_start}, total)
        lrs = [opt.param_groups[0]["lr"]]
        for _ in range(total - 1):
            opt.step()
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        assert max(lrs) <= 0.1 + 1e-12 and all(lr > 0 for lr in lrs), (total, lrs)
        if total * pct_start >= 2:
            assert lrs[0] < 0.1 / 2, (total, lrs)  # a warm-up from the initial lr (max / 25)
