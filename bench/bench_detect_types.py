"""Nodule detection per nodule type and size on varied thoraxes (held-out seeds 5000+).

Simulates ``--scans`` varied thorax CTs per seed block (``--seeds``; ``medimg detect simulate
--varied``: body 0.5-1.1x, whole lungs or a slab, 0.5-1 mm in-plane, 0.6-3 mm slices, 10-60 HU
noise, any orientation; solid, part-solid, ground-glass, calcified, juxtapleural, perifissural
and vessel-attached nodules, 3-30 mm), runs each model of ``--model`` on them back to back (one
torch thread) and prints, per model, the FROC/CPM and the sensitivity at 1 FP/scan per type and
size over all blocks with scan-bootstrap 95 % CIs, the CPM of each seed block and the time per
scan. The default model was trained on seeds 0-79; seeds 5000+ are never simulated for training.

    nice -n 5 .venv/bin/python bench/bench_detect_types.py [--scans 8] [--seeds 5000 6000]
        [--model DIR [--model OTHER]] [--data /tmp/keep] [--flips]
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


def _union(blocks: list[Path], out: Path) -> Path:
    """One LUNA16 annotation set (annotations, excluded, scan list) over the seed blocks."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("annotations.csv", "annotations_excluded.csv", "seriesuids.csv"):
        lines: list[str] = []
        for b in blocks:
            rows = (b / name).read_text().splitlines()
            header = [] if name == "seriesuids.csv" else rows[:1]
            lines = lines or header
            lines += rows[len(header) :]
        (out / name).write_text("\n".join(lines) + "\n")
    return out


def _merge_candidates(preds: list[Path], out: Path) -> Path:
    rows: list[str] = []
    for p in preds:
        lines = (p / "candidates.csv").read_text().splitlines()
        rows = rows or lines[:1]
        rows += lines[1:]
    out.write_text("\n".join(rows) + "\n")
    return out


def _evaluate(cands: Path, truth: Path, out: Path, n_resamples: int) -> dict:
    from medimg.tasks.detect.evaluate import evaluate_candidates

    return evaluate_candidates(cands, truth / "annotations.csv", out,
                               excluded=truth / "annotations_excluded.csv",
                               scans=truth / "seriesuids.csv", n_resamples=n_resamples,
                               overwrite=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scans", type=int, default=8, help="scans per seed block")
    ap.add_argument("--seeds", type=int, nargs="+", default=[5000],
                    help="first seed of each block (training never saw 5000+)")  # fmt: skip
    ap.add_argument("--model", action="append",
                    help="model folder, repeatable (default: the shipped default model)")  # fmt: skip
    ap.add_argument("--data", help="keep the simulated scans here and reuse them on a rerun")
    ap.add_argument("--flips", action="store_true", help="test-time flips")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--big", action="store_true",
                    help="only time one 512x512x300 CT at 0.7 mm, with and without flips")  # fmt: skip
    args = ap.parse_args()
    models = args.model or [None]
    if args.big:
        for m in models:
            print(f"model {m or 'default'}")
            time_big(m)
        return
    import torch

    from medimg.tasks.detect.predict import predict_path
    from medimg.tasks.detect.simulate import write_thorax_luna16

    torch.set_num_threads(1)
    work = Path(args.data or tempfile.mkdtemp(prefix="bench_detect_types_"))
    blocks = []
    t0 = time.perf_counter()
    for seed in args.seeds:
        data = work / f"thorax_{seed}_{args.scans}"
        if not (data / "annotations.csv").is_file():
            write_thorax_luna16(data, args.scans, seed=seed, n_subsets=1, progress=True)
        blocks.append(data)
    n = args.scans * len(args.seeds)
    print(f"simulate {(time.perf_counter() - t0) / n:.1f} s/scan (0 if reused)")
    truth = _union(blocks, work / "union")
    for i, model in enumerate(models):
        tag = f"m{i}{'_flips' if args.flips else ''}"
        t0, c0 = time.perf_counter(), time.process_time()
        preds = []
        for b in blocks:
            preds.append(work / f"pred_{tag}_{b.name}")
            predict_path(b, preds[-1], model=model, flips=args.flips, figures=False,
                         overwrite=True)  # fmt: skip
        wall, cpu = (time.perf_counter() - t0) / n, (time.process_time() - c0) / n
        s = _evaluate(_merge_candidates(preds, work / f"cands_{tag}.csv"), truth,
                      work / f"evaluation_{tag}", args.bootstrap)  # fmt: skip
        per_seed = [_evaluate(p / "candidates.csv", b, work / f"evaluation_{tag}_{b.name}", 200)
                    for p, b in zip(preds, blocks)]  # fmt: skip
        c = s["cpm"]
        print(f"== model {model or 'default (shipped)'}")
        print(f"{s['n_scans']} scans, {s['n_nodules']} nodules; predict {wall:.1f} s wall, "
              f"{cpu:.1f} s CPU per scan (1 thread{', flips' if args.flips else ''})")  # fmt: skip
        print(f"CPM {c['value']:.3f} [{c['low']:.3f}, {c['high']:.3f}]; sensitivity at "
              + ", ".join(f"{r}: {e['value']:.3f}" for r, e in s["froc"].items()))  # fmt: skip
        print("CPM per seed block: " + ", ".join(
            f"{seed}: {p['cpm']['value']:.3f}" for seed, p in zip(args.seeds, per_seed)))  # fmt: skip
        op = s["operating_point"]
        print(f"operating point {op['fp_per_scan']:.2f} FPs/scan, threshold {op['threshold']:.3f}")
        for key in ("by_type", "by_size"):
            for name, g in s.get(key, {}).items():
                e = g["sensitivity"]
                print(f"  {name:>16} ({g['n']:>3}): {e['value']:.2f} [{e['low']:.2f}, "
                      f"{e['high']:.2f}]")  # fmt: skip
    print(f"outputs in {work}")


if __name__ == "__main__":
    main()
