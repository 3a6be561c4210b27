"""Zero pixel spacing: unknown on an uncalibrated radiograph, refused on a cross-section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dicom_factory import make_slice

from medimg.errors import MedimgError
from medimg.io import api


def _write(ds, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def test_radiograph_with_zero_spacing_reads_as_unknown_spacing(tmp_path: Path) -> None:
    ds = make_slice(np.arange(48, dtype=np.uint16).reshape(6, 8), modality="MR")
    del ds.ImagePositionPatient, ds.ImageOrientationPatient
    ds.Modality, ds.PixelSpacing = "CR", ["0", "0"]
    img = api.load(_write(ds, tmp_path / "cr.dcm"))
    assert img.array.shape[-2:] == (8, 6)
    np.testing.assert_allclose(img.spacing[:2], (1.0, 1.0))  # unknown: 1 mm, as when absent


def test_slice_with_zero_spacing_is_still_refused(tmp_path: Path) -> None:
    ds = make_slice(np.zeros((6, 8), np.uint16), pixel_spacing=(0.0, 0.0))
    with pytest.raises(MedimgError, match="PixelSpacing"):
        api.load(_write(ds, tmp_path / "ct.dcm"))
