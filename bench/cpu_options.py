"""What helps the deep net's training step on this CPU? Milliseconds per step (batch 32) for each option, one process.

    python bench/cpu_options.py [--steps 200] [--warmup 30] [--rounds 5] [--only NAME ...]

Options: eager with the default threads; eager with 1 thread; channels_last; torch.compile of the net; torch.compile
of the whole step (forward, backward, SGD step); bf16 autocast (reported only, never a default). They run interleaved
in one process, `--rounds` times, so that this VM's drift hits each alike; medians are printed. Then validation of
12k images at several batch sizes, and two processes with one thread each training at once (the fold-level
parallelism of cv.workers). Synthetic data of MNIST's shape: a step's cost does not depend on the pixel values.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from digitnet.core.nets import build_net

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
    return 1000 * (time.perf_counter() - start) / max(steps, 1)


def variant(name: str, x, y):
    """A fresh deep net, its optimizer and its step function set up as option `name` does it."""
    torch.manual_seed(1)
    net = build_net("deep")
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    if name == "channels_last":
        return make_step(net.to(memory_format=torch.channels_last), opt, torch.channels_last)
    if name == "bf16_autocast":
        return make_step(net, opt, autocast=True)
    if name == "compile_net":
        return make_step(torch.compile(net), opt)
    if name == "compile_step":
        return torch.compile(make_step(net, opt))
    return make_step(net, opt)


def interleaved(names: list[str], steps: int, warmup: int, rounds: int) -> None:
    """Each option in turn for `steps` steps, `rounds` times: the VM's drift hits every option alike. Median ms/step."""
    x, y = data(N_TRAIN)
    cores = torch.get_num_threads()
    steppers = {}
    for name in names:
        start = time.perf_counter()
        steppers[name] = variant(name, x, y)
        time_steps(steppers[name], x, y, 0, warmup)  # warm-up, and any compile
        print(f"  set-up of {name}: {time.perf_counter() - start:.1f} s", flush=True)
    times = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            torch.set_num_threads(1 if name == "one_thread" else cores)
            times[name].append(time_steps(steppers[name], x, y, steps, 0))
    torch.set_num_threads(cores)
    for name in names:
        t = sorted(times[name])
        print(f"{name:>14}: median {t[len(t) // 2]:.2f} ms/step  (rounds: {' '.join(f'{v:.1f}' for v in times[name])})")


def validation(rounds: int) -> None:
    vx, vy = data(N_VAL, 1)
    net = build_net("deep").eval()
    sizes = (250, 500, 1000, 4000)
    times = {bs: [] for bs in sizes}
    with torch.no_grad():
        for _ in range(rounds + 1):  # the first round warms the allocator and is dropped
            for bs in sizes:
                start = time.perf_counter()
                for i in range(0, N_VAL, bs):
                    F.cross_entropy(net(vx[i : i + bs]), vy[i : i + bs])
                times[bs].append(time.perf_counter() - start)
    print(
        "    validation: 12k images, median s per pass: "
        + ", ".join(f"batch {bs}: {sorted(t[1:])[len(t[1:]) // 2]:.2f}" for bs, t in times.items())
    )


def two_processes(steps: int, warmup: int) -> None:
    """Two processes, one thread each, training at the same time: ms per step in each, i.e. per two steps done."""
    code = (
        f"import torch, sys; sys.argv=['x']; torch.set_num_threads(1); import runpy; "
        f"m = runpy.run_path({__file__!r}); x, y = m['data']({N_TRAIN}); s = m['variant']('eager', x, y); "
        f"print(m['time_steps'](s, x, y, {steps}, {warmup}))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=os.environ | {"OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    each = [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    print(
        f" two_processes: {' | '.join(f'{v:.2f}' for v in each)} ms/step each, "
        f"i.e. {sum(each) / 4:.2f} ms per step done"
    )


OPTIONS = ["eager", "one_thread", "channels_last", "compile_net", "compile_step", "bf16_autocast"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="steps per option and round")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--only",
        nargs="*",
        choices=[*OPTIONS, "validation", "two_processes"],
        default=[*OPTIONS, "validation", "two_processes"],
    )
    args = parser.parse_args()
    print(f"deep net, batch 32; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    names = [n for n in args.only if n in OPTIONS]
    if names:
        interleaved(names, args.steps, args.warmup, args.rounds)
    if "validation" in args.only:
        validation(args.rounds)
    if "two_processes" in args.only:
        for _ in range(2):
            two_processes(args.steps * 3, args.warmup)


if __name__ == "__main__":
    main()
