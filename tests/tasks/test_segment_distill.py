"""Distillation of a segmentation model into a small student (``train --distill-from``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medimg.cli import main
from medimg.datasets.msd import check_dataset, open_dataset
from medimg.errors import InputError
from medimg.io.api import load
from medimg.phantoms.segmentation import write_msd_dataset
from medimg.tasks.segment.distill import distill_segmentation, kd_kl, narrower_widths
from medimg.tasks.segment.fingerprint import fingerprint_from_cases
from medimg.tasks.segment.models import build_network, count_parameters
from medimg.tasks.segment.plan import load_plan, make_plan
from medimg.tasks.segment.predict import Segmenter
from medimg.tasks.segment.train import dice_per_class, train_segmentation

SMALL = {"shape": (40, 40, 12), "spacing": (9.0, 9.0, 12.0)}


@pytest.fixture(scope="module")
def teacher_and_student(tmp_path_factory):
    """A tiny teacher (40 steps) and its student (40 steps), trained once for the module."""
    tmp = tmp_path_factory.mktemp("distill")
    root = write_msd_dataset(tmp / "d", "ct", n_train=3, n_test=1, seed=0, **SMALL)
    ds = open_dataset(root)
    plan = make_plan(fingerprint_from_cases(ds, check_dataset(ds)), memory_budget_mb=64,
                     base_features=8, max_steps=40)  # fmt: skip
    plan.augment, plan.train.lr = False, 1e-2
    train_segmentation(root, tmp / "teacher", fold=-1, plan=plan, progress=False, device="cpu",
                       samples_per_epoch=16)  # fmt: skip
    torch.manual_seed(0)
    distill_segmentation(root, tmp / "student", tmp / "teacher", max_steps=40, progress=False,
                         device="cpu", samples_per_epoch=16, alpha=0.7)  # fmt: skip
    return root, tmp / "teacher", tmp / "student"


def test_student_is_4x_smaller_learns_and_agrees_with_its_teacher(teacher_and_student):
    root, teacher, student = teacher_and_student
    sizes = json.loads((student / "distill.json").read_text())
    t_plan, s_plan = load_plan(teacher), load_plan(student)
    n_t, n_s = count_parameters(build_network(t_plan)), count_parameters(build_network(s_plan))
    assert n_t >= 4 * n_s and sizes["student_parameters"] == n_s and sizes["ratio"] >= 4
    # the teacher's plan with narrower layers: same grid, patch, levels and labels
    assert s_plan.patch_size == t_plan.patch_size and s_plan.label_names == t_plan.label_names
    assert len(s_plan.filters) == len(t_plan.filters) and s_plan.filters < t_plan.filters
    log = [json.loads(s) for s in (student / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r.get("kind") == "train"]
    kd = [r["kd"] for r in log if r.get("kind") == "train"]
    assert losses[-1] < 0.8 * losses[0] and kd[-1] < kd[0], (losses, kd)

    image = load(root / "imagesTs" / "ct_003_0000.nii.gz", modality="CT")
    t_labels = Segmenter(teacher, device="cpu").segment(image, mirror=False).array[0]
    s_labels = Segmenter(student, device="cpu").segment(image, mirror=False).array[0]
    agree = float(np.mean(dice_per_class(s_labels, t_labels, 4)))
    x = Segmenter(student, device="cpu")  # the same pipeline with the untrained student
    torch.manual_seed(0)
    x.models = [build_network(s_plan).eval()]
    untrained = float(np.mean(dice_per_class(x.segment(image, mirror=False).array[0],
                                             t_labels, 4)))  # fmt: skip
    assert agree > untrained + 0.3, (agree, untrained)


def test_finished_student_resumes(teacher_and_student):
    root, teacher, student = teacher_and_student
    res = distill_segmentation(root, student, teacher, max_steps=40, progress=False,
                               device="cpu", resume=True, samples_per_epoch=16, alpha=0.7)  # fmt: skip
    assert res.last_step == 40  # nothing left to train: the run is continued, not restarted


def test_kd_term_and_width_rule():
    a = torch.randn(2, 4, 5, 5, 5)
    assert float(kd_kl(a, a, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(kd_kl(a, torch.randn_like(a), 2.0)) > 0.01

    def count(w: list[int]) -> int:  # a chain of 3x3x3 convolutions
        return sum(27 * i * o for i, o in zip([1, *w], w))

    small = narrower_widths([8, 16, 32, 64], count)
    assert count([8, 16, 32, 64]) >= 4 * count(small) and small[0] >= 2


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own refusals
        return int(exc.code)


def test_cli_one_line_errors(teacher_and_student, tmp_path, capsys):
    root, teacher, _ = teacher_and_student
    cases = [
        ([str(root), "--arch", "small"], "add --distill-from"),
        ([str(root), "--distill-from", str(tmp_path)], "plan.yaml"),
        (["--preset", "default", "--distill-from", "default"], "drop --preset"),
        ([str(root), "--distill-from", str(teacher), "--alpha", "2"], "[0, 1]"),
    ]
    for argv, text in cases:
        assert _run(["segment", "train", *argv, "--out", str(tmp_path / "o"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        # our refusals are one line; argparse's (--alpha 2) end in one after its usage
        assert err[-1].startswith(("error:", "medimg segment train: error:")), err
        assert text in err[-1] and (len(err) == 1 or "--alpha" in argv), err
    mr = write_msd_dataset(tmp_path / "mr", "mr", n_train=2, n_test=0, seed=0, **SMALL)
    with pytest.raises(InputError, match="teacher's labels"):
        distill_segmentation(mr, tmp_path / "s", teacher, max_steps=2, progress=False)
    assert not (tmp_path / "s").exists()
