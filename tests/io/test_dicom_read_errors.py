"""DICOM reader on bad input: each problem is one line naming the file and the fix.

Also the opt-in repairs: ``allow_gaps=True`` (regular grid along the normal) and
``tilt="resample"`` (gantry tilt shifted onto an orthogonal grid).
"""

from __future__ import annotations

import struct

import numpy as np
import pydicom
import pytest
from dicom_factory import (
    AXIAL,
    make_slice,
    random_volume,
    truncate,
    write_no_pixels,
    write_series,
)
from pydicom.data import get_testdata_file
from pydicom.uid import MPEG2MPML, JPEGLSLossless

from medimg.errors import DicomError, GeometryError, ImageReadError, InputError, MedimgError
from medimg.io.dicom import headers, pixels
from medimg.io.dicom.read import read_dicom
from medimg.io.image import LPS_TO_RAS


def _error(exc_type, path, **kwargs) -> str:
    """Read ``path`` expecting ``exc_type``; return its message, checked to be one line."""
    with pytest.raises(exc_type) as err:
        read_dicom(path, **kwargs)
    msg = str(err.value)
    assert "\n" not in msg and isinstance(err.value, MedimgError)
    assert err.value.__suppress_context__ or err.value.__cause__ is None  # no deep traceback
    return msg


def _slice_file(path, **kwargs):
    make_slice(random_volume((7, 9, 1))[:, :, 0].T, **kwargs).save_as(
        path, enforce_file_format=True
    )
    return path


# ------------------------------------------------------------------ not an image


def test_not_dicom(tmp_path):
    path = tmp_path / "scan.dcm"
    path.write_text("patient notes, not an image\n" * 20)
    msg = _error(DicomError, path)
    assert "scan.dcm" in msg and "not a DICOM file" in msg


def test_unknown_extension(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(300))
    msg = _error(ImageReadError, path)
    assert "photo.png" in msg and "unknown extension '.png'" in msg and "medimg.io.load" in msg


def test_missing_path(tmp_path):
    assert "no such file" in _error(ImageReadError, tmp_path / "nowhere")


@pytest.mark.parametrize(("kind", "name"), [("SR", "Basic Text SR"), ("RTSTRUCT", "RT Structure")])
def test_dicom_without_pixel_data(tmp_path, kind, name):
    path = write_no_pixels(tmp_path / f"{kind}.dcm", kind)
    msg = _error(DicomError, path)
    assert f"{kind}.dcm" in msg and name in msg and f"({kind})" in msg and "no image" in msg


def test_folder_without_images(tmp_path):
    write_no_pixels(tmp_path / "sr.dcm", "SR")
    (tmp_path / "readme.txt").write_text("hello")
    msg = _error(DicomError, tmp_path)
    assert "no DICOM images" in msg and "Basic Text SR Storage (SR)" in msg


# ------------------------------------------------------------------ damaged files


@pytest.mark.parametrize(("shape", "keep"), [((7, 9), -20), ((41, 37), -100), ((7, 9), 700)])
def test_truncated_file(tmp_path, shape, keep):
    """Cut in the pixel data (inline or deferred element) or in the header."""
    files = write_series(tmp_path / "s", random_volume((*shape, 3)))
    truncate(files[1], keep)
    msg = _error(DicomError, tmp_path / "s")
    assert files[1].name in msg and "truncated" in msg


def test_info_lists_the_readable_series_and_names_a_damaged_file(tmp_path):
    """``medimg info`` keeps listing around a damaged file (and says so); reading stays strict."""
    from medimg.io.api import describe

    write_series(tmp_path / "good", random_volume((7, 9, 3)))
    bad = write_series(tmp_path / "bad", random_volume((7, 9, 3)), seed=1)
    truncate(bad[0], 400)  # its header is cut: no series UID can be read from it
    lines = describe(tmp_path)
    assert lines[0].startswith("[0]") and "CT" in lines[0] and "voxels" in lines[0]
    assert lines[-1].startswith("skipped 1 unreadable file(s)") and bad[0].name in lines[-1]
    assert "truncated" in _error(DicomError, tmp_path / "bad")


def test_pydicom_truncated_test_file():
    msg = _error(DicomError, get_testdata_file("MR_truncated.dcm"))
    assert "ends inside PixelData (8130 of 8192 bytes)" in msg


