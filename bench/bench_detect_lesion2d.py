"""The shipped 2.5D key-slice lesion detector on held-out phantom key slices, DeepLesion's way.

Held-out data: key slices through the nodules of ``nodule_ct_case`` seeds 2000+ (training used
5000-5039, validation 5500-5509), the key slice with one neighbour each side, 2.5 mm pixels.
Hits are box IoU >= 0.5; sensitivity at 0.5, 1, 2, 4, 8 and 16 false positives per image (the
DeepLesion FROC) with bootstrap 95 % CIs over images, next to a chance baseline (eight boxes of
lesion size per image at random), and CPU milliseconds per key slice::

    .venv/bin/python bench/bench_detect_lesion2d.py [--volumes 12] [--model DIR]
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import date

import numpy as np
import torch

from medimg.metrics.detection import froc, froc_bootstrap, match_iou
from medimg.tasks.detect.cli2d import DEFAULT_MODEL_2D
from medimg.tasks.detect.lesion2d import (
    DEEPLESION_RATES,
    detect_key_slice,
    load_lesion_model,
    synthetic_key_slices,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volumes", type=int, default=12)
    ap.add_argument("--model", default=str(DEFAULT_MODEL_2D))
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, cfg = load_lesion_model(args.model)
    slices = synthetic_key_slices(args.volumes, seed=2000, neighbours=cfg.neighbours)
    rng = np.random.default_rng(0)
    matches, chance, t0 = [], [], time.process_time()
    for ks in slices:
        boxes, scores = detect_key_slice(model, ks, cfg)
        matches.append(match_iou(boxes, scores, ks.boxes, iou_threshold=cfg.iou_hit))
        size = np.asarray(ks.image.spatial_shape, float)
        wh = rng.choice(ks.boxes[:, 2:] - ks.boxes[:, :2], 8) if len(ks.boxes) else np.ones((8, 2))
        xy = rng.uniform(0, 1, (8, 2)) * (size - wh)
        chance.append(match_iou(np.c_[xy, xy + wh], rng.uniform(0, 1, 8), ks.boxes,
                                iou_threshold=cfg.iou_hit))  # fmt: skip
    ms = 1000 * (time.process_time() - t0) / len(slices)
    res, ref = froc(matches, DEEPLESION_RATES), froc(chance, DEEPLESION_RATES)
    boot = froc_bootstrap(matches, rates=DEEPLESION_RATES)
    print(f"{len(slices)} held-out key slices, {res.n_nodules} lesions ({args.volumes} volumes)")
    for r, c in zip(res.rates, ref.sensitivities):
        print(f"  sens@{r:g} FP/image: {boot[f'sens@{r:g}']}   (chance {c:.3f})")
    print(f"  mean over the 6 points: {boot['cpm']}   (chance {ref.cpm:.3f})")
    print(f"CPU {ms:.0f} ms per key slice (one thread, detection + decoding)")
    print(f"{date.today()}, torch {torch.__version__}, load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
