"""CT normalisation keeps contrast-enhanced organs apart (no saturation at ~115 HU)."""

from __future__ import annotations

import numpy as np

from medimg.tasks.segment.data import normalize
from medimg.tasks.segment.plan import CT_WINDOW, load_plan, make_plan


def _fp(p_low: float, p_high: float) -> dict:
    return {
        "dataset": "t", "modality": "CT", "channel_names": {"0": "CT"},
        "labels": {"0": "background", "1": "organ"}, "num_cases": 2,
        "spacings": [[4.0, 4.0, 5.0]] * 2, "shapes": [[32, 32, 16]] * 2,
        "foreground_intensity": [{"mean": 50.0, "std": 20.0, "percentile_00_5": p_low,
                                  "percentile_99_5": p_high}],
    }  # fmt: skip


def test_unenhanced_training_set_still_gets_the_wide_window():
    plan = make_plan(_fp(-40.0, 115.0))  # what an unenhanced phantom set measures
    hu = np.array([[-1000.0, -100.0, 60.0, 115.0, 200.0, 300.0, 1000.0]], np.float32)
    x = normalize(hu[:, None, None, :], plan)[0, 0, 0]
    fat, liver, top_old, kidney, aorta, bone = x[1:]
    assert fat < liver < top_old < kidney < aorta < bone, "200 HU kidney is not saturated"
    assert kidney - top_old > 1.0 and aorta - kidney > 1.0  # 85 / 100 HU apart, std 20 HU
    assert x[0] < fat  # air below fat
    assert bone == normalize(np.full((1, 1, 1, 1), 5000.0, np.float32), plan).ravel()[0]


def test_wider_percentiles_are_kept():
    norm = make_plan(_fp(-500.0, 900.0)).normalization[0]
    assert (norm.clip_low, norm.clip_high) == (-500.0, 900.0)
    norm = make_plan(_fp(-40.0, 115.0)).normalization[0]
    assert (norm.clip_low, norm.clip_high) == CT_WINDOW


def test_shipped_default_model_uses_the_wide_window():
    from medimg.tasks.segment.predict import DEFAULT_MODEL

    norm = load_plan(DEFAULT_MODEL).normalization[0]
    assert norm.clip_low <= CT_WINDOW[0] and norm.clip_high >= CT_WINDOW[1]
