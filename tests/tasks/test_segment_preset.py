"""The default preset's recipe: realistic abdomens, no mirroring, an organ-balanced stage 2 and
a third stage with extra cases of the weak contrast phases."""

from __future__ import annotations

import json

from medimg.tasks.segment.plan import SegPlan
from medimg.tasks.segment.presets import (
    DEFAULT_PRESET,
    _stage2_plan,
    _stage3_plan,
    _write_stage3_set,
    keep_single_organs,
)


def test_stage2_balances_organs_and_keeps_the_anatomy_unmirrored():
    plan = SegPlan(mirror_axes=[], postprocessing={"liver": True}, foreground_oversample=0.33)
    plan.train.max_steps, plan.train.lr = 1200, 2e-3
    s2 = _stage2_plan(plan, None)
    assert DEFAULT_PRESET["kind"] == "abdomen" and DEFAULT_PRESET["mirror_axes"] == []
    assert s2.mirror_axes == [] and s2.foreground_oversample > plan.foreground_oversample
    assert s2.train.max_steps == DEFAULT_PRESET["stage2"]["max_steps"] and s2.train.lr < 2e-3
    assert s2.postprocessing == {}  # chosen again after stage 2
    assert plan.train.max_steps == 1200  # stage 1's plan is untouched
    assert _stage2_plan(plan, 6).train.max_steps == 6  # a trial run shortens both stages


def test_stage3_goes_on_from_stage2_at_a_lower_rate():
    plan = SegPlan(mirror_axes=[], postprocessing={"liver": True}, foreground_oversample=0.7)
    plan.train.max_steps, plan.train.lr = 450, 1e-3
    s3 = _stage3_plan(plan, None)
    assert s3.train.lr < DEFAULT_PRESET["stage2"]["lr"] and s3.postprocessing == {}
    assert s3.train.max_steps == DEFAULT_PRESET["stage3"]["max_steps"]
    assert s3.mirror_axes == [] and s3.normalization == plan.normalization
    assert _stage3_plan(plan, 4).train.max_steps == 4


def _tiny_msd(root, n_train, n_test, seed):
    """A stand-in for the abdomen set: ``n_train`` 4x4x2 cases named as the writer names them."""
    import numpy as np

    from medimg.io.api import save
    from medimg.io.image import Image

    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    for s in range(seed, seed + n_train):
        save(Image(np.zeros((1, 4, 4, 2), np.float32), np.eye(4), modality="CT"),
             root / "imagesTr" / f"abdomen_{s:03d}_0000.nii.gz")  # fmt: skip
        save(Image(np.ones((1, 4, 4, 2), np.uint8), np.eye(4), is_label=True),
             root / "labelsTr" / f"abdomen_{s:03d}.nii.gz")  # fmt: skip
    meta = {"name": "AbdomenCT", "channel_names": {"0": "CT"}, "numTraining": n_train,
            "labels": {"background": 0, "liver": 1}, "file_ending": ".nii.gz", "training": []}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_stage3_set_adds_cases_of_the_weak_phases_never_the_held_out_seeds(tmp_path, monkeypatch):
    from medimg.datasets.msd import open_dataset
    from medimg.phantoms import segmentation

    asked = []

    def tiny_writer(root, kind, *, n_train, n_test, seed, overwrite=False, **kw):
        asked.append((kw.get("phase"), seed, n_train))
        return _tiny_msd(root, n_train, n_test, seed)

    monkeypatch.setattr(segmentation, "write_msd_dataset", tiny_writer)
    monkeypatch.setitem(DEFAULT_PRESET, "n_train", 2)
    stage3 = {**DEFAULT_PRESET["stage3"], "extra": {"unenhanced": 2, "portal": 1}}
    monkeypatch.setitem(DEFAULT_PRESET, "stage3", stage3)
    ds = open_dataset(_write_stage3_set(tmp_path, overwrite=False))
    assert len(ds.cases) == 2 + 2 + 1  # the preset's training cases and the extras
    assert [a[0] for a in asked] == [None, "unenhanced", "portal"]
    extra_seeds = {a[1] + i for a in asked[1:] for i in range(a[2])}
    assert len(extra_seeds) == 3 and not extra_seeds & set(range(5000, 5300))  # held out
    assert not extra_seeds & set(range(DEFAULT_PRESET["seed"], DEFAULT_PRESET["seed"] + 66))


def test_single_organs_keep_their_largest_component_the_kidneys_do_not(tmp_path):
    from medimg.tasks.segment.plan import load_plan, save_plan

    names = ["background", "liver", "spleen", "kidney"]
    save_plan(SegPlan(label_names=names, postprocessing={"liver": True, "spleen": False,
                                                         "kidney": False}), tmp_path / "plan.yaml")  # fmt: skip
    keep_single_organs(tmp_path)
    assert load_plan(tmp_path / "plan.yaml").postprocessing == {
        "liver": True, "spleen": True, "kidney": False}  # fmt: skip
