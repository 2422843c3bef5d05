"""Photos of paper: a light page in a darker surround (a desk, a scanner's margin) is read as the page alone.

Built from real MNIST holdout digits, drawn as dark ink on a light page at photo size; every variant must read the
digits as the plain page does. On a page with a dark edge the frame's border is the desk, not the paper: judged from
the border, the page itself was taken for ink and all ten digits were misread."""

import numpy as np
import pytest
from PIL import Image

from digitnet.core.images import mnist_form


def page(digit: np.ndarray, variant: str, rng) -> np.ndarray:
    h, w, size = 1000, 760, 140
    paper = np.full((h, w), 0.9)
    ink = np.asarray(Image.fromarray(255 - digit).resize((size, size), Image.BILINEAR), dtype=np.float64) / 255
    y0, x0 = h // 2 - size // 2 + rng.integers(-90, 90), w // 2 - size // 2 + rng.integers(-90, 90)
    paper[y0 : y0 + size, x0 : x0 + size] = np.minimum(paper[y0 : y0 + size, x0 : x0 + size], 0.05 + 0.85 * ink)
    if variant == "desk all around":
        out = np.full((1400, 1100), 0.18)
        out[200:1200, 170:930] = paper
    elif variant == "dark band on one side":
        out = paper.copy()
        out[:, :90] = 0.12
    elif variant == "dark bands on two sides":
        out = paper.copy()
        out[:, :80], out[:70, :] = 0.12, 0.12
    elif variant == "page turned on a desk":
        out = np.full((1400, 1100), 0.2)
        out[200:1200, 170:930] = paper
        out = np.asarray(Image.fromarray((out * 255).astype(np.uint8)).rotate(8, fillcolor=51), dtype=np.float64) / 255
    elif variant == "small page":  # the page is 40% of the frame
        out = np.full((1580, 1200), 0.2)
        out[290:1290, 220:980] = paper
    else:
        out = paper
    return np.clip(out + rng.normal(0, 0.015, out.shape), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def digits(mnist_root):
    from digitnet.core.data import load_mnist

    arrays = load_mnist(mnist_root, download=False, holdout_only=True)
    x, y = arrays.test_x.numpy(), arrays.test_y.numpy()
    return [x[np.nonzero(y == c)[0][3]] for c in range(10)]  # one of each class


@pytest.fixture(scope="module")
def read(trained_checkpoint):
    import torch

    from digitnet.core.checkpoints import load_model

    model = load_model([trained_checkpoint])

    def read(arrays):
        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(np.stack(arrays))[:, None]), 1).argmax(1).tolist()

    return read


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant",
    ["desk all around", "dark band on one side", "dark bands on two sides", "page turned on a desk", "small page"],
)
def test_a_page_in_a_darker_surround_reads_as_the_plain_page(digits, read, variant):
    rng = np.random.default_rng(1)
    plain = [mnist_form(page(d, "plain", rng)) for d in digits]
    notes: list = []
    framed = [mnist_form(page(d, variant, rng), notes) for d in digits]
    assert sum(a == b for a, b in zip(read(plain), read(framed))) >= 9
    assert sum(p == c for c, p in enumerate(read(framed))) >= 8
    assert np.mean([np.abs(a - b).mean() for a, b in zip(plain, framed)]) < 0.06
    assert len(notes) == 10  # each image says the page was found


def test_images_without_a_surround_are_left_as_they_were(digits):
    """Plain, grey and shadowed pages, and MNIST's own white ink on black, have no page to find."""
    rng = np.random.default_rng(2)
    for gray in (
        page(digits[0], "plain", rng),
        0.6 * page(digits[4], "plain", rng),
        page(digits[7], "plain", rng) * np.linspace(0.5, 1, 760, dtype=np.float32)[None, :],
        np.asarray(Image.fromarray(digits[8]).resize((280, 280)), dtype=np.float32) / 255,
    ):
        notes: list = []
        mnist_form(gray, notes)
        assert notes == []
