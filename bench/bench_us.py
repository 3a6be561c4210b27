"""Ultrasound image formation: delay-and-sum with 1, 3, 11 and 75 plane waves, PICMUS metrics.

The ``mixed`` phantom (30 x 40 mm from 5 mm depth: speckle at 30 scatterers/mm^2, two 3 mm
anechoic cysts, a +6 dB inclusion, three point targets) is simulated with 75 plane waves over
+-16 degrees (PICMUS's sequence; 128 elements, 0.3 mm pitch, 5.2 MHz, 67 % bandwidth, fs 20.8
MHz, 0.5 dB/cm/MHz, 40 dB SNR) and beamformed on a 0.1 x 0.05 mm grid (F# 1.75, Hann) with
evenly chosen subsets of the angles. Simulation-only figures: they compare beamformers on this
simulator, not on a scanner. Times: wall and CPU seconds of this process, one thread
(``OMP_NUM_THREADS=1``; CPU seconds are what counts on a shared machine); the
beamforming time includes the baseband (IQ) conversion of the used transmits; the learned
beamformer's includes its 3 single-angle DAS images and the network (loaded beforehand).

Run: ``OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python bench/bench_us.py [--seeds 2]``
(~3 min per seed on one core). ``--model DIR`` adds the learned beamformer (3 plane waves in).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

from medimg.physics.ultrasound_das import to_baseband
from medimg.tasks.reconstruct.us.data import make_phantom, plane_waves, simulate
from medimg.tasks.reconstruct.us.evaluate import score_envelope
from medimg.tasks.reconstruct.us.predict import default_grid, even_subset, reconstruct

COLS = ("lateral_fwhm_mm", "axial_fwhm_mm", "contrast_db", "cnr_db", "gcnr", "speckle_snr",
        "seconds", "cpu_seconds")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=1, help="phantoms (seeds 100, 101, ...)")
    ap.add_argument("--model", help="learned-beamformer model folder to add")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}; OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS')}")  # fmt: skip
    results: dict[str, list[dict]] = {}
    for seed in range(100, 100 + args.seeds):
        ph = make_phantom("mixed", seed=seed)
        t0 = time.perf_counter()
        data = simulate(ph, plane_waves(75), seed=seed)
        sim_s = time.perf_counter() - t0
        print(f"seed {seed}: simulated {ph.x.size} scatterers x 75 plane waves x 128 elements "
              f"in {sim_s:.1f} s (rf {data.rf.shape})")  # fmt: skip
        grid = default_grid(data)
        truth = data.meta["truth"]
        for n in (1, 3, 11, 75):
            idx = even_subset(75, n)
            t0, c0 = time.perf_counter(), time.process_time()
            iq = to_baseband(data.subset(idx))
            rec = reconstruct(data.subset(idx), None, grid=grid, iq=iq)
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            row = score_envelope(rec.envelope, grid, truth) | {"seconds": secs, "cpu_seconds": cpu}
            results.setdefault(f"DAS {n} PW", []).append(row)
        if args.model:
            from medimg.tasks.reconstruct.us.learned import learned_bmode, load_learned

            net = load_learned(args.model)  # once, as a server would: not in the time
            t0, c0 = time.perf_counter(), time.process_time()
            env = learned_bmode(data, grid, net)
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            row = score_envelope(env, grid, truth) | {"seconds": secs, "cpu_seconds": cpu}
            results.setdefault("learned (3 PW in)", []).append(row)
    print("\n| method | " + " | ".join(COLS) + " |")
    print("|---|" + "---|" * len(COLS))
    for name, rows in results.items():
        vals = [np.nanmean([r[c] for r in rows]) for c in COLS]
        cells = [("n/a" if not math.isfinite(v) else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}")
                 for v in vals]  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
