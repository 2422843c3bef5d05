"""People's images -> MNIST form: 28x28, white ink on black, the digit scaled to 20 px and centred by mass.

Follows how MNIST itself was made (LeCun et al.): size-normalise the digit into a 20x20 box keeping its aspect
ratio, then place it in a 28x28 field so that its centre of mass sits at the centre.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError
from scipy import ndimage

from digitnet.errors import first_line

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"}
# A 50-Mpx phone photo is the largest real case; past it an image costs gigabytes of floats (a 1x80,000,000 PNG of
# 155 kB took 3 GB and 9 s before this limit), long before PIL's decompression-bomb guard (179 Mpx) says no.
MAX_PIXELS = 64 * 10**6
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


class ImageProblem(Exception):
    """This one image cannot be used; the message says why (the caller adds the path). `kind`: unreadable (the
    file system's refusal), not an image, damaged, too large, frames, colour mode, not numbers, no digit, size."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def to_gray(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> float32 (H, W) in [0, 1]. Transparent pixels take the colour the ink is not."""
    if img.mode in _SIXTEEN_BIT or img.mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float32)
        if not np.isfinite(a).all():
            raise ImageProblem(
                "holds pixels that are not numbers (NaN or infinite); save it again as a plain image", "not numbers"
            )
        if a.min() >= 0 and a.max() <= 1:
            return a
        if a.min() >= 0 and a.max() <= 255 and img.mode != "F":
            return a / 255
        # Any other range is the image's own: a 12-bit sensor's 0-1000 in a 16-bit file (divided by 65535 it was
        # nearly black: "no digit found"), a float image standardised like MNIST (-0.42 to 2.8). Its 0.1% and
        # 99.9% points are black and white, so that one hot pixel does not dim the rest.
        low, high = np.percentile(a, [0.1, 99.9]) if a.size >= 1000 else (a.min(), a.max())
        if high <= low:
            low, high = a.min(), a.max()
        return np.clip((a - low) / (high - low), 0, 1) if high > low else np.zeros_like(a)
    if img.mode == "P" or "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255
        gray = np.asarray(rgba.convert("L"), dtype=np.float32) / 255
        if alpha.min() < 1:
            # Drawn digits are often opaque ink on a transparent canvas: fill the canvas with the opposite shade.
            ink = float((gray * alpha).sum() / max(alpha.sum(), 1e-6))
            background = 1.0 if ink < 0.5 else 0.0
            gray = gray * alpha + background * (1 - alpha)
        return gray
    try:
        return np.asarray(img.convert("L"), dtype=np.float32) / 255
    except ValueError as exc:  # a colour mode PIL reads but cannot turn grey, such as LAB
        raise ImageProblem(
            f"its colour mode {img.mode} is not supported ({exc}); save it as RGB or grayscale", "colour mode"
        ) from None


