"""The anatomical prior flags (and removes) label components that cannot be anatomy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.tasks.segment.priors import (
    ABDOMEN_PRIOR,
    AnatomicalPrior,
    OrganRule,
    apply_prior,
    check_prior,
    load_prior,
)

NAMES = ["background", "liver", "spleen", "kidney"]
SPACING = (4.0, 4.0, 5.0)  # mm; RAS+ axes: x to the patient's right, y anterior, z superior


def _abdomen() -> tuple[Image, Image]:
    """A 100 x 80 x 40 voxel body (soft tissue in air) with liver on the right, spleen on the
    left, and two kidneys posterior, all well inside the field of view."""
    shape = (100, 80, 40)
    x, y, _ = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    ct = np.full(shape, -1000.0, dtype=np.float32)
    body = ((x - 50) / 45) ** 2 + ((y - 40) / 35) ** 2 <= 1
    ct[body] = 40.0
    lab = np.zeros(shape, dtype=np.uint8)
    lab[62:85, 38:62, 10:30] = 1  # liver, patient right (larger x), anterior: 23*24*20 voxels
    lab[20:32, 40:55, 18:28] = 2  # spleen, patient left
    lab[30:38, 20:30, 12:22] = 3  # left kidney, posterior (small y)
    lab[62:70, 20:30, 10:20] = 3  # right kidney
    affine = np.diag([*SPACING, 1.0])
    return Image(ct[None], affine, modality="CT"), Image(lab[None], affine, is_label=True)


def _reasons(report, label):
    return [r for c in report.components if c["label"] == label for r in c["reasons"]]


def test_plausible_abdomen_passes():
    image, labels = _abdomen()
    report = check_prior(labels, ABDOMEN_PRIOR, NAMES, image)
    assert report.ok, report.lines()


def test_planted_spleen_on_the_wrong_side_is_flagged_and_removed_alone():
    image, labels = _abdomen()
    lab = labels.array.copy()
    lab[0, 75:82, 15:22, 32:38] = 2  # a second "spleen" on the right, away from the first
    planted = labels.with_array(lab)
    cleaned, report = apply_prior(planted, ABDOMEN_PRIOR, NAMES, image, enforce=True)
    assert [c["voxels"] for c in report.components] == [7 * 7 * 6]
    assert "more pieces than the organ has (1)" in _reasons(report, "spleen")
    assert "not on the left side of the body" in _reasons(report, "spleen")
    assert report.removed_voxels == 7 * 7 * 6
    np.testing.assert_array_equal(cleaned.array, labels.array)  # the true organs untouched


def test_component_in_the_air_is_outside_the_body():
    image, labels = _abdomen()
    lab = labels.array.copy()
    lab[0, 45:60, 0:3, 5:35] = 3  # a third "kidney" in the air in front of the table
    report = check_prior(labels.with_array(lab), ABDOMEN_PRIOR, NAMES, image)
    assert "outside the body" in _reasons(report, "kidney")


def test_small_organ_flagged_unless_cut_by_the_field_of_view():
    image, labels = _abdomen()
    lab = labels.array.copy()
    lab[lab == 1] = 0
    lab[0, 62:67, 38:43, 10:15] = 1  # a 125-voxel (10 mL) "liver"
    report = check_prior(labels.with_array(lab), ABDOMEN_PRIOR, NAMES, image)
    assert "smaller than 300 mL" in _reasons(report, "liver")
    lab[0, 62:67, 38:43, 10:15] = 0
    lab[0, 62:67, 38:43, 35:40] = 1  # as small, but cut by the top of the volume
    report = check_prior(labels.with_array(lab), ABDOMEN_PRIOR, NAMES, image)
    assert not _reasons(report, "liver")
    lab[0, 62:67, 38:43, 35:40] = 0
    lab[0, 62:64, 38:40, 38:40] = 1  # an 8-voxel (0.64 mL) speck at the top: not an organ
    report = check_prior(labels.with_array(lab), ABDOMEN_PRIOR, NAMES, image)
    assert "smaller than 300 mL" in _reasons(report, "liver")


def test_sides_are_judged_in_the_patient_frame_whatever_the_array_order():
    image, labels = _abdomen()
    lab = labels.array.copy()
    lab[0][lab[0] == 1], lab[0][lab[0] == 2] = 9, 1  # swap: liver on the left ...
    lab[0][lab[0] == 9] = 2  # ... spleen on the right
    swapped = labels.with_array(lab)
    flip = np.diag([-SPACING[0], SPACING[1], SPACING[2], 1.0])  # x axis stored right-to-left
    flip[0, 3] = SPACING[0] * 99
    for lab_img, img in [
        (swapped, image),
        (Image(swapped.array[:, ::-1], flip, is_label=True), Image(image.array[:, ::-1], flip)),
    ]:
        report = check_prior(lab_img, ABDOMEN_PRIOR, NAMES, img)
        assert "not on the right side of the body" in _reasons(report, "liver")
        assert any(line.startswith("spleen is not left of liver") for line in report.relations)


def test_prior_from_the_model_folder_and_its_errors(tmp_path):
    (tmp_path / "prior.yaml").write_text(
        "organs:\n  tumour: {pieces: 3, min_ml: 0.5}\n"
        "relations:\n  - {first: tumour, direction: above, second: liver}\n"
    )
    with pytest.raises(InputError, match="unknown direction 'above'"):
        load_prior(tmp_path, ["background", "tumour"])
    (tmp_path / "prior.yaml").write_text("organs:\n  tumour: {pieces: 3, min_ml: 0.5}\n")
    assert load_prior(tmp_path, ["background", "tumour"]).organs["tumour"].pieces == 3
    assert load_prior(None, ["background", "csf", "wm"]) is None
    assert set(load_prior(None, NAMES).organs) == {"liver", "spleen", "kidney"}


class _BrightIsSpleen(torch.nn.Module):
    """A stand-in network: every voxel brighter than 200 HU is "spleen", the rest background."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spleen = 50.0 * (x[:, :1] - 0.2)  # the plan below scales HU by 1/1000
        other = torch.full_like(spleen, -50.0)
        return torch.cat([torch.zeros_like(spleen), other, spleen, other], dim=1)


