"""An unrolled network (default: the shipped model) against zero-filling and CS-L1 on held-out phantoms.

Held-out data: ``--cases`` brain/knee phantom slices (seeds 200000+, never seen in training or
validation), 128x128, 8 birdcage coils, 30 dB k-space SNR, equispaced masks at 4x and 8x with
the training's ACS fraction 0.08. Metrics as fastMRI computes them per volume (here one slice
per volume: data range = the slice's maximum); mean with a bootstrap 95 % CI over cases.
CS-L1 (:func:`cs_wavelet`, ADMM, 30 iterations) runs on ESPIRiT maps (what a scanner user has)
and, as a stricter comparator, on the true simulated maps. The training time comes from the
run folder's ``metrics.jsonl``. Then the inference time of one 320x320 15-coil slice
(median of ``--repeats`` after a warm-up; networks that take coil maps include ESPIRiT, as at
prediction). Run::

    .venv/bin/python bench/bench_mri_unrolled.py --run runs/recon_mri/default_ft4x
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from medimg.metrics.image_quality import nmse, psnr, ssim
from medimg.metrics.stats import bootstrap_ci
from medimg.tasks.reconstruct.mri.baselines import cs_wavelet, zero_filled
from medimg.tasks.reconstruct.mri.data import PhantomSlices, SimConfig, make_mask, simulate_slice
from medimg.tasks.reconstruct.mri.infer import Reconstructor
from medimg.tasks.reconstruct.mri.train import load_model


def _scores(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    rng = float(gt.max())
    return {"psnr": psnr(gt, pred, data_range=rng), "ssim": ssim(gt, pred, data_range=rng),
            "nmse": nmse(gt, pred)}  # fmt: skip


def quality(
    net: torch.nn.Module, label: str, accel: float, cases: int
) -> dict[str, dict[str, list[float]]]:
    cfg = SimConfig(kind="mixed", shape=(128, 128), coils=8, accelerations=(accel,),
                    center_fraction=0.08, snr_db=30.0, num_phantoms=cases, seed_base=200_000)  # fmt: skip
    data = PhantomSlices(cfg, cases)
    rec = Reconstructor("net", net)  # as predict runs it: ESPIRiT maps where the net takes maps
    out: dict[str, dict[str, list[float]]] = {}
    for i in range(cases):
        s = data.sample(i, seed=i)
        y, mask, gt = s["kspace"][None], s["mask"], s["target"].numpy()
        with torch.no_grad():
            recons = {
                "zero-filled": zero_filled(y)[0],
                "CS-L1 (ESPIRiT maps)": cs_wavelet(y, mask)[0].abs(),
                "CS-L1 (true maps)": cs_wavelet(y, mask, s["maps"])[0].abs(),
                label: torch.from_numpy(rec(y, mask))[0],
            }
        for name, img in recons.items():
            for k, v in _scores(gt, img.numpy()).items():
                out.setdefault(name, {}).setdefault(k, []).append(v)
    return out


def inference_ms(net: torch.nn.Module, threads: int, repeats: int) -> float:
    from medimg.phantoms.mri import knee_phantom

    torch.set_num_threads(threads)
    shape = (320, 320)
    mask = make_mask("equispaced", shape, 4.0, 0.08, seed=0)
    s = simulate_slice(knee_phantom(shape, "pd", seed=0).image, 15, mask, 40.0, seed=0)
    y = s["kspace"][None]
    rec = Reconstructor("net", net)  # with ESPIRiT maps where the network needs maps
    times = []
    rec(y, mask)  # warm-up
    for _ in range(repeats):
        t0 = time.perf_counter()
        rec(y, mask)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def training_time(run: Path | None) -> str:
    if run is None or not (run / "metrics.jsonl").is_file():
        return "unknown (pass --run)"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = max((r for r in rows if "time_s" in r), key=lambda r: r["step"])
    vals = [r for r in rows if r.get("kind") == "val"]
    best = max(vals, key=lambda r: r["psnr"]) if vals else None
    extra = f", best validation PSNR {best['psnr']:.2f} dB at step {best['step']}" if best else ""
    return f"{last['step']} steps in {last['time_s'] / 60:.1f} min{extra}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model/run folder (default: the shipped model)")
    parser.add_argument("--run", type=Path, help="training run folder, for its training time")
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    net, cfg = load_model(args.model)
    label = f"{cfg.model.name} ({args.model or 'default'})"
    print(f"training: {training_time(args.run)}")
    for accel in (4.0, 8.0):
        res = quality(net, label, accel, args.cases)
        print(f"\n{accel:g}x equispaced, {args.cases} held-out phantoms, 128x128, 8 coils")
        for name, metrics in res.items():
            est = {k: bootstrap_ci(v) for k, v in metrics.items()}
            print(f"  {name:24s} PSNR {est['psnr']} dB  SSIM {est['ssim']}  NMSE {est['nmse']}")
        net_psnr = np.array(res[label]["psnr"])
        for ref in ("zero-filled", "CS-L1 (ESPIRiT maps)", "CS-L1 (true maps)"):
            gain = bootstrap_ci(net_psnr - np.array(res[ref]["psnr"]))
            print(f"  {cfg.model.name} - {ref}: {gain} dB (paired)")
    for threads in (1, 2):
        ms = inference_ms(net, threads, args.repeats)
        print(f"\n{label} inference, one 320x320 15-coil slice, {threads} thread(s): {ms:.0f} ms")
    print(f"{date.today()}, torch {torch.__version__}, load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
