"""cv.workers: folds in several processes give the sequential run's results, and split the cores between them."""

import json
import multiprocessing

import pytest
import torch

from conftest import compose_cfg, run_cli
from digitnet import workers
from digitnet.config import validate
from digitnet.errors import UserError


def test_workers_give_the_sequential_results_and_report(tmp_path, mnist_root):
    common = ["data.limit=600", "cv.n_folds=3", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
              f"data.root={mnist_root}"]
    # One thread everywhere, so that both runs do the same float operations in the same order.
    one_thread = {"OMP_NUM_THREADS": "1"}
    seq = run_cli("digitnet.train", *common, "cv.workers=1", f"hydra.run.dir={tmp_path / 'seq'}", env=one_thread)
    par = run_cli("digitnet.train", *common, "cv.workers=2", f"hydra.run.dir={tmp_path / 'par'}", env=one_thread)
    assert seq.returncode == 0 and par.returncode == 0, par.stderr[-2000:]
    assert "Training 3 folds in 2 processes" in par.stdout
    a = json.loads((tmp_path / "seq" / "cv_summary.json").read_text())
    b = json.loads((tmp_path / "par" / "cv_summary.json").read_text())
    assert a["fold_scores"] == b["fold_scores"] and a["history"] == b["history"]
    assert [f["confusion_matrix"] for f in a["folds"]] == [f["confusion_matrix"] for f in b["folds"]]
    for fold in range(3):
        assert (tmp_path / "par" / "folds" / f"fold_{fold}.json").is_file()
        assert list((tmp_path / "par" / "tb" / f"fold_{fold}").glob("events.out.tfevents.*"))
    for name in ("learning_curves.png", "cv_boxplot.png"):
        assert (tmp_path / "par" / name).is_file()


def test_cores_are_split_between_the_folds_that_can_run():
    before = torch.get_num_threads()
    unfinished = multiprocessing.get_context("spawn").Value("i", 5)
    try:
        workers.start(cores=4, workers=2, unfinished=unfinished)
        workers.share_cores()
        assert torch.get_num_threads() == 2
        unfinished.value = 1  # the others are done: the last fold takes every core
        workers.share_cores()
        assert torch.get_num_threads() == 4
        workers.start(cores=1, workers=2, unfinished=unfinished)
        unfinished.value = 5
        workers.share_cores()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("overrides, message", [
    (["cv.workers=0"], "cv.workers=0 must be auto or a positive whole number"),
    (["cv.workers=two"], "cv.workers='two' is not a whole number"),
    (["cv.workers=2", "cv.parallel=true"], "cv.workers=2 and cv.parallel=true exclude each other"),
])
def test_bad_workers_values_are_refused(overrides, message):
    with pytest.raises(UserError, match=message):
        validate(compose_cfg(*overrides))


def test_auto_workers_means_one_per_core_on_cpu_only():
    from digitnet.cv import workers_wanted

    cores = torch.get_num_threads()
    assert workers_wanted(compose_cfg("cv.workers=auto", "trainer.accelerator=cpu"), pending=5) == min(cores, 5)
    assert workers_wanted(compose_cfg("cv.workers=auto", "trainer.accelerator=cpu"), pending=1) == 1
    assert workers_wanted(compose_cfg("cv.workers=auto", "trainer.accelerator=cpu", "cv.parallel=true"), pending=5) == 1
    assert workers_wanted(compose_cfg("cv.workers=3", "trainer.accelerator=cpu"), pending=2) == 2


def test_eval_batch_size_auto_depends_on_the_device():
    from digitnet.config import eval_batch_size, resolve_auto

    assert eval_batch_size(compose_cfg("trainer.accelerator=cpu")) == 250
    assert eval_batch_size(compose_cfg("trainer.accelerator=gpu")) == 1000
    assert eval_batch_size(compose_cfg("trainer.accelerator=gpu", "data.eval_batch_size=64")) == 64
    cfg = compose_cfg("trainer.accelerator=cpu")
    resolve_auto(cfg)  # what run() does, so that the reports show the value used
    assert cfg.data.eval_batch_size == 250
