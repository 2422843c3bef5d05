import gzip

import numpy as np
import pytest
import torch

from conftest import make_synthetic_mnist, write_idx
from digitnet.core import data
from digitnet.core.data import OPTION_SETTINGS, kfold_indices, load_mnist, pixel_stats, read_idx
from digitnet.core.module import MNISTDataModule
from digitnet.errors import UserError


@pytest.mark.parametrize("gz", [True, False])
def test_reads_synthetic_idx_gz_and_raw(tmp_path, gz):
    root = make_synthetic_mnist(tmp_path, n_train=30, n_test=10, gz=gz)
    arrays = load_mnist(root, download=False)
    assert arrays.train_x.shape == (30, 28, 28) and arrays.train_x.dtype == torch.uint8
    assert arrays.test_x.shape == (10, 28, 28)
    assert arrays.train_y.tolist() == [i % 10 for i in range(30)]
    assert int(arrays.train_x[3, 2 + 6, 4]) == 255  # class 3's square, where the generator put it


def test_missing_files_name_them_and_the_fix(tmp_path):
    make_synthetic_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError) as err:
        load_mnist(tmp_path, download=False)
    assert err.value.path == tmp_path and "t10k-labels-idx1-ubyte" in str(err.value)


@pytest.mark.parametrize("download", [True, False])
def test_a_folder_or_broken_link_in_a_files_place_is_named(tmp_path, download):
    """A folder named t10k-images-idx3-ubyte.gz was an IsADirectoryError ("please report it"): the cleanup of the
    failed download tried to unlink it."""
    make_synthetic_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    (tmp_path / "t10k-images-idx3-ubyte.gz").mkdir()
    with pytest.raises(UserError) as err:
        load_mnist(tmp_path, download=download)
    assert err.value.path == tmp_path / "t10k-images-idx3-ubyte.gz"
    assert (tmp_path / "t10k-images-idx3-ubyte.gz").is_dir()
    (tmp_path / "t10k-images-idx3-ubyte.gz").rmdir()
    (tmp_path / "t10k-images-idx3-ubyte.gz").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UserError) as err:
        load_mnist(tmp_path, download=download)
    assert err.value.path == tmp_path / "t10k-images-idx3-ubyte.gz"


def test_failed_download_is_one_clear_error(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr("torchvision.datasets.utils.download_url", no_network)
    with pytest.raises(UserError) as err:
        load_mnist(tmp_path / "empty", download=True)
    assert err.value.path == tmp_path / "empty"
    assert not (tmp_path / "empty").exists()  # a failed download leaves no folder behind
    with pytest.raises(UserError) as err:
        load_mnist(tmp_path / "new" / "sub", download=True, holdout_only=True, settings=OPTION_SETTINGS)
    assert "--data-root" in str(err.value)  # the fix names evaluate's option, not train's key
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nor the folders above it that it made


@pytest.mark.parametrize("root", ["", "{tmp}/afile", "{tmp}"])
def test_evaluate_data_errors_name_the_folder_and_its_option(tmp_path, root):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError) as err:
        load_mnist(root.format(tmp=tmp_path), download=False, holdout_only=True, settings=OPTION_SETTINGS)
    assert str(err.value.path) in (root.format(tmp=tmp_path), ".")
    assert "--data-root" in str(err.value) and "data.root" not in str(err.value)


def test_an_idx_file_with_no_items_is_named(tmp_path):
    from conftest import write_idx

    make_synthetic_mnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((0, 28, 28)), 2051)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros((0,)), 2049)
    with pytest.raises(UserError) as err:
        load_mnist(tmp_path, download=False)
    assert err.value.path == tmp_path / "train-images-idx3-ubyte.gz"


