"""`python -m digitnet.train`: k-fold CV (task=cv) or the final fit and holdout score (task=final)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from digitnet.config import validate
from digitnet.errors import exit_on_user_error

# conf/ sits at the project root, beside src/ (editable install).
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def quiet() -> None:
    """Keep the terminal to the progress bar and our lines: no device banners or loader-worker advice."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*Consider setting `persistent_workers=True`.*")
    warnings.filterwarnings("ignore", message=r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*")


def run(cfg: DictConfig, run_dir: str | Path | None = None) -> dict:
    """Validate, load MNIST, run the task; return its summary. Writes everything into run_dir."""
    validate(cfg)
    quiet()
    from digitnet.data import load_mnist  # heavy imports after the cheap checks

    run_dir = Path(run_dir or HydraConfig.get().runtime.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    arrays = load_mnist(cfg.data.root, download=cfg.data.download)
    if cfg.task == "final":
        from digitnet.final import run_final

        return run_final(cfg, arrays, run_dir)
    from digitnet.cv import run_cv

    return run_cv(cfg, arrays, run_dir)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    with exit_on_user_error("digitnet.train"):
        summary = run(cfg)
    return summary.get("mean")


if __name__ == "__main__":
    main()
