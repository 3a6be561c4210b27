"""``medimg segment train --preset default``: the recipe that reproduces the shipped abdominal
model (the data it generates, the plan budget and the training stages)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from medimg.datasets.msd import check_dataset, open_dataset
from medimg.engine import TrainResult, check_run_dir, validation_interval
from medimg.errors import InputError, OutputExistsError
from medimg.io.output import OWNER_MARK, atomic_dir, is_owned, mark_owned
from medimg.tasks.segment.fingerprint import fingerprint_from_cases
from medimg.tasks.segment.plan import SegPlan, load_plan, make_plan, save_plan
from medimg.tasks.segment.train import train_segmentation

__all__ = ["DEFAULT_PRESET", "keep_single_organs", "train_preset", "train_stage3"]


#: ``medimg segment train --preset default``: the shipped default model's recipe. The
#: realistic abdomen generator (three contrast phases, random field of view); no mirroring,
#: because left and right (liver vs spleen) and up and down are anatomy, not noise, in a CT
#: that prediction reorients to RAS+ anyway. Two stages: the planner's recipe (a third of the
#: patches centred on an organ), then a shorter fine-tune with most patches centred on an organ
#: chosen uniformly, because after stage 1 the small spleen was still never predicted. Stage 3
#: goes on from stage 2 at a lower rate on the same cases plus extra ones of the two weakest
#: phases (unenhanced: kidney and spleen HU overlap muscle, stool and liver; portal venous:
#: kidney vs spleen and liver at their borders) and a few arterial ones (seeds from 2000, never
#: the held-out 5000+). Liver and spleen keep only their largest component after stage 3: each
#: is one organ (validation on four training cases did not ask for it for the spleen; on held-out
#: abdomens it removes stray "spleen" far from the spleen).
DEFAULT_PRESET = {"kind": "abdomen", "n_train": 60, "n_test": 6, "seed": 0,
                  "memory_budget_mb": 128.0, "base_features": 8, "max_steps": 1200,
                  "mirror_axes": [],
                  "stage2": {"max_steps": 450, "lr": 1e-3, "foreground_oversample": 0.7},
                  "stage3": {"max_steps": 1500, "lr": 5e-4, "foreground_oversample": 0.7,
                             "extra_seed": 2000, "single_organs": ["liver", "spleen"],
                             "extra": {"unenhanced": 20, "portal": 20, "arterial": 5}}}  # fmt: skip


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
    refused untouched. ``max_steps`` shortens every stage (a trial run). Stage 2 goes into
    ``work_dir/stage2`` and stage 3 (:func:`train_stage3`) into ``work_dir/model``."""
    from medimg.phantoms.segmentation import made_by_medimg, write_msd_dataset

    p = DEFAULT_PRESET
    work = Path(work_dir)
    data, plan_path = work / "data", work / "plan.yaml"
    stage1, stage2, final = work / "stage1", work / "stage2", work / "model"
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
        for run in (stage1, stage2, final, work / "data3"):
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
    if not (stage2 / "train_time_s.txt").is_file():
        train_segmentation(data, stage2, fold=-1, plan=_stage2_plan(plan, max_steps), init=stage1,
                           progress=progress, device=device, overwrite=overwrite,
                           resume=resume and (stage2 / "last").is_dir())  # fmt: skip
    return train_stage3(work, stage2, plan=plan, max_steps=max_steps, progress=progress,
                        device=device, resume=resume, overwrite=overwrite)  # fmt: skip


