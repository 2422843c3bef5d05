"""Predict throughput on a folder of 1,000 PNGs, and the start-up time of one prediction (both end to end).

    python bench/predict_throughput.py [--checkpoint final.ckpt] [--data-root DIR] [--n 1000] [--size 28]

Writes the first N MNIST test digits as PNGs (white-on-black 28x28, or --size S for larger dark-on-white ones) to a
temp folder and times `python -m digitnet.predict` on one image and on the folder. Without --checkpoint, a
random-weights checkpoint is used: timing does not depend on the weights.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from digitnet.core.data import default_root, load_mnist
from digitnet.core.module import DigitClassifier


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--data-root", default=default_root())
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=28, help="write digits at this size, dark ink on white")
    args = parser.parse_args()
    arrays = load_mnist(args.data_root, download=False)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "digits"
        folder.mkdir()
        for i, img in enumerate(arrays.test_x[: args.n].numpy()):
            im = Image.fromarray(img)
            if args.size != 28:
                im = Image.fromarray(255 - img).resize((args.size, args.size), Image.BICUBIC)
            im.save(folder / f"{i:05d}.png")
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = str(Path(tmp) / "random.ckpt")
            model = DigitClassifier(arch="deep")
            torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, ckpt)
        predict = [sys.executable, "-m", "digitnet.predict", ckpt]
        timed(predict + [str(folder / "00000.png")])  # warm the file cache
        one = min(timed(predict + [str(folder / "00000.png")])[0] for _ in range(3))
        many, result = timed(predict + [str(folder)])
        assert result.returncode == 0, result.stderr
        digits = np.array([int(line.split("\t")[1]) for line in result.stdout.splitlines()])
        accuracy = float((digits == arrays.test_y[: args.n].numpy()).mean())
    print(
        f"{args.n} PNGs of {args.size}x{args.size}: {many:.2f} s end to end, "
        f"{args.n / (many - one):.0f} images/s after start-up; one image: {one:.2f} s start to answer"
    )
    print(f"accuracy on them: {100 * accuracy:.1f}% ({'given checkpoint' if args.checkpoint else 'random weights'})")


if __name__ == "__main__":
    main()
