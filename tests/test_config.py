"""The config: the schema refuses what a type or a key can say, the plan what a range or a rule between keys can say,
and every `auto` is settled once. In process: these are the fast tests of the inner loop."""

import pickle
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    ValidationError,
)

from conftest import compose_cfg, plan_of
from digitnet.config.plan import CV_ONLY, NOT_IN_FINGERPRINT, PACKABLE_OPTIMIZERS, RANGES, RunPlan, differences
from digitnet.core.data import MNISTArrays
from digitnet.errors import ConfigError, UserError
from digitnet.names import TTA, Arch, Augment, Schedule, names

CONF = Path(__file__).resolve().parents[1] / "conf"


def arrays_of(n_train: int, n_test: int = 10) -> MNISTArrays:
    """Blank MNIST-shaped arrays: what plan.for_data reads of the data (its size and digest)."""
    return MNISTArrays(
        torch.zeros(n_train, 28, 28, dtype=torch.uint8),
        torch.zeros(n_train, dtype=torch.long),
        torch.zeros(n_test, 28, 28, dtype=torch.uint8),
        torch.zeros(n_test, dtype=torch.long),
    )


@pytest.mark.parametrize(
    "overrides, key, value",
    [
        (["optimizer.lr=0"], "optimizer.lr", 0),
        (["optimizer.lr=-0.1"], "optimizer.lr", -0.1),
        (["optimizer.lr=nan"], "optimizer.lr", None),
        (["optimizer.lr=1e309"], "optimizer.lr", float("inf")),
        (["optimizer.momentum=1"], "optimizer.momentum", 1),
        (["optimizer.dampening=2"], "optimizer.dampening", 2),
        (["optimizer=adam", "optimizer.eps=0"], "optimizer.eps", 0),
        (["seed=-1"], "seed", -1),
        (["seed=4294967296"], "seed", 4294967296),
        (["cv.seed=-3"], "cv.seed", -3),
        (["cv.n_folds=1"], "cv.n_folds", 1),
        (["data.batch_size=0"], "data.batch_size", 0),
        (["data.limit=-1"], "data.limit", -1),
        (["data.eval_batch_size=0"], "data.eval_batch_size", 0),
        (["cv.workers=0"], "cv.workers", 0),
        (["cv.workers=two"], "cv.workers", "two"),
        (["data.batch_size=99999999999999999999"], "data.batch_size", None),
        (["model=deepbn", "model.dropout=1"], "model.dropout", 1),
        (["loss.label_smoothing=1"], "loss.label_smoothing", 1),
        (["augment=affine", "augment.degrees=200"], "augment.degrees", 200),
        (["scheduler=onecycle", "scheduler.pct_start=1"], "scheduler.pct_start", 1),
        (["trainer.max_epochs=0"], "trainer.max_epochs", 0),
        (["trainer.log_every_n_steps=-1"], "trainer.log_every_n_steps", -1),
        (["+trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val", -1),
        (["+trainer.accumulate_grad_batches=abc"], "trainer.accumulate_grad_batches", "abc"),
        (["+trainer.min_epochs=abc"], "trainer.min_epochs", "abc"),
        (
            ["+trainer.max_steps=null"],
            "trainer.max_steps",
            None,
        ),  # Lightning's Trainer would fail on None (a TypeError)
        (["data.eval_batch_size=99999999999999999999"], "data.eval_batch_size", 99999999999999999999),
    ],
)
def test_values_out_of_range_are_config_errors_naming_key_and_value(overrides, key, value):
    with pytest.raises(ConfigError) as err:
        plan_of(*overrides)
    assert err.value.key == key and key in RANGES
    if value is not None:
        assert err.value.value == value


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["model=deep", "model.dropout=0.3"], "model.dropout"),
        (["model=deepbn", "data.batch_size=1"], "data.batch_size"),
        (["model=vgg", "data.batch_size=1"], "data.batch_size"),
        (["data.limit=3"], "data.limit"),
        (["data.limit=3", "cv.n_folds=2"], "data.limit"),
        (["task=final", "data.limit=1"], "data.limit"),
        (["seed=4294967295"], "seed"),
        (["+trainer.logger=false"], "trainer.logger"),
        (["+trainer.callbacks=[]"], "trainer.callbacks"),
        (["+trainer.enable_checkpointing=true"], "trainer.enable_checkpointing"),
        (["+trainer.default_root_dir=/tmp"], "trainer.default_root_dir"),
        (["trainer.devices=3"], "trainer.devices"),
        (["+trainer.strategy=ddp"], "trainer.strategy"),
        (["+trainer.num_nodes=2"], "trainer.num_nodes"),
        (["+trainer.fast_dev_run=true"], "trainer.fast_dev_run"),
        (["+trainer.overfit_batches=1"], "trainer.overfit_batches"),
        (["+trainer.limit_train_batches=0"], "trainer.limit_train_batches"),
        (["+trainer.limit_val_batches=0.5"], "trainer.limit_val_batches"),
        (["+trainer.limit_val_batches=1"], "trainer.limit_val_batches"),  # the whole number 1 is one batch
        (["+trainer.val_check_interval=0.5"], "trainer.val_check_interval"),
        (["+trainer.max_time=00:00:01:00"], "trainer.max_time"),
        (["+trainer.max_steps=100"], "trainer.max_steps"),
        (["task=final", "+trainer.max_time=00:00:00:00"], "trainer.max_time"),
        (["task=final", "+trainer.max_time={minutes:-1}"], "trainer.max_time"),
        (["+trainer.min_epochs=11"], "trainer.min_epochs"),
        (["+trainer.max_steps=5", "+trainer.min_steps=6", "task=final"], "trainer.min_steps"),
        (["trainer.check_val_every_n_epoch=2", "trainer.max_epochs=3"], "trainer.check_val_every_n_epoch"),
        (["trainer.accelerator=tpu"], "trainer.accelerator"),
        (["trainer.accelerator=gpu"], "trainer.accelerator"),
        (["trainer.precision=16-mixed"], "trainer.precision"),
        (["cv.parallel=foo"], "cv.parallel"),
        (["cv.cuda_graph=maybe"], "cv.cuda_graph"),
        (["cv.workers=2", "cv.parallel=true"], "cv.parallel"),
        (["optimizer._target_=torch.optim.Nope"], "optimizer._target_"),
        (["optimizer._target_=collections.OrderedDict"], "optimizer._target_"),
    ],
)
def test_rules_between_keys_and_result_protecting_trainer_rules(overrides, key):
    with pytest.raises(ConfigError) as err:
        plan_of(*overrides)
    assert err.value.key == key


