"""The seed protocol against the tutorial's Keras code, whole processes, in interleaved rounds.

    python bench/seed_vs_keras.py [--epochs 1] [--rounds 2] [--keras-python ~/.cache/keras-venv/bin/python]
        [--variant NAME=PYTHONPATH ...]

Each round runs `python -m digitnet.train model=deep trainer.max_epochs=EPOCHS` (5 folds of the 60k, fresh run dir)
and `../shared/bench/keras_seed.py` with EPOCHS, one after the other, and takes each one's wall time from start to
exit. `--variant NAME=PATH` adds a digitnet run with PYTHONPATH=PATH (a copy of another version's src/, with its
conf/ beside it), for A/B measurements of a change. Medians and each round's figures are printed as a markdown table.
--epochs 1 is the quick check; 10 the tutorial's protocol. MNIST: $DIGITNET_DATA.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KERAS = Path(__file__).resolve().parents[2] / "shared" / "bench" / "keras_seed.py"


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keras-python", default=str(Path.home() / ".cache" / "keras-venv" / "bin" / "python"))
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=PYTHONPATH")
    args = parser.parse_args()
    data = os.environ.get("DIGITNET_DATA", "data")
    runs = {"digitnet": {}} | {v.split("=", 1)[0]: {"PYTHONPATH": v.split("=", 1)[1]} for v in args.variant}
    times: dict[str, list[float]] = {name: [] for name in [*runs, "keras"]}
    for _ in range(args.rounds):
        for name, extra in runs.items():
            with tempfile.TemporaryDirectory() as run_dir:
                command = [
                    sys.executable,
                    "-m",
                    "digitnet.train",
                    "model=deep",
                    f"trainer.max_epochs={args.epochs}",
                    f"data.root={data}",
                    f"hydra.run.dir={run_dir}",
                ]
                times[name].append(timed(command, {**os.environ, **extra}))
        env = {**os.environ, "EPOCHS": str(args.epochs)}
        times["keras"].append(timed([args.keras_python, str(KERAS), data], env))
        print(" ".join(f"{name} {t[-1]:.1f} s" for name, t in times.items()), flush=True)
    keras = statistics.median(times["keras"])
    print(f"\n5 folds x {args.epochs} epoch(s) of the deep net, whole processes, medians of {args.rounds} rounds")
    print("| run | wall s (median) | rounds | vs Keras |\n|---|---|---|---|")
    for name, t in times.items():
        print(
            f"| {name} | {statistics.median(t):.1f} | {' '.join(f'{x:.1f}' for x in t)} | "
            f"{statistics.median(t) / keras:.2f}x |"
        )


if __name__ == "__main__":
    main()
