"""What augment=affine costs per training step: the deep net at batch 32, with and without it, interleaved.

    python bench/augment_cost.py [--steps 200] [--rounds 5] [--batch 32] [--model deep]

Prints the median ms per step of each and the augmentation's share. Synthetic data of MNIST's shape (a step's cost
does not depend on the pixel values). The target (issue 11): at most 10% of a step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from digitnet.core.augment import AffineAugment
from digitnet.core.nets import build_net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--model", default="deep")
    args = parser.parse_args()
    torch.manual_seed(0)
    net = build_net(args.model)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    augment = AffineAugment(1)
    x, y = torch.rand(args.steps * args.batch, 1, 28, 28), torch.randint(0, 10, (args.steps * args.batch,))

    def run(with_augment: bool) -> float:
        start = time.perf_counter()
        for i in range(args.steps):
            xb, yb = x[i * args.batch : (i + 1) * args.batch], y[i * args.batch : (i + 1) * args.batch]
            if with_augment:
                xb = augment(xb)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(xb), yb).backward()
            opt.step()
        return 1000 * (time.perf_counter() - start) / args.steps

    run(True)  # warm-up
    plain, augmented = [], []
    for _ in range(args.rounds):
        plain.append(run(False))
        augmented.append(run(True))
    p, a = statistics.median(plain), statistics.median(augmented)
    print(
        f"{args.model}, batch {args.batch}, {torch.get_num_threads()} threads: {p:.2f} ms/step plain, {a:.2f} ms/step "
        f"with augment=affine: +{100 * (a - p) / p:.1f}% (medians of {args.rounds} interleaved rounds of {args.steps})"
    )


if __name__ == "__main__":
    main()
