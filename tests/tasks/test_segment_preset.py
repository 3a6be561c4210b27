"""The default preset's recipe: realistic abdomens, no mirroring, an organ-balanced stage 2."""

from __future__ import annotations

from medimg.tasks.segment.plan import SegPlan
from medimg.tasks.segment.presets import DEFAULT_PRESET, _stage2_plan


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