def open_gray(path: str | Path) -> np.ndarray:
    """Read a one-frame image file as grayscale floats, or raise ImageProblem with a one-line reason."""
    if isinstance(path, (str, Path)) and Path(path).exists() and not Path(path).is_file() and not Path(path).is_dir():
        raise ImageProblem("is not a regular file (a pipe or a device); pass an image file", "unreadable")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise ImageProblem(
                        f"is {img.width}x{img.height} ({img.width * img.height / 1e6:.0f} Mpx); "
                        f"digitnet reads images up to {MAX_PIXELS // 10**6} Mpx, scale it down",
                        "too large",
                    )
                frames = getattr(img, "n_frames", 1)
                # A phone's JPEG (MPO) holds the photo and its previews: the first frame is the picture itself.
                if frames > 1 and img.format != "MPO":
                    raise ImageProblem(
                        f"holds {frames} frames ({img.format}: an animation or several pages); "
                        "digitnet reads one digit an image: save the frame you want as its own file",
                        "frames",
                    )
                img.seek(0)
                img = ImageOps.exif_transpose(img)  # phone photos carry their rotation in EXIF
                img.load()
                return to_gray(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageProblem(f"refused by PIL's decompression-bomb guard ({exc})", "too large") from None
    except UnidentifiedImageError:
        raise ImageProblem("not an image PIL can read (PNG, JPEG, BMP, GIF, TIFF, ...)", "not an image") from None
    except FileNotFoundError:
        raise ImageProblem("no such file", "unreadable") from None
    except IsADirectoryError:
        raise ImageProblem("is a directory", "unreadable") from None
    except PermissionError:
        raise ImageProblem("cannot be read (permission denied)", "unreadable") from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:  # the file system's refusal, not the image's content
            raise ImageProblem(f"cannot be opened ({exc.strerror}); check the path", "unreadable") from None
        raise ImageProblem(
            f"damaged or truncated image ({first_line(exc, 120) or type(exc).__name__})", "damaged"
        ) from None


def _flatten_illumination(gray: np.ndarray) -> np.ndarray:
    """Subtract a smooth background estimate (photos of paper have shadows and gradients).

    Works on the inverted image (ink bright): a min filter wider than a stroke removes the ink, a blur smooths
    what remains, and that is the lighting. Done at 64 px for speed.
    """
    h, w = gray.shape
    small = Image.fromarray((gray * 255).astype(np.uint8)).resize((64, max(8, round(64 * h / w))), Image.BILINEAR)
    background = (
        small.filter(ImageFilter.MinFilter(7)).filter(ImageFilter.GaussianBlur(4)).resize((w, h), Image.BILINEAR)
    )
    return np.clip(gray - np.asarray(background, dtype=np.float32) / 255, 0, 1)


def _ink_box(ink: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box of the ink, ignoring the outer 0.5% of ink mass on each side (specks, dust)."""

    def span(profile: np.ndarray) -> tuple[int, int]:
        cum = np.cumsum(profile) / profile.sum()
        return int(np.searchsorted(cum, 0.005)), int(np.searchsorted(cum, 0.995))

    r0, r1 = span(ink.sum(axis=1))
    c0, c1 = span(ink.sum(axis=0))
    return r0, r1 + 1, c0, c1 + 1


def _resize_longer_side(a: np.ndarray, target: int) -> np.ndarray:
    h, w = a.shape
    size = [max(1, round(h * target / max(h, w))), max(1, round(w * target / max(h, w)))]
    # PIL's antialiased bilinear resize (what torchvision's antialias=True matches): no torch, so that an ONNX model
    # predicts without importing it.
    image = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
    return np.asarray(image.resize((size[1], size[0]), Image.BILINEAR)).clip(0, 1)


def _widen_thin_strokes(crop: np.ndarray) -> np.ndarray:
    """Pen strokes on a photographed page are far thinner, relative to the digit, than MNIST's (about 2 px in the
    20 px box). At 4x the final size, measure the stroke width (2 * area / perimeter) and dilate thin strokes up
    to MNIST's width; digits already that bold pass unchanged."""
    work = _resize_longer_side(crop, 80)
    work /= max(float(work.max()), 1e-6)
    mask = work > 0.35
    perimeter = int((mask & ~ndimage.binary_erosion(mask)).sum())
    width = 2 * int(mask.sum()) / max(perimeter, 1)
    if width < 6:
        size = max(3, int(round(8 - width)) | 1)
        work = ndimage.grey_dilation(np.pad(work, size // 2), size=(size, size))  # room for the grown edges
    return work


# Photos are brought down to this longer side first: a digit covering 0.1% of a 12-Mpx frame is still ~60 px
# tall there, and the filters below stay fast.
MAX_SIDE = 2000


def _digit_mask(smooth: np.ndarray) -> np.ndarray:
    """The digit's pixels: the connected ink with the most mass, and the ink near it (a "5"'s loose bar); dust and
    specks elsewhere on the page are dropped."""
    labels, n = ndimage.label(smooth > 0)
    if n <= 1:
        return labels > 0
    mass = ndimage.sum(smooth, labels, index=np.arange(1, n + 1))
    boxes = ndimage.find_objects(labels)
    main = int(np.argmax(mass))
    r, c = boxes[main]
    margin = max(r.stop - r.start, c.stop - c.start) // 4
    keep = [
        i + 1
        for i, (rr, cc) in enumerate(boxes)
        if rr.start >= r.start - margin
        and rr.stop <= r.stop + margin
        and cc.start >= c.start - margin
        and cc.stop <= c.stop + margin
    ]
    return np.isin(labels, keep)


def _border(gray: np.ndarray) -> np.ndarray:
    return np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])


def _otsu(values: np.ndarray) -> float:
    """The threshold that best splits values in [0, 1] into two classes (Otsu's, on a 64-bin histogram)."""
    counts, edges = np.histogram(values, bins=64, range=(0, 1))
    weight = np.cumsum(counts)
    mass = np.cumsum(counts * (edges[:-1] + edges[1:]) / 2)
    below, above = weight[:-1], weight[-1] - weight[:-1]
    between = (mass[-1] * below - mass[:-1] * weight[-1]) ** 2 / np.maximum(below * above, 1)
    return float(edges[1:][np.argmax(between)])


def _page_only(gray: np.ndarray, notes: list | None) -> np.ndarray:
    """A light page in a darker surround (a desk, a scanner's dark margin): the surround is painted the paper's
    shade, so that neither the background's judgement nor the ink search sees it. A page is a light region of most
    of the frame that is mostly paper (ink under a fifth of it), clearly lighter than what lies around it."""
    h, w = gray.shape
    scale = 256 / max(h, w)
    small = (
        np.asarray(
            Image.fromarray((gray * 255).astype(np.uint8)).resize(
                (max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR
            ),
            dtype=np.float32,
        )
        / 255
    )
    labels, n = ndimage.label(small > _otsu(small))
    if n == 0:
        return gray
    largest = labels == 1 + int(np.argmax(ndimage.sum(np.ones_like(small), labels, index=np.arange(1, n + 1))))
    page = ndimage.binary_fill_holes(largest)
    surround = ~page
    if not (
        0.3 < page.mean() < 0.985
        and largest.sum() > 0.8 * page.sum()
        and small[surround].mean() < 0.5 * small[largest].mean()
    ):
        return gray
    page = ndimage.binary_erosion(page, iterations=3)  # off the page's own edge, which would read as a stroke
    mask = np.asarray(Image.fromarray(page).resize((w, h), Image.NEAREST))
    if notes is not None:
        notes.append("found a page inside a darker surround; read the page only")
    return np.where(mask, gray, np.median(gray[mask]))


def mnist_form(gray: np.ndarray, notes: list | None = None) -> np.ndarray:
    """Grayscale (H, W) floats in [0, 1], any size -> (28, 28) MNIST-style floats in [0, 1]. `notes` gathers what
    the caller may tell the user (a page found inside a darker surround)."""
    if not np.isfinite(gray).all():
        raise ImageProblem(
            "holds pixels that are not numbers (NaN or infinite); save it again as a plain image", "not numbers"
        )
    if max(gray.shape) > MAX_SIDE:
        gray = _resize_longer_side(gray, MAX_SIDE)
    if min(gray.shape) >= 64:
        gray = _page_only(gray, notes)
    if np.median(_border(gray)) > 0.5:  # light background: ink on paper, so invert to MNIST's white on black
        gray = 1.0 - gray
    if min(gray.shape) >= 64:
        gray = _flatten_illumination(gray)
    border = _border(gray)
    background = float(np.median(border))
    # The ink's level from a 3x3 median filter: single specks and JPEG noise cannot set it, while a stroke a few
    # pixels wide, even of a digit covering 0.1% of the frame, does (a percentile of the whole frame would not).
    smooth = ndimage.median_filter(gray, size=3) if min(gray.shape) >= 9 else gray
    ink_level = float(smooth.max())
    if ink_level - background < 0.1:
        raise ImageProblem("no digit found (the image is blank or has almost no contrast)", "no digit")
    scale = ink_level - background
    ink = np.clip((gray - background) / scale, 0, 1)
    smooth = np.clip((smooth - background) / scale, 0, 1)
    smooth[smooth < 0.2] = 0  # paper texture and sensor noise
    ink[~_digit_mask(smooth)] = 0
    ink[ink < 0.2] = 0
    if ink.sum() == 0:
        raise ImageProblem("no digit found (the image is blank or has almost no contrast)", "no digit")
    r0, r1, c0, c1 = _ink_box(ink)
    digit = _resize_longer_side(_widen_thin_strokes(ink[r0:r1, c0:c1]), 20)
    if digit.sum() <= 0:
        raise ImageProblem("no digit found (the ink vanished when scaled to 20 px)", "no digit")
    com_r, com_c = ndimage.center_of_mass(digit)
    top = int(np.clip(round(14 - com_r), 0, 28 - digit.shape[0]))
    left = int(np.clip(round(14 - com_c), 0, 28 - digit.shape[1]))
    out = np.zeros((28, 28), dtype=np.float32)
    out[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return out


def as_is(gray: np.ndarray) -> np.ndarray:
    """The tutorial's way: an image that already is 28x28 MNIST-style, used unchanged."""
    if gray.shape != (28, 28):
        raise ImageProblem(
            f"is {gray.shape[1]}x{gray.shape[0]}; --no-preprocess needs 28x28 (drop the flag to resize)", "size"
        )
    return gray.astype(np.float32)


def expand_paths(paths: list[str], skipped: list[Path] | None = None, empty: list[Path] | None = None) -> list[Path]:
    """Files as given; folders become their image files (recursively, sorted), leaving out the run and sweep dirs
    inside them (their learning curves and confusion matrices are no digits), which are added to `skipped`; folders
    that hold no image file are added to `empty`."""
    import os

    from digitnet.layout import run_file_in

    out: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            out.append(p)
            continue
        found = []
        for root, dirs, files in os.walk(p):
            runs = [d for d in dirs if run_file_in(Path(root) / d)]
            dirs[:] = [d for d in dirs if d not in runs]
            if skipped is not None:
                skipped.extend(Path(root) / d for d in sorted(runs))
            found += [Path(root) / f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES]
        # A broken link or a link loop stays in: it gets its own line, as when given by name, not silence.
        found = sorted(f for f in found if f.is_file() or f.is_symlink())
        if not found and empty is not None:
            empty.append(p)
        out.extend(found)
    return out
