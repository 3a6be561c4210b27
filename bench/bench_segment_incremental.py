"""Adding a structure to a trained model: old structures' Dice before and after.

On generated abdomens (``medimg.phantoms.abdomen``, the default model's generator) at a coarse
spacing: a base model is trained on liver + spleen (kidneys relabelled background) from one
group of cases (two stages like the default model: the planner's recipe, then organ-balanced
patches at a lower rate); the kidney is then added (``train_add_labels``: supervised on the kidney,
LwF distillation from the base model) from another group of cases labelled for the kidney
only. Held-out cases with every label score liver and spleen Dice for both models, and the
kidney for the new one. ``--distill-weights`` runs the addition once per weight of the
class-balanced, unbiased distillation term (folder ``add_w<weight>_ub``), ``--plain-weights`` once per
weight of the plain voxel-mean term (``add_w<weight>``); ``--naive``: no distillation at all,
the forgetting the distillation is there to prevent.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python bench/bench_segment_incremental.py \\
        --out runs/bench_incremental

Stages already done in ``--out`` (data, base model, added model) are reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch


def _subset(src: Path, dst: Path, ids: list[str], keep: dict[int, int], names: list[str]) -> Path:
    """An MSD set of ``ids`` from ``src/imagesTr`` with labels mapped by ``keep`` (others 0)."""
    from medimg.io.api import load, save

    (dst / "imagesTr").mkdir(parents=True, exist_ok=True)
    (dst / "labelsTr").mkdir(exist_ok=True)
    lut = np.zeros(256, np.uint8)
    for old, new in keep.items():
        lut[old] = new
    for cid in ids:
        link = dst / "imagesTr" / f"{cid}_0000.nii.gz"
        if not link.exists():
            link.symlink_to((src / "imagesTr" / f"{cid}_0000.nii.gz").resolve())
        lab = load(src / "labelsTr" / f"{cid}.nii.gz", is_label=True)
        lab.array = lut[lab.array.astype(np.uint8)]
        save(lab, dst / "labelsTr" / f"{cid}.nii.gz", overwrite=True)
    meta = {"name": dst.name, "channel_names": {"0": "CT"}, "file_ending": ".nii.gz",
            "labels": {n: i for i, n in enumerate(names)}}  # fmt: skip
    (dst / "dataset.json").write_text(json.dumps(meta, indent=1))
    return dst


def _scores(model: Path, data: Path) -> dict[str, list[float]]:
    from medimg.io.api import load
    from medimg.phantoms.segmentation import CT_LABELS
    from medimg.tasks.segment.predict import Segmenter

    seg = Segmenter(model, device="cpu")
    out: dict[str, list[float]] = {}
    for p in sorted((data / "imagesTs").iterdir()):
        gt = load(data / "labelsTs" / p.name.replace("_0000", ""), is_label=True).array[0]
        pred = seg.segment(load(p, modality="CT"), mirror=False).array[0]
        for k, name in enumerate(seg.plan.label_names):
            if k == 0:
                continue
            g = gt == next(v for v, n in CT_LABELS.items() if n == name)
            q = pred == k
            denom = int(g.sum() + q.sum())
            if g.any():  # a field of view without the organ does not score it
                out.setdefault(name, []).append(2 * int((g & q).sum()) / denom)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_incremental"))
    ap.add_argument("--spacing", type=float, default=8.0)
    ap.add_argument("--old-cases", type=int, default=16)
    ap.add_argument("--new-cases", type=int, default=16)
    ap.add_argument("--test-cases", type=int, default=8)
    ap.add_argument("--old-steps", type=int, default=400)
    ap.add_argument("--old-stage2-steps", type=int, default=300)
    ap.add_argument("--new-steps", type=int, default=200)
    ap.add_argument("--distill-weights", type=float, nargs="*", default=[1.0])
    ap.add_argument("--plain-weights", type=float, nargs="*", default=[])
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--naive", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from medimg.datasets.msd import check_dataset, open_dataset
    from medimg.engine import validation_interval
    from medimg.phantoms.segmentation import write_msd_dataset
    from medimg.tasks.segment.fingerprint import fingerprint_from_cases
    from medimg.tasks.segment.incremental import train_add_labels
    from medimg.tasks.segment.plan import load_plan, make_plan
    from medimg.tasks.segment.train import train_segmentation

    out, t0 = args.out, time.process_time()
    out.mkdir(parents=True, exist_ok=True)
    every = out / "all"
    if not (every / "dataset.json").is_file():
        sp = (args.spacing,) * 3
        write_msd_dataset(every, "abdomen", n_train=args.old_cases + args.new_cases,
                          n_test=args.test_cases, seed=0, spacing=sp)  # fmt: skip
    ids = sorted(p.name[: -len("_0000.nii.gz")] for p in (every / "imagesTr").iterdir())
    old_ids, new_ids = ids[: args.old_cases], ids[args.old_cases :]
    old_data = out / "liver_spleen"
    if not (old_data / "dataset.json").is_file():  # kidney (3) -> background
        _subset(every, old_data, old_ids, {1: 1, 2: 2}, ["background", "liver", "spleen"])
    new_data = out / "kidney_only"
    if not (new_data / "dataset.json").is_file():  # only the kidney (3 -> 1)
        _subset(every, new_data, new_ids, {3: 1}, ["background", "kidney"])
        for sub in ("imagesTs", "labelsTs"):
            (new_data / sub).symlink_to((every / sub).resolve())
    timings = {}
    if not (out / "old" / "train_time_s.txt").is_file():
        ds = open_dataset(old_data)
        plan = make_plan(fingerprint_from_cases(ds, check_dataset(ds)), memory_budget_mb=128.0,
                         base_features=8, max_steps=args.old_steps)  # fmt: skip
        plan.mirror_axes, plan.foreground_oversample = [], 0.6  # organs are not mirrored
        c = time.process_time()
        train_segmentation(old_data, out / "old", fold=-1, plan=plan, device="cpu",
                           progress=False, samples_per_epoch=64)  # fmt: skip
        timings["old_cpu_s"] = time.process_time() - c
    base = out / "old"
    if args.old_stage2_steps:  # the default model's recipe: organ-balanced patches, lower rate
        base = out / "old_stage2"
        if not (base / "train_time_s.txt").is_file():
            plan = load_plan(out / "old")
            steps = args.old_stage2_steps
            train = dataclasses.replace(plan.train, max_steps=steps, lr=1e-3,
                                        val_every=validation_interval(steps),
                                        checkpoint_every=validation_interval(steps))  # fmt: skip
            plan = dataclasses.replace(plan, train=train, postprocessing={},
                                       foreground_oversample=0.9)  # fmt: skip
            c = time.process_time()
            train_segmentation(old_data, base, fold=-1, plan=plan, init=out / "old",
                               device="cpu", progress=False, samples_per_epoch=64)  # fmt: skip
            timings["old_stage2_cpu_s"] = time.process_time() - c
    runs = [(f"add_w{w:g}_ub", w, True) for w in args.distill_weights]
    runs += [(f"add_w{w:g}", w, False) for w in args.plain_weights]
    runs += [("naive", 0.0, False)] if args.naive else []
    for name, weight, balanced in runs:
        if not (out / name / "train_time_s.txt").is_file():
            c = time.process_time()
            train_add_labels(new_data, out / name, init=base, add_labels=["kidney"],
                             max_steps=args.new_steps, device="cpu", progress=False,
                             distill_weight=weight, lr=args.lr, samples_per_epoch=64,
                             balanced=balanced)  # fmt: skip
            timings[f"{name}_cpu_s"] = time.process_time() - c
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "timings": timings}
    # every finished addition in --out (also of earlier calls and earlier variants)
    done = sorted(p for p in out.iterdir() if p.name.startswith(("add_", "naive")))
    models = {"old": base, **{p.name: p for p in done}}
    for name, folder in models.items():
        if (folder / "train_time_s.txt").is_file():
            result[name] = {k: float(np.mean(v)) for k, v in _scores(folder, every).items()}
    result["old_drop"] = {r: {k: result["old"][k] - result[r][k] for k in result["old"]}
                          for r in models if r != "old" and r in result}  # fmt: skip
    result["cpu_s_total_this_call"] = time.process_time() - t0
    (out / "results.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