def test_task_final_ignores_the_cv_settings():
    """A final fit has no folds: cv.* is neither checked nor part of what a rerun must match."""
    assert plan_of("task=final", "cv.n_folds=1", "cv.workers=0", "cv.seed=-1").task == "final"
    assert set(CV_ONLY).isdisjoint(plan_of("task=final").fingerprint_fields())
    assert plan_of("task=final", "cv.n_folds=3").fingerprint() == plan_of("task=final").fingerprint()
    assert plan_of("cv.n_folds=3").fingerprint() != plan_of().fingerprint()


@pytest.mark.parametrize(
    "overrides, error, full_key",
    [
        (["+data.foo=1"], ConfigKeyError, "data.foo"),
        (["+new.key=3"], ConfigKeyError, "new"),
        (["+model.depth=99"], ConfigKeyError, "model.depth"),
        (["+augment.degrees=5"], ConfigKeyError, "augment.degrees"),
        (["+scheduler.pct_start=0.3", "scheduler=cosine"], ConfigKeyError, "scheduler.pct_start"),
        (["optimizer._target_=torch.optim.Adam"], ConfigKeyError, "optimizer.momentum"),
        (["+optimizer.maximize=true"], ConfigKeyError, "optimizer.maximize"),
        (["~model"], MissingMandatoryValue, "model.name"),
        (
            ["model=deepbn", "model.dropout=${oc.env:DIGITNET_SURELY_UNSET}"],
            InterpolationResolutionError,
            "model.dropout",
        ),
    ],
)
def test_keys_the_schema_lacks_are_omegaconfs_to_refuse(overrides, error, full_key):
    """`+key=value` is added by Hydra without the schema; the plan merges the config into it again."""
    with pytest.raises(error) as err:
        plan_of(*overrides)
    assert err.value.full_key == full_key


