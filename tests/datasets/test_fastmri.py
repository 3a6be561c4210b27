"""fastMRI HDF5 layout: tiny files written in the exact public layout, read back, and bad files."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np
import pytest

from medimg.datasets.fastmri import IsmrmrdHeader, read_fastmri, write_fastmri
from medimg.errors import ImageReadError, OutputExistsError
from medimg.physics.masks import equispaced_mask

NS = "{http://www.ismrm.org/ISMRMRD}"


def _kspace(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _rss(kspace: np.ndarray) -> np.ndarray:
    axes = (-2, -1)
    img = np.fft.fftshift(
        np.fft.ifft2(np.fft.ifftshift(kspace, axes=axes), norm="ortho"), axes=axes
    )
    return np.sqrt((np.abs(img) ** 2).sum(1))


def test_multicoil_file_has_the_exact_fastmri_layout(tmp_path: Path) -> None:
    kspace = _kspace((3, 4, 40, 26))
    path = write_fastmri(tmp_path / "file1000001.h5", kspace, recon_size=(32, 24), patient_id="p7")
    with h5py.File(path, "r") as f:
        assert set(f.keys()) == {"kspace", "reconstruction_rss", "ismrmrd_header"}
        assert f["kspace"].dtype == np.complex64 and f["kspace"].shape == (3, 4, 40, 26)
        assert f["reconstruction_rss"].dtype == np.float32
        assert f["reconstruction_rss"].shape == (3, 32, 24)
        assert set(f.attrs) == {"acquisition", "max", "norm", "patient_id"}
        assert f.attrs["acquisition"] == "CORPD_FBK" and f.attrs["patient_id"] == "p7"
        # Parse the header the way fastMRI's own data loader does.
        root = ET.fromstring(f["ismrmrd_header"][()])
        enc = [NS + t for t in ("encoding", "encodedSpace", "matrixSize")]
        rec = [NS + t for t in ("encoding", "reconSpace", "matrixSize")]
        assert int(root.find("/".join([*enc, NS + "x"])).text) == 40
        assert int(root.find("/".join([*enc, NS + "y"])).text) == 26
        assert int(root.find("/".join([*rec, NS + "x"])).text) == 32
        limits = [NS + t for t in ("encoding", "encodingLimits", "kspace_encoding_step_1")]
        assert int(root.find("/".join([*limits, NS + "center"])).text) == 13
        assert int(root.find("/".join([*limits, NS + "maximum"])).text) == 25
        recon = f["reconstruction_rss"][()]
        assert f.attrs["max"] == pytest.approx(recon.max())
        assert f.attrs["norm"] == pytest.approx(np.linalg.norm(recon), rel=1e-5)
    expected = _rss(kspace)[:, 4:36, 1:25]  # centre crop to the recon matrix
    assert np.allclose(recon, expected, atol=1e-5)


def test_roundtrip_with_mask_and_slices(tmp_path: Path) -> None:
    kspace = _kspace((4, 3, 24, 40), seed=1)
    mask = equispaced_mask((24, 40), 4, center_fraction=0.2).numpy()
    path = write_fastmri(tmp_path / "test.h5", kspace * mask, mask=mask, reconstruction=None)
    vol = read_fastmri(path)
    assert vol.multicoil and vol.path == path
    assert np.array_equal(vol.kspace, kspace * mask) and vol.kspace.dtype == np.complex64
    assert vol.reconstruction is None
    assert vol.mask.shape == (40,) and vol.mask.dtype == bool
    assert np.array_equal(vol.mask, mask[0] > 0)
    assert vol.attrs["acceleration"] == pytest.approx(4.0)
    assert vol.attrs["num_low_frequency"] == 8
    assert vol.header == IsmrmrdHeader(
        encoded_size=(24, 40, 1),
        recon_size=(24, 40, 1),
        encoded_fov_mm=(220.0, 220.0, 3.0),
        recon_fov_mm=(220.0, 220.0, 3.0),
        kspace_center=20,
        kspace_maximum=39,
    )
    one = read_fastmri(path, slices=2)
    assert one.kspace.shape == (1, 3, 24, 40) and np.array_equal(one.kspace[0], vol.kspace[2])
    part = read_fastmri(path, slices=slice(1, 3))
    assert part.kspace.shape == (2, 3, 24, 40)


def test_singlecoil_file_stores_reconstruction_esc(tmp_path: Path) -> None:
    kspace = _kspace((2, 16, 12), seed=2)
    path = write_fastmri(tmp_path / "sc.h5", kspace, acquisition="CORPDFS_FBK")
    with h5py.File(path, "r") as f:
        assert "reconstruction_esc" in f and "reconstruction_rss" not in f
    vol = read_fastmri(path)
    assert not vol.multicoil and vol.attrs["acquisition"] == "CORPDFS_FBK"
    assert vol.reconstruction.shape == (2, 16, 12)


def test_header_may_be_an_attribute(tmp_path: Path) -> None:
    path = tmp_path / "attr.h5"
    header = IsmrmrdHeader(encoded_size=(8, 6, 1), recon_size=(8, 6, 1))
    with h5py.File(path, "w") as f:
        f["kspace"] = _kspace((1, 2, 8, 6))
        f.attrs["ismrmrd_header"] = header.to_xml().decode()
    assert read_fastmri(path).header.encoded_size == (8, 6, 1)


def test_never_overwrites_without_permission(tmp_path: Path) -> None:
    path = write_fastmri(tmp_path / "a.h5", _kspace((1, 2, 8, 6)))
    with pytest.raises(OutputExistsError):
        write_fastmri(path, _kspace((1, 2, 8, 6)))
    write_fastmri(path, _kspace((1, 2, 8, 6), seed=5), overwrite=True)
    assert np.array_equal(read_fastmri(path).kspace, _kspace((1, 2, 8, 6), seed=5))


def _write_raw(path: Path, **datasets: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        for name, data in datasets.items():
            f[name] = data
    return path


@pytest.mark.parametrize(
    "datasets,words",
    [
        ({"reconstruction_rss": np.zeros((1, 4, 4), np.float32)}, ["no 'kspace'"]),
        ({"kspace": np.zeros((1, 2, 8, 6), np.float32)}, ["complex"]),
        ({"kspace": _kspace((8, 6))}, ["(slices"]),
        ({"kspace": _kspace((1, 2, 8, 6)), "mask": np.ones(5, bool)}, ["'mask'", "match"]),
        ({"kspace": _kspace((1, 2, 8, 6)), "mask": np.ones((3, 6), bool)}, ["'mask'"]),
    ],
)
def test_wrong_layouts_raise_one_line_errors_naming_the_file(tmp_path, datasets, words) -> None:
    path = _write_raw(tmp_path / "bad.h5", **datasets)
    with pytest.raises(ImageReadError) as info:
        read_fastmri(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message


def test_nan_values_are_rejected(tmp_path: Path) -> None:
    kspace = _kspace((2, 2, 8, 6))
    kspace[1, 0, 3, 3] = np.nan
    path = _write_raw(tmp_path / "nan.h5", kspace=kspace)
    with pytest.raises(ImageReadError, match="NaN") as info:
        read_fastmri(path)
    assert str(path) in str(info.value)
    assert read_fastmri(path, slices=0).kspace.shape == (1, 2, 8, 6)  # clean slices still read


def test_missing_and_non_hdf5_files(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="no such file"):
        read_fastmri(tmp_path / "missing.h5")
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(ImageReadError, match="HDF5"):
        read_fastmri(text)
    broken = _write_raw(tmp_path / "hdr.h5", kspace=_kspace((1, 2, 8, 6)))
    with h5py.File(broken, "a") as f:
        f["ismrmrd_header"] = np.bytes_(b"<ismrmrdHeader><encoding>")
    with pytest.raises(ImageReadError, match="ismrmrd_header"):
        read_fastmri(broken)


def test_writer_rejects_real_kspace(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="complex"):
        write_fastmri(tmp_path / "r.h5", np.zeros((1, 2, 8, 6), np.float32))
    assert not (tmp_path / "r.h5").exists()
