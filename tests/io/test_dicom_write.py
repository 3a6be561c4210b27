"""DICOM series writer: read back by SimpleITK (an independent reader) and checked with pydicom."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
)

from medimg.errors import InputError, OutputExistsError
from medimg.io.dicom.write import rescale_to_int16, write_dicom_series
from medimg.io.image import LPS_TO_RAS, Image


def _lps(image: Image, ijk) -> np.ndarray:
    return (LPS_TO_RAS[:3, :3] @ image.voxel_to_world(ijk).T).T


def _bound(slope: float, values: np.ndarray) -> float:
    """Rescale quantisation bound, plus float32 rounding of the original values."""
    return slope / 2 + 1e-6 * float(np.abs(values).max())


def test_ct_oblique_read_by_sitk(tmp_path, ct_image, read_series_sitk):
    files = write_dicom_series(ct_image, tmp_path / "ct")
    assert [f.name for f in files] == [f"slice_{k:04d}.dcm" for k in range(1, 6)]
    back = read_series_sitk(tmp_path / "ct")
    assert back.array.shape == ct_image.array.shape
    assert ct_image.array.min() < -1000  # negative HU stored exactly
    np.testing.assert_array_equal(back.array, ct_image.array)
    np.testing.assert_allclose(back.affine, ct_image.affine, rtol=0, atol=1e-4)


def test_ct_headers(tmp_path, ct_image):
    files = write_dicom_series(ct_image, tmp_path / "ct", study_uid="1.2.3.4", series_number=7)
    first, last = (pydicom.dcmread(f) for f in (files[0], files[-1]))
    assert (
        first.preamble is not None and first.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    )
    assert first.SOPClassUID == CTImageStorage == first.file_meta.MediaStorageSOPClassUID
    assert first.SOPInstanceUID == first.file_meta.MediaStorageSOPInstanceUID
    assert first.Modality == "CT" and first.StudyInstanceUID == "1.2.3.4"
    assert first.SeriesNumber == 7 and (first.InstanceNumber, last.InstanceNumber) == (1, 5)
    assert (first.Rows, first.Columns) == (9, 7)  # rows follow Y, columns X
    np.testing.assert_allclose([float(v) for v in first.PixelSpacing], [0.9, 0.7])  # [row, col]
    assert float(first.SliceThickness) == pytest.approx(2.5)
    assert float(first.SpacingBetweenSlices) == pytest.approx(2.5)
    np.testing.assert_allclose([float(v) for v in first.ImagePositionPatient],
                               _lps(ct_image, [0, 0, 0]), atol=1e-6)  # fmt: skip
    np.testing.assert_allclose([float(v) for v in last.ImagePositionPatient],
                               _lps(ct_image, [0, 0, 4]), atol=1e-6)  # fmt: skip
    row_dir = _lps(ct_image, [1, 0, 0]) - _lps(ct_image, [0, 0, 0])
    np.testing.assert_allclose([float(v) for v in first.ImageOrientationPatient[:3]],
                               row_dir / 0.7, atol=1e-6)  # fmt: skip
    assert (float(first.RescaleSlope), float(first.RescaleIntercept)) == (1.0, 0.0)
    assert first.pixel_array.dtype == np.int16
    np.testing.assert_array_equal(first.pixel_array, ct_image.array[0, :, :, 0].T)
    uids = {pydicom.dcmread(f).SOPInstanceUID for f in files}
    assert len(uids) == 5 and first.SeriesInstanceUID not in uids


def test_mr_float_values_within_slope(tmp_path, mr_image, read_series_sitk):
    files = write_dicom_series(mr_image, tmp_path / "mr")
    ds = pydicom.dcmread(files[0])
    assert ds.SOPClassUID == MRImageStorage and ds.Modality == "MR"
    slope = float(ds.RescaleSlope)
    assert 0 < slope < 0.1  # fractional data needs a fine slope
    back = read_series_sitk(tmp_path / "mr")
    assert np.abs(back.array - mr_image.array).max() <= _bound(slope, mr_image.array)
    np.testing.assert_allclose(back.affine, mr_image.affine, rtol=0, atol=1e-4)


@pytest.mark.parametrize("modality", ["OT", "US", "PT"])
def test_other_modalities_are_secondary_capture(tmp_path, mr_image, modality, read_series_sitk):
    files = write_dicom_series(mr_image, tmp_path / "x", modality=modality)
    ds = pydicom.dcmread(files[0])
    assert ds.SOPClassUID == SecondaryCaptureImageStorage and ds.Modality == modality
    back = read_series_sitk(tmp_path / "x")  # the plane geometry is still read
    np.testing.assert_allclose(back.affine, mr_image.affine, rtol=0, atol=1e-4)


def test_left_handed_grid_same_world_geometry(tmp_path, ct_image, left_handed_affine,
                                              read_series_sitk):  # fmt: skip
    image = Image(ct_image.array, left_handed_affine, modality="CT")
    write_dicom_series(image, tmp_path / "las")
    back = read_series_sitk(tmp_path / "las")
    # positions are all DICOM keeps: the reader sorts along the normal, so k comes back reversed
    np.testing.assert_array_equal(back.array, image.array[..., ::-1])
    a, b = back.canonical(), image.canonical()
    np.testing.assert_allclose(a.affine, b.affine, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(back.voxel_to_world([2, 3, 4]), image.voxel_to_world([2, 3, 0]),
                               atol=1e-4)  # fmt: skip


def test_2d_image_one_file(tmp_path, ct_image):
    import SimpleITK as sitk

    image = Image(ct_image.array[..., 2], ct_image.affine, modality="CT")
    files = write_dicom_series(image, tmp_path / "one")
    assert len(files) == 1
    ds = pydicom.dcmread(files[0])
    assert float(ds.SliceThickness) == pytest.approx(2.5) and "SpacingBetweenSlices" not in ds
    back = Image.from_sitk(sitk.ReadImage(str(files[0])))
    np.testing.assert_array_equal(back.array[..., 0], image.array)
    np.testing.assert_allclose(back.affine[:, [0, 1, 3]], image.affine[:, [0, 1, 3]], atol=1e-4)


# --------------------------------------------------------------------------------- rescale
def test_rescale_rule():
    hu = np.array([-1024.0, 0.0, 3071.0])
    stored, slope, intercept = rescale_to_int16(hu)
    assert (slope, intercept) == (1.0, 0.0) and stored.tolist() == hu.tolist()
    wide = np.array([-1000.0, 50000.0, 7.0])  # whole numbers, beyond int16: offset, still exact
    stored, slope, intercept = rescale_to_int16(wide)
    assert slope == 1.0 and np.array_equal(stored * slope + intercept, wide)
    rng = np.random.default_rng(3)
    for values in (rng.uniform(-3.0, 7.0, 500), rng.uniform(0, 1e6, 500), np.array([0.25, 0.25])):
        stored, slope, intercept = rescale_to_int16(values)
        assert stored.dtype == np.int16
        assert np.abs(stored * slope + intercept - values).max() <= slope / 2 * (1 + 1e-9)
    assert rescale_to_int16(rng.uniform(0, 1, 500))[1] < 2e-5  # uses the int16 range


# ------------------------------------------------------------------------------- bad input
def test_overwrite(tmp_path, ct_image, mr_image):
    folder = tmp_path / "s"
    write_dicom_series(ct_image, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(OutputExistsError, match="overwrite") as err:
        write_dicom_series(mr_image, folder)
    assert "\n" not in str(err.value) and str(folder) in str(err.value)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    # overwrite replaces our earlier series, including slices the new one does not have
    files = write_dicom_series(Image(mr_image.array[..., :3], mr_image.affine, modality="MR"),
                               folder, overwrite=True)  # fmt: skip
    assert sorted(folder.iterdir()) == files and len(files) == 3
    assert {pydicom.dcmread(f).Modality for f in files} == {"MR"}
    # ...but never a file medimg did not write: refuse, and touch nothing
    (folder / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(InputError, match="did not write"):
        write_dicom_series(ct_image, folder, overwrite=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temporary folder left


def test_refusals(tmp_path, ct_image):
    multi = Image(np.repeat(ct_image.array, 2, axis=0), ct_image.affine)
    with pytest.raises(InputError, match="one channel"):
        write_dicom_series(multi, tmp_path / "a")
    sheared = ct_image.affine.copy()
    sheared[:3, 2] += 0.3 * sheared[:3, 0]  # slices no longer step along the normal
    with pytest.raises(InputError, match="resample") as err:
        write_dicom_series(Image(ct_image.array, sheared), tmp_path / "b")
    assert "\n" not in str(err.value) and str(tmp_path / "b") in str(err.value)
    bad = ct_image.array.copy()
    bad[0, 1, 1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        write_dicom_series(ct_image.with_array(bad), tmp_path / "c")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="folder"):
        write_dicom_series(ct_image, tmp_path / "file", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


# --------------------------------------------------------------------------- derived series
_PATIENT_STUDY = {
    "PatientName": "Müller^Jane",
    "PatientID": "P-123",
    "PatientBirthDate": "19700101",
    "PatientSex": "F",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1",
    "StudyDate": "20190102",
    "StudyTime": "101500",
    "StudyID": "S7",
    "AccessionNumber": "ACC42",
    "ReferringPhysicianName": "House^Gregory",
    "StudyDescription": "CT abdomen",
}


def _scanned_series(tmp_path, ct_image):
    """A 'scanner' series: ours, its headers rewritten to a real patient's study."""
    files = write_dicom_series(ct_image, tmp_path / "scan", series_number=3)
    for f in files:
        ds = pydicom.dcmread(f)
        for keyword, value in _PATIENT_STUDY.items():
            setattr(ds, keyword, value)
        ds.save_as(f)
    return tmp_path / "scan"


