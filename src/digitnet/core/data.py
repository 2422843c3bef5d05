"""MNIST: reading the IDX files, what the data is (its digest), pixel scaling, k-fold splits, in-memory batches."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from digitnet.errors import UserError, shown

# file name stem -> (IDX magic number, shape after the count)
_FILES = {
    "train-images-idx3-ubyte": (2051, (28, 28)),
    "train-labels-idx1-ubyte": (2049, ()),
    "t10k-images-idx3-ubyte": (2051, (28, 28)),
    "t10k-labels-idx1-ubyte": (2049, ()),
}


def default_root() -> str:
    """Where MNIST is read from when nothing says otherwise: $DIGITNET_DATA, else ./data (as conf/data/mnist.yaml)."""
    return os.environ.get("DIGITNET_DATA", "data")


def _find(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    return None


# How a command names its data settings in the fix of a data error: train's config keys, or evaluate's options.
CONFIG_SETTINGS = {"root": "data.root=DIR", "download": "allow data.download=true"}
OPTION_SETTINGS = {"root": "--data-root DIR", "download": "drop --no-download"}


def download_mnist(root: Path, missing: list[str], settings: dict = CONFIG_SETTINGS, n_files: int = 4) -> None:
    """Fetch the missing files through torchvision's MNIST mirrors (checksums included)."""
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import download_url

    md5 = dict(MNIST.resources)
    for stem in missing:
        errors = []
        for mirror in MNIST.mirrors:
            try:
                download_url(mirror + stem + ".gz", root, filename=stem + ".gz", md5=md5[stem + ".gz"])
                break
            except Exception as exc:  # noqa: BLE001 - every mirror failing is reported below
                errors.append(f"{mirror}: {exc}")
        else:
            raise UserError(
                f"MNIST files missing in {root}: {', '.join(missing)}, and downloading them failed "
                f"({errors[0][:120]}). With no network, copy the {'four' if n_files == 4 else 'two t10k'} MNIST "
                f"files (gz or raw) into {root} or point {settings['root']} or DIGITNET_DATA at a folder that has them",
                path=root,
            )


def read_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> torch.Tensor:
    """Read one IDX file (gz or raw) into a uint8 tensor, checking its header against the size."""

    def bad(what: str) -> UserError:
        return UserError(f"{shown(path)}: {what}; replace it with a good copy of the MNIST file", path=path)

    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except PermissionError:
        raise UserError(
            f"{shown(path)}: cannot be read (permission denied); make it readable (chmod a+r)", path=path
        ) from None
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise bad(f"cannot read it ({exc})") from None
    ndim = 1 + len(item_shape)
    header = 4 * (1 + ndim)
    if len(raw) < header:
        raise bad(f"truncated ({len(raw)} bytes)")
    found = int.from_bytes(raw[0:4], "big")
    if found != magic:
        raise bad(
            f"magic number {found:#010x}, not {magic:#010x}: not the MNIST file its name says (images and "
            "labels swapped?)"
        )
    dims = tuple(int.from_bytes(raw[4 * i : 4 * i + 4], "big") for i in range(1, ndim + 1))
    if dims[1:] != item_shape:
        raise bad(f"items of shape {dims[1:]}, not {item_shape}: not MNIST")
    if len(raw) != header + int(np.prod(dims)):
        raise bad(f"its header promises {dims[0]} items ({header + int(np.prod(dims))} bytes) but it has {len(raw)}")
    if dims[0] == 0:
        raise bad("it holds 0 items")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=header).view(*dims)


@dataclass
class MNISTArrays:
    train_x: torch.Tensor  # (60000, 28, 28) uint8
    train_y: torch.Tensor  # (60000,) int64
    test_x: torch.Tensor  # (10000, 28, 28) uint8: the holdout, never used by CV
    test_y: torch.Tensor


def _download_into(root: Path, missing: list[str], settings: dict, n_files: int) -> None:
    """download_mnist into `root`, made if needed; a failed download leaves nothing behind: no half-written file,
    no folder made for it."""
    created = root  # the topmost folder this call makes
    while not created.parent.exists():
        created = created.parent
    created = None if root.exists() else created
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create data folder {root} ({exc}); set {settings['root']} to a writable folder", path=root
        ) from None
    try:
        download_mnist(root, missing, settings, n_files)
    except BaseException:
        if created:
            shutil.rmtree(created, ignore_errors=True)
        else:
            for stem in missing:
                (root / (stem + ".gz")).unlink(missing_ok=True)
        raise


