"""The package as users get it: a built wheel carries its configs and runs from any directory; user configs work.

In the manner of Hydra's examples/advanced/hydra_app_example/tests/test_installed_app.py.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, make_synthetic_mnist

TINY = ["cv.n_folds=2", "trainer.max_epochs=1", "cv.workers=1", "data.download=false"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel, built from a copy of the project (the checkout stays clean), installed without dependencies into
    a folder of its own; torch, Lightning and Hydra come from this environment."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "project"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "src", "conf"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(ROOT / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", src],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp / "dist").glob("digitnet-*.whl")
    target = tmp / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", target, wheel],
        check=True,
        capture_output=True,
    )
    return target


def run_installed(target, cwd, *args, script=None):
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONWARNINGS": "ignore"}
    command = [str(target / "bin" / script)] if script else [sys.executable, "-m", "digitnet.train"]
    return subprocess.run([*command, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.install
def test_wheel_runs_a_job_from_another_directory(installed, tmp_path):
    data = make_synthetic_mnist(tmp_path / "mnist")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [sys.executable, "-c", "import digitnet.conf, digitnet; print(digitnet.__file__)"],
        cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(installed)), where.stderr  # the wheel's copy, not the checkout
    assert (installed / "digitnet" / "conf" / "model" / "deep.yaml").is_file()
    assert (installed / "digitnet" / "web" / "static" / "index.html").is_file()  # the page ships too
    result = run_installed(installed, elsewhere, f"data.root={data}", *TINY, "hydra.run.dir=run")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((elsewhere / "run" / "cv_summary.json").read_text())
    assert summary["n"] == 2 and summary["plan"]["runner"] == "sequential"


@pytest.mark.slow
@pytest.mark.install
def test_console_scripts_and_user_configs(installed, tmp_path):
    for script in ("digitnet-train", "digitnet-evaluate", "digitnet-predict", "digitnet-summarize", "digitnet-serve"):
        assert (installed / "bin" / script).is_file(), script
    result = run_installed(installed, tmp_path, "optimizer.lr=0", script="digitnet-train")
    assert result.returncode == 1 and "optimizer.lr" in result.stderr and "Traceback" not in result.stderr
    result = run_installed(installed, tmp_path, "--help", script="digitnet-summarize")
    assert result.returncode == 0 and "sweep" in result.stdout

    # A user's own config group option, by --config-dir and by hydra.searchpath: composed, not refused.
    user = tmp_path / "userconf"
    (user / "optimizer").mkdir(parents=True)
    (user / "optimizer" / "fast.yaml").write_text("_target_: torch.optim.SGD\nlr: 0.05\nmomentum: 0.5\n")
    data = make_synthetic_mnist(tmp_path / "mnist")
    for how in (["--config-dir", user], [f"hydra.searchpath=[file://{user}]"]):
        run_dir = tmp_path / f"run{len(how)}"
        result = run_installed(
            installed, tmp_path, *how, "optimizer=fast", f"data.root={data}", *TINY, f"hydra.run.dir={run_dir}"
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert json.loads((run_dir / "plan.json").read_text())["optimizer"]["lr"] == 0.05
    result = run_installed(installed, tmp_path, "--config-dir", user, "optimizer=fastest", f"data.root={data}", *TINY)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert all(option in result.stderr for option in ("fast", "adam", "sgd"))  # Hydra lists yours with the packaged


def test_a_checkout_without_install_reads_its_own_conf(monkeypatch):
    """PYTHONPATH=src, nothing installed (the GPU machine's way): the configs come from conf/ beside src/."""
    from digitnet import train

    monkeypatch.setattr(train, "INSTALLED", False)
    assert train.CHECKOUT_CONF == ROOT / "conf" and (ROOT / "conf" / "config.yaml").is_file()
    assert train.compose_plan("model=deep", cuda_available=False, cores=2).model == "deep"