def test_predict_enforces_the_prior_and_writes_its_report(tmp_path):
    from medimg.io.api import save
    from medimg.tasks.segment.plan import Normalization, SegPlan
    from medimg.tasks.segment.predict import Segmenter, predict_path

    image, _ = _abdomen()
    ct = image.array.copy()
    ct[0, 20:30, 40:50, 15:25] = 300.0  # the spleen: patient left, 1000 voxels (80 mL)
    ct[0, 70:73, 40:43, 15:18] = 300.0  # a bright speck on the right: no second spleen
    save(image.with_array(ct), tmp_path / "case.nii.gz")
    plan = SegPlan(modality="CT", label_names=NAMES, target_spacing=list(SPACING),
                   normalization=[Normalization("ct", -1000.0, 1000.0, 0.0, 1000.0)],
                   patch_size=[32, 32, 16], mirror_axes=[])  # fmt: skip
    seg = Segmenter.from_networks(plan, [_BrightIsSpleen()], tag="test")
    notes: list[str] = []
    with pytest.raises(InputError, match="prior must be one of"):
        predict_path(tmp_path / "case.nii.gz", tmp_path / "x.nii.gz", segmenter=seg,
                     prior="strict", force=True)  # fmt: skip
    written = predict_path(tmp_path / "case.nii.gz", tmp_path / "out.nii.gz", segmenter=seg,
                           prior="enforce", notes=notes, force=True, progress=False)  # fmt: skip
    from medimg.io.api import load

    labels = load(tmp_path / "out.nii.gz").array[0]
    assert (labels[20:30, 40:50, 15:25] == 2).all() and not labels[70:73, 40:43, 15:18].any()
    report = json.loads((tmp_path / "out.prior.json").read_text())
    assert [c["voxels"] for c in report["components"]] == [27]
    assert tmp_path / "out.prior.json" in written
    assert len(notes) == 1 and notes[0].startswith("case: removed: spleen component of 2.2 mL")


