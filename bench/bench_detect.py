"""Nodule detection figures: held-out FROC/CPM of a model on fresh synthetic chest CTs (LUNA16
layout, seeds 1000+, never seen in training) and whole-volume CPU inference time + peak RAM on a
256x256x200 CT.

    .venv/bin/python bench/bench_detect.py [--model runs/detect/default/model] [--scans 8]
        [--threads 1] [--flips] [--data /tmp/keep]

One torch thread by default: on a shared (oversubscribed) CPU, OpenMP threads spin-wait and two
threads run several times slower than one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(path: str, model: str | None, threads: int, flips: bool) -> None:
    """Load a volume, detect, print timing and memory (run in a fresh process)."""
    import torch

    from medimg.io.api import load
    from medimg.tasks.detect.predict import Detector

    torch.set_num_threads(threads)
    det = Detector(model, flips=flips)
    image = load(path, modality="CT")
    before = _rss_mib("VmRSS")
    t0 = time.perf_counter()
    with torch.inference_mode():
        cands = det.detect(image)
    seconds = time.perf_counter() - t0
    print(f"RESULT {seconds:.2f} {_rss_mib('VmHWM'):.0f} {before:.0f} {len(cands)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="model folder (default: the shipped default model)")
    ap.add_argument("--scans", type=int, default=8, help="held-out scans for the FROC")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--data", help="keep the simulated scans here and reuse them on a rerun")
    ap.add_argument("--flips", action="store_true", help="test-time flips (4 passes) everywhere")
    ap.add_argument("--skip-big", action="store_true", help="only the held-out FROC")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.model, args.threads, args.flips)
    import torch

    torch.set_num_threads(args.threads)
    from medimg.datasets.luna16 import _write_mhd, write_luna16
    from medimg.phantoms.detection import nodule_ct_case
    from medimg.tasks.detect.evaluate import evaluate_candidates
    from medimg.tasks.detect.predict import predict_path

    with tempfile.TemporaryDirectory() as tmp:
        t, keep = Path(tmp), Path(args.data or tmp)
        data = keep / f"heldout{args.scans}"
        if not (data / "annotations.csv").is_file():
            write_luna16(data, args.scans, seed=1000, n_subsets=1, progress=False)
        t0 = time.perf_counter()
        predict_path(data, t / "pred", model=args.model, flips=args.flips, figures=False)
        per_scan = (time.perf_counter() - t0) / args.scans
        s = evaluate_candidates(t / "pred" / "candidates.csv", data / "annotations.csv", t / "ev",
                                excluded=data / "annotations_excluded.csv",
                                scans=data / "seriesuids.csv")  # fmt: skip
        print(
            f"held-out: {s['n_scans']} scans, {s['n_nodules']} nodules, "
            f"{s['n_detected']} ever detected; predict {per_scan:.1f} s/scan"
        )
        for r, e in s["froc"].items():
            print(
                f"  sensitivity at {r:>5} FPs/scan: {e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"
            )
        c = s["cpm"]
        print(f"  CPM {c['value']:.4f} [{c['low']:.4f}, {c['high']:.4f}]")
        if "cpm_iou" in s:
            print(f"  CPM, IoU >= 0.1 variant: {s['cpm_iou']['cpm']:.4f}")
        if args.skip_big:
            print(f"load average {os.getloadavg()[0]:.2f}")
            return
        big = keep / "big.mhd"
        if not big.is_file():
            case = nodule_ct_case(2000, shape=(256, 256, 200), spacing=(1.4, 1.4, 1.0))
            _write_mhd(case.image, big)
        cmd = [sys.executable, __file__, "--child", str(big), "--threads",
               str(args.threads)]  # fmt: skip
        cmd += ["--model", args.model] if args.model else []
        cmd += ["--flips"] if args.flips else []
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        sec, peak, base, n = out.split("RESULT")[1].split()
        print(
            f"256x256x200 CT (1.4x1.4x1.0 mm): {sec} s, peak RSS {peak} MiB "
            f"({base} MiB after loading torch, model and volume), {n} candidates, "
            f"{args.threads} thread(s)"
        )
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