def load_mnist(
    root: str | os.PathLike, download: bool = True, holdout_only: bool = False, settings: dict = CONFIG_SETTINGS
) -> MNISTArrays:
    """The four MNIST files of `root` (gz or raw), checked. holdout_only: the two t10k files alone (evaluate);
    the training arrays are then empty."""
    if not str(root).strip():  # Path("") would be the working dir
        raise UserError(f"the data folder is empty; set {settings['root']} or DIGITNET_DATA=DIR", path=root)
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise UserError(
            f"the data folder {root} is a file; set {settings['root']} to the folder of the MNIST files", path=root
        )
    wanted = [stem for stem in _FILES if not holdout_only or stem.startswith("t10k")]
    missing = [stem for stem in wanted if _find(root, stem) is None]
    for stem in missing:
        for name in (stem + ".gz", stem):
            if (root / name).exists() or (root / name).is_symlink():  # a folder or a dangling link in its place
                raise UserError(
                    f"{root / name} is not a file (a folder or a broken link); put the MNIST file there in its place",
                    path=root / name,
                )
    if missing and download:
        _download_into(root, missing, settings, len(wanted))
        missing = [stem for stem in wanted if _find(root, stem) is None]
    if missing:
        raise UserError(
            f"MNIST files missing in {root.resolve()}: {', '.join(missing)} (gz or raw). Copy them there, "
            f"set {settings['root']} or DIGITNET_DATA=DIR, or {settings['download']}",
            path=root,
        )
    t = {stem: read_idx(_find(root, stem), *_FILES[stem]) for stem in wanted}
    empty = torch.zeros(0, 28, 28, dtype=torch.uint8)
    arrays = MNISTArrays(
        t.get("train-images-idx3-ubyte", empty),
        t.get("train-labels-idx1-ubyte", empty[:, 0, 0]).long(),
        t["t10k-images-idx3-ubyte"],
        t["t10k-labels-idx1-ubyte"].long(),
    )
    for split, x, y in (("train", arrays.train_x, arrays.train_y), ("t10k", arrays.test_x, arrays.test_y)):
        if holdout_only and split == "train":
            continue
        labels = _find(root, f"{split}-labels-idx1-ubyte")
        if len(x) != len(y):
            raise UserError(
                f"{shown(root)}: {split} images ({len(x)}) and labels ({len(y)}) disagree in count; the "
                "files come from different sets or one is cut short",
                path=labels,
            )
        if int(y.max()) > 9:
            raise UserError(f"{shown(labels)}: holds label {int(y.max())}; MNIST labels are 0-9", path=labels)
    return arrays


def digest(*tensors: torch.Tensor) -> str:
    """What the images and labels are, not where they came from: a run dir resumes only on the same data."""
    h = hashlib.blake2b(digest_size=12)
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def kfold_indices(n: int, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, val) index pairs, identical for every model and config with the same n, n_folds and seed: those
    of scikit-learn's `KFold(n_folds, shuffle=True, random_state=seed)` (the tutorial's split; tests/test_data.py
    holds the two equal), without importing scikit-learn at every run's start. Both index arrays are sorted."""
    order = np.random.RandomState(seed).permutation(n)
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    pairs, start = [], 0
    for size in sizes:
        val = np.zeros(n, dtype=bool)
        val[order[start : start + size]] = True
        pairs.append((np.flatnonzero(~val), np.flatnonzero(val)))
        start += size
    return pairs


def pixel_stats(train_x: torch.Tensor, scaling: str) -> tuple[float, float]:
    """(mean, std) to apply to x/255 under `scaling`, computed from the given (training) images only."""
    if scaling == "normalize":
        return 0.0, 1.0
    x = train_x.double() / 255
    mean = float(x.mean())
    std = float(x.std())
    if scaling == "standardize" and not std > 1e-6:
        raise UserError(
            "data.scaling=standardize: the training images are all one shade (std 0), so there is "
            "nothing to divide by; check the MNIST files, or use data.scaling=normalize",
            key="data.scaling",
            value=scaling,
        )
    return (mean, 1.0) if scaling == "center" else (mean, std)


def to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in [0, 1]. Nets apply their own mean/std on top."""
    return x_uint8.unsqueeze(1).float().div_(255)


class InMemoryBatches(Dataset):
    """Tensors held in memory; `__getitems__` lets DataLoader slice a whole batch at once (no per-sample collate)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def __getitems__(self, indices):
        idx = torch.as_tensor(indices)
        return self.x[idx], self.y[idx]


def _as_batch(batch):
    return batch


def batches(x, y, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False) -> DataLoader:
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        InMemoryBatches(x, y),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=_as_batch,
        drop_last=drop_last,
    )
