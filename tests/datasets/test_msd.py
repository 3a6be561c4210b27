"""MSD / nnU-Net raw and plain-folder adapters: tiny files written in the exact layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medimg.datasets.msd import check_dataset, load_case, open_dataset
from medimg.errors import InputError
from medimg.io.api import save
from medimg.io.image import Image

AFF = np.diag([2.0, 2.0, 5.0, 1.0])


def _labels(value: int = 1) -> np.ndarray:
    lab = np.zeros((1, 7, 6, 5), np.uint8)
    lab[0, 2:5, 2:4, 1:4] = value
    return lab


def _msd(root, *, channels=2, labels=None, drop=None, label_value=1, label_affine=AFF):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    meta = {
        "channel_names": {str(c): n for c, n in zip(range(channels), ["T2", "ADC", "X"])},
        "labels": labels or {"background": 0, "prostate": 1},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    rng = np.random.default_rng(0)
    for case in ("p01", "p02"):
        for c in range(channels):
            if (case, c) != drop:
                arr = rng.normal(size=(1, 7, 6, 5)).astype(np.float32)
                save(Image(arr, AFF), root / "imagesTr" / f"{case}_{c:04d}.nii.gz")
        lab = Image(_labels(label_value), label_affine, is_label=True)
        save(lab, root / "labelsTr" / f"{case}.nii.gz")
    return root


def test_msd_multichannel_case(tmp_path):
    ds = open_dataset(_msd(tmp_path / "d"))
    assert ds.layout == "msd" and ds.case_ids == ["p01", "p02"]
    assert ds.labels == {0: "background", 1: "prostate"} and ds.modality == "MR"
    image, labels = load_case(ds, ds.cases[0])
    assert image.num_channels == 2 and labels is not None
    assert labels.spatial_shape == image.spatial_shape == (7, 6, 5)


def test_msd_v1_label_style(tmp_path):
    ds = open_dataset(_msd(tmp_path / "d", labels={"0": "background", "1": "prostate"}))
    assert ds.labels == {0: "background", 1: "prostate"}


def test_missing_channel_file(tmp_path):
    with pytest.raises(InputError, match=r"missing channel file p02_0001\.nii\.gz"):
        open_dataset(_msd(tmp_path / "d", drop=("p02", 1)))


def test_undeclared_label(tmp_path):
    ds = open_dataset(_msd(tmp_path / "d", label_value=3))
    with pytest.raises(InputError, match="label value 3 is not declared") as exc:
        check_dataset(ds)
    assert "\n" not in str(exc.value) and "p01.nii.gz" in str(exc.value)


def test_geometry_mismatch(tmp_path):
    ds = open_dataset(_msd(tmp_path / "d", label_affine=np.diag([2.0, 2.0, 2.5, 1.0])))
    with pytest.raises(InputError, match=r"label geometry .* does not match the image"):
        check_dataset(ds)


def test_empty_training_set(tmp_path):
    root = tmp_path / "d"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1}}))
    with pytest.raises(InputError, match="training set is empty"):
        open_dataset(root)


def test_plain_folder_layout(tmp_path):
    root = tmp_path / "plain"
    for case in ("a", "b"):
        save(Image(np.ones((1, 7, 6, 5), np.float32), AFF), root / "images" / f"{case}.nii.gz")
        save(Image(_labels(2), AFF, is_label=True), root / "labels" / f"{case}.nii.gz")
    ds = open_dataset(root, modality="CT")
    cases = check_dataset(ds)
    assert ds.layout == "folder" and sorted(cases) == ["a", "b"] and ds.modality == "CT"
    assert ds.labels == {0: "background", 2: "label 2"}


def test_not_a_dataset(tmp_path):
    with pytest.raises(InputError, match=r"expected dataset\.json"):
        open_dataset(tmp_path)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"[1, 2]", "must hold a JSON object"),
        (b"\xff\xfe{}", "not valid UTF-8 JSON"),
        (b'{"labels": {"background": 0, "a": 1}, "channel_names": ["CT"]}', "'channel_names'"),
        (b'{"labels": {"background": 0, "a": 1}, "file_ending": ".png"}', "'file_ending'"),
    ],
    ids=["list", "not-utf8", "channels-list", "png"],
)
def test_malformed_dataset_json_is_a_one_line_error(tmp_path, content, words):
    root = _msd(tmp_path / "d", channels=1)
    (root / "dataset.json").write_bytes(content)
    with pytest.raises(InputError, match=words) as err:
        open_dataset(root)
    assert str(err.value).startswith(str(root / "dataset.json"))


def test_missing_label_file_and_complex_image(tmp_path):
    root = _msd(tmp_path / "d", channels=1)
    (root / "labelsTr" / "p02.nii.gz").unlink()
    with pytest.raises(InputError, match="label file for case 'p02' is missing"):
        open_dataset(root)
    save(Image(_labels(), AFF, is_label=True), root / "labelsTr" / "p02.nii.gz")
    import nibabel as nib

    cplx = np.ones((7, 6, 5), np.complex64)
    nib.save(nib.Nifti1Image(cplx, AFF), root / "imagesTr" / "p02_0000.nii.gz")
    with pytest.raises(InputError, match="complex values"):
        check_dataset(open_dataset(root))


def test_files_lists_every_input_of_the_set(tmp_path):
    ds = open_dataset(_msd(tmp_path / "d", channels=2))
    names = sorted(p.name for p in ds.files())
    assert names == sorted(["dataset.json", "p01_0000.nii.gz", "p01_0001.nii.gz", "p01.nii.gz",
                            "p02_0000.nii.gz", "p02_0001.nii.gz", "p02.nii.gz"])  # fmt: skip
