"""The tutorial's three nets, digitnet's deepbn and vgg, their initialisation, and how a trained net predicts:
its pixel scaling, test-time augmentation, an ensemble. Torch only (no Lightning), so that predict starts fast."""

from __future__ import annotations

import torch
from torch import nn

from digitnet.names import DROPOUT_ARCHS, TTA, Arch, names


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3), nn.ReLU()]


def _head(n_in: int, batchnorm: bool = False, width: int = 100) -> list[nn.Module]:
    return [
        nn.Flatten(),
        nn.Linear(n_in, width),
        nn.ReLU(),
        *([nn.BatchNorm1d(width)] if batchnorm else []),
        nn.Linear(width, 10),
    ]


def baseline() -> nn.Sequential:
    return nn.Sequential(*_conv(1, 32), nn.MaxPool2d(2), *_head(32 * 13 * 13))


def batchnorm() -> nn.Sequential:
    # BatchNorm after each activation, as in the tutorial.
    return nn.Sequential(*_conv(1, 32), nn.BatchNorm2d(32), nn.MaxPool2d(2), *_head(32 * 13 * 13, batchnorm=True))


def deep() -> nn.Sequential:
    return nn.Sequential(
        *_conv(1, 32), nn.MaxPool2d(2), *_conv(32, 64), *_conv(64, 64), nn.MaxPool2d(2), *_head(64 * 4 * 4)
    )


def deepbn(dropout: float = 0.0) -> nn.Sequential:
    # deep plus BatchNorm after every hidden activation, dropout before both dense layers and a Dense128 head
    # (188,810 parameters; 5.5M multiply-adds an image, as deep: BatchNorm and dropout are what cost extra).
    # The Dropout modules are there at p=0 too, so that a checkpoint's weight names do not depend on the rate.
    return nn.Sequential(
        *_conv(1, 32),
        nn.BatchNorm2d(32),
        nn.MaxPool2d(2),
        *_conv(32, 64),
        nn.BatchNorm2d(64),
        *_conv(64, 64),
        nn.BatchNorm2d(64),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(64 * 4 * 4, 128),
        nn.ReLU(),
        nn.BatchNorm1d(128),
        nn.Dropout(dropout),
        nn.Linear(128, 10),
    )


def vgg() -> nn.Sequential:
    # VGG-style: two blocks of two 3x3 convs (32, 32 | 64, 64), BatchNorm after every hidden activation, a Dense128
    # head (198,122 parameters; 9.8M multiply-adds an image, 1.8x deep's).
    return nn.Sequential(
        *_conv(1, 32),
        nn.BatchNorm2d(32),
        *_conv(32, 32),
        nn.BatchNorm2d(32),
        nn.MaxPool2d(2),
        *_conv(32, 64),
        nn.BatchNorm2d(64),
        *_conv(64, 64),
        nn.BatchNorm2d(64),
        nn.MaxPool2d(2),
        *_head(64 * 4 * 4, batchnorm=True, width=128),
    )


NETS = {
    Arch.baseline.value: baseline,
    Arch.batchnorm.value: batchnorm,
    Arch.deep.value: deep,
    Arch.deepbn.value: deepbn,
    Arch.vgg.value: vgg,
}
# tta=shift: the image as it is and moved one pixel up, down, left and right (docs/recipe.md: 5 views scored as
# well as the 9 of a 3x3 grid on CV, for nearly half the passes).
SHIFTS = ((0, 0), (0, -1), (0, 1), (-1, 0), (1, 0))  # (dy, dx) in pixels


def build_net(name: str, dropout: float = 0.0) -> nn.Sequential:
    """A freshly initialised net (the plan has checked the name and that only DROPOUT_ARCHS get dropout)."""
    net = NETS[name](dropout) if name in DROPOUT_ARCHS else NETS[name]()
    layers = [m for m in net if isinstance(m, (nn.Conv2d, nn.Linear))]
    # Keras defaults of the tutorial: He-uniform hidden layers, Glorot-uniform output layer, zero biases.
    for layer in layers[:-1]:
        nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
    nn.init.xavier_uniform_(layers[-1].weight)
    for layer in layers:
        nn.init.zeros_(layer.bias)
    return net


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


class ScaledNet(nn.Module):
    """A net plus the pixel scaling it was trained with: takes x/255 images (N, 1, 28, 28), returns logits."""

    def __init__(self, arch: str, pixel_mean: float = 0.0, pixel_std: float = 1.0, **plain_hparams):
        super().__init__()
        self.net = build_net(arch)
        self.pixel_mean, self.pixel_std = float(pixel_mean), float(pixel_std)
        self.hparams = {"arch": arch, "pixel_mean": pixel_mean, "pixel_std": pixel_std, **plain_hparams}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.pixel_mean) / self.pixel_std)


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x (N, C, H, W) moved dy pixels down and dx right; what moves in is background (0), nothing wraps around."""
    h, w = x.shape[-2:]
    padded = nn.functional.pad(x, (1, 1, 1, 1))
    return padded[..., 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]


class ShiftTTA(nn.Module):
    """Test-time augmentation (tta=shift): a model's softmax probabilities averaged over the image and its four
    one-pixel shifts (SHIFTS), returned as their log, as Ensemble does. Training never sees it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.hparams = {**model.hparams, "tta": "shift"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = torch.cat([shifted(x, dy, dx) for dy, dx in SHIFTS])  # one forward pass of 5N images
        probabilities = torch.softmax(self.model(views), dim=1).view(len(SHIFTS), len(x), -1).mean(0)
        return probabilities.clamp_min(1e-30).log()


def with_tta(model: nn.Module, tta: str) -> nn.Module:
    """The model as it predicts under `tta` (a TTA name): itself for none."""
    assert tta in names(TTA), tta
    return model if tta == TTA.none.value else ShiftTTA(model)


class Ensemble(nn.Module):
    """Several checkpoints as one model: the mean of their softmax probabilities, returned as its log, so that a
    softmax of the output gives that mean back (what predict and evaluate apply)."""

    def __init__(self, members: list[nn.Module], names: list[str]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.names = names
        first = members[0].hparams
        self.hparams = {
            "arch": f"ensemble of {len(members)} {first['arch']}"
            if len({m.hparams["arch"] for m in members}) == 1
            else f"ensemble of {len(members)}",
            "scaling": first.get("scaling", "normalize"),
            "tta": "/".join(sorted({m.hparams.get("tta", "none") for m in members})),
        }

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.softmax(m(x), dim=1) for m in self.members]).mean(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probabilities(x).clamp_min(1e-30).log()
