"""The plan's LR schedules as torch schedulers, stepped every batch. Torch only: the plan builds one on a dummy
optimizer before any work, so that an optimizer a schedule cannot drive is refused before Lightning is imported."""

from __future__ import annotations

import torch


def lr_scheduler(opt: torch.optim.Optimizer, lr: float, scheduler: dict, total_steps: int):
    """scheduler: the plan's {"name": "onecycle" | "cosine", ...} ("none" has no scheduler)."""
    if scheduler["name"] == "onecycle":
        # Warm up to the optimizer's lr for pct_start of the steps, then anneal (Smith's 1cycle).
        pct_start = scheduler.get("pct_start", 0.25)
        if abs(pct_start * total_steps - 1) < 1e-9:
            # A warm-up of exactly one step (4 steps at 0.25: a tiny run) is a zero-length phase that OneCycleLR
            # divides by (ZeroDivisionError, torch 2.14); a hair more keeps its first step at the initial lr.
            pct_start += 1e-6 / total_steps
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps, pct_start=pct_start)
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
