"""The run plan: every bad value refused in one line before any work, every `auto` settled once, in process."""

import pickle
import subprocess
import sys
from dataclasses import replace

import pytest

from conftest import plan_of
from digitnet.errors import UserError
from digitnet.plan import ARCHS, NOT_IN_FINGERPRINT, PACKABLE_OPTIMIZERS, SCALINGS, TRAINER_ARGS, RunPlan


@pytest.mark.parametrize("overrides, message", [
    (["model=deep", "model.name=resnet"], "model.name='resnet' is unknown"),
    (["~model"], "no model chosen; add model=baseline|batchnorm|deep|deepbn"),
    (["model=deep", "+model.dropout=0.3"], "model.dropout=0.3: model=deep has no dropout layers; use model=deepbn"),
    (["data.limit=3", "cv.n_folds=2"], "data.limit=3 with cv.n_folds=2 leaves a fold 1 training image(s); give "
                                       "data.limit=4 or more"),
    (["task=final", "data.limit=1"], "data.limit=1: one training image trains nothing; give data.limit=2 or more"),
    (["+augment.degrees=5"], "augment.degrees=5 does nothing with augment=none; choose augment=affine, or drop it"),
    (["scheduler=cosine", "+scheduler.pct_start=0.3"], "scheduler.pct_start=0.3 does nothing with scheduler=cosine; "
                                                       "choose scheduler=onecycle"),
    (["model=deepbn", "model.dropout=1"], "model.dropout=1 must be a finite number in [0, 1)"),
    (["model=deepbn", "model.dropout=-0.1"], "model.dropout=-0.1 must be a finite number in [0, 1)"),
    (["model=deepbn", "data.batch_size=1"], "data.batch_size=1 with model=deepbn: BatchNorm needs at least 2"),
    (["task=tune"], "task='tune' is unknown"),
    (["optimizer.lr=0"], "optimizer.lr=0 must be a finite number > 0"),
    (["optimizer.lr=-0.1"], "optimizer.lr=-0.1 must be a finite number > 0"),
    (["optimizer.lr=nan"], "optimizer.lr=nan must be a finite number > 0"),
    (["optimizer.lr=1e309"], "optimizer.lr=inf must be a finite number > 0"),
    (["optimizer.lr=fast"], "optimizer.lr='fast' is not a number"),
    (["optimizer.momentum=1"], "optimizer.momentum=1 must be a finite number in [0, 1)"),
    (["cv.n_folds=1"], "cv.n_folds=1 must be at least 2"),
    (["cv.n_folds=2.5"], "cv.n_folds=2.5 is not a whole number"),
    (["data.batch_size=0"], "data.batch_size=0 must be at least 1"),
    (["data.batch_size=true"], "data.batch_size=True is not a whole number"),
    (["data.limit=3"], "data.limit=3 is smaller than cv.n_folds=5"),
    (["data.limit=-1"], "data.limit=-1 must be at least 0"),
    (["data.scaling=minmax"], "data.scaling='minmax' is unknown; use one of normalize, center, standardize"),
    (["data.root=null"], "data.root=None must be a folder"),
    (["data.download=no"], "data.download='no' must be true or false"),
    (["data.eval_batch_size=0"], "data.eval_batch_size=0 must be at least 1"),
    (["seed=-1"], "seed=-1 must be from 0 to 4294967295"),
    (["seed=4294967296"], "seed=4294967296 must be from 0 to 4294967295"),
    (["seed=4294967295"], "fold 4 would use seed 4294967299"),
    (["cv.seed=-3"], "cv.seed=-3 must be from 0 to 4294967295"),
    (["cv.parallel=foo"], "cv.parallel='foo' must be auto, true or false"),
    (["cv.cuda_graph=maybe"], "cv.cuda_graph='maybe' must be auto, true or false"),
    (["cv.workers=0"], "cv.workers=0 must be at least 1"),
    (["cv.workers=two"], "cv.workers='two' is not a whole number"),
    (["cv.workers=2", "cv.parallel=true"], "cv.workers=2 and cv.parallel=true exclude each other"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be at least 1"),
    (["trainer.accelerator=gpu"], "trainer.accelerator=gpu but no CUDA GPU is visible"),
    (["trainer.accelerator=tpu"], "trainer.accelerator='tpu' is not supported; use auto, cpu or gpu"),
    (["trainer.accelerator=foo"], "trainer.accelerator='foo' is not supported"),
    (["trainer.precision=foo"], "trainer.precision='foo' is unknown"),
    (["trainer.precision=16-mixed"], "trainer.precision=16-mixed needs a GPU"),
    (["trainer.devices=3"], "trainer.devices=3: digitnet trains each fold on one device"),
    (["+trainer.max_epoch=3"], "trainer.max_epoch is not an argument of Lightning's Trainer"),
    (["+trainer.logger=false"], "trainer.logger is set by digitnet itself"),
    (["+trainer.strategy=ddp"], "trainer.strategy='ddp': digitnet runs each fit in one process"),
    (["+trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 must be a finite number"),
    (["+optimizer.nesterov_typo=true"], "optimizer: torch.optim.SGD rejects"),
    (["optimizer._target_=torch.optim.Adam"], "torch.optim.Adam rejects {'lr': 0.01, 'momentum': 0.9}"),
    (["optimizer._target_=torch.optim.Nope"], "optimizer._target_=torch.optim.Nope cannot be imported"),
    (["optimizer._target_=collections.OrderedDict"], "is not a torch.optim optimizer"),
    (["optimizer=adam", "optimizer.betas=[2,0.9]"], "torch.optim.Adam rejects"),
    (["+optimizer.dampening=2"], "optimizer.dampening=2 must be a finite number in [0, 1]"),
    (["+optimizer.maximize=true"], "optimizer.maximize=true would climb the loss"),
    (["optimizer=adam", "+optimizer.eps=0"], "optimizer.eps=0 must be a finite number > 0; Adam's default is 1e-8"),
    (["+trainer.min_epochs=11"], "trainer.min_epochs=11 is more than trainer.max_epochs=10, which wins"),
    (["+trainer.max_steps=5", "+trainer.min_steps=6"], "trainer.min_steps=6 is more than trainer.max_steps=5"),
    (["+trainer.max_time=00:00:01:00"], "trainer.max_time='00:00:01:00' would stop a fold wherever the clock says"),
    (["task=final", "+trainer.max_time=00:00:00:00"], "trainer.max_time='00:00:00:00' leaves no time to train"),
    (["task=final", "+trainer.max_time={minutes:-1}"], "trainer.max_time={'minutes': -1} leaves no time to train"),
    (["scheduler=onecycle", "optimizer._target_=torch.optim.Adagrad", "~optimizer.momentum"],
     "scheduler=onecycle cannot drive torch.optim.Adagrad (optimizer must support momentum or beta1"),
    (["+trainer.overfit_batches=1"], "trainer.overfit_batches=1: each fit would train on a few batches"),
    (["+trainer.limit_val_batches=0.5"], "trainer.limit_val_batches=0.5 would score each fold on part of its"),
    (["+trainer.limit_val_batches=1"], "trainer.limit_val_batches=1 would score each fold on part of its"),
    (["+trainer.val_check_interval=2"], "trainer.val_check_interval=2: a fold's score is its validation at the end"),
    (["+trainer.val_check_interval=0.5"], "trainer.val_check_interval=0.5: a fold's score is its validation at the"),
])
def test_bad_values_are_one_user_error(overrides, message):
    with pytest.raises(UserError) as err:
        plan_of(*overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_values_through_the_cli_exit_1_with_one_line_before_any_work(tmp_path):
    """The CLI contract, once: exit 1, one line on stderr, no traceback, no data read, no fold dirs."""
    for override in ("optimizer.lr=nan", "optimizer._target_=torch.optim.Adam", "model=resnet"):
        run_dir = tmp_path / "run"
        result = subprocess.run([sys.executable, "-m", "digitnet.train", override, f"hydra.run.dir={run_dir}",
                                 f"data.root={tmp_path / 'nodata'}"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("digitnet.train: error: "), result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        assert not run_dir.exists()  # a rejected config leaves no run dir behind


def test_the_cheap_checks_import_neither_torch_nor_lightning():
    """Config errors come about 0.4 s after start (torch adds about 1.4 s, Lightning 5 s more on this CPU)."""
    code = ("import sys; from digitnet import train, plan; from conftest import compose_cfg; import digitnet.sweep\n"
            "try:\n    plan.make_plan(compose_cfg('optimizer.lr=0'))\nexcept Exception as e: print(type(e).__name__)\n"
            "print(sorted(m for m in ('torch', 'lightning', 'scipy.stats', 'matplotlib') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=__file__.rsplit("/", 1)[0])
    assert result.stdout.split() == ["UserError", "[]"], result.stderr


def test_plan_is_plain_and_picklable():
    plan = plan_of("model=deep")
    assert pickle.loads(pickle.dumps(plan)) == plan
    with pytest.raises(AttributeError):
        plan.model = "baseline"

    def plain(value):
        return value is None or isinstance(value, (str, int, float, bool)) or (
            isinstance(value, (list, dict)) and all(plain(v) for v in (value.values() if isinstance(value, dict) else value)))

    assert plain(plan.as_dict())


def test_every_auto_is_settled_on_cpu():
    plan = plan_of()
    assert (plan.device, plan.data_device, plan.runner, plan.processes, plan.cuda_graph) == ("cpu", "cpu", "processes", 2, False)
    assert plan.eval_batch_size == 250 and plan.trainer["accelerator"] == "cpu" and plan.progress == "epochs"
    assert "auto" not in str(plan.as_dict())
    assert plan_of(cores=1).runner == "sequential"
    assert plan_of("cv.workers=1").runner == "sequential"
    assert plan_of("cv.workers=3", cores=2).processes == 3
    assert plan_of("cv.parallel=true").runner == "packed"
    assert plan_of("trainer.enable_progress_bar=false").progress == "off"
    assert plan_of("cv.workers=1", tty=True).progress == "bar"
    assert plan_of(tty=True).progress == "epochs"  # fold workers share the terminal: lines, not bars
    assert plan_of("data.eval_batch_size=64").eval_batch_size == 64


def test_every_auto_is_settled_on_one_cuda_device():
    plan = plan_of(cuda_available=True)
    assert (plan.device, plan.data_device, plan.runner, plan.processes, plan.cuda_graph) == ("cuda", "cuda", "packed", 1, True)
    assert plan.eval_batch_size == 1000 and plan.trainer["accelerator"] == "gpu"
    assert plan_of("trainer.accelerator=cpu", cuda_available=True).device == "cpu"
    assert plan_of("cv.cuda_graph=false", cuda_available=True).cuda_graph is False
    assert plan_of("cv.parallel=false", cuda_available=True).runner == "sequential"


def test_final_fit_data_lives_on_the_training_device():
    """Finding 3: task=final kept its data on the CPU while the folds had theirs on the GPU."""
    assert plan_of("task=final", cuda_available=True).data_device == "cuda"
    assert plan_of("task=final").data_device == "cpu"


def test_final_fit_builds_its_data_through_the_plan(synthetic_root):
    """Both the folds and the final fit get their data from training.make_datamodule, which puts it on the plan's
    data device; "meta" stands in for "cuda" on a machine without one."""
    from digitnet.data import load_mnist
    from digitnet.training import make_datamodule

    plan = replace(plan_of("task=final", f"data.root={synthetic_root}"), data_device="meta")
    dm = make_datamodule(plan, load_mnist(synthetic_root, download=False), fold=None)
    assert dm.train_x.device.type == "meta" and len(dm.train_y) == 60


@pytest.mark.parametrize("overrides, blocker", [
    (["+trainer.gradient_clip_val=0.05"], "gradient clipping"),
    (["+trainer.accumulate_grad_batches=2"], "gradient accumulation"),
    (["optimizer._target_=torch.optim.Adagrad", "~optimizer.momentum"], "torch.optim.Adagrad is not proven exact"),
    (["optimizer._target_=torch.optim.RMSprop"], "torch.optim.RMSprop is not proven exact"),
    (["model=deepbn", "model.dropout=0.2"], "model.dropout would draw the packed folds' masks"),
])
def test_packed_folds_only_where_exact(overrides, blocker):
    """Finding 2: clipping the summed loss's gradient norm (or accumulating, or a non-elementwise optimizer) couples
    the packed folds. cv.parallel=true refuses; auto on CUDA picks sequential and says why."""
    with pytest.raises(UserError, match=f"cv.parallel=true: {blocker}"):
        plan_of("cv.parallel=true", *overrides)
    plan = plan_of(*overrides, cuda_available=True)
    assert plan.runner == "sequential" and plan.cuda_graph is False
    assert any(blocker in note and note.startswith("cv.parallel=auto") for note in plan.notes)


def test_cuda_graph_needs_sgd_and_packed_folds():
    """Finding 4: cv.cuda_graph=true with another optimizer ended in a traceback inside the fit."""
    with pytest.raises(UserError, match="cv.cuda_graph=true: the captured step supports SGD without dampening only"):
        plan_of("optimizer=adam", "cv.cuda_graph=true", cuda_available=True)
    with pytest.raises(UserError, match="cv.cuda_graph=true: it needs packed folds"):
        plan_of("cv.cuda_graph=true")
    plan = plan_of("optimizer=adam", cuda_available=True)
    assert plan.runner == "packed" and plan.cuda_graph is False
    assert any("cv.cuda_graph=auto: off" in note for note in plan.notes)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_optimizer_group(optimizer):
    plan = plan_of(f"optimizer={optimizer}")
    assert plan.optimizer["_target_"] == f"torch.optim.{ {'sgd': 'SGD', 'adam': 'Adam', 'adamw': 'AdamW'}[optimizer]}"
    assert plan.optimizer["_target_"] in PACKABLE_OPTIMIZERS
    assert plan_of().optimizer == {"_target_": "torch.optim.SGD", "lr": 0.01, "momentum": 0.9}  # the tutorial's


def test_fingerprint_covers_the_trainer_and_skips_only_the_listed_keys():
    """Finding 1: the fingerprint kept trainer.max_epochs and nothing else of the trainer."""
    base = plan_of()
    for changed in (["trainer.precision=bf16-mixed"], ["+trainer.gradient_clip_val=0.5"], ["optimizer=adam"],
                    ["trainer.deterministic=true"], ["data.batch_size=64"], ["seed=2"], ["cv.seed=2"],
                    ["data.scaling=center"], ["trainer.max_epochs=3"], ["+trainer.limit_train_batches=0.5"],
                    ["model=deepbn"], ["model=deepbn", "model.dropout=0.1"]):
        assert plan_of(*changed).fingerprint() != base.fingerprint(), changed
    for same in (["trainer.enable_progress_bar=false"], ["trainer.enable_model_summary=true"],
                 ["trainer.log_every_n_steps=10"], ["cv.workers=1"], ["cv.parallel=true"], ["data.eval_batch_size=64"],
                 ["data.root=/elsewhere"], ["data.download=false"]):
        assert plan_of(*same).fingerprint() == base.fingerprint(), same
    assert plan_of(cuda_available=True).fingerprint() != base.fingerprint()  # GPU arithmetic is other arithmetic
    assert len(NOT_IN_FINGERPRINT) <= 16  # a short explicit list


def fold_checkpoint(arch: str = "baseline", fold: int = 0) -> dict:
    """A finished fold's net, as the runners save it (nets.checkpoint_dict)."""
    from digitnet.nets import build_net, checkpoint_dict

    return checkpoint_dict(build_net(arch), {"arch": arch, "scaling": "normalize", "pixel_mean": 0.0,
                                             "pixel_std": 1.0, "fold": fold})


def test_resume_refuses_folds_of_another_trainer_setting(tmp_path):
    from digitnet.folds import FoldStore

    fp32 = FoldStore.for_plan(tmp_path, plan_of())
    result = {"fold": 0, "status": "ok", "score": 0.9, "history": [], "seconds": 1.0}
    fp32.save(result, fold_checkpoint())
    assert fp32.load(0) == result
    assert FoldStore.for_plan(tmp_path, plan_of("trainer.enable_progress_bar=false", "cv.workers=1")).load(0)
    with pytest.raises(UserError) as err:
        FoldStore.for_plan(tmp_path, plan_of("trainer.precision=bf16-mixed")).load(0)
    assert "fold_0.json was trained with another config (trainer.precision='32-true' there, 'bf16-mixed' now)" in str(err.value)


def test_resume_refuses_a_finished_fold_whose_net_is_missing_damaged_or_another_folds(tmp_path):
    """Resume said "(fold 1, finished earlier)" with fold_1.ckpt gone or truncated; evaluate then failed."""
    from digitnet.folds import FoldStore

    store = FoldStore.for_plan(tmp_path, plan_of())
    result = {"fold": 1, "status": "ok", "score": 0.9, "history": [], "seconds": 1.0}
    store.save(result, fold_checkpoint(fold=1))
    assert store.load(1) == result
    ckpt, retrain = store.checkpoint(1), f"delete {store.path(1)} and rerun: that fold trains again"
    good = ckpt.read_bytes()
    for damage, message in ((lambda: ckpt.write_bytes(good[:3000]), "a damaged or truncated checkpoint"),
                            (ckpt.unlink, "is missing, though fold_1.json says the fold finished"),
                            (lambda: store.save(result, fold_checkpoint(fold=0)), "holds the net of fold 0, not of "
                                                                                   "fold 1 (files swapped?)")):
        damage()
        with pytest.raises(UserError) as err:
            store.load(1)
        assert message in str(err.value) and str(err.value).endswith(retrain), err.value
    diverged = {**result, "fold": 2, "status": "diverged", "reason": "loss nan"}
    store.save(diverged)  # a diverged fold has no net to check
    assert store.load(2) == diverged


def test_run_dirs_from_before_dropout_resume_and_refusals_name_config_keys(tmp_path):
    """model.dropout came later: a fold saved without it is dropout 0, and a refusal says model.dropout, not the
    plan's field name."""
    from digitnet.folds import FoldStore
    from digitnet.plan import differences

    assert "dropout" not in plan_of("model=deepbn").fingerprint_fields()
    older = FoldStore(tmp_path, {k: v for k, v in plan_of("model=deepbn").fingerprint_fields().items() if k != "dropout"})
    result = {"fold": 0, "status": "ok", "score": 0.9, "history": [], "seconds": 1.0}
    older.save(result, fold_checkpoint("deepbn"))
    assert FoldStore.for_plan(tmp_path, plan_of("model=deepbn")).load(0) == result
    with pytest.raises(UserError, match=r"another config \(model.dropout=0.0 there, 0.25 now\)"):
        FoldStore.for_plan(tmp_path, plan_of("model=deepbn", "model.dropout=0.25")).load(0)
    assert set(differences(plan_of().fingerprint_fields(), plan_of("model=deep", "loss.label_smoothing=0.1",
                                                                    "data.limit=10").fingerprint_fields())) == {
        "data.limit=0 there, 10 now", "loss.label_smoothing=0.0 there, 0.1 now", "model.name='baseline' there, 'deep' now"}


def test_an_unresolvable_interpolation_is_one_user_error():
    with pytest.raises(UserError, match=r"model: cannot be read \(.*Environment variable 'DIGITNET_NOPE' not found"):
        plan_of("model=deepbn", "model.dropout=${oc.env:DIGITNET_NOPE}")


def test_plan_for_data_checks_fold_count_and_equal_folds():
    with pytest.raises(UserError, match="cv.n_folds=5 is more than the 4 training images"):
        plan_of().for_data(4)
    packed = plan_of("cv.parallel=true")
    assert packed.for_data(60000) is packed
    uneven = packed.for_data(60001)
    assert uneven.runner == "sequential" and "do not split into 5 equal folds" in uneven.notes[-1]


def test_plan_for_data_refuses_max_steps_that_end_a_fold_before_its_scoring_validation():
    # 60000 images, 5 folds: 48000 training images a fold, 1500 steps an epoch at batch 32, 15000 in 10 epochs.
    with pytest.raises(UserError, match=r"trainer.max_steps=14999 would stop a fold .* \(10 epoch\(s\) of 1500 steps"):
        plan_of("+trainer.max_steps=14999").for_data(60000)
    assert plan_of("+trainer.max_steps=15000").for_data(60000).trainer["max_steps"] == 15000
    # 257 images, 2 folds: the larger training set is 129 images, 4 batches of 32 and a dropped last batch of one.
    plan_of("+trainer.max_steps=4", "trainer.max_epochs=1", "cv.n_folds=2").for_data(257)
    with pytest.raises(UserError, match="trainer.max_steps=3 "):
        plan_of("+trainer.max_steps=3", "trainer.max_epochs=1", "cv.n_folds=2").for_data(257)
    # Steps are optimizer steps of the batches an epoch trains on (a second hostile try: these were refused).
    for extra, steps in (("+trainer.limit_train_batches=0.5", 2), ("+trainer.limit_train_batches=2", 2),
                         ("+trainer.accumulate_grad_batches=2", 3)):
        plan_of(extra, f"+trainer.max_steps={steps}", "trainer.max_epochs=1", "cv.n_folds=2").for_data(300)
    plan_of("+trainer.max_steps=null", "+trainer.min_steps=3").for_data(300)  # null is no limit (was a TypeError)
    final = plan_of("task=final", "+trainer.max_steps=3", "+trainer.max_time=00:00:01:00")  # a fit scored after it
    assert final.for_data(60000).trainer["max_steps"] == 3


def test_plan_for_data_refuses_a_limit_train_batches_fraction_that_leaves_no_batch():
    # 300 images, 2 folds: 150 training images a fold, 5 batches of 32; Lightning refuses int(5 * 0.1) = 0 mid-fit.
    with pytest.raises(UserError, match=r"limit_train_batches=0.1 leaves no batch of the 5 an epoch has; give at "
                                        r"least 0.2"):
        plan_of("+trainer.limit_train_batches=0.1", "cv.n_folds=2").for_data(300)
    assert plan_of("+trainer.limit_train_batches=0.2", "cv.n_folds=2").for_data(300).n_folds == 2
    for kept in ("1.0", "1", "0.2"):  # 1.0 all, 1 one batch
        plan_of(f"+trainer.limit_val_batches={kept}", "task=final").for_data(300)


def test_a_batch_larger_than_a_training_fold_is_a_note():
    plan = plan_of("data.batch_size=500", "cv.n_folds=2").for_data(300)
    assert plan.notes[-1] == ("data.batch_size=500 is more than the 150 training images of a fold: each epoch is "
                              "one batch of all of them")
    assert plan_of("data.batch_size=150", "cv.n_folds=2").for_data(300).notes == ()
    assert "of the fit" in plan_of("task=final", "data.batch_size=500").for_data(300).notes[-1]


def test_lists_agree_with_the_libraries():
    import inspect

    from lightning.pytorch import Trainer

    from digitnet.nets import NETS, SCALINGS as CHECKPOINT_SCALINGS
    from digitnet.runners import RUNNERS

    assert set(inspect.signature(Trainer.__init__).parameters) - {"self"} == TRAINER_ARGS
    assert tuple(NETS) == ARCHS
    assert CHECKPOINT_SCALINGS == SCALINGS
    assert set(RUNNERS) == {"sequential", "packed", "processes"}
    assert isinstance(plan_of(), RunPlan)


@pytest.mark.parametrize("overrides, message", [
    (["+new.key=3"], "new is not a digitnet setting"),
    (["+data.foo=1"], "data.foo is not a digitnet setting"),
    (["+cv.foo=1"], "cv.foo is not a digitnet setting"),
    (["+model.depth=99"], "model.depth is not a digitnet setting"),
    (["data.batch_size=99999999999999999999"], "data.batch_size=99999999999999999999 must be at most 2147483647"),
    (["data.eval_batch_size=99999999999999999999"], "must be at most"),
    (["trainer.log_every_n_steps=abc"], "trainer.log_every_n_steps='abc' is not a whole number"),
    (["trainer.log_every_n_steps=-1"], "trainer.log_every_n_steps=-1 must be at least 1"),
    (["+trainer.detect_anomaly=abc"], "trainer.detect_anomaly='abc' must be true or false"),
    (["+trainer.inference_mode=abc"], "trainer.inference_mode='abc' must be true or false"),
    (["+trainer.min_epochs=abc"], "trainer.min_epochs='abc' is not a whole number"),
    (["+trainer.val_check_interval=0"], "val_check_interval=0 would validate nothing"),
    (["+trainer.limit_val_batches=0"], "trainer.limit_val_batches=0: CV scores each fold"),
    (["+trainer.limit_train_batches=0"], "would train nothing"),
    (["+trainer.max_steps=0"], "would train nothing"),
    (["+trainer.limit_train_batches=1.5"], "must be a fraction in [0, 1]"),
    (["trainer.check_val_every_n_epoch=2", "trainer.max_epochs=3"], "skips the last of trainer.max_epochs=3"),
    (["+optimizer.nesterov=abc"], "optimizer.nesterov='abc' must be true or false"),
    (["optimizer._target_=torch.optim.SparseAdam", "~optimizer.momentum"], "torch.optim.SparseAdam rejects"),
    (["model=batchnorm", "data.batch_size=1"], "BatchNorm needs at least 2 images a batch"),
])
def test_more_bad_values_found_by_a_hostile_try(overrides, message):
    with pytest.raises(UserError) as err:
        plan_of(*overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_limit_above_the_data_says_so():
    plan = plan_of("data.limit=1e30".replace("1e30", "1000000")).for_data(60000)
    assert plan.limit == 0 and "data.limit=1000000 is more than the 60000 training images" in plan.notes[-1]


def test_a_sweep_checks_every_job_before_the_first_trains(tmp_path):
    sweep = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "-m", "digitnet.train", "-m", "optimizer.lr=0.01,-1", "data.limit=300",
                             f"hydra.sweep.dir={sweep}", f"data.root={tmp_path / 'nodata'}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "sweep job 1 (optimizer.lr=-1 data.limit=300 data.root=" in lines[0] and "nothing was run" in lines[0]
    assert not sweep.exists()


@pytest.mark.parametrize("argv, message", [
    (["data.limitt=5"], "Could not override 'data.limitt': no such key; check the spelling, or add one with "
                        "+data.limitt=5"),
    (["hydra.run.dir=/tmp/x/${oc.env:DIGITNET_SURELY_UNSET}"], "names an environment variable that is not set"),
    (["hydra.run.dir="], "hydra.run.dir is empty"),
    (["hydra.run.dir=/tmp/a b'c"], "cannot parse the override"),
])
def test_hydra_composition_errors_are_one_line(argv, message):
    result = subprocess.run([sys.executable, "-m", "digitnet.train", *argv], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