def test_cli_prior_check_writes_the_report_and_refuses_a_model_without_one(tmp_path, capsys):
    from medimg.cli import main
    from medimg.io.api import save

    image, _ = _abdomen()
    save(image, tmp_path / "ct.nii.gz")
    args = ["segment", "predict", str(tmp_path / "ct.nii.gz")]
    assert main([*args, str(tmp_path / "a.nii.gz"), "--prior", "check", "--no-mirror",
                 "--quiet"]) == 0  # fmt: skip
    report = json.loads((tmp_path / "a.prior.json").read_text())
    assert set(report) == {"components", "relations", "removed_voxels"}
    assert report["removed_voxels"] == 0  # check only: nothing removed
    with pytest.raises(SystemExit) as exc:
        main([*args, str(tmp_path / "b.nii.gz"), "--prior", "strict"])
    assert exc.value.code == 2
    capsys.readouterr()
    code = main([*args, str(tmp_path / "c.nii.gz"), "--model", "brain", "--force", "--prior",
                 "check", "--no-mirror", "--quiet"])  # fmt: skip
    assert code == 2 and "have no anatomical prior" in capsys.readouterr().err
    assert not (tmp_path / "c.nii.gz").exists()


def test_midline_liver_and_anterior_midline_kidney_are_flagged():
    """A brain-sized blob labelled liver on the midline (what a head CT gets), and a "kidney"
    in front of the spine on the midline, are not where those organs lie (the posterior rule is
    an option of a prior, not a default)."""
    image, labels = _abdomen()
    lab = labels.array.copy()
    lab[lab == 1] = 0
    lab[0, 38:62, 38:62, 10:30] = 1  # 24*24*20 voxels = 922 mL, centred on the midline
    lab[0, 49:51, 52:68, 26:36] = 3  # a third kidney, anterior and on the midline
    report = check_prior(labels.with_array(lab), ABDOMEN_PRIOR, NAMES, image)
    assert "not on the right side of the body" in _reasons(report, "liver")
    assert "on the midline (the organ lies to one side)" in _reasons(report, "kidney")
    posterior = OrganRule(pieces=3, min_ml=1.0, posterior=True)
    prior = AnatomicalPrior({**ABDOMEN_PRIOR.organs, "kidney": posterior})
    kidney = _reasons(check_prior(labels.with_array(lab), prior, NAMES, image), "kidney")
    assert kidney == ["in the anterior half of the body (the organ lies posterior)"]


def _head(values: tuple[float, float]) -> Image:
    """A 150 mm wide head-like body (``values``: outside, inside) in a 240 mm field of view."""
    shape = (60, 60, 40)
    x, y, _ = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    arr = np.full(shape, values[0], dtype=np.float32)
    arr[((x - 30) / 18.75) ** 2 + ((y - 30) / 22) ** 2 <= 1] = values[1]
    return Image(arr[None], np.diag([*SPACING, 1.0]))


@pytest.mark.parametrize("values", [(-1000.0, 40.0), (0.0, 300.0)], ids=["CT in HU", "MR-like"])
def test_organs_in_a_body_as_narrow_as_a_head_are_flagged(values):
    """A "liver" right of the midline, of plausible size, inside a body 150 mm wide -- a head --
    breaks the trunk-width rule; an image without air (an MR) gets an Otsu body mask, so the
    rule still sees the head's width rather than the whole field of view."""
    image = _head(values)
    lab = np.zeros((1, 60, 60, 40), dtype=np.uint8)
    lab[0, 31:44, 22:38, 10:30] = 1  # 13*16*20 voxels = 333 mL, right of the midline
    labels = Image(lab, image.affine, is_label=True)
    reasons = _reasons(check_prior(labels, ABDOMEN_PRIOR, NAMES, image), "liver")
    widths = [float(r.split()[3]) for r in reasons if "a trunk is at least 180 mm" in r]
    assert len(widths) == 1 and 140 <= widths[0] <= 156, reasons
    trunk, organs = _abdomen()  # 360 mm wide
    assert check_prior(organs, ABDOMEN_PRIOR, NAMES, trunk).ok
    no_rule = AnatomicalPrior(ABDOMEN_PRIOR.organs)  # min_body_width_mm 0: no such rule
    assert _reasons(check_prior(labels, no_rule, NAMES, image), "liver") == []
