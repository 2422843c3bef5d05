"""Ctrl-C and SIGTERM in `digitnet.train`: one line, the right exit code (130/143), nothing finished lost, and out
within EXIT_GRACE_SECONDS whatever holds the process. Standard library only: train.py sets the early handlers before
its own imports (about 0.4 s)."""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from digitnet import layout

PROG = "digitnet.train"  # train.py's name for itself in its lines
END_GRACE_SECONDS = 10.0  # for a launcher's jobs to say what they keep and leave, before SIGKILL


def _what(signals: list[int]) -> tuple[str, int]:
    """What the line says, and the exit code (128 + the signal, as a shell reports it): SIGTERM wins over Ctrl-C."""
    return ("terminated (SIGTERM)", 143) if signal.SIGTERM in signals else ("interrupted", 130)


def _leave_at_once(signum, frame):
    """Ctrl-C or SIGTERM outside a run (the imports, the checks before it, after it), or in a sweep's own process
    while a launcher runs its jobs elsewhere (joblib's workers, submitit's controllers, a local Ray instance): what
    runs is ended, each job keeps its finished folds; one line."""
    if interrupt.signals:  # a second signal while a run leaves on the first: it is leaving already
        return
    interrupt.signals.append(signum)
    sys.setswitchinterval(60.0)  # this thread alone from here: no library thread reacts to what is ended below
    what, code = _what([signum])
    os.write(2, f"{PROG}: {what}\n".encode())
    end_descendants(grace=0)  # the jobs' finished folds are on disk already; their helpers have nothing to say
    os._exit(code)


