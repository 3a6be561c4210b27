"""Shared fixtures for io tests: small odd-shaped images on oblique, anisotropic grids."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from medimg.io.image import Image

SHAPE = (7, 9, 5)  # (X, Y, Z): odd, non-square, few slices
SPACING = (0.7, 0.9, 2.5)  # mm, anisotropic


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = (f(np.deg2rad(a)) for a in (ax, ay, az) for f in (np.cos, np.sin))
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@pytest.fixture
def oblique_affine() -> np.ndarray:
    """Right-handed RAS+ affine, rotated about all three axes, spacing 0.7 x 0.9 x 2.5 mm."""
    a = np.eye(4)
    a[:3, :3] = _rotation(20.0, -15.0, 10.0) @ np.diag(SPACING)
    a[:3, 3] = [-60.5, 40.25, 12.75]
    return a


@pytest.fixture
def left_handed_affine(oblique_affine: np.ndarray) -> np.ndarray:
    """The oblique grid with x flipped (an oblique LAS-like grid): det < 0."""
    a = oblique_affine @ np.diag([-1.0, 1.0, 1.0, 1.0])
    assert np.linalg.det(a[:3, :3]) < 0
    return a


@pytest.fixture
def ct_image(oblique_affine: np.ndarray) -> Image:
    """CT-like float32 image in whole HU, air to bone (negative values included)."""
    rng = np.random.default_rng(0)
    hu = rng.integers(-1024, 3072, size=(1, *SHAPE)).astype(np.float32)
    return Image(hu, oblique_affine, modality="CT")


@pytest.fixture
def mr_image(oblique_affine: np.ndarray) -> Image:
    """MR-like float32 image with fractional values (needs a rescale slope in DICOM)."""
    rng = np.random.default_rng(1)
    return Image(rng.uniform(0.0, 1234.5, size=(1, *SHAPE)).astype(np.float32), oblique_affine,
                 modality="MR")  # fmt: skip


@pytest.fixture
def label_image(oblique_affine: np.ndarray) -> Image:
    """uint8 label map with non-consecutive values {0, 1, 2, 5} on the oblique grid."""
    lab = np.zeros((1, *SHAPE), dtype=np.uint8)
    lab[0, 1:4, 2:6, 1:4] = 1
    lab[0, 4:6, 5:8, 0:2] = 5
    lab[0, 0, 0, 4] = 2
    return Image(lab, oblique_affine, modality="CT", is_label=True)


@pytest.fixture
def read_series_sitk() -> Callable[[Path], Image]:
    """Read a DICOM series folder with SimpleITK's ImageSeriesReader (an independent reader)."""
    import SimpleITK as sitk

    def read(folder: Path) -> Image:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
        return Image.from_sitk(reader.Execute())

    return read
