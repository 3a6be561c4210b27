"""DICOM reader: series sorting and geometry, rescaling, multi-frame, compressed syntaxes, series."""

from __future__ import annotations

import copy

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_factory import (
    make_slice,
    random_volume,
    truncate,
    uid,
    write_no_pixels,
    write_series,
)
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from medimg.errors import DicomError
from medimg.io.dicom.read import read_dicom
from medimg.io.dicom.series import list_series

SLOPES = [1.0, 0.5, 2.0, 1.0, 0.25]
INTERCEPTS = [-1024.0, -1000.0, 0.0, 12.5, -3.0]


def _expected(volume: np.ndarray) -> np.ndarray:
    slopes, intercepts = np.array(SLOPES), np.array(INTERCEPTS)
    return (volume * slopes + intercepts).astype(np.float32)[None]


# ------------------------------------------------------------------ series geometry


def test_oblique_series_sorted_along_normal(tmp_path, oblique_affine):
    vol = random_volume((7, 9, 5))
    files = write_series(tmp_path / "ct", vol, affine=oblique_affine, slopes=SLOPES,
                         intercepts=INTERCEPTS)  # fmt: skip
    names = [f.name for f in files]
    assert names != sorted(names)  # file names do not give the slice order
    instances = [pydicom.dcmread(f).InstanceNumber for f in files]
    assert instances != sorted(instances)

    img = read_dicom(tmp_path / "ct")
    assert img.array.shape == (1, 7, 9, 5) and img.array.dtype == np.float32
    np.testing.assert_allclose(img.array, _expected(vol), rtol=0, atol=1e-3)
    np.testing.assert_allclose(img.affine, oblique_affine, rtol=0, atol=1e-5)
    assert img.modality == "CT"
    ds = pydicom.dcmread(files[0])
    assert img.meta["series_uid"] == ds.SeriesInstanceUID
    assert img.meta["study_uid"] == ds.StudyInstanceUID
    assert img.meta["frame_of_reference_uid"] == ds.FrameOfReferenceUID
    assert (img.meta["patient_id"], img.meta["description"]) == ("P001", "test series")
    assert img.meta["source"] == str(tmp_path / "ct") and img.meta["n_files"] == 5


def test_matches_simpleitk_on_oblique_series(tmp_path, oblique_affine, read_series_sitk):
    vol = random_volume((7, 9, 5), seed=3)
    write_series(tmp_path / "ct", vol, affine=oblique_affine, intercepts=[-1024.0] * 5)
    ours, theirs = read_dicom(tmp_path / "ct"), read_series_sitk(tmp_path / "ct")
    np.testing.assert_array_equal(ours.array, theirs.array.astype(np.float32))
    np.testing.assert_allclose(ours.affine, theirs.affine, rtol=0, atol=1e-5)


def test_slices_stepping_against_normal_are_reversed(tmp_path, left_handed_affine):
    """Written in the opposite order to the normal: read back ascending along the normal."""
    vol = random_volume((7, 9, 5), seed=4)
    write_series(tmp_path / "mr", vol, affine=left_handed_affine, modality="MR")
    img = read_dicom(tmp_path / "mr")
    np.testing.assert_array_equal(img.array[0], vol[:, :, ::-1].astype(np.float32))
    assert np.linalg.det(img.affine[:3, :3]) > 0  # Z follows row x column
    ijk = np.array([[0, 0, 0], [6, 8, 4], [3, 2, 1]])
    src = ijk * [1, 1, -1] + [0, 0, 4]
    want = src @ left_handed_affine[:3, :3].T + left_handed_affine[:3, 3]
    np.testing.assert_allclose(img.voxel_to_world(ijk), want, atol=1e-5)
    assert img.modality == "MR"


