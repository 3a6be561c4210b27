"""Held-out Dice of the auto-configured plan after a CPU-time-bounded training (issue 5).

Writes the synthetic CT-like set (16 training, 6 held-out phantoms), plans it with the default
preset (memory budget 128 MB, 8 base features), trains on all training cases, then predicts the
held-out ``imagesTs`` and reports the plan, the Dice per label and the times.

    .venv/bin/python bench/bench_segment_dice.py --work runs/bench_segment [--max-steps 3000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", default="runs/bench_segment")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from medimg.io.api import load
    from medimg.tasks.segment.predict import Segmenter
    from medimg.tasks.segment.train import dice_per_class, train_preset

    work = Path(args.work)
    t0 = time.perf_counter()
    result = train_preset(work, max_steps=args.max_steps, progress=False, device="cpu")
    t_train = time.perf_counter() - t0
    seg = Segmenter(work / "model", device="cpu")
    plan = seg.plan
    scores, t1 = [], time.perf_counter()
    for img_path in sorted((work / "data" / "imagesTs").glob("*_0000.nii.gz")):
        cid = img_path.name[: -len("_0000.nii.gz")]
        image = load(img_path, modality="CT")
        gt = load(work / "data" / "labelsTs" / f"{cid}.nii.gz", is_label=True)
        pred = seg.segment(image)
        scores.append(dice_per_class(pred.array[0], gt.array[0], plan.num_classes))
    t_pred = (time.perf_counter() - t1) / max(1, len(scores))
    per = np.mean(scores, axis=0)
    report = {
        "plan": {k: plan[k] for k in ("configuration", "target_spacing", "patch_size",
                                      "pool_strides", "filters", "network")},
        "batch_size": plan.train.batch_size,
        "steps": result.last_step,
        "best_step": result.best_step,
        "train_s (incl. data + planning)": round(t_train, 1),
        "predict_s_per_case": round(t_pred, 2),
        "dice": {n: round(float(v), 4) for n, v in zip(plan.label_names[1:], per)},
        "mean_dice": round(float(per.mean()), 4),
        "held_out_cases": len(scores),
    }  # fmt: skip
    print(json.dumps(report, indent=1))
    (work / "bench_result.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
