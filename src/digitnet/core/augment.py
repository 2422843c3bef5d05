"""Training-time augmentation: random rotation, scale and shift of whole batches, on the training device, in one
affine_grid + grid_sample call. Validation and holdout images are never augmented.

Each fold (and the final fit) draws its transforms from a generator of its own, seeded with seed + fold, so runs are
reproducible and packed folds draw exactly the transforms of their sequential runs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class AffineAugment:
    """x in [0, 1], (N, 1, 28, 28) -> the same shape and range, each image rotated by up to +-degrees, scaled by
    1 +- scale and shifted by up to +-shift of its size. Pixels that come in from outside are background (0)."""

    def __init__(self, seed: int, degrees: float = 10.0, scale: float = 0.1, shift: float = 0.1):
        self.degrees, self.scale, self.shift = float(degrees), float(scale), float(shift)
        # On the CPU whatever the training device: 4 numbers an image, and the same draws on every device.
        self.generator = torch.Generator().manual_seed(seed)

    def thetas(self, n: int) -> torch.Tensor:
        """(n, 2, 3) affine matrices in affine_grid's normalised coordinates."""
        u = torch.rand(n, 4, generator=self.generator, dtype=torch.float64) * 2 - 1  # uniform in [-1, 1]
        angle = u[:, 0] * math.radians(self.degrees)
        zoom = 1 + u[:, 1] * self.scale
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # output -> input coordinates: the inverse map
        shift = u[:, 2:] * self.shift * 2  # normalised coordinates span 2
        return torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)

    def apply(self, x: torch.Tensor, thetas: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(thetas.to(x.device, x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.thetas(len(x)))


def make_augment(spec: dict | None, seed: int) -> AffineAugment | None:
    """The plan's augment spec ({"name": "none"} or {"name": "affine", ...}) as a callable, or None."""
    if not spec or spec.get("name", "none") == "none":
        return None
    return AffineAugment(seed, **{k: v for k, v in spec.items() if k != "name"})