def test_header_cut_short(tmp_path):
    path = truncate(_slice_file(tmp_path / "short.dcm"), 400)  # inside the file meta / header
    msg = _error(DicomError, path)
    assert "short.dcm" in msg and "truncated or corrupt" in msg and "ends inside" in msg


def test_parser_exceptions_are_wrapped(tmp_path, monkeypatch):
    """Whatever pydicom raises on a damaged file becomes one line naming the file."""
    path = _slice_file(tmp_path / "bad.dcm")

    def broken(*args, **kwargs):
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(headers.pydicom, "dcmread", broken)
    msg = _error(DicomError, path)
    assert "bad.dcm" in msg and "corrupt" in msg and "unpack requires" in msg


def test_nan_in_float_pixel_data(tmp_path):
    pixels_ = np.arange(63, dtype=np.float32).reshape(9, 7)
    pixels_[2, 3], pixels_[4, 4] = np.nan, np.inf
    make_slice(pixels_).save_as(tmp_path / "f.dcm", enforce_file_format=True)
    msg = _error(DicomError, tmp_path / "f.dcm")
    assert "f.dcm" in msg and "2 NaN/Inf" in msg


def test_float_pixel_data_read(tmp_path):
    pixels_ = np.linspace(-1.5, 2.5, 63, dtype=np.float32).reshape(9, 7)
    make_slice(pixels_).save_as(tmp_path / "f.dcm", enforce_file_format=True)
    np.testing.assert_array_equal(read_dicom(tmp_path / "f.dcm").array[0, :, :, 0], pixels_.T)


# ------------------------------------------------------------------ transfer syntaxes