@pytest.mark.parametrize(
    "override, cause, full_key",
    [
        ("data.scaling=minmax", ValidationError, "data.scaling"),
        ("task=tune", ValidationError, "task"),
        ("model.name=resnet", ValidationError, "model.name"),
        ("tta.name=shfit", ValidationError, "tta.name"),
        ("data.limit=abc", ValidationError, "data.limit"),
        ("cv.n_folds=2.5", ValidationError, "cv.n_folds"),
        ("data.batch_size=true", ValidationError, "data.batch_size"),
        ("data.root=null", ValidationError, "data.root"),
        ("optimizer.lr=fast", ValidationError, "optimizer.lr"),
        ("data.download=maybe", ValidationError, "data.download"),
        ("+optimizer.nesterov=abc", ValidationError, "optimizer.nesterov"),
        ("augment.degrees=3", ConfigAttributeError, "augment.degrees"),  # augment=none has no degrees
        ("trainer.max_epoch=3", ConfigAttributeError, "trainer.max_epoch"),
        ("Model=deep", ConfigAttributeError, "Model"),
    ],
)
def test_wrong_types_and_unknown_keys_are_refused_by_hydra_at_composition(override, cause, full_key):
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(override)
    assert isinstance(err.value.__cause__, cause) and err.value.__cause__.full_key == full_key


@pytest.mark.parametrize(
    "override, options",
    [
        ("model=resnet", names(Arch)),
        ("tta=shfit", names(TTA)),
        ("augment=afine", names(Augment)),
        ("scheduler=cos", names(Schedule)),
        ("optimizer=lbfgs", ["adam", "adamw", "sgd"]),
        (
            "experiment=bestt",
            ["best", "tutorial"],
        ),  # not an optional group: a misspelled preset never trains the defaults
    ],
)
def test_an_unknown_group_choice_is_refused_with_the_groups_options(override, options):
    with pytest.raises(MissingConfigException) as err:
        compose_cfg(override)
    assert err.value.missing_cfg_file == override.replace("=", "/")
    assert sorted(err.value.options) == sorted(options)


def test_the_optimizer_is_built_by_torch_before_any_work():
    with pytest.raises(UserError) as err:  # torch's own refusal, with the key
        plan_of("optimizer=adam", "optimizer.betas=[2,0.9]")
    assert err.value.key == "optimizer"
    with pytest.raises(UserError) as err:  # OneCycleLR needs momentum or betas
        plan_of("scheduler=onecycle", "optimizer._target_=torch.optim.Adagrad", "optimizer.momentum=0")
    assert err.value.key == "optimizer"


def test_environment_variables_reach_typed_keys(monkeypatch):
    """${oc.env:LR} is a string; the schema's float turns LR=0.05 into 0.05."""
    monkeypatch.setenv("DIGITNET_TEST_LR", "0.05")
    assert plan_of("optimizer.lr=${oc.env:DIGITNET_TEST_LR}").optimizer["lr"] == 0.05