def test_the_holdout_alone_is_enough_for_evaluate(tmp_path):
    make_synthetic_mnist(tmp_path)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (tmp_path / name).unlink()
    arrays = load_mnist(tmp_path, download=False, holdout_only=True)
    assert len(arrays.test_y) == 20 and len(arrays.train_y) == 0


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda raw: (0x0801).to_bytes(4, "big") + raw[4:],
        lambda raw: raw[:-100],
        lambda raw: raw[:10],
        lambda raw: raw[:8] + (27).to_bytes(4, "big") + raw[12:],
    ],
    ids=["magic", "short-body", "short-header", "shape"],
)
def test_corrupt_images_file_is_named(tmp_path, corrupt):
    make_synthetic_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(corrupt(gzip.decompress(path.read_bytes()))))
    with pytest.raises(UserError) as err:
        load_mnist(tmp_path, download=False)
    assert err.value.path == path


def test_bad_gzip_is_named(tmp_path):
    make_synthetic_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(UserError) as err:
        load_mnist(tmp_path, download=False)
    assert err.value.path == tmp_path / "train-labels-idx1-ubyte.gz"


def test_an_unreadable_file_is_told_to_be_made_readable(tmp_path, monkeypatch):
    """Not "replace it with a good copy": the file is fine, its permissions are not (root reads anything, so the
    refusal is simulated)."""
    make_synthetic_mnist(tmp_path)

    def refuse(path, mode="rb"):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(gzip, "open", refuse)
    with pytest.raises(UserError) as err:
        load_mnist(tmp_path, download=False)
    assert err.value.path.name.endswith(".gz") and "chmod" in str(err.value)


def test_image_and_label_counts_must_agree(tmp_path):
    make_synthetic_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(59), 2049)
    with pytest.raises(UserError) as err:
        load_mnist(tmp_path, download=False)
    assert err.value.path == tmp_path / "train-labels-idx1-ubyte.gz"


def test_labels_out_of_range(tmp_path):
    make_synthetic_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(20, 12), 2049)
    with pytest.raises(UserError) as err:
        load_mnist(tmp_path, download=False)
    assert err.value.path == tmp_path / "t10k-labels-idx1-ubyte.gz"


def test_real_files_parse(mnist_root):
    x = read_idx(mnist_root / "t10k-labels-idx1-ubyte.gz", 2049, ())
    assert x.shape == (10000,)
    counts = torch.bincount(x.long(), minlength=10).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # ../shared/data/README.md


def test_folds_are_disjoint_cover_everything_and_repeat():
    folds = kfold_indices(1000, 5, seed=1)
    vals = [set(v.tolist()) for _, v in folds]
    assert all(len(v) == 200 for v in vals)
    assert set().union(*vals) == set(range(1000))
    for i in range(5):
        for j in range(i + 1, 5):
            assert not vals[i] & vals[j]
        train, val = folds[i]
        assert not set(train.tolist()) & vals[i] and len(train) + len(val) == 1000
    again = kfold_indices(1000, 5, seed=1)
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again))
    other = kfold_indices(1000, 5, seed=2)
    assert any((a[1] != b[1]).any() for a, b in zip(folds, other))
    # Shuffled: fold 0 is not simply the first 200 images.
    assert vals[0] != set(range(200))


@pytest.mark.parametrize(
    "n, n_folds, seed", [(60_000, 5, 1), (600, 2, 1), (1003, 5, 1), (61, 7, 0), (10, 10, 42), (4095, 3, 2**32 - 1)]
)
def test_folds_are_scikit_learns_kfold(n, n_folds, seed):
    from sklearn.model_selection import KFold

    expected = KFold(n_folds, shuffle=True, random_state=seed).split(np.arange(n))
    for (train, val), (sk_train, sk_val) in zip(kfold_indices(n, n_folds, seed), expected, strict=True):
        assert np.array_equal(train, sk_train) and np.array_equal(val, sk_val)


def test_datamodule_uses_the_kfold_split(synthetic_root):
    arrays = load_mnist(synthetic_root, download=False)
    dm = MNISTDataModule(arrays, fold=2, n_folds=5, cv_seed=1, limit=50)
    _, val_idx = kfold_indices(50, 5, 1)[2]
    assert torch.equal(dm.val_y, arrays.train_y[torch.from_numpy(val_idx)])
    assert len(dm.train_y) == 40 and len(dm.val_y) == 10
    assert dm.train_x.shape[1:] == (1, 28, 28) and float(dm.train_x.max()) <= 1.0


