"""``medimg segment train --preset default``: the recipe that reproduces the shipped abdominal
model (the data it generates, the plan budget and the training stages)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from medimg.datasets.msd import check_dataset, open_dataset
from medimg.engine import TrainResult, check_run_dir, validation_interval
from medimg.errors import InputError, OutputExistsError
from medimg.io.output import OWNER_MARK, is_owned, mark_owned
from medimg.tasks.segment.fingerprint import fingerprint_from_cases
from medimg.tasks.segment.plan import SegPlan, load_plan, make_plan, save_plan
from medimg.tasks.segment.train import train_segmentation

__all__ = ["DEFAULT_PRESET", "train_preset"]


#: ``medimg segment train --preset default``: the shipped default model's recipe. The
#: realistic abdomen generator (three contrast phases, random field of view); no mirroring,
#: because left and right (liver vs spleen) and up and down are anatomy, not noise, in a CT
#: that prediction reorients to RAS+ anyway. Two stages: the planner's recipe (a third of the
#: patches centred on an organ), then a shorter fine-tune with most patches centred on an organ
#: chosen uniformly, because after stage 1 the small spleen was still never predicted.
DEFAULT_PRESET = {"kind": "abdomen", "n_train": 60, "n_test": 6, "seed": 0,
                  "memory_budget_mb": 128.0, "base_features": 8, "max_steps": 1200,
                  "mirror_axes": [],
                  "stage2": {"max_steps": 450, "lr": 1e-3, "foreground_oversample": 0.7}}  # fmt: skip


def train_preset(
    work_dir: str | Path,
    *,
    max_steps: int | None = None,
    progress: bool = True,
    device: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> TrainResult:
    """Write the synthetic abdomen set into ``work_dir/data``, plan it with the preset's budget
    and train on all training cases (fold -1): stage 1 into ``work_dir/stage1``, then stage 2
    (initialised from stage 1) into ``work_dir/model``, the model folder.

    An existing ``work_dir`` is resumed (``resume``: its data and plan are kept; the unfinished
    stage continues) or, with ``overwrite``, started over if medimg wrote it; otherwise it is
    refused untouched. ``max_steps`` shortens both stages (a trial run)."""
    from medimg.phantoms.segmentation import made_by_medimg, write_msd_dataset

    p = DEFAULT_PRESET
    work = Path(work_dir)
    data, plan_path = work / "data", work / "plan.yaml"
    stage1, final = work / "stage1", work / "model"
    if resume:
        plan = load_plan(plan_path)
    else:
        busy = work.is_dir() and any(q.name != OWNER_MARK for q in work.iterdir())
        if busy and not overwrite:
            raise OutputExistsError(
                "already holds a preset run; pass --resume to continue it, --overwrite to start "
                "it over, or choose another --out",
                work,
            )
        if busy and not (is_owned(work) or made_by_medimg(data)):
            raise InputError(
                "holds files medimg did not write; --overwrite only starts over an earlier "
                "preset run, choose a new or empty folder",
                work,
            )
        for run in (stage1, final):
            check_run_dir(run, resume=False, overwrite=overwrite, whole_folder=True)
        work.mkdir(parents=True, exist_ok=True)
        mark_owned(work)
        write_msd_dataset(data, str(p["kind"]), n_train=int(p["n_train"]),
                          n_test=int(p["n_test"]), seed=int(p["seed"]), overwrite=overwrite)  # fmt: skip
        ds = open_dataset(data)
        plan = make_plan(fingerprint_from_cases(ds, check_dataset(ds)), memory_budget_mb=float(p["memory_budget_mb"]),
                         base_features=int(p["base_features"]), max_steps=int(p["max_steps"]))  # fmt: skip
        plan.mirror_axes = list(p["mirror_axes"])  # type: ignore[call-overload]
        save_plan(plan, plan_path, overwrite=overwrite)
    stage1_done = (stage1 / "train_time_s.txt").is_file()
    if not stage1_done:
        train_segmentation(data, stage1, fold=-1, plan=plan, max_steps=max_steps,
                           progress=progress, device=device, overwrite=overwrite,
                           resume=resume and (stage1 / "last").is_dir())  # fmt: skip
    return train_segmentation(data, final, fold=-1, plan=_stage2_plan(plan, max_steps),
                              init=stage1, progress=progress, device=device,
                              overwrite=overwrite, resume=resume and (final / "last").is_dir())  # fmt: skip


def _stage2_plan(plan: SegPlan, max_steps: int | None) -> SegPlan:
    """Stage 2 of the preset: stage 1's plan with more organ-centred patches, a lower rate."""
    s2 = DEFAULT_PRESET["stage2"]
    steps = int(s2["max_steps"]) if max_steps is None else max_steps  # type: ignore[index]
    train = dataclasses.replace(plan.train, max_steps=steps, lr=float(s2["lr"]),  # type: ignore[index]
                                val_every=validation_interval(steps),
                                checkpoint_every=validation_interval(steps))  # fmt: skip
    return dataclasses.replace(plan, train=train, postprocessing={},
                               foreground_oversample=float(s2["foreground_oversample"]))  # type: ignore[index]  # fmt: skip
