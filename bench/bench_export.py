"""int8 ONNX vs torch fp32 on CPU, for the segmentation U-Net and RED-CNN (shipped models);
with ``--bundle MM ...``, the MONAI bundle of the segmentation model against predict instead.

Usage: ``nice -n 5 .venv/bin/python bench/bench_export.py [--check-samples 4] [--reps 7]``
or ``... bench_export.py --bundle 4.0 3.2 3.0 --bundle-cases 2``

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


def bundle_agreement(spacings: list[float], cases: int) -> None:
    """The shipped segmentation model as a MONAI bundle, run by ``monai.bundle.run``, against
    ``Segmenter`` (what ``segment predict`` runs) on generated CT cases stored LPS at each
    in-plane spacing (slices 4/3 of it): voxel agreement and Dice per organ."""
    from monai.bundle import run

    from medimg.deploy.bundle import export_bundle
    from medimg.io.api import load, save
    from medimg.io.image import Image
    from medimg.metrics.segmentation import dice
    from medimg.phantoms.segmentation import ct_organ_case
    from medimg.tasks.segment.predict import Segmenter

    seg = Segmenter(None, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        bundle = export_bundle("segment", Path(tmp) / "bundle")
        print(f"bundle export {time.perf_counter() - t0:.1f} s")
        for sp in spacings:
            for seed in range(cases):
                n = [round(96 * 4 / sp), round(96 * 4 / sp), round(32 * 5 / (sp * 4 / 3))]
                case = ct_organ_case(2000 + seed, shape=tuple(n), spacing=(sp, sp, sp * 4 / 3))
                aff = case.image.affine.copy()
                aff[:2] *= -1
                img = Image(np.ascontiguousarray(case.image.array[:, ::-1, ::-1]), aff,
                            modality="CT")  # fmt: skip
                data = Path(tmp) / f"data_{sp}_{seed}"
                save(img, data / "ct.nii.gz")
                t0 = time.perf_counter()
                run(run_id="run", config_file=str(bundle / "configs/inference.json"),
                    meta_file=str(bundle / "configs/metadata.json"), bundle_root=str(bundle),
                    dataset_dir=str(data), output_dir=str(data / "out"))  # fmt: skip
                t_bundle = time.perf_counter() - t0
                got = load(data / "out/ct_seg.nii.gz").array[0]
                t0 = time.perf_counter()
                want = seg.segment(load(data / "ct.nii.gz"), force=True).array[0]
                t_medimg = time.perf_counter() - t0
                d = [round(float(dice(got == c, want == c)), 4) for c in (1, 2, 3)]
                print(f"spacing {sp} mm, case {seed}, shape {n}: voxels equal "
                      f"{(got == want).mean():.5f}, Dice liver/spleen/kidney {d}; "
                      f"bundle {t_bundle:.1f} s, medimg {t_medimg:.1f} s")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-samples", type=int, default=4)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--dynamic", action="store_true", help="also int8 dynamic")
    ap.add_argument("--models", nargs="+", default=["segment", "redcnn"])
    ap.add_argument(
        "--bundle",
        type=float,
        nargs="+",
        metavar="MM",
        help="only the MONAI bundle's agreement with predict at these spacings",
    )
    ap.add_argument("--bundle-cases", type=int, default=2)
    args = ap.parse_args()
    if args.bundle:
        bundle_agreement(args.bundle, args.bundle_cases)
        return
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
