"""Nodule detection per nodule type and size on varied thoraxes (held-out seeds 5000+).

Simulates ``--scans`` varied thorax CTs (``medimg detect simulate --varied``: body 0.5-1.1x,
whole lungs or a slab, 0.5-1 mm in-plane, 0.6-3 mm slices, 10-60 HU noise, any orientation;
solid, part-solid, ground-glass, calcified, juxtapleural, perifissural and vessel-attached
nodules, 3-30 mm), runs a model on them (one torch thread) and prints the FROC/CPM and the
sensitivity at 1 FP/scan per type and size with scan-bootstrap 95 % CIs, plus the time per scan.

    nice -n 5 .venv/bin/python bench/bench_detect_types.py [--scans 8] [--model DIR]
        [--data /tmp/keep] [--flips]
    nice -n 5 .venv/bin/python bench/bench_detect_types.py --big   # 512x512x300 CPU time
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def time_big(model: str | None) -> None:
    """Detection CPU time on a 512x512x300 thorax at 0.7 mm (a varied thorax at 1.0x, whole
    lungs, resampled onto that grid), one thread, without and with test-time flips."""
    import numpy as np
    import torch
    from scipy import ndimage

    from medimg.io.image import Image
    from medimg.phantoms.thorax import thorax_ct_case
    from medimg.tasks.detect.predict import Detector

    torch.set_num_threads(1)
    case = thorax_ct_case(5000, scale=1.0, in_plane_mm=1.4, slice_mm=1.4, full_lungs=1.0,
                          orientation="RAS")  # fmt: skip
    src = case.image
    shape = (512, 512, 300)
    zoom = (np.asarray(src.spatial_shape) - 1) / (np.asarray(shape) - 1)
    arr = ndimage.affine_transform(src.array[0], zoom, output_shape=shape, order=1)
    affine = src.affine @ np.diag([*zoom, 1.0])
    big = Image(arr[None].astype(np.float32), affine, modality="CT")
    print(f"CT {big.spatial_shape} at {np.round(big.spacing, 2)} mm")
    for flips in (False, True):
        det = Detector(model, flips=flips)
        c0, t0 = time.process_time(), time.perf_counter()
        with torch.inference_mode():
            cands = det.detect(big)
        print(f"flips={flips}: {time.process_time() - c0:.1f} s CPU, "
              f"{time.perf_counter() - t0:.1f} s wall, {len(cands)} candidates")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scans", type=int, default=8)
    ap.add_argument("--seed", type=int, default=5000, help="first seed (training never saw 5000+)")
    ap.add_argument("--model", help="model folder (default: the shipped default model)")
    ap.add_argument("--data", help="keep the simulated scans here and reuse them on a rerun")
    ap.add_argument("--flips", action="store_true", help="test-time flips")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--big", action="store_true",
                    help="only time one 512x512x300 CT at 0.7 mm, with and without flips")  # fmt: skip
    args = ap.parse_args()
    if args.big:
        return time_big(args.model)
    import torch

    from medimg.tasks.detect.evaluate import evaluate_candidates
    from medimg.tasks.detect.predict import predict_path
    from medimg.tasks.detect.simulate import write_thorax_luna16

    torch.set_num_threads(1)
    work = Path(args.data or tempfile.mkdtemp(prefix="bench_detect_types_"))
    data = work / "thorax"
    t0 = time.perf_counter()
    if not (data / "annotations.csv").is_file():
        write_thorax_luna16(data, args.scans, seed=args.seed, n_subsets=1, progress=True)
    t_sim = time.perf_counter() - t0
    t0 = time.perf_counter()
    predict_path(data, work / "pred", model=args.model, flips=args.flips, figures=False,
                 overwrite=True)  # fmt: skip
    t_pred = time.perf_counter() - t0
    s = evaluate_candidates(work / "pred" / "candidates.csv", data / "annotations.csv",
                            work / "evaluation", excluded=data / "annotations_excluded.csv",
                            scans=data / "seriesuids.csv", n_resamples=args.bootstrap,
                            overwrite=True)  # fmt: skip
    c = s["cpm"]
    print(f"{s['n_scans']} scans, {s['n_nodules']} nodules; simulate {t_sim / args.scans:.1f} s/scan, "
          f"predict {t_pred / s['n_scans']:.1f} s/scan (1 thread{', flips' if args.flips else ''})")  # fmt: skip
    print(f"CPM {c['value']:.3f} [{c['low']:.3f}, {c['high']:.3f}]; sensitivity at "
          + ", ".join(f"{r}: {e['value']:.3f}" for r, e in s["froc"].items()))  # fmt: skip
    op = s["operating_point"]
    print(f"operating point {op['fp_per_scan']:.2f} FPs/scan, threshold {op['threshold']:.3f}")
    for key in ("by_type", "by_size"):
        for name, g in s.get(key, {}).items():
            e = g["sensitivity"]
            print(f"  {name:>16} ({g['n']:>3}): {e['value']:.2f} [{e['low']:.2f}, {e['high']:.2f}]")
    print(f"outputs in {work}")


if __name__ == "__main__":
    main()
