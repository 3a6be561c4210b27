"""Held-out Dice of the auto-configured plan after a CPU-time-bounded training (issue 5).

Writes the synthetic CT-like set (16 training, 6 held-out phantoms), plans it with the default
preset (memory budget 128 MB, 8 base features; everything else chosen by the planner), trains on
all training cases, then predicts the held-out ``imagesTs`` (with test-time mirroring and the
chosen post-processing) and reports the plan, Dice/HD95 per label and the times.

    .venv/bin/python bench/bench_segment_dice.py --work runs/bench_segment [--max-steps 3000]

``--model DIR`` skips training and scores a trained run or model folder instead (the preset's
data set is written into ``WORK/data`` first if it is not there), e.g. the shipped default:

    .venv/bin/python bench/bench_segment_dice.py --work runs/seg_score \
        --model src/medimg/tasks/segment/default
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="runs/bench_segment")
    ap.add_argument("--model", help="score this trained run instead of training (reads its data)")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from medimg.io.api import load
    from medimg.metrics.segmentation import case_metrics
    from medimg.tasks.segment.predict import Segmenter
    from medimg.tasks.segment.presets import train_preset

    work = Path(args.work)
    steps = best_step = None
    if args.model:
        model_dir = Path(args.model)
        timing = model_dir / "train_time_s.txt"  # written when a training finishes
        t_train = float(timing.read_text()) if timing.is_file() else float("nan")
        log = model_dir / "metrics.jsonl"  # absent in an exported model folder
        val = [json.loads(s) for s in log.read_text().splitlines()] if log.is_file() else []
        steps = max((r["step"] for r in val if r.get("kind") == "train"), default=None)
        best = [r for r in val if r.get("kind") == "val" and r.get("best")]
        best_step = best[-1]["step"] if best else None
        if not (work / "data" / "imagesTs").is_dir():  # the preset's held-out phantoms
            from medimg.phantoms.segmentation import write_msd_dataset
            from medimg.tasks.segment.presets import DEFAULT_PRESET as p

            write_msd_dataset(work / "data", str(p["kind"]), n_train=int(p["n_train"]),
                              n_test=int(p["n_test"]), seed=int(p["seed"]))  # fmt: skip
    else:
        t0 = time.perf_counter()
        result = train_preset(work, max_steps=args.max_steps, progress=False, device="cpu")
        t_train = time.perf_counter() - t0
        model_dir, steps, best_step = work / "model", result.last_step, result.best_step
    seg = Segmenter(model_dir, device="cpu")
    plan = seg.plan
    labels = list(range(1, plan.num_classes))
    per_case, t1 = [], time.perf_counter()
    for img_path in sorted((work / "data" / "imagesTs").glob("*_0000.nii.gz")):
        cid = img_path.name[: -len("_0000.nii.gz")]
        image = load(img_path, modality="CT")
        gt = load(work / "data" / "labelsTs" / f"{cid}.nii.gz", is_label=True)
        pred = seg.segment(image)
        per_case.append(case_metrics(pred.array[0], gt.array[0], labels=labels,
                                     spacing=image.spacing))  # fmt: skip
    t_pred = (time.perf_counter() - t1) / max(1, len(per_case))
    dice = {plan.label_names[k]: float(np.mean([c[k]["dice"] for c in per_case])) for k in labels}
    hd95 = {plan.label_names[k]: float(np.mean([c[k]["hd95"] for c in per_case])) for k in labels}
    report = {
        "plan": {k: plan[k] for k in ("configuration", "target_spacing", "patch_size",
                                      "pool_strides", "filters", "network",
                                      "deep_supervision_heads", "postprocessing")},
        "batch_size": plan.train.batch_size,
        "steps": steps,
        "best_step": best_step,
        "train_s (incl. data + planning)": round(t_train, 1),
        "predict_s_per_case (mirrored)": round(t_pred, 2),
        "dice": {n: round(v, 4) for n, v in dice.items()},
        "hd95_mm": {n: round(v, 2) for n, v in hd95.items()},
        "mean_dice": round(float(np.mean(list(dice.values()))), 4),
        "min_case_mean_dice": round(min(float(np.mean([c[k]["dice"] for k in labels]))
                                        for c in per_case), 4),
        "held_out_cases": len(per_case),
    }  # fmt: skip
    print(json.dumps(report, indent=1))
    (work / "bench_result.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