def test_every_auto_is_settled_on_cpu():
    plan = plan_of()
    assert (plan.device, plan.runner, plan.processes, plan.cuda_graph) == ("cpu", "processes", 2, False)
    assert plan.eval_batch_size == 250 and plan.trainer["accelerator"] == "cpu" and plan.progress == "epochs"
    assert "auto" not in str(plan.as_dict())
    assert plan_of(cores=1).runner == "sequential" and plan_of("cv.workers=1").runner == "sequential"
    assert plan_of("cv.workers=3", cores=2).processes == 3 and plan_of("cv.parallel=true").runner == "packed"
    # A quick look trains in less time than worker processes take to start: in this process, unless asked.
    quick = ("data.limit=600", "trainer.max_epochs=1", "cv.n_folds=2")
    assert (plan_of(*quick).runner, plan_of(*quick, "cv.workers=2").runner) == ("sequential", "processes")
    assert plan_of("data.limit=12000", "trainer.max_epochs=10").runner == "processes"
    assert plan_of("trainer.enable_progress_bar=false").progress == "off"
    assert plan_of("cv.workers=1", tty=True).progress == "bar"
    assert plan_of(tty=True).progress == "epochs"  # fold workers share the terminal: lines, not bars
    assert plan_of("data.eval_batch_size=64").eval_batch_size == 64


def test_every_auto_is_settled_on_one_cuda_device():
    plan = plan_of(cuda_available=True)
    assert (plan.device, plan.runner, plan.processes, plan.cuda_graph) == ("cuda", "packed", 1, True)
    assert plan.eval_batch_size == 1000 and plan.trainer["accelerator"] == "gpu"
    assert plan_of("trainer.accelerator=cpu", cuda_available=True).device == "cpu"
    assert plan_of("cv.cuda_graph=false", cuda_available=True).cuda_graph is False
    assert plan_of("cv.parallel=false", cuda_available=True).runner == "sequential"
    assert plan_of("task=final", cuda_available=True).device == "cuda"  # the final fit's data lives there too


def test_the_rules_that_protect_a_folds_score_do_not_bind_a_final_fit():
    """A final fit is scored on the holdout after it ends: stopping it by time or steps, or validating on part of the
    training set, changes no recorded score."""
    plan = plan_of(
        "task=final",
        "+trainer.max_steps=3",
        "+trainer.max_time=00:00:01:00",
        "+trainer.limit_val_batches=0.2",
        "+trainer.val_check_interval=0.5",
    )
    assert (plan.trainer["max_steps"], plan.trainer["limit_val_batches"]) == (3, 0.2)
    assert plan.for_data(arrays_of(300)).trainer["max_steps"] == 3
    assert plan_of("task=final", "+trainer.limit_val_batches=1").trainer["limit_val_batches"] == 1


def test_lightnings_precision_aliases_are_one_run():
    assert plan_of("trainer.precision=bf16").trainer["precision"] == "bf16-mixed"
    assert plan_of("trainer.precision=32").fingerprint() == plan_of().fingerprint()
    with pytest.raises(ConfigError) as err:  # 16 is 16-mixed, which needs a GPU
        plan_of("trainer.precision=16")
    assert (err.value.key, err.value.value) == ("trainer.precision", "16-mixed")
    assert plan_of("trainer.precision=16", cuda_available=True).trainer["precision"] == "16-mixed"


@pytest.mark.parametrize(
    "overrides",
    [
        ["+trainer.gradient_clip_val=0.05"],
        ["+trainer.accumulate_grad_batches=2"],
        ["optimizer._target_=torch.optim.RMSprop"],
        ["model=deepbn", "model.dropout=0.2"],
    ],
)
def test_folds_are_packed_only_where_packing_is_exact(overrides):
    """Clipping the summed gradient, accumulating, a non-elementwise optimizer or one dropout stream would couple the
    packed folds: cv.parallel=true refuses; auto on CUDA runs them one after another and says why."""
    with pytest.raises(ConfigError) as err:
        plan_of("cv.parallel=true", *overrides)
    assert err.value.key == "cv.parallel"
    plan = plan_of(*overrides, cuda_available=True)
    assert plan.runner == "sequential" and plan.cuda_graph is False and plan.notes