def _assert_joins_study(files, scan) -> None:
    src = pydicom.dcmread(next(scan.iterdir()))
    for f in (files[0], files[-1]):
        ds = pydicom.dcmread(f)
        for keyword, value in _PATIENT_STUDY.items():
            assert str(ds[keyword].value) == value, keyword  # intact, not ANONYMOUS / today
        assert ds.SeriesInstanceUID != src.SeriesInstanceUID
        assert int(ds.SeriesNumber) == 2003  # the source's 3 + DERIVED_SERIES_OFFSET
        assert ds.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert len({pydicom.dcmread(f).SeriesInstanceUID for f in files}) == 1


def test_derived_series_keeps_patient_and_study(tmp_path, ct_image):
    scan = _scanned_series(tmp_path, ct_image)
    files = write_dicom_series(ct_image, tmp_path / "den", source=scan)
    _assert_joins_study(files, scan)
    # a dataset works as source too; explicit arguments still win
    ds = pydicom.dcmread(next(scan.iterdir()))
    other = write_dicom_series(ct_image, tmp_path / "den2", source=ds, series_number=9,
                               patient_name="Other^Name")  # fmt: skip
    first = pydicom.dcmread(other[0])
    assert (int(first.SeriesNumber), str(first.PatientName)) == (9, "Other^Name")
    assert first.StudyDate == "20190102"


def test_image_read_from_dicom_joins_its_study(tmp_path, ct_image):
    from medimg.io.api import load

    scan = _scanned_series(tmp_path, ct_image)
    image = load(scan)  # meta carries the study UID and where it came from
    files = write_dicom_series(image, tmp_path / "den", study_uid=image.meta["study_uid"])
    _assert_joins_study(files, scan)


def test_joining_a_study_without_its_source_invents_nothing(tmp_path, ct_image):
    first = pydicom.dcmread(write_dicom_series(ct_image, tmp_path / "a", study_uid="1.2.3")[0])
    assert first.StudyInstanceUID == "1.2.3"
    assert (str(first.PatientName), first.StudyDate) == ("", "")  # type 2: present, empty
    new = pydicom.dcmread(write_dicom_series(ct_image, tmp_path / "b")[0])  # a new study
    assert str(new.PatientName) == "ANONYMOUS^MEDIMG" and len(new.StudyDate) == 8
    with pytest.raises(InputError, match="source series not found"):
        write_dicom_series(ct_image, tmp_path / "c", source=tmp_path / "missing")
    assert not (tmp_path / "c").exists()
