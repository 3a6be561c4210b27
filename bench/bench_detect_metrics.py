"""Detection metrics against references: FROC/CPM vs MONAI's FROC functions and vs an
independent loop-by-loop transliteration of the LUNA16 evaluation; box IoU and NMS vs MONAI's
``box_utils``. Prints maximum differences and time ratios (reference / medimg).

    .venv/bin/python bench/bench_detect_metrics.py
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from monai.data.box_utils import box_iou as monai_iou
from monai.data.box_utils import non_max_suppression
from monai.metrics import compute_froc_curve_data, compute_froc_score

from medimg.metrics.detection import FROC_RATES, box_iou, froc, match_luna16, nms


def scans(n_scans: int, seed: int = 0):
    """Random scans: 0-5 nodules (3-30 mm), candidates near them and elsewhere, some excluded."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_scans):
        nod = rng.uniform(0, 300, (rng.integers(0, 6), 3))
        dia = np.exp(rng.uniform(np.log(3), np.log(30), len(nod)))
        exc = rng.uniform(0, 300, (rng.integers(0, 3), 3))
        edia = np.where(rng.random(len(exc)) < 0.3, -1.0, rng.uniform(1, 3, len(exc)))
        near = nod + rng.normal(0, 1, nod.shape) * dia[:, None] / 3
        cand = np.r_[near, exc + rng.normal(0, 1, exc.shape), rng.uniform(0, 300, (30, 3))]
        score = np.r_[rng.uniform(0.3, 1, len(nod)), rng.uniform(0, 0.8, len(cand) - len(nod))]
        score = np.round(score, 3)  # rounded: ties happen, as in real lists
        out.append((cand, score, nod, dia, exc, edia))
    return out


def luna16_reference(data) -> tuple[float, list[float]]:
    """The LUNA16 script's logic, loop by loop (no shared code with medimg.metrics.detection)."""
    tp_probs, fp_probs, n_nodules = [], [], 0
    for cand, score, nod, dia, exc, edia in data:
        best = [None] * len(nod)
        for c, s in zip(cand, score):
            hit_included = False
            for j, (n, d) in enumerate(zip(nod, dia)):
                if sum((c - n) ** 2) < (d / 2.0) ** 2:
                    hit_included = True
                    best[j] = s if best[j] is None else max(best[j], s)
            hit_excluded = any(sum((c - e) ** 2) < ((10.0 if d < 0 else d) / 2.0) ** 2
                               for e, d in zip(exc, edia))  # fmt: skip
            if not hit_included and not hit_excluded:
                fp_probs.append(s)
        n_nodules += len(nod)
        tp_probs += [b for b in best if b is not None]
    thresholds = sorted(set(tp_probs) | set(fp_probs), reverse=True)
    fps, sens = [0.0], [0.0]
    for t in thresholds:
        fps.append(sum(p >= t for p in fp_probs) / len(data))
        sens.append(sum(p >= t for p in tp_probs) / n_nodules)
    at = [float(np.interp(r, fps, sens)) for r in FROC_RATES]
    return float(np.mean(at)), at


def main() -> None:
    torch.set_num_threads(1)
    data = scans(200)
    t0 = time.perf_counter()
    ours = froc([match_luna16(c, s, n, d, e, ed) for c, s, n, d, e, ed in data])
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref_cpm, ref_at = luna16_reference(data)
    t_ref = time.perf_counter() - t0
    print(f"scans {len(data)}, nodules {ours.n_nodules}, CPM {ours.cpm:.6f}")
    print(f"FROC vs LUNA16 transliteration: max |diff| {max(abs(ours.cpm - ref_cpm), *(abs(a - b) for a, b in zip(ours.sensitivities, ref_at))):.2e}; "
          f"time {t_ours * 1e3:.1f} ms vs {t_ref * 1e3:.0f} ms (ratio {t_ref / t_ours:.0f}x)")  # fmt: skip
    ms = [match_luna16(c, s, n, d, e, ed) for c, s, n, d, e, ed in data]
    fp = np.concatenate([m.fp_scores for m in ms])
    nod = np.concatenate([m.nodule_scores for m in ms])
    t0 = time.perf_counter()
    # MONAI (CAMELYON code) skips the lowest threshold; a sentinel FP below all scores restores it
    f, s = compute_froc_curve_data(np.r_[fp, -1.0], nod[np.isfinite(nod)], nod.size, len(ms))
    monai_cpm = compute_froc_score(f, s, FROC_RATES)
    t_monai = time.perf_counter() - t0
    t0 = time.perf_counter()
    froc(ms)
    t_curve = time.perf_counter() - t0
    print(f"CPM vs MONAI compute_froc_score: |diff| {abs(monai_cpm - ours.cpm):.2e}; "
          f"curve+CPM time {t_curve * 1e3:.2f} ms vs {t_monai * 1e3:.1f} ms "
          f"(ratio {t_monai / t_curve:.1f}x)")  # fmt: skip

    rng = np.random.default_rng(1)
    lo = rng.uniform(0, 200, (2000, 3))
    boxes = np.c_[lo, lo + rng.uniform(3, 30, (2000, 3))]
    scores = rng.random(2000)
    bt, st = torch.from_numpy(boxes), torch.from_numpy(scores)
    for name, fn_ours, fn_ref in (
        ("box IoU 2000x2000", lambda: box_iou(boxes, boxes), lambda: monai_iou(bt, bt)),
        ("NMS 2000 boxes @0.1", lambda: nms(boxes, scores, 0.1),
         lambda: non_max_suppression(bt, st, 0.1)),
    ):  # fmt: skip
        a, b = fn_ours(), fn_ref()
        t_a = min(_time(fn_ours) for _ in range(3))
        t_b = min(_time(fn_ref) for _ in range(3))
        if name.startswith("NMS"):
            same = np.array_equal(a, b.numpy())
            print(
                f"{name}: kept {len(a)}, identical indices to MONAI: {same}; "
                f"time {t_a * 1e3:.1f} ms vs MONAI {t_b * 1e3:.1f} ms (ratio {t_b / t_a:.2f}x)"
            )
        else:
            diff = np.abs(a - b.numpy()).max()
            diff32 = np.abs(a.astype(np.float32) - b.numpy().astype(np.float32)).max()
            print(f"{name}: max |diff| {diff:.1e} (MONAI computes in float32; after rounding ours "
                  f"to float32 {diff32:.1e}); time {t_a * 1e3:.1f} ms vs MONAI {t_b * 1e3:.1f} ms "
                  f"(ratio {t_b / t_a:.2f}x)")  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.2f}")


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