def test_syntax_without_any_decoder(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.save_as(tmp_path / "video.dcm")
    msg = _error(DicomError, tmp_path / "video.dcm")
    assert "video.dcm" in msg and "MPEG2" in msg and "uncompressed" in msg


def test_missing_plugin_names_the_package(monkeypatch):
    class Unavailable:
        is_available = False

    monkeypatch.setattr(pixels, "get_decoder", lambda ts: Unavailable())
    msg = _error(DicomError, get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    assert "JPEG-LS" in msg and JPEGLSLossless in msg
    assert "pip install pylibjpeg pylibjpeg-libjpeg" in msg and "gdcm" in msg


# ------------------------------------------------------------------ inconsistent series


def test_mixed_orientations(tmp_path):
    write_series(tmp_path / "s", random_volume((7, 9, 3)))
    _slice_file(tmp_path / "s" / "scout.dcm", iop=(0, 1, 0, 0, 0, -1), ipp=(0, 0, 9))
    msg = _error(GeometryError, tmp_path / "s")
    assert "mixed orientations" in msg and "scout.dcm" in msg


@pytest.mark.parametrize(
    ("shape", "spacing", "text"),
    [((5, 9), (1.0, 1.0), "mixed image sizes in one series: 7x9 in"), ((7, 9), (1.0, 0.5),
     "mixed pixel spacing")],
)  # fmt: skip
def test_mixed_sizes_or_spacing(tmp_path, shape, spacing, text):
    write_series(tmp_path / "s", random_volume((7, 9, 3)))
    odd = make_slice(random_volume((*shape, 1))[:, :, 0].T, ipp=(0, 0, 3), pixel_spacing=spacing)
    odd.save_as(tmp_path / "s" / "odd.dcm", enforce_file_format=True)
    msg = _error(GeometryError, tmp_path / "s")
    assert text in msg and "odd.dcm" in msg


def test_duplicate_positions(tmp_path):
    write_series(tmp_path / "s", random_volume((7, 9, 3)), positions=[(0, 0, 0), (0, 0, 1),
                                                                     (0, 0, 1)])  # fmt: skip
    msg = _error(GeometryError, tmp_path / "s")
    assert "duplicate slice position" in msg and "1.000 mm" in msg


def test_bad_tilt_option(tmp_path):
    write_series(tmp_path / "s", random_volume((7, 9, 2)))
    with pytest.raises(InputError, match="tilt must be one of"):
        read_dicom(tmp_path / "s", tilt="ignore")


# ------------------------------------------------------------------ gaps


@pytest.fixture
def gappy(tmp_path):
    """Slices at z = 0, 2, 4, 8, 10 mm: the one at 6 mm is missing."""
    vol = random_volume((7, 9, 5), seed=11)
    files = write_series(tmp_path / "s", vol, positions=[(0, 0, z) for z in (0, 2, 4, 8, 10)],
                         iop=AXIAL)  # fmt: skip
    return tmp_path / "s", vol, files


def test_gap_is_refused_with_its_place(gappy):
    folder, _, files = gappy
    msg = _error(GeometryError, folder)
    assert f"{files[2].name} at 4.000 mm and {files[3].name} at 8.000 mm" in msg
    assert "typical spacing 2.000 mm" in msg and "allow_gaps=True" in msg


def test_gap_resampled_when_allowed(gappy):
    folder, vol, _ = gappy
    img = read_dicom(folder, allow_gaps=True)
    assert img.array.shape == (1, 7, 9, 6) and img.spacing == pytest.approx((1, 1, 2))
    v = vol.astype(np.float32)
    np.testing.assert_array_equal(img.array[0][..., [0, 1, 2, 4, 5]], v)
    np.testing.assert_allclose(img.array[0, :, :, 3], (v[:, :, 2] + v[:, :, 3]) / 2)
    assert img.meta["gaps_resampled"] == "5 slices -> 6 at 2 mm"


def test_uneven_spacing_resampled_at_median(tmp_path):
    z = np.array([0.0, 1.0, 2.0, 3.5, 4.5])
    vol = np.broadcast_to(np.round(z * 100).astype(np.int16), (7, 9, 5))  # value = 100 * z
    write_series(tmp_path / "s", np.ascontiguousarray(vol), positions=[(0, 0, v) for v in z])
    assert "1.500 mm between" in _error(GeometryError, tmp_path / "s")
    img = read_dicom(tmp_path / "s", allow_gaps=True)  # 0, 1, ... 4 mm: the 0.5 mm tail is cut
    assert img.array.shape[-1] == 5 and img.spacing[2] == pytest.approx(1.0)
    np.testing.assert_allclose(img.array[0, 3, 4], [0, 100, 200, 300, 400], atol=1e-3)


# ------------------------------------------------------------------ gantry tilt

TILT_DEG = 20.0


def _field(lps: np.ndarray) -> np.ndarray:
    """A linear intensity field over LPS space: linear interpolation reproduces it exactly."""
    return 3.0 * lps[..., 0] + 2.0 * lps[..., 1] - 1.5 * lps[..., 2] + 50.0


@pytest.fixture
def tilted(tmp_path):
    """CT slices tilted 20 degrees about x, IPPs stepping 2 mm along z (the table)."""
    t = np.deg2rad(TILT_DEG)
    row, col = np.array([1.0, 0, 0]), np.array([0, np.cos(t), np.sin(t)])
    nx, ny, nz = 7, 12, 5
    ipps = [np.array([0.0, 0.0, 2.0 * k]) for k in range(nz)]
    i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    lps = [p + i[..., None] * row + j[..., None] * col for p in ipps]  # dx = dy = 1 mm
    vol = np.stack([np.round(_field(p) * 10) for p in lps], axis=-1).astype(np.int16)
    write_series(tmp_path / "s", vol, positions=ipps, iop=[*row, *col], slopes=[0.1] * nz)
    return tmp_path / "s"


def test_tilt_refused_with_angle(tilted):
    msg = _error(GeometryError, tilted)
    assert "gantry tilt" in msg and f"{TILT_DEG:.2f} degrees" in msg and "tilt='resample'" in msg


def test_tilt_resampled_onto_orthogonal_grid(tilted):
    img = read_dicom(tilted, tilt="resample")
    assert img.array.shape == (1, 7, 12, 5)
    assert img.meta["tilt_resampled_deg"] == pytest.approx(TILT_DEG, abs=1e-3)
    cols = img.affine[:3, :3]
    gram = cols.T @ cols  # orthogonal axes: no shear in the affine
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-9)
    assert img.spacing == pytest.approx((1, 1, 2 * np.cos(np.deg2rad(TILT_DEG))))
    # every voxel whose source lies inside its acquired slice holds the field at its position
    ijk = np.stack(np.meshgrid(*(np.arange(s) for s in (7, 12, 5)), indexing="ij"), -1)
    lps = (LPS_TO_RAS[:3, :3] @ img.voxel_to_world(ijk)[..., None])[..., 0]
    shift = np.arange(5) * 2 * np.sin(np.deg2rad(TILT_DEG))  # rows each slice moved by
    inside = (ijk[..., 1] >= np.ceil(shift)) & (ijk[..., 1] <= 11)
    assert inside.sum() > 300
    np.testing.assert_allclose(img.array[0][inside], _field(lps)[inside], atol=0.06)
