"""onnxruntime against torch for the same model: one image and batches of 256 (latency, images/s), and how long
`digitnet.serve` takes from start to its first answer with each.

    python bench/onnx_speed.py MODEL MODEL.onnx [--rounds 5] [--threads N]

MODEL is what was exported (a checkpoint or a CV run dir); MODEL.onnx its `digitnet-export`. Each round measures
torch then onnxruntime, interleaved (shared machines are noisy); the medians are printed as a markdown table. Images
are the holdout's first ones, as predict and serve feed them (x/255, float32).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "sample_image.png"


def per_call(run, x: np.ndarray, seconds: float = 1.0) -> float:
    """Median seconds of one call of run(x), over about `seconds` of calls after a warm-up."""
    for _ in range(3):
        run(x)
    times, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def serve_startup(model: str) -> float:
    """Seconds from starting `python -m digitnet.serve MODEL` to its first /api/predict answer."""
    start = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "digitnet.serve", model, "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+/", server.stdout.readline()).group(0)
        while True:  # the port is bound before uvicorn listens on it
            try:
                response = httpx.post(
                    url + "api/predict", files=[("files", ("s.png", SAMPLE.read_bytes(), "image/png"))]
                )
                break
            except httpx.ConnectError:
                time.sleep(0.01)
        response.raise_for_status()
        return time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("onnx")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    import torch

    from digitnet.core.checkpoints import load_model
    from digitnet.core.data import default_root, load_mnist
    from digitnet.core.onnxmodel import OnnxModel

    torch.set_num_threads(args.threads)
    model, onnx = load_model([args.model]), OnnxModel(args.onnx)
    holdout = load_mnist(default_root(), download=False, holdout_only=True).test_x[:256].numpy()
    x = (holdout[:, None] / np.float32(255)).astype(np.float32)

    @torch.inference_mode()
    def torch_run(batch):
        return torch.softmax(model(torch.from_numpy(batch)), 1).numpy()

    runners = {"torch": torch_run, "onnxruntime": onnx.predict_proba}
    measured = {(name, n): [] for name in runners for n in (1, 256)}
    startup = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            for n in (1, 256):
                measured[name, n].append(per_call(run, x[:n]))
            startup[name].append(serve_startup(args.model if name == "torch" else args.onnx))
    print(f"{onnx.hparams['arch']}, tta={onnx.hparams['tta']}; {args.threads} threads; medians of {args.rounds} rounds")
    print(
        "| runtime | 1 image: ms | 1 image: images/s | 256 images: ms | 256 images: images/s "
        "| serve start to first answer: s |"
    )
    print("|---|---|---|---|---|---|")
    for name in runners:
        one, batch = statistics.median(measured[name, 1]), statistics.median(measured[name, 256])
        print(
            f"| {name} | {1000 * one:.2f} | {1 / one:.0f} | {1000 * batch:.1f} | {256 / batch:.0f} | "
            f"{statistics.median(startup[name]):.2f} |"
        )


if __name__ == "__main__":
    main()
