"""The deep net's training step with and without startup.py's malloc settings, whole processes, interleaved rounds.

    python bench/heap_reuse.py [--rounds 5] [--steps 100] [--threads 1 2]

glibc settings are process-wide and fixed once memory is in use, so each measurement is a fresh process: in every
round, for each thread count, one process as glibc is by default and one after `startup.start_process()` (freed
blocks up to 32 MB kept in the heap). Batch 32, channels_last, SGD with momentum, as a fold trains on CPU. Medians
of the rounds are printed in ms per step.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

CHILD = """
import sys, time
keep, threads, steps = sys.argv[1] == "keep", int(sys.argv[2]), int(sys.argv[3])
if keep:
    from digitnet import startup
    startup.start_process()
    startup.imports_done()
import torch
import torch.nn.functional as F
from digitnet.core.nets import build_net
torch.set_num_threads(threads)
torch.manual_seed(1)
net = build_net("deep").to(memory_format=torch.channels_last)
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
x = torch.rand(32 * (steps + 20), 1, 28, 28)
y = torch.randint(0, 10, (len(x),))
def step(i):
    opt.zero_grad()
    batch = x[32 * i : 32 * (i + 1)].contiguous(memory_format=torch.channels_last)
    F.cross_entropy(net(batch), y[32 * i : 32 * (i + 1)]).backward()
    opt.step()
for i in range(20):
    step(i)
start = time.perf_counter()
for i in range(20, 20 + steps):
    step(i)
print(1000 * (time.perf_counter() - start) / steps)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    times: dict[tuple[int, str], list[float]] = {(t, k): [] for t in args.threads for k in ("default", "keep")}
    for _ in range(args.rounds):
        for threads in args.threads:
            for kind in ("default", "keep"):
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, kind, str(threads), str(args.steps)],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                times[(threads, kind)].append(float(out.strip().splitlines()[-1]))
    print(
        "| threads | glibc default: ms/step | freed blocks kept: ms/step | rounds (default / kept) |\n|---|---|---|---|"
    )
    for threads in args.threads:
        default, keep = times[(threads, "default")], times[(threads, "keep")]
        print(
            f"| {threads} | {statistics.median(default):.1f} | {statistics.median(keep):.1f} | "
            f"{' '.join(f'{t:.1f}' for t in default)} / {' '.join(f'{t:.1f}' for t in keep)} |"
        )


if __name__ == "__main__":
    main()
