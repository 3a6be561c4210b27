"""MedMNIST .npz files written in the published layout load with their splits."""

from __future__ import annotations

import numpy as np
import pytest

from medimg.datasets.medmnist import load_medmnist
from medimg.errors import ImageReadError


def _write(path, shape, labels_fn, sizes=(10, 4, 6)):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = labels_fn(rng, n)
    np.savez(path, **arrays)
    return arrays


def test_2d_binary_keeps_official_splits_and_layout(tmp_path):
    raw = _write(tmp_path / "pneumoniamnist.npz", (28, 28), lambda r, n: r.integers(0, 2, (n, 1)))
    ds = load_medmnist(tmp_path / "pneumoniamnist.npz")
    assert (ds.task, ds.num_classes, ds.spatial_dims, ds.channels) == ("binary", 2, 2, 1)
    x, y = ds.splits["val"]
    assert x.shape == (4, 1, 28, 28) and y.shape == (4,) and x.dtype == np.float32
    # row r, column c of the file is our (X=c, Y=r)
    assert x[2, 0, 5, 3] == pytest.approx(raw["val_images"][2, 3, 5] / 255.0)
    assert np.array_equal(y, raw["val_labels"][:, 0])
    assert len(ds.splits["train"][0]) == 10 and len(ds.splits["test"][0]) == 6


def test_rgb_multiclass_multilabel_and_3d(tmp_path):
    _write(tmp_path / "dermamnist_64.npz", (64, 64, 3), lambda r, n: r.integers(0, 7, (n, 1)))
    ds = load_medmnist(tmp_path / "dermamnist_64.npz")
    assert (ds.name, ds.task, ds.num_classes, ds.channels) == ("dermamnist", "multiclass", 7, 3)
    _write(tmp_path / "chestmnist.npz", (28, 28), lambda r, n: r.integers(0, 2, (n, 14)))
    ds = load_medmnist(tmp_path / "chestmnist.npz")
    assert ds.task == "multilabel" and ds.splits["test"][1].shape == (6, 14)
    _write(tmp_path / "nodulemnist3d.npz", (28, 28, 28), lambda r, n: r.integers(0, 2, (n, 1)))
    ds = load_medmnist(tmp_path / "nodulemnist3d.npz")
    assert ds.spatial_dims == 3 and ds.splits["train"][0].shape == (10, 1, 28, 28, 28)


def test_bad_files_are_one_line_errors(tmp_path):
    np.savez(tmp_path / "x.npz", train_images=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ImageReadError, match="missing arrays train_labels"):
        load_medmnist(tmp_path / "x.npz")
    _write(tmp_path / "breastmnist.npz", (8, 8), lambda r, n: np.full((n, 1), 3))
    with pytest.raises(ImageReadError, match="label 3 outside the 2 classes"):
        load_medmnist(tmp_path / "breastmnist.npz")
    with pytest.raises(ImageReadError, match="not found"):
        load_medmnist(tmp_path / "nope.npz")


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.ones((4, 8, 8), np.complex64), "complex"),
        (np.full((4, 8, 8), np.nan, np.float32), "NaN"),
        (np.ones((4, 1, 1), np.float32), "one pixel"),
        (np.ones((0, 8, 8), np.float32), "empty"),
    ],
)
def test_complex_nan_tiny_and_empty_images_are_refused(tmp_path, images, message):
    from medimg.errors import MedimgError

    arrays = {f"{s}_images": images for s in ("train", "val", "test")}
    arrays |= {
        f"{s}_labels": np.zeros((len(images), 1), np.int64) for s in ("train", "val", "test")
    }
    np.savez(tmp_path / "x.npz", **arrays)
    with pytest.raises(MedimgError, match=message):
        load_medmnist(tmp_path / "x.npz")
