"""Writing files safely: JSON written atomically with normal permissions, and output paths checked before work."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from digitnet.errors import UserError

# What digitnet writes into a run dir (a single run's) or a sweep dir: a folder holding one of them is not a plain
# folder for images or for an --out file.
RUN_FILES = ("plan.json", "cv_summary.json", "final.ckpt", "folds")
SWEEP_FILE = "multirun.yaml"


def run_file_in(folder: Path, *, sweeps: bool = True) -> str | None:
    """The first run-dir file `folder` holds (also a sweep's multirun.yaml unless sweeps=False), or None."""
    names = RUN_FILES + ((SWEEP_FILE,) if sweeps else ())
    return next((name for name in names if (Path(folder) / name).exists()), None)


def enclosing_run(path: Path) -> Path | None:
    """The run dir (a single run's) that `path` lies inside, if any: nothing of another run goes in there."""
    return next((p for p in Path(path).resolve().parents if run_file_in(p, sweeps=False)), None)


def write_json_atomic(path: Path, data) -> None:
    """Temp file + rename: a reader (or a resumed run) never sees half a file, even after Ctrl-C. The file gets the
    permissions a plain open() would give (mkstemp's are 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable_file(path, what: str) -> None:
    """A file we are about to write: not a folder, and its folder exists (or can be made) and is writable."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file path such as {path / 'metrics.json'}")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{what} {path}: {parent} is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}: {parent} is not writable; choose another path")
    if parent == path.parent:  # the real test (root passes access() everywhere, /proc included): a file, removed
        try:
            with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{path.name}.", suffix=".check"):
                pass
        except OSError as exc:
            raise UserError(f"{what} {path}: cannot write in {parent} ({exc.strerror}); choose another path") from None
