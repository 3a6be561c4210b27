"""int8 ONNX vs torch fp32 on CPU, for the segmentation U-Net and RED-CNN (shipped models).

Usage: ``nice -n 5 .venv/bin/python bench/bench_export.py [--check-samples 4] [--reps 7]``

For each model: ``export_model`` to ONNX fp32 and to int8 (static QDQ, calibrated on 4
generated inputs; dynamic with ``--dynamic``), which writes the parity report (max |Δ| vs
torch, Dice on generated CT cases / soft-tissue PSNR on generated low-dose slices, size,
latency at 1 and 2 threads). Then, at 1 thread, alternating timings (median of ``--reps``) of
one network call on the batch predict uses (2 windows; 4 slices) and of one whole ``predict``
(segmentation: one generated 96×96×32 case, no mirroring; RED-CNN: four 256×256 slices) per
backend. Targets: int8 ≥ 2x faster and ≥ 3x
smaller than torch fp32, Dice within 0.01, PSNR within 0.2 dB, fp32 max |Δ| ≤ 1e-4.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _median_ms(fns: dict, reps: int) -> dict[str, float]:
    """Alternate the calls (one of each per round) so load changes hit every backend alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()  # warm-up
    for _ in range(reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: round(1000 * statistics.median(v), 1) for k, v in times.items()}


def _predict_calls(name: str, nets: dict) -> dict:
    if name == "segment":
        from medimg.io.image import Image
        from medimg.phantoms.segmentation import ct_organ_case
        from medimg.tasks.segment.plan import load_plan
        from medimg.tasks.segment.predict import DEFAULT_MODEL, Segmenter

        plan = load_plan(DEFAULT_MODEL)
        case = ct_organ_case(2024)
        image = Image(case.image.array, case.image.affine, modality="CT")
        segs = {k: Segmenter.from_networks(plan, [n], tag=k) for k, n in nets.items()}
        return {
            k: (lambda s=s: s.segment(image, mirror=False, force=True)) for k, s in segs.items()
        }
    from medimg.tasks.reconstruct.ct.predict import denoise_slices

    hu = np.random.default_rng(0).normal(0, 40, (4, 256, 256)).astype(np.float32) - 100
    return {k: (lambda n=n: denoise_slices(n, hu)) for k, n in nets.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-samples", type=int, default=4)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--dynamic", action="store_true", help="also int8 dynamic")
    ap.add_argument("--models", nargs="+", default=["segment", "redcnn"])
    args = ap.parse_args()
    from medimg.deploy.export import export_model
    from medimg.deploy.parity import format_report, load_backend, weight_bytes
    from medimg.deploy.targets import resolve_target

    print(f"load average at start: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            files = {}
            for mode in [None, "static"] + (["dynamic"] if args.dynamic else []):
                out = Path(tmp) / f"{name}_{mode or 'fp32'}.onnx"
                t0 = time.perf_counter()
                rep = export_model(name, out, int8=mode, check_samples=args.check_samples)
                print(
                    f"\n{name} {mode or 'fp32'}: export + parity {time.perf_counter() - t0:.0f} s"
                )
                print("\n".join(format_report(rep)))
                files[f"onnx {mode or 'fp32'}"] = out
                results[f"{name} {mode or 'fp32'}"] = rep
            torch.set_num_threads(1)
            target = resolve_target(name)
            nets = {"torch fp32": target.network}
            nets |= {k: load_backend("onnx", p, threads=1) for k, p in files.items()}
            x = torch.from_numpy(target.sample(1, 5000)[0])
            x = x.expand(target.batch, *x.shape[1:]).contiguous()  # the batch predict uses
            with torch.no_grad():
                call = _median_ms({k: (lambda n=n, x=x: n(x)) for k, n in nets.items()}, args.reps)
                whole = _median_ms(_predict_calls(name, nets), max(3, args.reps // 2))
            sizes = {"torch fp32": weight_bytes(target.network)}
            sizes |= {k: p.stat().st_size for k, p in files.items()}
            print(f"\n{name}, 1 thread, input {list(x.shape)}")
            for k in nets:
                print(f"  {k:<12} call {call[k]:>8.1f} ms ({call['torch fp32'] / call[k]:.2f}x)"
                      f"  predict {whole[k]:>8.1f} ms ({whole['torch fp32'] / whole[k]:.2f}x)"
                      f"  size {sizes[k] / 1e6:.2f} MB ({sizes['torch fp32'] / sizes[k]:.2f}x)")  # fmt: skip
            results[f"{name} timing"] = {"call_ms": call, "predict_ms": whole, "bytes": sizes}
    print(f"\nload average at end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
