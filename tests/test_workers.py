"""cv.workers: folds in several processes give the sequential run's results, and split the cores between them."""

import json
import multiprocessing

import pytest
import torch

from conftest import run_cli
from digitnet.engine import workers


@pytest.mark.slow
def test_workers_give_the_sequential_results_and_report(tmp_path, mnist_root):
    common = [
        "data.limit=600",
        "cv.n_folds=3",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        f"data.root={mnist_root}",
    ]
    # One thread everywhere, so that both runs do the same float operations in the same order.
    one_thread = {"OMP_NUM_THREADS": "1"}
    seq = run_cli("digitnet.train", *common, "cv.workers=1", f"hydra.run.dir={tmp_path / 'seq'}", env=one_thread)
    par = run_cli("digitnet.train", *common, "cv.workers=2", f"hydra.run.dir={tmp_path / 'par'}", env=one_thread)
    assert seq.returncode == 0 and par.returncode == 0, par.stderr[-2000:]
    assert "3 folds in 2 processes" in par.stdout
    a = json.loads((tmp_path / "seq" / "cv_summary.json").read_text())
    b = json.loads((tmp_path / "par" / "cv_summary.json").read_text())
    assert a["fold_scores"] == b["fold_scores"] and a["history"] == b["history"]
    assert [f["confusion_matrix"] for f in a["folds"]] == [f["confusion_matrix"] for f in b["folds"]]
    for fold in range(3):
        assert (tmp_path / "par" / "folds" / f"fold_{fold}.json").is_file()
        assert list((tmp_path / "par" / "tb" / f"fold_{fold}").glob("events.out.tfevents.*"))
    for name in ("learning_curves.png", "cv_boxplot.png"):
        assert (tmp_path / "par" / name).is_file()


def test_cores_are_split_between_the_folds_that_can_run(monkeypatch):
    before = torch.get_num_threads()
    unfinished = multiprocessing.get_context("spawn").Value("i", 5)
    monkeypatch.setattr(workers, "_state", {"cores": 4, "workers": 2, "unfinished": unfinished})
    try:
        workers.share_cores()
        assert torch.get_num_threads() == 2
        unfinished.value = 1  # the others are done: the last fold takes every core
        workers.share_cores()
        assert torch.get_num_threads() == 4
        workers._state.update(cores=1)
        unfinished.value = 5
        workers.share_cores()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_worker_that_dies_is_an_error_not_a_wait():
    """A worker killed from outside (the OOM killer) never sends its fold: the parent says so instead of waiting."""
    import os

    from digitnet.engine.cv import _next_result
    from digitnet.errors import UserError

    context = multiprocessing.get_context("spawn")
    dead = context.Process(target=os._exit, args=(9,))
    dead.start()
    dead.join()
    with pytest.raises(UserError):
        _next_result(context.Queue(), [dead])


@pytest.mark.slow
def test_a_fold_that_fails_in_its_worker_stops_every_worker(tmp_path):
    """Standardizing images of one shade fails inside each worker: the run stops with a UserError naming the fold,
    and no worker process is left (they are killed, whatever Lightning does with SIGTERM inside a fit)."""
    import numpy as np

    from conftest import plan_of, write_idx
    from digitnet.errors import UserError
    from digitnet.train import run

    root = tmp_path / "flat"
    root.mkdir()
    for prefix, n in (("train", 40), ("t10k", 10)):
        write_idx(root / f"{prefix}-images-idx3-ubyte", np.full((n, 28, 28), 7), 2051)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, 2049)
    plan = plan_of(
        f"data.root={root}", "data.scaling=standardize", "cv.n_folds=2", "cv.workers=2", "trainer.max_epochs=1"
    )
    with pytest.raises(UserError):
        run(plan, tmp_path / "run")
    assert multiprocessing.active_children() == []
    assert not list((tmp_path / "run" / "folds").glob("fold_*"))
