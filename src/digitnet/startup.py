"""Process settings made at the start of the processes that train or score (train, a fold worker, evaluate,
predict). Standard library only. Neither changes a result; docs/performance.md has what each saves.

- The cyclic garbage collector: importing torch, Lightning, torchmetrics and Hydra makes millions of objects and no
  garbage, yet the collector walks them over and over while they are made, and once more as the interpreter exits.
  Such a process collects nothing until its imports are done, then freezes what they
  made (gc.freeze: never walked again) and collects as usual.
- glibc's malloc hands blocks of a few MB (a training step's activations and gradients) back to the kernel as they
  are freed, so the next step gets fresh pages and pays a page fault for each one; the heap keeps them for reuse.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import os
import sys

_deferred = False
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
KEEP_BYTES = 32 << 20  # glibc's own ceiling for the mmap threshold on 64-bit; bigger blocks (the dataset) are mapped


def start_process() -> None:
    """At the start of the process, before its heavy imports."""
    global _deferred
    if _deferred:
        return
    _deferred = True
    gc.disable()
    atexit.register(gc.freeze)  # run after the handlers registered later: the exit's collection skips all objects
    names = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "mmap_threshold", "trim_threshold")
    tuned = any(name in os.environ.get("GLIBC_TUNABLES", "") or name in os.environ for name in names)
    if sys.platform.startswith("linux") and not tuned:  # the user's own thresholds stand
        try:
            libc = ctypes.CDLL(None)
            libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)
            libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)
        except (OSError, AttributeError):  # a libc without mallopt (musl): its own allocator's behaviour stands
            pass


def imports_done() -> None:
    """Once the run's imports are done. The cycles that became garbage before it stay (collecting them here costs
    more than they hold). A no-op where start_process was not called (a notebook, the
    tests) or after the first call (the next job of a sweep in the same process)."""
    if _deferred and not gc.isenabled():
        gc.freeze()
        gc.enable()
