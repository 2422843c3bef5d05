"""`python -m digitnet.train`: k-fold CV (task=cv) or the final fit and holdout score (task=final)."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from digitnet.config import resolve_auto, validate
from digitnet.errors import exit_on_user_error

# conf/ sits at the project root, beside src/ (editable install).
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
GROUPS = ("data", "model", "optimizer", "trainer", "cv")


def check_group_choices(argv: list[str]) -> None:
    """`model=foo` gets one line naming the choices, before Hydra's multi-line composition error."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in GROUPS or "(" in value:
            continue
        known = sorted(p.stem for p in (Path(CONF_DIR) / key).glob("*.yaml"))
        for choice in value.split(","):
            if choice not in known:
                print(f"digitnet.train: error: {key}={choice} is unknown; use one of {', '.join(known)}", file=sys.stderr)
                raise SystemExit(1)


def quiet() -> None:
    """Keep the terminal to the progress bar and our lines: no device banners or loader-worker advice."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*Consider setting `persistent_workers=True`.*")
    warnings.filterwarnings("ignore", message=r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*")
    warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")


def run(cfg: DictConfig, run_dir: str | Path | None = None) -> dict:
    """Validate, load MNIST, run the task; return its summary. Writes everything into run_dir."""
    validate(cfg)
    resolve_auto(cfg)
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
        try:
            summary = run(cfg)
        except KeyboardInterrupt:
            out = HydraConfig.get().runtime.output_dir
            print(f"digitnet.train: interrupted; rerun the same command to resume (finished folds are in {out})",
                  file=sys.stderr)
            raise SystemExit(130) from None
    return summary.get("mean")


if __name__ == "__main__":
    check_group_choices(sys.argv[1:])
    main()
