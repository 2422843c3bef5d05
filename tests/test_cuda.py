"""The CUDA fast path, where a GPU exists (skipped elsewhere; bench/gpu_check.sh runs these on a lent GPU)."""

import pytest
import torch

from conftest import plan_of

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_the_plan_picks_the_gpu_path():
    plan = plan_of(cuda_available=True, cores=16)
    assert (plan.device, plan.runner, plan.cuda_graph) == ("cuda", "packed", True)


def test_captured_step_equals_the_eager_step_on_cuda(mnist_root, tmp_path):
    import lightning.pytorch as pl

    from digitnet.core.data import load_mnist
    from digitnet.engine.fit import make_datamodule
    from digitnet.engine.packed import train_folds

    plan = plan_of(
        "model=batchnorm",
        "data.limit=330",
        "cv.n_folds=3",
        "trainer.max_epochs=2",
        "cv.parallel=true",
        "trainer.accelerator=gpu",
        "data.eval_batch_size=1000",
        cuda_available=True,
    )
    arrays = load_mnist(mnist_root, download=False)
    runs = []
    for captured in (False, True):
        dms = {k: make_datamodule(plan, arrays, k) for k in range(3)}
        trainer = pl.Trainer(
            max_epochs=2,
            accelerator="gpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        model, _ = train_folds(
            trainer, plan, dms, lambda k, c=captured: pl.loggers.CSVLogger(tmp_path, version=f"{c}{k}"), captured
        )
        runs.append(model)
    eager, graphed = runs
    assert graphed.captured_step is not None and graphed.captured_step.graph is not None
    for a, b in zip(eager.net.state_dict().values(), graphed.net.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-4, rtol=1e-4)
    for a, b in zip(eager.histories, graphed.histories):
        assert a[-1]["val_acc"] == pytest.approx(b[-1]["val_acc"], abs=0.01)


def test_tiny_packed_cv_on_cuda_equals_sequential(mnist_root, tmp_path):
    from digitnet.train import run

    common = [
        "data.limit=1500",
        "cv.n_folds=3",
        "trainer.max_epochs=1",
        f"data.root={mnist_root}",
        "trainer.accelerator=gpu",
        "trainer.enable_progress_bar=false",
    ]
    packed = run(plan_of(*common, "cv.parallel=true", cuda_available=True), tmp_path / "packed")
    sequential = run(plan_of(*common, "cv.parallel=false", cuda_available=True), tmp_path / "sequential")
    assert packed["plan"]["runner"] == "packed" and sequential["plan"]["runner"] == "sequential"
    assert packed["fold_scores"] == pytest.approx(sequential["fold_scores"], abs=5e-3)