def test_the_cuda_graph_needs_plain_sgd_steps_of_packed_folds():
    for overrides, cuda in (
        (["optimizer=adam", "cv.cuda_graph=true"], True),
        (["cv.cuda_graph=true"], False),
        (["augment=affine", "cv.cuda_graph=true"], True),
    ):
        with pytest.raises(ConfigError) as err:
            plan_of(*overrides, cuda_available=cuda)
        assert err.value.key == "cv.cuda_graph"
    plan = plan_of("optimizer=adam", cuda_available=True)
    assert plan.runner == "packed" and plan.cuda_graph is False and plan.notes
    assert set(PACKABLE_OPTIMIZERS) == {f"torch.optim.{n}" for n in ("SGD", "Adam", "AdamW")}


def test_the_plan_is_plain_frozen_and_picklable():
    plan = plan_of("model=deep")
    assert pickle.loads(pickle.dumps(plan)) == plan and isinstance(plan, RunPlan)
    with pytest.raises(AttributeError):
        plan.model = "baseline"

    def plain(value):
        return (
            value is None
            or isinstance(value, (str, int, float, bool))
            or (
                isinstance(value, (list, dict))
                and all(plain(v) for v in (value.values() if isinstance(value, dict) else value))
            )
        )

    assert plain(plan.as_dict())
    assert plan_of().optimizer == {"_target_": "torch.optim.SGD", "lr": 0.01, "momentum": 0.9}  # the tutorial's


def test_the_fingerprint_covers_what_a_result_depends_on():
    base = plan_of()
    for changed in (
        ["trainer.precision=bf16-mixed"],
        ["+trainer.gradient_clip_val=0.5"],
        ["optimizer=adam"],
        ["trainer.deterministic=true"],
        ["data.batch_size=64"],
        ["seed=2"],
        ["cv.seed=2"],
        ["data.scaling=center"],
        ["trainer.max_epochs=3"],
        ["model=deepbn"],
        ["tta=shift"],
        ["optimizer.weight_decay=0.001"],
        ["+trainer.limit_train_batches=0.5"],
        ["loss.label_smoothing=0.1"],
        ["augment=affine"],
        ["scheduler=cosine"],
    ):
        assert plan_of(*changed).fingerprint() != base.fingerprint(), changed
    for same in (
        ["trainer.enable_progress_bar=false"],
        ["trainer.enable_model_summary=true"],
        ["trainer.log_every_n_steps=10"],
        ["cv.workers=1"],
        ["cv.parallel=true"],
        ["data.eval_batch_size=64"],
        ["data.root=/elsewhere"],
        ["data.download=false"],
        ["+trainer.profiler=simple"],
        ["logger=[csv,mlflow]"],
    ):
        assert plan_of(*same).fingerprint() == base.fingerprint(), same
    assert plan_of(cuda_available=True).fingerprint() != base.fingerprint()  # GPU arithmetic is other arithmetic
    assert plan_of("model=deepbn", "model.dropout=0.1").fingerprint() != plan_of("model=deepbn").fingerprint()
    fields = plan_of("+trainer.profiler=simple").fingerprint_fields()
    for key in NOT_IN_FINGERPRINT:
        group, _, sub = key.partition(".")
        assert (sub not in fields[group]) if sub else (group not in fields), key
    data = base.for_data(arrays_of(600))
    other = base.for_data(replace(arrays_of(600), train_y=torch.ones(600, dtype=torch.long)))
    assert data.data_digest and data.fingerprint() != other.fingerprint()  # the same config on other data
    assert len(NOT_IN_FINGERPRINT) <= 16


def test_resume_refusals_name_config_keys():
    assert set(
        differences(
            plan_of().fingerprint_fields(),
            plan_of("model=deep", "loss.label_smoothing=0.1", "data.limit=10").fingerprint_fields(),
        )
    ) == {
        "data.limit=0 there, 10 now",
        "loss.label_smoothing=0.0 there, 0.1 now",
        "model.name='baseline' there, 'deep' now",
    }


