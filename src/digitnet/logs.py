"""What a run prints: its result lines (to the terminal and Hydra's <job>.log), and nothing else of Lightning's."""

from __future__ import annotations

import logging
import warnings

log = logging.getLogger("digitnet")


def say(line: str) -> None:
    """A result line ("> 98.925", "Accuracy: ..."). Under Hydra the `digitnet` logger writes it to the terminal and
    to the run dir's train.log (conf/hydra/job_logging/digitnet.yaml); without a configured logger, to stdout."""
    if log.handlers:
        log.info(line)
        for handler in log.handlers:
            handler.flush()
    else:
        print(line, flush=True)


def quiet() -> None:
    """Keep the terminal to the progress and our lines: no device banners or loader-worker advice."""
    from lightning.pytorch.utilities import disable_possible_user_warnings

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Lightning's own advice for real datasets (loader workers, logging interval): moot for in-memory batches.
    disable_possible_user_warnings()
    warnings.filterwarnings("ignore", message=r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*")