@pytest.mark.parametrize(("bits", "signed"), [(16, True), (12, False), (12, True)])
def test_large_slices_read_from_file_offsets(tmp_path, bits, signed):
    """Slices beyond the header's defer size take the direct-read path; bits beyond BitsStored
    (overlay garbage) are dropped and signed values sign-extended, as pydicom does."""
    rng = np.random.default_rng(5)
    dtype = np.int16 if signed else np.uint16
    raw = rng.integers(0, 2**16, size=(41, 37, 3), dtype=np.uint16).view(dtype)
    files = write_series(tmp_path / "s", raw, pixel_spacing=(0.8, 0.6))
    for f in files:  # declare fewer stored bits than allocated
        ds = pydicom.dcmread(f)
        ds.BitsStored, ds.HighBit = bits, bits - 1
        ds.save_as(f)
    img = read_dicom(tmp_path / "s")
    want = np.stack([pydicom.dcmread(f).pixel_array.T for f in files], axis=-1)
    if bits < 16:
        assert not np.array_equal(want, raw)  # the masking mattered
    np.testing.assert_array_equal(img.array[0], want.astype(np.float32))
    assert img.spacing == pytest.approx((0.6, 0.8, 1.0))


def test_single_slice_is_one_slice_volume(tmp_path):
    pixels = random_volume((7, 9, 1))[:, :, 0].T
    path = tmp_path / "one.dcm"
    ds = make_slice(pixels, ipp=(10, -20, 30), pixel_spacing=(0.9, 0.7), thickness=2.5,
                    intercept=-1024)  # fmt: skip
    ds.save_as(path, enforce_file_format=True)
    img = read_dicom(path)
    assert img.array.shape == (1, 7, 9, 1)
    np.testing.assert_array_equal(img.array[0, :, :, 0], pixels.T.astype(np.float32) - 1024)
    assert img.spacing == pytest.approx((0.7, 0.9, 2.5))
    np.testing.assert_allclose(img.origin, (-10, 20, 30))
    assert read_dicom(tmp_path).array.shape == (1, 7, 9, 1)  # the folder reads the same


def test_image_without_plane_geometry_is_2d():
    """A secondary capture (no patient position): 2D, colour as channels, X = column."""
    img = read_dicom(get_testdata_file("SC_rgb_rle.dcm"))
    assert img.array.shape == (3, 100, 100) and img.spatial_ndim == 2
    stripes = [img.array[:, 50, y] for y in (5, 25, 45, 95)]  # rows hold colour stripes
    np.testing.assert_array_equal(stripes, [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255] * 3])


def test_cine_loop_without_geometry_stacks_frames_in_order():
    """A multi-frame ultrasound loop (no plane geometry): frames along the third axis, in stored
    order, the same pixels SimpleITK reads, with the frame time kept and the axis named."""
    import SimpleITK as sitk

    path = get_testdata_file("SC_rgb_rle_2frame.dcm")
    img = read_dicom(path)
    assert img.array.shape == (3, 100, 100, 2)
    ref = sitk.GetArrayFromImage(sitk.ReadImage(path))  # (T, Y, X, C)
    np.testing.assert_array_equal(img.array.transpose(3, 2, 1, 0), ref)
    assert "frame_axis" in img.meta
    us = read_dicom(get_testdata_file("examples_ybr_color.dcm"))  # 30-frame YBR cine
    assert us.array.shape == (3, 320, 240, 30) and us.meta["frame_time_ms"] == pytest.approx(33.333)


def test_ultrasound_spacing_comes_from_the_calibrated_region(tmp_path):
    """An ultrasound image with no PixelSpacing: the spacing of its largest region calibrated in
    cm (PhysicalDeltaX/Y), in mm; a region in other units is ignored."""
    from pydicom.dataset import Dataset

    ds = pydicom.dcmread(get_testdata_file("SC_rgb_rle.dcm"))
    ds.Modality = "US"
    del ds.PixelSpacing

    def region(units, dx, dy, x1, y1):
        r = Dataset()
        r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = units
        r.PhysicalDeltaX, r.PhysicalDeltaY = dx, dy
        r.RegionLocationMinX0 = r.RegionLocationMinY0 = 0
        r.RegionLocationMaxX1, r.RegionLocationMaxY1 = x1, y1
        return r

    ds.SequenceOfUltrasoundRegions = [region(3, 0.01, 0.01, 20, 20),
                                      region(3, 0.025, 0.03, 90, 90),
                                      region(4, 0.5, 0.5, 99, 99)]  # fmt: skip
    ds.save_as(tmp_path / "us.dcm")
    img = read_dicom(tmp_path / "us.dcm")
    assert img.spacing == pytest.approx((0.25, 0.3))  # (x, y) mm from the largest cm region