def descendants(pid: int | None = None) -> list[int]:
    """Every process below `pid` (this one), children first; [] where /proc cannot tell (not Linux)."""
    parents = {}
    try:
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    with open(f"/proc/{entry.name}/stat", "rb") as f:
                        parents[int(entry.name)] = int(f.read().rsplit(b")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):  # gone since the listing
                    pass
    except OSError:
        return []
    found, todo = [], [os.getpid() if pid is None else pid]
    while todo:
        above = todo.pop(0)
        below = [child for child, parent in parents.items() if parent == above]
        found += below
        todo += below
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (one that ended, waiting for its parent to collect it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def end_descendants(grace: float = END_GRACE_SECONDS) -> None:
    """End every process this one started, and theirs. With `grace`, SIGTERM first (a job keeps its finished folds
    and says so) and up to `grace` seconds to leave; then every one still running is stopped (SIGSTOP: none sees
    another die and says so, as loky's resource tracker would) and killed. The whole tree is listed first: a process
    whose parent dies is still ended. Nothing is waited for after SIGKILL: the caller leaves at once, before a
    library's thread here can start a helper anew."""
    pids = descendants()
    if grace > 0:
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while (pids := [pid for pid in pids if _running(pid)]) and time.monotonic() < deadline:
            time.sleep(0.05)
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            _signal(pid, sig)


def collect_descendants(stop, seconds: float = 5.0) -> None:
    """Call `stop()` (a library's own shutdown of the processes it started) as this process's subreaper
    (PR_SET_CHILD_SUBREAPER, Linux): what outlives its own parent comes here and is collected, rather than left
    behind as a zombie where no init collects them; what still runs `seconds` later is ended."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_CHILD_SUBREAPER = 36
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)
    stop()
    deadline = time.monotonic() + seconds
    while [p for p in descendants() if _running(p)] and time.monotonic() < deadline:
        _collect()
        time.sleep(0.05)
    end_descendants(grace=0)
    time.sleep(0.1)
    _collect()


def _collect() -> None:
    """Collect every child that has ended."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:  # none left
        pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:  # ended already
        pass


def catch_early() -> None:
    """From the start of the process until a run installs its own handlers (and again after it)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # `cmd &` ignores Ctrl-C in what it starts: it stays so
            signal.signal(sig, _leave_at_once)


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a cluster's time limit): handled as Ctrl-C is, so that finished folds are kept."""


EXIT_GRACE_SECONDS = 30.0  # a normal exit after an interrupt takes a second or two


class Interrupt:
    """What a run says and does once Ctrl-C or SIGTERM arrives. The signal is remembered apart from the exception
    (Lightning's fit turns any KeyboardInterrupt into its own exit), and the handler sets a deadline: CI saw a run
    neither print its line nor exit within 120 s of a SIGTERM, so something held it before main's `except` (a
    library's shutdown, or a __del__ that swallowed the exception). Every fold is saved as it ends, so leaving at the
    deadline loses nothing finished; where each thread stood goes to train.log for the bug report."""

    def __init__(self):
        self.watchdog: threading.Thread | None = None
        self.reset(None)

    def reset(self, run_dir: Path | None) -> None:
        self.signals: list[int] = []
        self.deadline: float | None = None
        self.run_dir = run_dir
        self.kept = False  # the run dir holds this run (its lock was taken): a rerun resumes it
        self.task = "cv"
        self.said = False

    def install(self, run_dir: Path):
        """Handle Ctrl-C and SIGTERM for a run into run_dir; returns what puts the previous handlers back."""
        self.reset(run_dir)
        # Started here, not in the handler: a signal can land while the main thread holds threading's own locks.
        if self.watchdog is None:
            self.watchdog = threading.Thread(target=self._watch, name="digitnet-interrupt-watchdog", daemon=True)
            self.watchdog.start()
        # A signal the caller ignores stays ignored (`cmd &` ignores Ctrl-C in what it starts).
        previous = {
            sig: signal.signal(sig, self.handle)
            for sig in (signal.SIGINT, signal.SIGTERM)
            if signal.getsignal(sig) is not signal.SIG_IGN
        }
        unraisable = sys.unraisablehook

        def leave_if_swallowed(info):
            # A signal that lands in a __del__ (a tensor, a DataLoader iterator being collected) raises there, and
            # Python prints "Exception ignored" and goes on training. Leave as the handler would have.
            if isinstance(info.exc_value, KeyboardInterrupt) and self.signals:
                self.say(held=True)
                os._exit(self.code())
            unraisable(info)

        sys.unraisablehook = leave_if_swallowed

        def restore():
            sys.unraisablehook = unraisable
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    @contextmanager
    def consequences(self):
        """An error raised after an interrupt is taken for the interrupt: a Ctrl-C that cuts an import short (seen:
        pybind11's 'type is already registered' on the retry) is no bug to report."""
        try:
            yield
        except Exception:
            if self.signals:
                raise KeyboardInterrupt from None
            raise

    def handle(self, signum, frame):
        self.note(signum)
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    def note(self, signum: int) -> None:
        """Remember the interrupt; from now on the run leaves within EXIT_GRACE_SECONDS, whatever holds it."""
        self.signals.append(signum)
        if self.deadline is None:
            self.deadline = time.monotonic() + EXIT_GRACE_SECONDS

    def code(self) -> int:
        return _what(self.signals)[1]

    def say(self, held: bool = False) -> None:
        if not self.said:
            self.said = True
            what = _what(self.signals)[0]
            kept = ""
            if self.kept and self.task == "final" and (self.run_dir / layout.FINAL_CKPT).exists():
                # stopped after the fit and its save: the rerun scores the saved model (train.py, final.score_saved)
                kept = (
                    f"; the fit had finished and {self.run_dir / 'final.ckpt'} is saved: rerun the same command to "
                    "score it on the holdout"
                )
            elif self.kept and self.task == "final":
                kept = "; the fit was not finished (nothing of it is kept): rerun the same command to fit again"
            elif self.kept:
                kept = f"; rerun the same command to resume (finished folds are in {self.run_dir})"
            if held:  # the held main thread may hold sys.stderr's lock: write to the descriptor itself
                os.write(2, f"{PROG}: {what}{kept}\n".encode())
            else:
                print(f"{PROG}: {what}{kept}", file=sys.stderr, flush=True)

    def _watch(self) -> None:
        # Polls a plain attribute: nothing here waits on a lock that the interrupted main thread might hold.
        while self.deadline is None or time.monotonic() < self.deadline:
            time.sleep(0.1)
        try:
            self.say(held=True)
            log = self.run_dir / layout.TRAIN_LOG if self.run_dir else None
            if log and log.parent.is_dir():
                with open(log, "a") as f:
                    f.write(
                        f"digitnet: still not out {EXIT_GRACE_SECONDS:g} s after the interrupt; leaving. The threads:\n"
                    )
                    f.flush()
                    faulthandler.dump_traceback(file=f, all_threads=True)
        finally:
            end_descendants(grace=1.0)
            os._exit(self.code())


interrupt = Interrupt()  # the process's one run at a time
