"""What helps the deep net's training step on this CPU? Milliseconds per step (batch 32) for each option, one process.

    python bench/cpu_options.py [--steps 400] [--warmup 50] [--only NAME ...]

Options: eager with the default threads; eager with 1 thread; channels_last; torch.compile of the net; torch.compile
of the whole step (forward, backward, SGD step); bf16 autocast (reported only, never a default); validation of 12k
images at several batch sizes; and two processes with one thread each training at once (fold-level parallelism:
the figure is the wall time per step of the pair, i.e. per two steps done). Synthetic data of MNIST's shape: the cost
of a step does not depend on the pixel values.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from digitnet.nets import build_net

N_TRAIN, N_VAL, BATCH = 48_000, 12_000, 32


def data(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def make_step(net, opt, memory_format=torch.contiguous_format, autocast=False):
    def step(x, y):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(net(x.contiguous(memory_format=memory_format)), y)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def time_steps(step, x, y, steps: int, warmup: int) -> float:
    """ms per step over `steps` steps, after `warmup` steps (which also pay any compile)."""
    perm = torch.randperm(len(y))
    for i in range(warmup):
        idx = perm[i * BATCH : (i + 1) * BATCH]
        step(x[idx], y[idx])
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        idx = perm[i * BATCH : (i + 1) * BATCH]
        step(x[idx], y[idx])
    return 1000 * (time.perf_counter() - start) / steps


def option(name: str, steps: int, warmup: int) -> str:
    torch.manual_seed(1)
    x, y = data(N_TRAIN)
    net = build_net("deep")
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    if name == "eager":
        return f"{time_steps(make_step(net, opt), x, y, steps, warmup):.2f} ms/step"
    if name == "one_thread":
        torch.set_num_threads(1)
        return f"{time_steps(make_step(net, opt), x, y, steps, warmup):.2f} ms/step"
    if name == "channels_last":
        net = net.to(memory_format=torch.channels_last)
        return f"{time_steps(make_step(net, opt, torch.channels_last), x, y, steps, warmup):.2f} ms/step"
    if name == "bf16_autocast":
        return f"{time_steps(make_step(net, opt, autocast=True), x, y, steps, warmup):.2f} ms/step"
    if name in ("compile_net", "compile_step"):
        start = time.perf_counter()
        step = make_step(torch.compile(net), opt) if name == "compile_net" else torch.compile(make_step(net, opt))
        idx = torch.arange(BATCH)
        step(x[idx], y[idx])
        step(x[idx], y[idx])
        compile_s = time.perf_counter() - start
        return f"{time_steps(step, x, y, steps, warmup):.2f} ms/step (compile {compile_s:.0f} s)"
    if name == "validation":
        vx, vy = data(N_VAL, 1)
        net.eval()
        out = []
        for bs in (250, 1000, 4000, 12_000):
            with torch.no_grad():
                for _ in range(2):  # the first pass warms the allocator
                    start = time.perf_counter()
                    for i in range(0, N_VAL, bs):
                        F.cross_entropy(net(vx[i : i + bs]), vy[i : i + bs])
                    seconds = time.perf_counter() - start
            out.append(f"batch {bs}: {seconds:.2f} s")
        return "12k validation images, " + ", ".join(out)
    if name == "two_processes":
        cmd = [sys.executable, __file__, "--only", "one_thread", "--steps", str(steps), "--warmup", str(warmup)]
        env = os.environ | {"OMP_NUM_THREADS": "1"}
        start = time.perf_counter()
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate()[0].strip().splitlines()[-1] for p in procs]
        wall = time.perf_counter() - start
        return f"pair wall {wall:.1f} s incl. start-up; each: {' | '.join(o.split(':', 1)[1].strip() for o in outs)}"
    raise ValueError(name)


OPTIONS = ["eager", "one_thread", "channels_last", "compile_net", "compile_step", "bf16_autocast", "validation",
           "two_processes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--only", nargs="*", choices=OPTIONS, default=OPTIONS)
    args = parser.parse_args()
    if len(args.only) > 1:
        print(f"deep net, batch 32; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
        # One fresh process per option: torch.compile and set_num_threads must not leak into the next one.
        for name in args.only:
            cmd = [sys.executable, __file__, "--only", name, "--steps", str(args.steps), "--warmup", str(args.warmup)]
            subprocess.run(cmd, check=False)
        return
    name = args.only[0]
    print(f"{name:>14}: {option(name, args.steps, args.warmup)}", flush=True)


if __name__ == "__main__":
    main()