def train_stage3(
    work_dir: str | Path,
    init: str | Path,
    *,
    plan: SegPlan | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    device: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> TrainResult:
    """Stage 3 of the preset: fine-tune the model (or run) folder ``init`` into
    ``work_dir/model`` on ``work_dir/data`` plus the extra phase cases, merged in
    ``work_dir/data3``. ``plan`` is the plan to start from (default: ``init``'s, so its
    normalisation and network stay those the weights were trained with)."""
    work, init = Path(work_dir), Path(init)
    plan = plan if plan is not None else load_plan(init / "plan.yaml")
    merged, final = work / "data3", work / "model"
    if not (resume and (merged / "dataset.json").is_file()):
        _write_stage3_set(work, overwrite=overwrite)
    result = train_segmentation(merged, final, fold=-1, plan=_stage3_plan(plan, max_steps),
                                init=init, progress=progress, device=device, overwrite=overwrite,
                                resume=resume and (final / "last").is_dir())  # fmt: skip
    keep_single_organs(final)
    return result


def keep_single_organs(model_dir: str | Path) -> SegPlan:
    """Turn on largest-component post-processing in ``model_dir/plan.yaml`` for the preset's
    single organs (liver, spleen), whatever validation chose: one liver, one spleen is anatomy."""
    path = Path(model_dir) / "plan.yaml"
    plan = load_plan(path)
    organs = DEFAULT_PRESET["stage3"]["single_organs"]  # type: ignore[index]
    plan.postprocessing.update({k: True for k in organs if k in plan.label_names})
    save_plan(plan, path, overwrite=True)
    return plan


def _write_stage3_set(work: Path, *, overwrite: bool) -> Path:
    """``work/data3``: the preset's training cases plus the extra cases of each phase
    (one MSD set per phase under ``work/extra_<phase>``), hard-linked into one MSD layout."""
    from medimg.phantoms.segmentation import write_msd_dataset

    p, s3 = DEFAULT_PRESET, DEFAULT_PRESET["stage3"]
    data = work / "data"
    if not (data / "dataset.json").is_file():
        write_msd_dataset(data, str(p["kind"]), n_train=int(p["n_train"]),
                          n_test=int(p["n_test"]), seed=int(p["seed"]), overwrite=overwrite)  # fmt: skip
    sources = [data]
    seed = int(s3["extra_seed"])  # type: ignore[index]
    for phase, n in s3["extra"].items():  # type: ignore[index]
        sub = work / f"extra_{phase}"
        if not (sub / "dataset.json").is_file():
            write_msd_dataset(sub, str(p["kind"]), n_train=int(n), n_test=0, seed=seed,
                              overwrite=overwrite, phase=phase)  # fmt: skip
        sources.append(sub)
        seed += 1000  # each phase its own seed block
    meta = json.loads((data / "dataset.json").read_text())
    meta.pop("training", None)  # the folders are the list
    with atomic_dir(work / "data3", overwrite) as merged:
        for sub in ("imagesTr", "labelsTr"):
            (merged / sub).mkdir()
            for src in sources:
                for f in sorted((src / sub).iterdir()):
                    os.link(f, merged / sub / f.name)  # same disk: no copies of the volumes
        meta["numTraining"] = len(list((merged / "labelsTr").iterdir()))
        (merged / "dataset.json").write_text(json.dumps(meta, indent=2))
    return work / "data3"


def _stage2_plan(plan: SegPlan, max_steps: int | None) -> SegPlan:
    """Stage 2 of the preset: stage 1's plan with more organ-centred patches, a lower rate."""
    return _fine_tune_plan(plan, DEFAULT_PRESET["stage2"], max_steps)  # type: ignore[arg-type]


def _stage3_plan(plan: SegPlan, max_steps: int | None) -> SegPlan:
    """Stage 3 of the preset: a longer run at half stage 2's rate."""
    return _fine_tune_plan(plan, DEFAULT_PRESET["stage3"], max_steps)  # type: ignore[arg-type]


def _fine_tune_plan(plan: SegPlan, stage: dict, max_steps: int | None) -> SegPlan:
    """``plan`` with a stage's steps, rate and organ oversampling; post-processing chosen anew."""
    steps = int(stage["max_steps"]) if max_steps is None else max_steps
    train = dataclasses.replace(plan.train, max_steps=steps, lr=float(stage["lr"]),
                                val_every=validation_interval(steps),
                                checkpoint_every=validation_interval(steps))  # fmt: skip
    return dataclasses.replace(plan, train=train, postprocessing={},
                               foreground_oversample=float(stage["foreground_oversample"]))  # fmt: skip
