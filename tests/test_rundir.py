"""Run dirs you can trust, through the real CLI: one writer at a time, refused reruns change nothing, no orphans."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli

TINY = ["data.limit=600", "cv.n_folds=3", "trainer.max_epochs=1"]


def snapshot(root: Path) -> dict:
    """Every file under root with its bytes and mtime: what 'left as it was' means."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()
    }


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state not in ("Z", "X")


def one_error_line(result, *named: str):
    """Exit 1, one line, no traceback, and each `named` field (a key, a path) in it."""
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and all(name in lines[0] for name in named), result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.slow
def test_a_busy_run_dir_is_refused(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from digitnet.engine.rundir import RunDirLock; RunDirLock(Path(sys.argv[1])); print('held', "
            "flush=True); time.sleep(120)",
            str(run_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run_cli("digitnet.train", *TINY, f"data.root={mnist_root}", f"hydra.run.dir={run_dir}")
        one_error_line(result, str(run_dir), f"PID {holder.pid}", "hydra.run.dir")
        assert not (run_dir / "folds").exists() and not (run_dir / ".hydra").exists()
    finally:
        holder.kill()
        holder.wait()
    result = run_cli("digitnet.train", *TINY, f"data.root={mnist_root}", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]  # released with its holder


@pytest.mark.slow
def test_refused_reruns_change_nothing(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    first = run_cli("digitnet.train", *TINY, f"data.root={mnist_root}", f"hydra.run.dir={run_dir}")
    assert first.returncode == 0, first.stderr[-2000:]
    before = snapshot(run_dir)
    assert ".hydra/overrides.yaml" in before and "plan.json" in before
    result = run_cli("digitnet.train", *TINY, "optimizer.lr=0.1", f"data.root={mnist_root}", f"hydra.run.dir={run_dir}")
    one_error_line(result, "fold_0.json", "optimizer.lr")
    assert snapshot(run_dir) == before
    (run_dir / "folds" / "fold_1.json").write_text("{trunc")
    result = run_cli("digitnet.train", *TINY, f"data.root={mnist_root}", f"hydra.run.dir={run_dir}")
    one_error_line(result, str(run_dir / "folds" / "fold_1.json"))

    # A sweep: Hydra's own files too (multirun.yaml, each job's .hydra/), and summarize keeps its labels.
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "data.limit=600",
        "cv.n_folds=2",
        "trainer.max_epochs=1",
        f"data.root={mnist_root}",
        f"hydra.sweep.dir={sweep}",
    ]
    assert run_cli("digitnet.train", *args, "optimizer.lr=0.01,0.05").returncode == 0
    before = snapshot(sweep)
    result = run_cli("digitnet.train", *args, "optimizer.lr=0.02,0.05")
    one_error_line(result, str(sweep), "optimizer.lr=0.01,0.05")
    assert snapshot(sweep) == before
    summary = run_cli("digitnet.summarize", sweep)
    assert "optimizer.lr=0.01" in summary.stdout and "optimizer.lr=0.02" not in summary.stdout
    resumed = run_cli("digitnet.train", *args, "optimizer.lr=0.01,0.05")  # the same sweep resumes
    assert resumed.returncode == 0 and resumed.stdout.count("finished earlier") == 4


@pytest.mark.slow
def test_final_never_overwrites(tmp_path, mnist_root):
    args = [
        "task=final",
        "data.limit=600",
        "trainer.max_epochs=1",
        f"data.root={mnist_root}",
        f"hydra.run.dir={tmp_path / 'final'}",
    ]
    first = run_cli("digitnet.train", *args)
    assert first.returncode == 0, first.stderr[-2000:]
    before = snapshot(tmp_path / "final")
    again = run_cli("digitnet.train", *args)
    assert again.returncode == 0 and str(tmp_path / "final" / "final.ckpt") in again.stdout
    after = snapshot(tmp_path / "final")
    for kept in ("final.ckpt", "test_metrics.json", "plan.json", ".hydra/config.yaml"):
        assert after[kept] == before[kept]
    assert after.keys() == before.keys()  # only train.log (the rerun's line) and the lock file were touched
    before = after
    other = run_cli("digitnet.train", *args, "optimizer.lr=0.05")
    one_error_line(other, "optimizer.lr")
    cv = run_cli("digitnet.train", *args[1:], "cv.n_folds=2")
    one_error_line(cv, "task=final", "hydra.run.dir")
    assert snapshot(tmp_path / "final") == before
    rerun = run_cli("digitnet.train", *args, "cv.n_folds=3")  # no CV setting is part of a final fit
    assert rerun.returncode == 0 and str(tmp_path / "final" / "final.ckpt") in rerun.stdout, rerun.stderr[-2000:]
    assert len(list((tmp_path / "final" / "tb" / "final").glob("events.out.tfevents.*"))) == 1
    # Stopped between saving final.ckpt and scoring it: the rerun scores the saved model, and fits nothing.
    scored = (tmp_path / "final" / "test_metrics.json").read_text()
    (tmp_path / "final" / "test_metrics.json").unlink()
    (tmp_path / "final" / "confusion_matrix.png").unlink()
    rescored = run_cli("digitnet.train", *args)
    assert rescored.returncode == 0 and "> " in rescored.stdout, rescored.stderr[-2000:]
    assert (
        json.loads(scored)["accuracy"] == json.loads((tmp_path / "final" / "test_metrics.json").read_text())["accuracy"]
    )
    assert (tmp_path / "final" / "confusion_matrix.png").is_file() and snapshot(tmp_path / "final")[
        "final.ckpt"
    ] == before["final.ckpt"]


def start_run(run_dir, mnist_root, *extra):
    args = [
        "data.limit=6000",
        "cv.n_folds=3",
        "trainer.max_epochs=5",
        f"data.root={mnist_root}",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "digitnet.train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def log_tail(run_dir: Path, lines: int = 60) -> str:
    log = run_dir / "train.log"
    return "\n".join(log.read_text().splitlines()[-lines:]) if log.is_file() else "(no train.log)"


def wait_for_epoch_line(proc, deadline=180):
    end = time.time() + deadline
    for line in proc.stdout:
        if ", epoch 1/5" in line or time.time() > end:
            return


@pytest.mark.slow
def test_workers_die_with_their_parent(tmp_path, mnist_root):
    proc = start_run(tmp_path / "run", mnist_root, "cv.workers=2")
    try:
        wait_for_epoch_line(proc)
        workers = children(proc.pid)
        assert len(workers) >= 2, workers  # the pool's processes (and its resource tracker)
        proc.kill()  # SIGKILL: no handler runs in the parent
        proc.wait()
        deadline = time.time() + 20
        while any(alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(alive(w) for w in workers)
    finally:
        for w in children(proc.pid):
            os.kill(w, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_is_handled_as_ctrl_c(tmp_path, mnist_root, workers):
    proc = start_run(tmp_path / "run", mnist_root, f"cv.workers={workers}")
    wait_for_epoch_line(proc)
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        err = proc.communicate()[1]
        raise AssertionError(
            f"no exit 120 s after SIGTERM; stderr ends:\n{err[-3000:]}\ntrain.log ends:\n{log_tail(tmp_path / 'run')}"
        ) from None
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == [
        f"digitnet.train: terminated (SIGTERM); rerun the same command to resume "
        f"(finished folds are in {tmp_path / 'run'})"
    ]
    time.sleep(1)
    assert not [w for w in children(proc.pid) if alive(w)]


HANGS = """
import os, signal, sys, threading, time
from pathlib import Path
from digitnet.engine import interrupts
interrupts.EXIT_GRACE_SECONDS = 0.5
interrupts.interrupt.install(Path(sys.argv[1]))
interrupts.interrupt.kept = True
threading.Thread(target=time.sleep, args=(600,)).start()  # not a daemon: a normal exit would wait 600 s for it
try:
    os.kill(os.getpid(), signal.SIGTERM)
except KeyboardInterrupt:
    if sys.argv[2] == "in-shutdown":
        threading.Event().wait(600)  # a library's shutdown that never ends, before digitnet's handler is reached
    interrupts.interrupt.say()
    raise SystemExit(143)  # as main does; the exit then waits for the thread
"""


@pytest.mark.parametrize("where", ["in-shutdown", "at-exit"])
def test_an_interrupted_run_leaves_whatever_holds_it(tmp_path, where):
    """CI twice saw a run not exit within 120 s of a SIGTERM: once after its line, once before it. From the signal
    on, the run leaves within EXIT_GRACE_SECONDS whatever holds it, with its one line and the interrupt's exit code,
    and train.log says where it hung."""
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", HANGS, str(tmp_path), where], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 143 and time.time() - start < 30, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"digitnet.train: terminated (SIGTERM); rerun the same command to resume (finished folds are in {tmp_path})"
    ]
    log = (tmp_path / "train.log").read_text()
    assert "still not out 0.5 s after the interrupt; leaving" in log and "Thread 0x" in log


SIGNAL_IN_A_FINALIZER = """
import os, signal, sys, time
from pathlib import Path
from digitnet.engine import interrupts
interrupts.interrupt.install(Path(sys.argv[1]))
class Tensor:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        sum(range(1000))  # the handler runs here, inside __del__, where Python only prints what it raises
Tensor()
time.sleep(60)  # training goes on
"""


def test_a_signal_that_lands_in_a_finalizer_still_ends_the_run(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", SIGNAL_IN_A_FINALIZER, str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines() == ["digitnet.train: terminated (SIGTERM)"]  # no "Exception ignored"


EARLY = """
import os, signal, time
from digitnet.engine.interrupts import catch_early
catch_early()
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(60)
"""


def test_a_signal_before_the_run_starts_is_one_line():
    """A Ctrl-C or SIGTERM during the imports and checks before a run (the first half second) is its one line too:
    it was a KeyboardInterrupt traceback, or a silent death by signal."""
    proc = subprocess.run([sys.executable, "-c", EARLY], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 143 and proc.stderr == "digitnet.train: terminated (SIGTERM)\n", proc.stderr


def test_an_error_after_an_interrupt_is_the_interrupt():
    """A Ctrl-C that cuts an import short can surface as an ImportError on its retry (seen: pybind11's 'type is
    already registered'): after a signal, an error is the interrupt's doing, not a bug to report."""
    from digitnet.engine.interrupts import Interrupt

    run = Interrupt()
    with pytest.raises(ImportError), run.consequences():
        raise ImportError("no signal: a real error stays itself")
    run.note(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), run.consequences():
        raise ImportError('generic_type: type "ObjSense" is already registered!')


@pytest.mark.parametrize(
    "task, line",
    [
        ("cv", "digitnet.train: terminated (SIGTERM); rerun the same command to resume (finished folds are in RUN)"),
        (
            "final",
            "digitnet.train: terminated (SIGTERM); the fit was not finished (nothing of it is kept): rerun the "
            "same command to fit again",
        ),
        # Stopped after the save and before the holdout: it said "nothing is kept", and the rerun never scored it.
        (
            "final saved",
            "digitnet.train: terminated (SIGTERM); the fit had finished and RUN/final.ckpt is saved: rerun "
            "the same command to score it on the holdout",
        ),
    ],
)
def test_the_interrupt_line_says_what_a_rerun_does(tmp_path, capsys, task, line):
    from digitnet.engine.interrupts import Interrupt

    if task == "final saved":
        task = "final"
        (tmp_path / "final.ckpt").write_bytes(b"")
    run = Interrupt()
    run.reset(tmp_path)
    run.kept, run.task = True, task
    run.note(signal.SIGTERM)
    run.say()
    run.say()  # said once
    assert capsys.readouterr().err == line.replace("RUN", str(tmp_path)) + "\n"


@pytest.mark.slow
def test_ctrl_c_at_a_terminal_while_fold_workers_start_is_one_line(tmp_path, mnist_root):
    """A terminal's Ctrl-C reaches the whole process group: fold workers still importing used to print their
    tracebacks into the run's output."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "digitnet.train",
            "data.limit=6000",
            "cv.n_folds=3",
            "cv.workers=2",
            f"data.root={mnist_root}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for line in proc.stdout:
        if "fold workers" in line or "task=cv" in line:
            break
    time.sleep(1.2)  # the pool has spawned its workers, which import torch and Lightning (5 lines here before)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines() == [
        f"digitnet.train: interrupted; rerun the same command to resume (finished folds are in {tmp_path / 'run'})"
    ], err


@pytest.mark.slow
def test_a_blown_up_loss_is_divergence_and_chance_is_flagged(tmp_path, mnist_root):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "digitnet.train",
        "-m",
        "optimizer.lr=50,0.5,0.05",
        "data.limit=600",
        "cv.n_folds=3",
        "trainer.max_epochs=1",
        f"data.root={mnist_root}",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-2000:]  # a diverged or chance job is a result of the sweep
    exploded = json.loads((sweep / "0" / "cv_summary.json").read_text())
    assert exploded["status"] == "diverged" and "over 10x its first value" in exploded["folds"][0]["reason"]
    chance = json.loads((sweep / "1" / "cv_summary.json").read_text())
    assert chance["status"] == "ok" and chance["n_at_chance"] == 3 and all(f["at_chance"] for f in chance["folds"])
    md = (sweep / "sweep_summary.md").read_text()
    assert "| diverged |" in md and "| ok, 3 at chance |" in md
    assert "Best: job 2 (optimizer.lr=0.05)" in md


@pytest.mark.parametrize("task", ["cv", "final"])
def test_a_run_dir_whose_run_finished_nothing_says_to_delete_it(tmp_path, task):
    """A first try that failed (a bad trainer setting, say) left plan.json: "rerun with the same settings" would
    fail again, so the line says the dir holds nothing finished."""
    from conftest import plan_of
    from digitnet.engine.rundir import check_compatible
    from digitnet.errors import UserError
    from digitnet.layout import write_json_atomic

    write_json_atomic(tmp_path / "plan.json", plan_of(f"task={task}", "optimizer.lr=0.01").as_dict())
    with pytest.raises(UserError) as nothing:
        check_compatible(tmp_path, plan_of(f"task={task}", "optimizer.lr=0.05"))
    if task == "final":
        (tmp_path / "final.ckpt").write_bytes(b"")
        with pytest.raises(UserError) as finished:
            check_compatible(tmp_path, plan_of(f"task={task}", "optimizer.lr=0.05"))
        assert "delete" in str(nothing.value) and "delete" not in str(finished.value)  # the fix differs


def test_a_run_dir_is_checked_for_its_place_kinds_and_writability_before_anything(tmp_path):
    """A run inside another run's folds/ was accepted; plan.json or a fold file as a folder failed after files had
    changed (a fold retrained over its checkpoint); a read-only run dir (root passes access()) failed late."""
    from digitnet.engine.rundir import check_place
    from digitnet.errors import UserError

    run = tmp_path / "run"
    (run / "folds").mkdir(parents=True)
    (run / "plan.json").write_text("{}")
    check_place(run)
    for inner in (run / "folds", run / "folds" / "new" / "deeper"):
        with pytest.raises(UserError):
            check_place(inner)
    for name in ("train.log", ".digitnet.lock", "folds/fold_1.json", "cv_summary.json", "samples.png"):
        (run / name).mkdir()
        with pytest.raises(UserError) as err:
            check_place(run)
        assert err.value.path == run / name
        (run / name).rmdir()
    (run / "train.log").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UserError) as err:
        check_place(run)
    assert err.value.path == run / "train.log"
    (run / "train.log").unlink()
    with pytest.raises(UserError) as err:
        check_place(Path("/sys/kernel"))
    assert err.value.path == Path("/sys/kernel")
    with pytest.raises(UserError):  # a run here would strand the run below
        check_place(tmp_path)


@pytest.mark.parametrize("other", [{"n_train": 999}, {"n_train": 1000, "seed": 7}])
def test_a_resume_never_mixes_data_sets(tmp_path, other):
    """The fingerprint held the config, not the data: a 2-fold run resumed on another training file finished with
    one fold of each data set, and its mean said nothing of it."""
    from conftest import make_synthetic_mnist, plan_of
    from digitnet.engine.rundir import check_compatible
    from digitnet.errors import UserError
    from digitnet.train import prepare, run

    first = make_synthetic_mnist(tmp_path / "first", n_train=1000)
    second = make_synthetic_mnist(tmp_path / "second", n_test=20, **other)
    tiny = ["cv.n_folds=2", "trainer.max_epochs=1", "cv.workers=1", "data.batch_size=100"]
    run_dir = tmp_path / "run"
    run(plan_of(f"data.root={first}", *tiny), run_dir)
    for partial in (run_dir / "folds").glob("fold_1.*"):
        partial.unlink()
    before = snapshot(run_dir)
    with pytest.raises(UserError) as err:
        check_compatible(run_dir, prepare(plan_of(f"data.root={second}", *tiny))[0])
    assert err.value.path == run_dir / "folds" / "fold_0.json" and snapshot(run_dir) == before
    check_compatible(run_dir, prepare(plan_of(f"data.root={first}", *tiny))[0])  # the same data resumes


@pytest.mark.slow
def test_a_second_run_into_a_busy_job_dir_names_the_sweep_dir(tmp_path, mnist_root):
    """In a sweep the folder to change is hydra.sweep.dir, not hydra.run.dir."""
    sweep = tmp_path / "sweep"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from digitnet.engine.rundir import RunDirLock; RunDirLock(Path(sys.argv[1])); "
            "print('held', flush=True); time.sleep(120)",
            str(sweep / "0"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run_cli(
            "digitnet.train",
            "-m",
            "seed=1,2",
            "data.limit=300",
            "cv.n_folds=2",
            "trainer.max_epochs=1",
            f"data.root={mnist_root}",
            f"hydra.sweep.dir={sweep}",
        )
        assert result.returncode == 1 and "hydra.sweep.dir" in result.stderr and "hydra.run.dir" not in result.stderr
    finally:
        holder.kill()
        holder.wait()