def test_for_data_checks_the_fold_count_and_equal_folds():
    with pytest.raises(ConfigError) as err:
        plan_of().for_data(arrays_of(4))
    assert err.value.key == "cv.n_folds"
    packed = plan_of("cv.parallel=true")
    assert packed.for_data(arrays_of(600)).runner == "packed"
    uneven = packed.for_data(arrays_of(601))
    assert uneven.runner == "sequential" and uneven.notes
    more = plan_of("data.limit=1000").for_data(arrays_of(600))
    assert more.limit == 0 and more.notes  # a limit above the data: all of it, said
    assert plan_of("data.batch_size=500", "cv.n_folds=2").for_data(arrays_of(300)).notes
    assert plan_of("data.batch_size=150", "cv.n_folds=2").for_data(arrays_of(300)).notes == ()


def test_for_data_refuses_a_fraction_of_batches_that_leaves_none():
    # 300 images, 2 folds: 150 training images a fold, 5 batches of 32; int(5 * 0.1) = 0 batches.
    with pytest.raises(ConfigError) as err:
        plan_of("+trainer.limit_train_batches=0.1", "cv.n_folds=2").for_data(arrays_of(300))
    assert err.value.key == "trainer.limit_train_batches"
    assert plan_of("+trainer.limit_train_batches=0.2", "cv.n_folds=2").for_data(arrays_of(300)).n_folds == 2


def test_the_cheap_checks_import_neither_torch_nor_lightning():
    """A bad value is reported before torch's import (about 1.4 s on 2 cores) would have finished."""
    code = (
        "import sys; from digitnet import train, sweep_callback; from digitnet.config import plan\n"
        "from conftest import compose_cfg\n"
        "try:\n    plan.make_plan(compose_cfg('optimizer.lr=0'))\nexcept Exception as e: print(type(e).__name__)\n"
        "print(sorted(m for m in ('torch', 'lightning', 'scipy.stats', 'matplotlib') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent)
    assert result.stdout.split() == ["ConfigError", "[]"], result.stderr


def test_presets_and_the_closed_lists_agree_with_the_config_groups():
    def options(group):
        return sorted(p.stem for p in (CONF / group).glob("*.yaml"))

    assert options("model") == sorted(names(Arch)) and options("tta") == sorted(names(TTA))
    assert options("augment") == sorted(names(Augment)) and options("scheduler") == sorted(names(Schedule))
    assert plan_of("experiment=tutorial") == plan_of()  # the tutorial's recipe is the defaults, spelled out
    assert {o: plan_of(f"optimizer={o}").optimizer["_target_"] for o in options("optimizer")} == {
        "sgd": "torch.optim.SGD",
        "adam": "torch.optim.Adam",
        "adamw": "torch.optim.AdamW",
    }
    best = plan_of("experiment=best")
    assert (best.model, best.tta, best.trainer["max_epochs"], best.label_smoothing) == ("deep", "shift", 30, 0.1)
    from digitnet.config.schema import LoggerConf

    assert options("logger") == sorted(f.name for f in fields(LoggerConf))
    assert all(list(plan_of(f"logger=[{o}]").loggers) == [o] for o in options("logger"))
    assert list(plan_of().loggers) == ["tensorboard"] and plan_of("logger=[]").loggers == {}


@pytest.mark.parametrize("betas", ["[0.9]", "[0.9,0.99,0.999]", "[]"])
def test_a_list_of_the_wrong_length_names_its_key(betas):
    """optimizer.betas=[0.9] said "optimizer: list index out of range" (torch's IndexError, of the whole group)."""
    with pytest.raises(ConfigError) as err:
        plan_of("optimizer=adam", f"optimizer.betas={betas}")
    assert err.value.key == "optimizer.betas"
    assert plan_of("optimizer=adam", "optimizer.betas=[0.8,0.9]").optimizer["betas"] == [0.8, 0.9]