# ------------------------------------------------------------------ compressed syntaxes


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]
)
def test_lossless_compressed_matches_uncompressed(name):
    ref = read_dicom(get_testdata_file("MR_small.dcm"))
    img = read_dicom(get_testdata_file(name))
    assert img.array.shape == (1, 64, 64, 1)
    np.testing.assert_array_equal(img.array, ref.array)
    np.testing.assert_allclose(img.affine, ref.affine)
    assert img.meta["transfer_syntax"] != ref.meta["transfer_syntax"]


def test_jpeg_baseline_close_to_lossless_reference():
    lossy = read_dicom(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))
    ref = read_dicom(get_testdata_file("SC_rgb_rle.dcm"))
    assert lossy.meta["transfer_syntax"] == "1.2.840.10008.1.2.4.50"
    assert np.abs(lossy.array - ref.array).mean() < 2.0
    np.testing.assert_allclose(lossy.array[:, 50, 5], [255, 0, 0], atol=8)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGLSLossless])
def test_compressed_series_matches_uncompressed(tmp_path, oblique_affine, syntax):
    vol = random_volume((37, 33, 5), seed=6)  # JPEG 2000 needs tiles of 32+ pixels
    kw = {"affine": oblique_affine, "slopes": SLOPES, "intercepts": INTERCEPTS}
    write_series(tmp_path / "raw", vol, **kw)
    write_series(tmp_path / "packed", vol, syntax=syntax, **kw)
    ref, img = read_dicom(tmp_path / "raw"), read_dicom(tmp_path / "packed")
    assert img.meta["transfer_syntax"] == syntax
    np.testing.assert_array_equal(img.array, ref.array)
    np.testing.assert_allclose(img.affine, ref.affine)


# ------------------------------------------------------------------ multi-frame


def test_enhanced_multiframe_matches_single_frame_series(tmp_path, oblique_affine):
    vol = random_volume((7, 9, 5), seed=7)
    files = write_series(tmp_path / "sf", vol, affine=oblique_affine, slopes=SLOPES,
                         intercepts=INTERCEPTS)  # fmt: skip
    sources = [pydicom.dcmread(f) for f in sorted(files)]
    mf = hd.legacy.LegacyConvertedEnhancedCTImage(
        sources, series_instance_uid=uid("mf"), series_number=2, sop_instance_uid=uid("mf/1"),
        instance_number=1,
    )  # fmt: skip
    mf.save_as(tmp_path / "mf.dcm")
    stored = pydicom.dcmread(tmp_path / "mf.dcm")
    assert "PerFrameFunctionalGroupsSequence" in stored and stored.NumberOfFrames == 5
    per_frame = stored.PerFrameFunctionalGroupsSequence
    assert "PixelValueTransformationSequence" in per_frame[0]  # rescale varies per frame

    single, multi = read_dicom(tmp_path / "sf"), read_dicom(tmp_path / "mf.dcm")
    np.testing.assert_allclose(multi.array, single.array, rtol=0, atol=1e-4)
    np.testing.assert_allclose(multi.affine, single.affine, rtol=0, atol=1e-5)
    np.testing.assert_allclose(multi.array, _expected(vol), rtol=0, atol=1e-3)


