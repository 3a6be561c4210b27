"""DICOM SEG out (highdicom) and back: structure, references, labels and geometry."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import SegmentationStorage

from medimg.errors import InputError, OutputExistsError
from medimg.io.dicom.seg import read_dicom_seg, sort_by_normal, write_dicom_seg
from medimg.io.dicom.write import write_dicom_series
from medimg.io.image import Image


@pytest.fixture
def source(tmp_path, ct_image):
    """A CT series on the oblique grid, written by us."""
    write_dicom_series(ct_image, tmp_path / "ct")
    return tmp_path / "ct"


def _series_uid(folder) -> str:
    return str(pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).SeriesInstanceUID)


def test_binary_seg_structure_and_round_trip(tmp_path, source, label_image):
    names = {1: "liver", 5: "tumour", 9: "absent"}
    path = write_dicom_seg(label_image, source, tmp_path / "seg.dcm", segment_names=names)
    seg = hd.seg.segread(path)  # highdicom parses it back as a Segmentation
    assert seg.SOPClassUID == SegmentationStorage and seg.segmentation_type.value == "BINARY"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == _series_uid(source)
    assert len(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == 5
    assert seg.FrameOfReferenceUID == pydicom.dcmread(next(source.iterdir())).FrameOfReferenceUID
    # segment number = label value; BINARY needs 1..n, so 3 and 4 are empty segments
    assert seg.get_segment_numbers() == [1, 2, 3, 4, 5]
    labels = [seg.get_segment_description(n).segment_label for n in (1, 2, 3, 4, 5)]
    assert labels == ["liver", "label 2", "label 3", "label 4", "tumour"]
    lab = label_image.array[0]
    per_segment = sum(int(np.count_nonzero((lab == v).any(axis=(0, 1)))) for v in (1, 2, 5))
    assert int(seg.NumberOfFrames) == per_segment  # the empty segments 3 and 4 have no frame
    algo = seg.get_segment_description(1).algorithm_identification[0]
    assert algo.AlgorithmName == "medimg"

    back = read_dicom_seg(path)
    assert back.is_label and back.modality == "SEG"
    np.testing.assert_array_equal(back.array, label_image.array)  # values 1, 2, 5 restored
    np.testing.assert_allclose(back.affine, label_image.affine, rtol=0, atol=1e-4)
    names = {1: "liver", 2: "label 2", 3: "label 3", 4: "label 4", 5: "tumour"}
    assert back.meta["segment_names"] == names


def _code(item, keyword: str) -> tuple[str, str]:
    code = item[keyword][0]
    return str(code.CodingSchemeDesignator), str(code.CodeValue)


def test_segments_coded_and_coloured_per_structure(tmp_path, source, label_image):
    names = {1: "liver", 2: "Spleen", 5: "kidney"}
    path = write_dicom_seg(label_image, source, tmp_path / "seg.dcm", segment_names=names)
    ds = pydicom.dcmread(path)
    by_number = {int(item.SegmentNumber): item for item in ds.SegmentSequence}
    for number, code in ((1, "10200004"), (2, "78961009"), (5, "64033007")):
        item = by_number[number]
        assert _code(item, "SegmentedPropertyTypeCodeSequence") == ("SCT", code)
        assert _code(item, "SegmentedPropertyCategoryCodeSequence") == ("SCT", "91723000")
    assert _code(by_number[3], "SegmentedPropertyTypeCodeSequence") == ("SCT", "85756007")
    colours = {n: hd.color.CIELabColor.from_dicom_value(
        [int(v) for v in by_number[n].RecommendedDisplayCIELabValue]).to_rgb()
        for n in (1, 2, 5)}  # fmt: skip
    assert len(set(colours.values())) == 3  # three organs, three colours
    assert colours[1][0] > colours[1][2]  # liver reddish-brown, not blue
    # highdicom reads the codes back as concepts
    seg = hd.seg.segread(path)
    assert seg.get_segment_description(1).segmented_property_type.value == "10200004"


def test_finding_brain_and_unknown_names():
    from medimg.io.dicom.codes import GENERIC, structure_code

    assert structure_code("finding 3: score 0.91, 8.0 mm").type.value == "52988006"  # lesion
    assert structure_code("grey matter").type.value == "40146001"
    assert structure_code("white_matter").type.value == "68523003"
    assert structure_code("CSF").category.value == "91720002"  # body substance
    unknown = structure_code("pancreas-ish blob", 7)
    assert unknown.type == GENERIC.type and unknown.type.value == "85756007"
    assert structure_code("blob", 1).rgb != structure_code("blob", 2).rgb


def test_series_header_of_the_seg(tmp_path, source, label_image):
    src = pydicom.dcmread(next(source.iterdir()))
    path = write_dicom_seg(label_image, source, tmp_path / "seg.dcm",
                           series_description="medimg: tiny-unet sha1:abc",
                           algorithm_name="tiny-unet", algorithm_version="sha1:abc")  # fmt: skip
    ds = pydicom.dcmread(path)
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert int(ds.SeriesNumber) != int(src.SeriesNumber)
    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.PatientID == src.PatientID
    assert str(ds.ContentCreatorName) == "medimg^"
    assert ds.SeriesDescription == "medimg: tiny-unet sha1:abc"
    algo = ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("tiny-unet", "sha1:abc")
    for keyword in ("PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "ReferringPhysicianName", "StudyID", "AccessionNumber",
                    "PositionReferenceIndicator", "ContentDescription"):  # fmt: skip
        assert keyword in ds, keyword  # type 2: present, possibly empty
    explicit = write_dicom_seg(label_image, source, tmp_path / "b.dcm", series_number=77)
    assert int(pydicom.dcmread(explicit).SeriesNumber) == 77


def test_large_label_values_renumbered_in_binary(tmp_path, source, label_image):
    arr = label_image.array.astype(np.uint16)
    arr[arr == 5] = 300
    big = Image(arr, label_image.affine, is_label=True)
    path = write_dicom_seg(big, source, tmp_path / "seg.dcm")
    assert hd.seg.segread(path).get_segment_numbers() == [1, 2, 3]  # no 300 empty segments
    np.testing.assert_array_equal(read_dicom_seg(path).array, big.array)  # values restored


def test_labelmap_type(tmp_path, source, label_image):
    path = write_dicom_seg(label_image, source, tmp_path / "seg.dcm", segmentation_type="labelmap")
    seg = hd.seg.segread(path)
    assert seg.segmentation_type.value == "LABELMAP"
    assert seg.get_segment_numbers() == [1, 2, 5]  # segment numbers are the label values
    back = read_dicom_seg(path)
    np.testing.assert_array_equal(back.array, label_image.array)
    np.testing.assert_allclose(back.affine, label_image.affine, rtol=0, atol=1e-4)


def test_source_as_shuffled_datasets(tmp_path, source, label_image):
    datasets = [pydicom.dcmread(f) for f in sorted(source.iterdir())]
    shuffled = [datasets[i] for i in (3, 0, 4, 2, 1)]
    ordered, affine = sort_by_normal(shuffled)
    assert [int(ds.InstanceNumber) for ds in ordered] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(affine, label_image.affine, rtol=0, atol=1e-6)
    path = write_dicom_seg(label_image, shuffled, tmp_path / "seg.dcm")
    np.testing.assert_array_equal(read_dicom_seg(path).array, label_image.array)


def test_left_handed_labels(tmp_path, ct_image, label_image, left_handed_affine):
    write_dicom_series(Image(ct_image.array, left_handed_affine, modality="CT"), tmp_path / "las")
    labels = Image(label_image.array, left_handed_affine, is_label=True)
    path = write_dicom_seg(labels, tmp_path / "las", tmp_path / "seg.dcm")
    back = read_dicom_seg(path)  # slices ascend along the normal: k reversed, same world voxels
    np.testing.assert_array_equal(back.array, labels.array[..., ::-1])
    a, b = back.canonical(), labels.canonical()
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine, rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------- bad input
def test_labels_off_grid(tmp_path, source, label_image):
    shifted = label_image.affine.copy()
    shifted[:3, 3] += [0.0, 0.0, 0.01]  # 10 micrometres off
    with pytest.raises(InputError, match="resample the labels") as err:
        write_dicom_seg(
            Image(label_image.array, shifted, is_label=True), source, tmp_path / "a.dcm"
        )
    assert "\n" not in str(err.value) and str(tmp_path / "a.dcm") in str(err.value)
    with pytest.raises(InputError, match="shape"):
        write_dicom_seg(Image(label_image.array[..., :4], label_image.affine, is_label=True),
                        source, tmp_path / "a.dcm")  # fmt: skip
    assert not (tmp_path / "a.dcm").exists()


def test_bad_labels(tmp_path, source, label_image):
    empty = label_image.with_array(np.zeros_like(label_image.array))
    with pytest.raises(InputError, match="no nonzero"):
        write_dicom_seg(empty, source, tmp_path / "a.dcm")
    frac = label_image.with_array(label_image.array * 0.5)
    with pytest.raises(InputError, match="whole numbers"):
        write_dicom_seg(frac, source, tmp_path / "a.dcm")
    with pytest.raises(InputError, match="segmentation_type"):
        write_dicom_seg(label_image, source, tmp_path / "a.dcm", segmentation_type="FRACTIONAL")


def test_mixed_source_folder(tmp_path, source, ct_image, label_image):
    other = write_dicom_series(ct_image, tmp_path / "other")
    other[0].rename(source / "stray.dcm")
    with pytest.raises(InputError, match="several series") as err:
        write_dicom_seg(label_image, source, tmp_path / "a.dcm")
    assert str(err.value).startswith(f"{source}: ")


def test_overwrite_refused(tmp_path, source, label_image):
    path = write_dicom_seg(label_image, source, tmp_path / "seg.dcm")
    before = path.read_bytes()
    relabelled = label_image.with_array((label_image.array > 0).astype(np.uint8))
    with pytest.raises(OutputExistsError, match="overwrite"):
        write_dicom_seg(relabelled, source, path)
    assert path.read_bytes() == before
    write_dicom_seg(relabelled, source, path, overwrite=True)
    np.testing.assert_array_equal(read_dicom_seg(path).array, relabelled.array)


def test_output_checked_before_the_series_is_read(tmp_path, source, label_image, monkeypatch):
    import medimg.io.dicom.seg as seg_module

    def boom(*args, **kwargs):
        raise AssertionError("the source series was read before the output was checked")

    monkeypatch.setattr(seg_module, "_load_source", boom)
    (tmp_path / "old.dcm").write_bytes(b"an earlier SEG")
    with pytest.raises(OutputExistsError):
        write_dicom_seg(label_image, source, tmp_path / "old.dcm")
    with pytest.raises(InputError, match="lies inside the input"):
        write_dicom_seg(label_image, source, source / "seg.dcm", overwrite=True)
    assert not (source / "seg.dcm").exists()


def test_only_frames_holding_a_segment_are_stored(tmp_path):
    """3 spheres in a 64-slice series: only the slices they cover become frames, and every
    labelled voxel reads back at its world position."""
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 20.0, -50.0]
    shape = (24, 24, 64)
    write_dicom_series(Image(np.full((1, *shape), -800, np.float32), affine, modality="CT"),
                       tmp_path / "ct")  # fmt: skip
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    lab = np.zeros(shape, np.uint8)
    for n, (centre, radius) in enumerate([((6, 6, 5), 3.0), ((14, 12, 30), 5.0),
                                          ((12, 12, 55), 4.0)], start=1):  # fmt: skip
        lab[np.linalg.norm((grid - centre) * [0.8, 0.8, 2.0], axis=-1) <= radius] = n
    covered = int(np.count_nonzero(lab.any(axis=(0, 1))))
    assert covered < 16  # the spheres cover few of the 64 slices
    path = write_dicom_seg(Image(lab[None], affine, is_label=True), tmp_path / "ct",
                           tmp_path / "seg.dcm")  # fmt: skip
    seg = hd.seg.segread(path)
    per_segment = sum(int(np.count_nonzero((lab == n).any(axis=(0, 1)))) for n in (1, 2, 3))
    assert int(seg.NumberOfFrames) == per_segment  # BINARY: one frame per segment and slice
    back = read_dicom_seg(path)
    for n in (1, 2, 3):
        want = np.argwhere(lab == n) @ affine[:3, :3].T + affine[:3, 3]
        got = np.argwhere(back.array[0] == n) @ back.affine[:3, :3].T + back.affine[:3, 3]
        np.testing.assert_allclose(got, want, atol=1e-3)
