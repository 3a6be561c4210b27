"""Segmentation metrics vs MONAI: agreement and time on random 3D masks, spacing (1, 1, 2.5).

Usage: ``.venv/bin/python bench/bench_seg_metrics.py [--sizes 128 256] [--repeats 3]``

Masks are smooth random blobs (Gaussian-filtered noise, threshold at 0.3 std, filter width n/32
so surfaces grow like an organ's); the prediction is another blob field correlated with the
reference (70% shared noise) and shifted by one voxel. Ours: one
``medimg.metrics.segmentation.case_metrics`` call giving Dice, IoU, HD95, ASSD and NSD (1 mm).
MONAI: ``DiceMetric``, ``HausdorffDistanceMetric(percentile=95)``,
``SurfaceDistanceMetric(symmetric=True)`` and ``SurfaceDiceMetric([1.0])``, one call each, as a
user computes them. Median of ``--repeats`` alternating runs; one warm-up each.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from scipy import ndimage

from medimg.metrics.segmentation import case_metrics

SPACING = (1.0, 1.0, 2.5)
TOLERANCE_MM = 1.0


def blob_pair(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (n, n, n)
    a = rng.standard_normal(shape, dtype=np.float32)
    b = rng.standard_normal(shape, dtype=np.float32)
    sigma = n / 32

    def blobs(noise: np.ndarray) -> np.ndarray:
        f = ndimage.gaussian_filter(noise, sigma)
        return f > 0.3 * f.std()

    gt = blobs(a)
    pred = np.roll(blobs(0.7 * a + 0.3 * b), 1, axis=0)
    return pred.astype(np.uint8), gt.astype(np.uint8)


def ours(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    return case_metrics(pred, gt, labels=[1], spacing=SPACING, nsd_tolerance_mm=TOLERANCE_MM)[1]


def monai(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    from monai.metrics import (
        DiceMetric,
        HausdorffDistanceMetric,
        SurfaceDiceMetric,
        SurfaceDistanceMetric,
    )

    yp = torch.from_numpy(pred[None, None]).float()
    y = torch.from_numpy(gt[None, None]).float()
    return {
        "dice": DiceMetric()(yp, y).item(),
        "hd95": HausdorffDistanceMetric(percentile=95)(yp, y, spacing=SPACING).item(),
        "assd": SurfaceDistanceMetric(symmetric=True)(yp, y, spacing=SPACING).item(),
        "nsd": SurfaceDiceMetric([TOLERANCE_MM])(yp, y, spacing=SPACING).item(),
    }


def timed(fn, *args) -> tuple[float, dict[str, float]]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # MONAI's own deprecations
    print(
        f"spacing {SPACING} mm, NSD tolerance {TOLERANCE_MM} mm, torch threads {torch.get_num_threads()}"
    )
    print(
        "size | dice ours | |Δdice| | max rel Δ (hd95, assd, nsd) | ours s | MONAI s | ours/MONAI"
    )
    for n in args.sizes:
        pred, gt = blob_pair(n)
        ours(pred, gt), monai(pred, gt)  # warm-up (imports, allocator)
        t_ours, t_monai = [], []
        for _ in range(args.repeats):
            t, a = timed(ours, pred, gt)
            t_ours.append(t)
            t, b = timed(monai, pred, gt)
            t_monai.append(t)
        d_dice = abs(a["dice"] - b["dice"])
        rel = {k: abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for k in ("hd95", "assd", "nsd")}
        mo, mm = statistics.median(t_ours), statistics.median(t_monai)
        print(
            f"{n}^3 | {a['dice']:.6f} | {d_dice:.1e} | "
            + ", ".join(f"{k} {v:.1e}" for k, v in rel.items())
            + f" | {mo:.2f} | {mm:.2f} | {mo / mm:.2f}"
        )
        print(f"  ours:  {', '.join(f'{k}={v:.6g}' for k, v in a.items())}")
        print(f"  MONAI: {', '.join(f'{k}={v:.6g}' for k, v in b.items())}")
        assert d_dice <= 1e-6, "Dice differs from MONAI's"
        assert max(rel.values()) <= 1e-5, "distances differ beyond float32 rounding"


if __name__ == "__main__":
    main()
