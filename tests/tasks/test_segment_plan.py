"""The planner's decisions, pinned on hand-made fingerprints, and the plan YAML round trip."""

from __future__ import annotations

import numpy as np
import pytest

from medimg.errors import InputError
from medimg.tasks.segment.plan import (
    SegPlan,
    load_plan,
    make_plan,
    pooling,
    save_plan,
    target_spacing,
)


def _fp(spacings, shapes, modality="CT", labels=3):
    return {
        "dataset": "toy",
        "modality": modality,
        "channel_names": {"0": modality},
        "labels": {str(i): f"l{i}" for i in range(labels)},
        "num_cases": len(shapes),
        "spacings": spacings,
        "shapes": shapes,
        "foreground_intensity": [
            {"mean": 50.0, "std": 20.0, "percentile_00_5": -40.0, "percentile_99_5": 120.0}
        ],
    }


def test_target_spacing_median_and_anisotropy():
    iso = np.array([[1.0, 1.0, 1.0], [1.2, 1.2, 1.4], [0.8, 0.8, 1.0]])
    assert target_spacing(iso) == pytest.approx([1.0, 1.0, 1.0])
    thick = np.array([[0.8, 0.8, 5.0], [0.8, 0.8, 5.0], [0.8, 0.8, 2.5], [0.8, 0.8, 6.0]])
    assert target_spacing(thick)[2] < np.median(thick[:, 2])  # 10th percentile, not median


def test_anisotropic_data_pools_z_less_and_uses_flat_kernels():
    strides, kernels = pooling([128, 128, 32], [0.8, 0.8, 4.0])
    z_pools = sum(s[2] == 2 for s in strides)
    xy_pools = sum(s[0] == 2 for s in strides)
    assert z_pools < xy_pools
    assert kernels[0] == [3, 3, 1]  # no 3-voxel kernel across thick slices at full resolution
    iso_strides, _ = pooling([64, 64, 64], [1.0, 1.0, 1.0])
    assert all(s == [2, 2, 2] for s in iso_strides)


def test_small_images_patch_is_whole_image():
    plan = make_plan(_fp([[1.0, 1.0, 1.0]] * 4, [[30, 28, 20]] * 4), memory_budget_mb=4096)
    assert all(p >= s for p, s in zip(plan.patch_size, [30, 28, 20]))
    assert plan.batch_size >= 2 and plan.configuration == "3d"


def test_budget_shrinks_patch_and_divisibility():
    big = _fp([[1.0, 1.0, 1.0]] * 4, [[256, 256, 200]] * 4)
    small, large = make_plan(big, memory_budget_mb=128), make_plan(big, memory_budget_mb=2048)
    assert np.prod(small.patch_size) < np.prod(large.patch_size)
    for plan in (small, large):
        div = np.prod(np.array(plan.pool_strides), axis=0)
        assert all(p % d == 0 for p, d in zip(plan.patch_size, div))


def test_two_d_choice_for_few_thick_slices_and_2d_data():
    thick = make_plan(_fp([[0.7, 0.7, 8.0]] * 3, [[256, 256, 8]] * 3), memory_budget_mb=256)
    assert thick.configuration == "2d" and len(thick.patch_size) == 2
    flat = make_plan(_fp([[1.0, 1.0]] * 3, [[64, 64]] * 3))
    assert flat.configuration == "2d"
    forced = make_plan(_fp([[0.7, 0.7, 8.0]] * 3, [[64, 64, 8]] * 3), configuration="3d")
    assert forced.configuration == "3d"


def test_normalisation_per_modality():
    ct = make_plan(_fp([[1.0] * 3] * 2, [[32] * 3] * 2, "CT"))
    # percentiles inside the wide CT window are widened to it (enhanced organs stay apart)
    assert ct.normalization[0].scheme == "ct" and ct.normalization[0].clip_low == -200.0
    assert ct.normalization[0].clip_high == 400.0
    mr = make_plan(_fp([[1.0] * 3] * 2, [[32] * 3] * 2, "MR"))
    assert mr.normalization[0].scheme == "zscore"


def test_yaml_round_trip_and_typed_accessor(tmp_path):
    plan = make_plan(_fp([[1.0, 1.0, 2.0]] * 3, [[64, 64, 40]] * 3))
    path = save_plan(plan, tmp_path / "plan.yaml")
    back = load_plan(path)
    assert back == plan and back.data_identifier == plan.data_identifier
    assert back["patch_size"] == plan.patch_size
    with pytest.raises(InputError, match="valid keys: dataset, modality"):
        back["patchsize"]
    text = path.read_text().replace("network: dynunet", "netwrk: dynunet")
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(InputError, match=r"unknown key 'netwrk'.*valid keys"):
        load_plan(tmp_path / "bad.yaml")


def test_nonconsecutive_labels_refused():
    fp = _fp([[1.0] * 3] * 2, [[32] * 3] * 2)
    fp["labels"] = {"0": "bg", "2": "x"}
    with pytest.raises(InputError, match="consecutive"):
        make_plan(fp)


def test_plan_defaults_build():
    assert SegPlan().num_classes == 2