@pytest.mark.parametrize("macros", ["shared", "per-frame"])
def test_multiframe_frames_sorted_by_position(tmp_path, macros):
    """Frames stored in reverse position order come back ascending along the normal; the
    orientation and pixel measures are found whether shared or given per frame."""
    vol = random_volume((7, 9, 4), seed=8)
    files = write_series(tmp_path / "sf", vol, pixel_spacing=(0.5, 0.5))
    by_z = sorted((pydicom.dcmread(f) for f in files), key=lambda d: -d.ImagePositionPatient[2])
    for i, ds in enumerate(by_z):
        ds.InstanceNumber = i + 1  # highdicom keeps instance order: reverse positions
    mf = hd.legacy.LegacyConvertedEnhancedCTImage(by_z, uid("mf2"), 3, uid("mf2/1"), 1)
    if macros == "per-frame":
        shared = mf.SharedFunctionalGroupsSequence[0]
        for item in mf.PerFrameFunctionalGroupsSequence:
            item.PlaneOrientationSequence = copy.deepcopy(shared.PlaneOrientationSequence)
            item.PixelMeasuresSequence = copy.deepcopy(shared.PixelMeasuresSequence)
        del shared.PlaneOrientationSequence, shared.PixelMeasuresSequence
    mf.save_as(tmp_path / "mf.dcm")
    stored = pydicom.dcmread(tmp_path / "mf.dcm")
    assert ("PixelMeasuresSequence" in stored.SharedFunctionalGroupsSequence[0]) == (
        macros == "shared"
    )
    z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2])
         for f in stored.PerFrameFunctionalGroupsSequence]  # fmt: skip
    assert z == sorted(z, reverse=True)
    img = read_dicom(tmp_path / "mf.dcm")
    np.testing.assert_array_equal(img.array[0], vol.astype(np.float32))
    assert img.spacing == pytest.approx((0.5, 0.5, 1.0))
    np.testing.assert_allclose(img.affine[:3, :3], np.diag([-0.5, -0.5, 1.0]))


# ------------------------------------------------------------------ several series


@pytest.fixture
def study(tmp_path):
    """Two image series, an SR, a DICOMDIR-like stray file and non-DICOM clutter."""
    root = tmp_path / "study"
    write_series(root / "a" / "mr", random_volume((7, 9, 3), seed=9), modality="MR",
                 series="mr", description="t1 axial")  # fmt: skip
    ct = root / "b"
    write_series(ct, random_volume((5, 6, 4), seed=10), series="ct", description="chest",
                 pixel_spacing=(0.9, 0.7))  # fmt: skip
    for k, f in enumerate(sorted(ct.iterdir())):  # the CT has the lower SeriesNumber: first
        ds = pydicom.dcmread(f)
        ds.SeriesNumber = 0
        ds.save_as(f)
        assert k < 4
    write_no_pixels(root / "report.dcm", "SR")
    (root / "notes.txt").write_text("not dicom")
    (root / "thumb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (root / "DICOMDIR").write_bytes(bytes(200))
    return root


def test_list_series_orders_and_describes(study):
    found = list_series(study)
    assert [s.modality for s in found] == ["CT", "MR"]
    ct, mr = found
    assert ct.uid == uid("ct") and ct.description == "chest"
    assert (ct.n_files, ct.n_frames, ct.shape) == (4, 4, (5, 6, 4))
    assert ct.spacing == pytest.approx((0.7, 0.9, 1.0))
    assert mr.shape == (7, 9, 3) and mr.number == 1
    line = ct.line()
    assert "\n" not in line
    for part in (uid("ct"), "CT", "chest", "5x6x4", "0.7x0.9x1 mm"):
        assert part in line


def test_list_series_reads_headers_only(tmp_path):
    """A file cut inside its pixel data still lists (headers only) but does not read."""
    files = write_series(tmp_path / "s", random_volume((41, 37, 3)), description="cut")
    truncate(files[2], -50)
    (info,) = list_series(tmp_path / "s")
    assert (info.n_frames, info.shape, info.description) == (3, (41, 37, 3), "cut")
    with pytest.raises(DicomError, match="truncated"):
        read_dicom(tmp_path / "s")


def test_several_series_need_a_choice(study):
    with pytest.raises(DicomError) as err:
        read_dicom(study)
    msg = str(err.value)
    assert "2 DICOM series" in msg and "series=UID or index" in msg and "medimg info" in msg
    assert "\n" not in msg
    assert read_dicom(study, series=0).meta["series_uid"] == uid("ct")
    assert read_dicom(study, series=1).modality == "MR"
    assert read_dicom(study, series=uid("mr")).array.shape == (1, 7, 9, 3)
    assert read_dicom(study, series="1").modality == "MR"


@pytest.mark.parametrize(("choice", "text"), [(2, "out of range"), ("1.2.3.999", "no series")])
def test_bad_series_choice(study, choice, text):
    with pytest.raises(DicomError, match=text):
        read_dicom(study, series=choice)