@pytest.mark.parametrize("scaling", ["center", "standardize"])
def test_scaling_statistics_come_from_the_training_fold_only(synthetic_root, scaling):
    arrays = load_mnist(synthetic_root, download=False)
    train_idx, val_idx = kfold_indices(60, 3, 1)[0]
    before = MNISTDataModule(arrays, fold=0, n_folds=3, scaling=scaling)
    # Blow up the validation pixels: if they leaked into the statistics, mean/std would move.
    arrays.train_x[torch.from_numpy(val_idx)] = 255
    after = MNISTDataModule(arrays, fold=0, n_folds=3, scaling=scaling)
    assert (after.pixel_mean, after.pixel_std) == (before.pixel_mean, before.pixel_std)
    expected = arrays.train_x[torch.from_numpy(train_idx)].double() / 255
    assert after.pixel_mean == pytest.approx(float(expected.mean()))
    if scaling == "standardize":
        assert after.pixel_std == pytest.approx(float(expected.std()))
    else:
        assert after.pixel_std == 1.0


def test_normalize_is_plain_division():
    assert pixel_stats(torch.full((2, 28, 28), 7, dtype=torch.uint8), "normalize") == (0.0, 1.0)


def test_batches_are_sliced_not_collated(synthetic_root):
    arrays = load_mnist(synthetic_root, download=False)
    dm = MNISTDataModule(arrays, fold=0, n_folds=3, batch_size=8)
    assert hasattr(data.InMemoryBatches, "__getitems__")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 28, 28) and y.shape == (8,)
    # Same seed, same order; a different seed, a different order.
    first = [b[1].tolist() for b in dm.train_dataloader()]
    assert first == [b[1].tolist() for b in dm.train_dataloader()]
    other = MNISTDataModule(arrays, fold=0, n_folds=3, batch_size=8, shuffle_seed=5)
    assert first != [b[1].tolist() for b in other.train_dataloader()]


def test_a_damaged_gzip_stream_is_named(tmp_path):
    make_synthetic_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[40:60] = bytes(20)  # inside the deflate stream
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError) as err:
        load_mnist(tmp_path, download=False)
    assert err.value.path == path


def test_standardizing_images_of_one_shade_is_refused():
    with pytest.raises(UserError) as err:
        pixel_stats(torch.zeros(10, 28, 28, dtype=torch.uint8), "standardize")
    assert err.value.key == "data.scaling"


def test_the_digest_names_the_data_not_its_place(synthetic_root, tmp_path):
    """What a resume compares: the same images and labels give the same digest wherever they lie; one pixel or one
    label more or less changes it."""
    import shutil

    from digitnet.core.data import digest

    arrays = load_mnist(synthetic_root, download=False)
    copy = load_mnist(shutil.copytree(synthetic_root, tmp_path / "copy"), download=False)
    assert digest(arrays.train_x, arrays.train_y) == digest(copy.train_x, copy.train_y)
    assert digest(arrays.train_x[:59], arrays.train_y[:59]) != digest(arrays.train_x, arrays.train_y)
    copy.train_x[0, 0, 0] += 1
    assert digest(arrays.train_x, arrays.train_y) != digest(copy.train_x, copy.train_y)


def test_a_last_batch_of_one_image_is_dropped(synthetic_root):
    arrays = load_mnist(synthetic_root, download=False)
    dm = MNISTDataModule(arrays, fold=None, limit=33, batch_size=32)
    assert [len(y) for _, y in dm.train_dataloader()] == [32]  # BatchNorm cannot train on 1 image
    dm = MNISTDataModule(arrays, fold=None, limit=34, batch_size=32)
    assert [len(y) for _, y in dm.train_dataloader()] == [32, 2]
