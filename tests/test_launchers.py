"""Every process a sweep starts ends with it, whatever its launcher: on Ctrl-C or SIGTERM to the sweep's process (its
launcher's workers, submitit's controllers, a local Ray instance, fold workers); a normal Ray sweep's in
test_search.py. Counted by the processes left afterwards, not by the messages."""

import os
import signal
import subprocess
import sys
import time

import pytest

from digitnet.engine.interrupts import descendants

TINY = ["data.limit=600", "cv.n_folds=2", "trainer.enable_progress_bar=false", "optimizer.lr=0.01,0.02"]
LAUNCHERS = {
    "basic": [],
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "submitit_local": ["hydra/launcher=submitit_local"],
    "ray": ["hydra/launcher=ray"],
}


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def sweep(tmp_path, mnist_root, launcher, epochs, signum=None, group=False):
    """Run a two-job sweep; with `signum`, send it to the sweep's process once a job trains (`group`: to its whole
    process group, as a terminal's Ctrl-C or `timeout` sends it). Returns (exit code, stderr, every process seen
    below the sweep's)."""
    pytest.importorskip({"basic": "hydra", "submitit_local": "submitit"}.get(launcher, launcher))
    args = [*TINY, f"trainer.max_epochs={epochs}", f"data.root={mnist_root}", f"hydra.sweep.dir={tmp_path / 's'}"]
    err = open(tmp_path / "stderr", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "digitnet.train", "-m", *args, *LAUNCHERS[launcher]],
        stdout=subprocess.DEVNULL,
        stderr=err,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        start_new_session=True,  # a signal reaches the sweep's process alone, as `kill PID` sends it
    )
    seen, deadline = set(), time.time() + 300
    try:
        while proc.poll() is None and time.time() < deadline:
            seen.update(descendants(proc.pid))
            if signum and any((tmp_path / "s").glob("*/folds/fold_0.json")):  # a job is training its second fold
                os.killpg(proc.pid, signum) if group else proc.send_signal(signum)
                break
            time.sleep(0.1)
        while proc.poll() is None and time.time() < deadline:
            seen.update(descendants(proc.pid))
            time.sleep(0.1)
    finally:
        proc.kill()
    time.sleep(2.0)  # what a process left behind would print after the command
    err.seek(0)
    return proc.wait(), err.read(), seen


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher, signum, group",
    [  # SIGTERM to the sweep's process (kill, a cluster), SIGINT to its process group (a terminal's Ctrl-C)
        ("joblib", signal.SIGTERM, False),
        ("joblib", signal.SIGINT, True),
        ("submitit_local", signal.SIGINT, True),
        ("ray", signal.SIGTERM, False),
    ],
)
def test_an_interrupted_sweep_ends_every_process_it_started(tmp_path, mnist_root, launcher, signum, group):
    """joblib's workers trained on after the sweep exited; submitit's controllers printed tracebacks after it; a
    local Ray instance's agents lived on; Ray's own SIGTERM handler made the sweep exit 1 with a stack dump."""
    code, err, seen = sweep(tmp_path, mnist_root, launcher, epochs=30, signum=signum, group=group)
    assert code == 128 + signum and "Traceback" not in err, err[-3000:]
    assert seen and not [pid for pid in seen if running(pid)], seen
    assert any((tmp_path / "s").glob("*/folds/fold_0.json"))  # what finished is kept


@pytest.mark.slow
@pytest.mark.parametrize("key", ["num_cpus", "num_gpus"])
def test_a_ray_job_that_asks_for_more_than_the_machine_has_is_refused_before_any_job(tmp_path, key):
    """It waited for the resources for ever, saying nothing."""
    pytest.importorskip("ray")
    result = subprocess.run(
        [sys.executable, "-m", "digitnet.train", "-m", "seed=1,2", "hydra/launcher=ray",
         f"+hydra.launcher.ray.remote.{key}=64", f"hydra.sweep.dir={tmp_path / 's'}"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert result.returncode == 1 and f"hydra.launcher.ray.remote.{key}" in result.stderr, result.stderr
    assert not (tmp_path / "s" / "0").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_a_runs_whole_process_group_ends_it_without_a_traceback(tmp_path, mnist_root, signum):
    """`timeout -s TERM` and a terminal's Ctrl-C signal every process of the group, fold workers included: a worker
    printed a 17-line `Process SpawnProcess-2: Traceback ... KeyboardInterrupt` in 2 of 9 tries."""
    args = ["data.limit=1200", "cv.n_folds=3", "cv.workers=2", "trainer.max_epochs=20", f"data.root={mnist_root}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "digitnet.train", *args, f"hydra.run.dir={tmp_path / 'run'}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    seen, deadline = set(), time.time() + 300
    while proc.poll() is None and time.time() < deadline and len(seen) < 2:
        seen.update(descendants(proc.pid))  # the two fold workers
        time.sleep(0.1)
    time.sleep(2.0)  # into their imports or their first steps
    os.killpg(proc.pid, signum)
    _, err = proc.communicate(timeout=60)
    time.sleep(1.0)
    assert proc.returncode == 128 + signum and "Traceback" not in err, err[-3000:]
    assert not [pid for pid in seen if running(pid)]
