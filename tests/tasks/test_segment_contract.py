"""The segmentation input contract (modality and intensity fingerprint against the model's plan,
``--force``), and outputs that name the model that made them."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medimg.cli import main
from medimg.errors import InputError
from medimg.io.api import save
from medimg.io.image import Image
from medimg.tasks.segment.contract import check_contract, input_fingerprint
from medimg.tasks.segment.plan import Normalization, SegPlan

AFFINE = np.diag([4.0, 4.0, 5.0, 1.0])  # the default model's voxel size


def _one_error(capsys) -> str:
    lines = capsys.readouterr().err.splitlines()
    err = [x for x in lines if x.strip() and not re.search(r"\| *\d+/\d+ \[", x)]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _mr_like(shape=(24, 24, 8)) -> np.ndarray:
    """Non-negative arbitrary units with a bright blob: what an MR magnitude volume looks like."""
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    head = (x**2 + y**2 + z**2 < 0.8) * 600.0
    return np.abs(head + rng.normal(0, 20, shape)).astype(np.float32)


def _ct_like(shape=(24, 24, 8)) -> np.ndarray:
    """Air around a soft-tissue body with a bony core, in HU."""
    x, y, _ = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(x**2 + y**2)
    hu = np.where(r < 0.7, 40.0, -1000.0) + np.where(r < 0.2, 700.0, 0.0)
    return (hu + np.random.default_rng(1).normal(0, 10, shape)).astype(np.float32)


CT_PLAN = SegPlan(modality="CT", normalization=[Normalization("ct", -40, 115, 50, 29)])
MR_PLAN = SegPlan(modality="MR", channel_names=["T1"])


@pytest.mark.parametrize(
    ("plan", "array", "declared", "words"),
    [
        (CT_PLAN, _mr_like(), "", "no value below -20"),
        (CT_PLAN, _mr_like() / 600.0 - 0.4, "", "few units"),
        (CT_PLAN, _ct_like(), "MR", "MR is not CT"),
        (MR_PLAN, _ct_like(), "", "CT-like"),
        (MR_PLAN, _mr_like(), "CT", "CT is not MR"),
    ],
    ids=["mr-into-ct", "normalised-into-ct", "mr-dicom-into-ct", "ct-into-mr", "ct-dicom-into-mr"],
)
def test_mismatches_are_refused_naming_expected_and_found(plan, array, declared, words):
    image = Image(array[None], AFFINE)
    with pytest.raises(InputError) as exc:
        check_contract(image, plan, "scan.nii.gz", declared_modality=declared)
    line = str(exc.value)
    assert "\n" not in line and words in line and "--force" in line
    assert f"expects 3D {plan.modality}" in line and "found a 3D" in line
    note = check_contract(image, plan, "scan.nii.gz", declared_modality=declared, force=True)
    assert note is not None and words in note and "--force" in note


@pytest.mark.parametrize(
    ("plan", "array", "declared"),
    [
        (CT_PLAN, _ct_like(), ""),
        (CT_PLAN, np.random.default_rng(0).normal(0, 50, (24, 24, 8)), ""),  # a soft-tissue crop
        (CT_PLAN, np.full((8, 8, 8), -1000.0), "CT"),  # the header says CT: trusted
        (MR_PLAN, _mr_like(), ""),
        (MR_PLAN, _mr_like() / 600.0 - 0.4, "MR"),
    ],
)
def test_matching_images_pass(plan, array, declared):
    image = Image(np.asarray(array, np.float32)[None], AFFINE)
    assert check_contract(image, plan, "scan", declared_modality=declared) is None


def test_secondary_capture_and_other_declare_nothing():
    fp = input_fingerprint(Image(_ct_like()[None], AFFINE), "OT")
    assert fp.modality == "" and fp.low < -900 and fp.air_fraction > 0.3


def test_cli_refuses_an_mr_volume_and_force_runs_it(tmp_path, capsys):
    scan = save(Image(_mr_like()[None], AFFINE), tmp_path / "brain.nii.gz")
    out = tmp_path / "labels.nii.gz"
    assert main(["segment", "predict", str(scan), str(out), "--no-mirror"]) == 2
    line = _one_error(capsys)
    assert "brain.nii.gz" in line and "expects 3D CT in Hounsfield units" in line
    assert "--force" in line and not out.exists()
    argv = ["segment", "predict", str(scan), str(out), "--no-mirror", "--force"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "note: brain.nii.gz:" in printed and "(--force)" in printed


def test_cli_refuses_a_radiograph_naming_its_modality(tmp_path, capsys):
    xray = np.random.default_rng(0).integers(0, 4000, (64, 60)).astype(np.float32)
    series = save(Image(xray[None], np.diag([0.2, 0.2, 1.0, 1.0]), modality="DX"),
                  tmp_path / "chest")  # fmt: skip
    out = tmp_path / "out"
    assert main(["segment", "predict", str(series), str(out), "--no-mirror"]) == 2
    line = _one_error(capsys)
    assert "DX is not CT" in line and "2D (single-slice) DX image" in line
    assert "expects 3D CT" in line and not out.exists()


def test_nifti_labels_name_the_model(tmp_path):
    scan = save(Image(_ct_like((32, 32, 12))[None], AFFINE), tmp_path / "ct.nii.gz")
    out = tmp_path / "labels.nii.gz"
    assert main(["segment", "predict", str(scan), str(out), "--no-mirror"]) == 0
    descrip = nib.load(out).header["descrip"].item().decode()
    assert re.fullmatch(r"medimg \S+ segment default \(AbdomenCT CT\) sha1:[0-9a-f]{8}", descrip)


def test_model_tag_changes_with_the_weights():
    import torch

    from medimg.tasks.segment.contract import model_tag

    net = torch.nn.Linear(2, 2)
    a = model_tag("m", CT_PLAN, [net])
    with torch.no_grad():
        net.weight[0, 0] += 1
    assert model_tag("m", CT_PLAN, [net]) != a and len(a.encode()) <= 79
    assert pydicom  # the SEG side is checked in test_segment_slice_order


def test_the_python_api_checks_the_contract_too():
    from medimg.tasks.segment.predict import Segmenter

    seg = Segmenter(device="cpu")
    brain = Image(_mr_like()[None], AFFINE, meta={"source": "brain.nii.gz"})
    with pytest.raises(InputError, match=r"brain\.nii\.gz: the model expects 3D CT"):
        seg.segment(brain, mirror=False)
    labels = seg.segment(brain, mirror=False, force=True)
    assert labels.spatial_shape == brain.spatial_shape and labels.meta["model"] == seg.tag
    ct = Image(_ct_like()[None], AFFINE, modality="CT")
    assert seg.segment(ct, mirror=False).meta["model"].startswith("medimg ")
