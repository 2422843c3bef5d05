"""digitnet's Hydra configs, installed with the package as `digitnet.conf` (pyproject.toml maps conf/ here)."""
