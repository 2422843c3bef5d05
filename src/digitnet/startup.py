"""The cyclic garbage collector in a process that runs digitnet's training (the CLI, a fold worker).

Importing torch, Lightning, torchmetrics and Hydra makes millions of objects and no garbage, yet the collector walks
them over and over while they are made, and once more as the interpreter exits: about 2 s of a quick look on the
2-core AMD EPYC (docs/performance.md). Such a process collects nothing until its imports are done, then freezes what
they made (gc.freeze: never walked again) and collects as usual. Standard library only.
"""

from __future__ import annotations

import atexit
import gc

_deferred = False


def defer_collection() -> None:
    """At the start of the process, before its heavy imports."""
    global _deferred
    if not _deferred:
        _deferred = True
        gc.disable()
        atexit.register(gc.freeze)  # registered first, so run last: the exit's collection skips the imports' objects


def imports_done() -> None:
    """Once the run's imports are done. A no-op where defer_collection was not called (a notebook, the tests) or
    after the first call (the next job of a sweep in the same process)."""
    global _deferred
    if _deferred and not gc.isenabled():
        gc.freeze()
        gc.enable()
