"""Registration bench: learned model (alone and with instance optimisation) vs SimpleITK demons.

Held-out synthetic T1-like brain pairs, by default at 48^3, 4 mm (the default model's training
grid); ``--size 96 --spacing 2`` gives the issue's ~96^3 (the network then works on the pair
resampled to its 4 mm, demons on the full grid; Dice is scored on the 96^3 labels). Prints Dice
of warped labels, TRE, % folded voxels, and the CPU-time ratio demons / learned per pair, from
one run.

    python bench/bench_register.py [--pairs 8] [--size 96 --spacing 2] [--io-steps 60]
                                   [--model DIR] [--methods ...] [--data DIR]

``--model`` scores another model folder (e.g. a fully supervised run, whose mean end-point error
against the known field is printed in mm and in voxels of the 4 mm grid).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--io-steps", type=int, default=60)
    ap.add_argument("--size", type=int, default=48, help="voxels per axis of the pairs")
    ap.add_argument("--spacing", type=float, default=4.0, help="their voxel size (mm)")
    ap.add_argument("--seed", type=int, default=5000, help="first subject seed of the pairs")
    ap.add_argument("--data", help="dataset folder (default: written to a temp folder)")
    ap.add_argument("--model", help="model folder (default: the shipped default model)")
    ap.add_argument("--methods", default="identity,model,model+io,sitk-demons")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from medimg.phantoms.registration import write_pair_dataset
    from medimg.tasks.register.evaluate import evaluate_dataset

    data = Path(args.data or tempfile.mkdtemp(prefix="bench_register_"))
    if not (data / "dataset.json").is_file():  # held out: the preset trains on seeds 0-199
        write_pair_dataset(data, "mr", n_train=0, n_test=args.pairs, seed=args.seed,
                           shape=(args.size,) * 3, spacing=args.spacing)  # fmt: skip
    t0 = time.perf_counter()
    methods = tuple(args.methods.split(","))
    out = tempfile.mkdtemp(prefix="bench_register_ev_")
    res = evaluate_dataset(data, out, methods=methods, model=args.model,
                           instance_steps=args.io_steps, progress=False)  # fmt: skip
    s = res["summary"]
    vox = args.spacing
    for method, est in s.items():
        epe, fg = est["epe_mm"], est["epe_fg_mm"]
        print(f"{method:12s} dice {est['dice']}  tre_mm {est['tre_mm']}  folding_pct "
              f"{est['folding_pct']}  epe_mm {epe} (= {epe.value / vox:.3f} voxels of {vox:g} mm; "
              f"inside the anatomy {fg.value:.2f} mm = {fg.value / vox:.3f} voxels)  "
              f"cpu_s {est['cpu_seconds']}  wall_s {est['seconds']}")  # fmt: skip
    for learned in [m for m in ("model", "model+io") if m in s and "sitk-demons" in s]:
        ratio = s["sitk-demons"]["cpu_seconds"].value / s[learned]["cpu_seconds"].value
        print(
            f"CPU time ratio sitk-demons / {learned}: {ratio:.2f}x; "
            f"Dice {s[learned]['dice'].value:.3f} vs {s['sitk-demons']['dice'].value:.3f}"
        )
    print(
        f"total {time.perf_counter() - t0:.0f} s; loadavg {Path('/proc/loadavg').read_text().split()[:3]}"
    )


if __name__ == "__main__":
    main()
