"""load/save choose the format from the path, and refuse what they cannot do in one line."""

from __future__ import annotations

import numpy as np
import pytest

from medimg.errors import ImageReadError, InputError, OutputExistsError
from medimg.io import Image
from medimg.io.api import format_of, load, save


@pytest.fixture
def ct() -> Image:
    rng = np.random.default_rng(1)
    data = rng.integers(-1000, 1500, size=(1, 7, 9, 5)).astype(np.float32)
    affine = np.array(
        [[0.0, -0.8, 0.0, 10.0], [0.75, 0.0, 0.0, -5.0], [0.0, 0.0, 2.5, 30.0], [0, 0, 0, 1]]
    )
    return Image(data, affine, modality="CT")


@pytest.mark.parametrize("name", ["a.nii", "a.nii.gz", "a.nrrd", "a.mha", "a.mhd"])
def test_round_trip_by_extension(tmp_path, ct: Image, name: str) -> None:
    out = save(ct, tmp_path / name)
    back = load(out, modality="CT")
    assert np.array_equal(back.array, ct.array)
    assert np.allclose(back.affine, ct.affine, atol=1e-5)
    assert back.modality == "CT"


def test_path_without_extension_is_a_dicom_series(tmp_path, ct: Image) -> None:
    folder = save(ct, tmp_path / "series")
    files = sorted(folder.iterdir())
    assert len(files) == ct.spatial_shape[2]
    back = load(folder)
    assert back.modality == "CT"
    assert np.allclose(back.array, ct.array, atol=0.5)
    assert np.allclose(back.affine, ct.affine, atol=1e-4)
    # a single slice file without extension is recognised by its DICM preamble
    renamed = files[0].with_suffix("")
    files[0].rename(renamed)
    assert format_of(renamed) == "dicom"


def test_missing_and_unknown_inputs(tmp_path) -> None:
    with pytest.raises(ImageReadError, match="no such file"):
        load(tmp_path / "missing.nii.gz")
    odd = tmp_path / "notes.txt"
    odd.write_text("hello")
    with pytest.raises(ImageReadError, match=r"unknown image format '\.txt'.*\.nii\.gz"):
        load(odd)


def test_save_refusals(tmp_path, ct: Image) -> None:
    with pytest.raises(InputError, match="unknown extension"):
        save(ct, tmp_path / "out.png")
    with pytest.raises(InputError, match="folder"):
        save(ct, tmp_path / "out.dcm")
    with pytest.raises(InputError, match="do not apply"):
        save(ct, tmp_path / "out.nii.gz", series_description="x")
    target = tmp_path / "kept.nii.gz"
    target.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        save(ct, target)
    assert target.read_bytes() == b"keep me"
