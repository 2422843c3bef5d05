"""Shared fixtures: the real MNIST folder, synthetic IDX files, composed configs, and a CLI runner."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

import digitnet.train  # noqa: F401 - registers the config schema and the search's sweeper, as a run does

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
# Real MNIST lies beside the project checkout; DIGITNET_DATA overrides.
REAL_MNIST = Path(os.environ.get("DIGITNET_DATA", ROOT.parent / "shared" / "data" / "mnist"))


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    if (
        not (REAL_MNIST / "train-images-idx3-ubyte.gz").exists()
        and not (REAL_MNIST / "train-images-idx3-ubyte").exists()
    ):
        message = f"real MNIST not found at {REAL_MNIST} (set DIGITNET_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must run the real-data tests, never skip them
        pytest.skip(message)
    return REAL_MNIST


def write_idx(path: Path, array: np.ndarray, magic: int, gz: bool = True) -> Path:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_synthetic_mnist(root: Path, n_train: int = 60, n_test: int = 20, gz: bool = True, seed: int = 0) -> Path:
    """A tiny MNIST look-alike: class k is a bright square at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n) % 10
        x = rng.integers(0, 40, size=(n, 28, 28))
        for i, k in enumerate(y):
            r, c = 2 + 2 * k, 4 + (k % 3) * 6
            x[i, r : r + 6, c : c + 6] = 255
        write_idx(root / f"{prefix}-images-idx3-ubyte", x, 2051, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", y, 2049, gz)
    return root


@pytest.fixture
def synthetic_root(tmp_path) -> Path:
    return make_synthetic_mnist(tmp_path / "mnist")


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def plan_of(*overrides: str, cuda_available: bool = False, cores: int = 2, tty: bool = False):
    """The run plan of `overrides`, on a machine described by the keywords (the default: this CPU-only kind)."""
    from digitnet.config.plan import make_plan

    return make_plan(compose_cfg(*overrides), cuda_available=cuda_available, cores=cores, tty=tty)


@pytest.fixture(autouse=True)
def no_process_wide_changes():
    """A test leaves the process as it found it: signal handlers, torch threads, warning filters, logger levels."""
    import logging
    import signal
    import warnings

    import torch

    sigint, threads, filters = signal.getsignal(signal.SIGINT), torch.get_num_threads(), list(warnings.filters)
    levels = {name: logging.getLogger(name).level for name in ("lightning", "lightning.pytorch", "lightning.fabric")}
    yield
    assert signal.getsignal(signal.SIGINT) == sigint, "a test changed the SIGINT handler"
    assert torch.get_num_threads() == threads, "a test changed torch's thread count"
    warnings.filters[:] = filters
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def run_cli(module: str, *args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, mnist_root) -> Path:
    """A real model, quickly: task=final on 10k images for one epoch (about 98% on the holdout's easy digits)."""
    from digitnet.train import run

    run_dir = tmp_path_factory.mktemp("trained") / "final"
    plan = plan_of(
        "task=final",
        "model=baseline",
        "data.limit=10000",
        "trainer.max_epochs=1",
        f"data.root={mnist_root}",
        "trainer.enable_progress_bar=false",
    )
    run(plan, run_dir)
    return run_dir / "final.ckpt"
