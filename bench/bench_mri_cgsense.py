"""CG-SENSE: medimg (torch, CPU) against sigpy's ``SenseRecon`` on one 320x320 15-coil slice.

Bench-only packages (not medimg dependencies): ``sigpy`` (pulls ``numba``, ``llvmlite``,
``PyWavelets``); install with ``pip install -c constraints.txt sigpy``.

Both solve the same unregularised SENSE normal equations ``A^H A x = A^H y`` with conjugate
gradients from zero, ``A = M F S`` with the same centred orthonormal FFT, maps and mask, so
their iterates agree up to rounding. The equal-NRMSE rule: sigpy runs ``--iters`` iterations
and sets the reference NRMSE ``|x - x_true| / |x_true|``; medimg gets the smallest iteration
count that reaches it (within 0.1 %). Each timing is the median of ``--repeats`` runs, with the
operator set-up inside the timed region for both; repeats are interleaved. Run::

    .venv/bin/python bench/bench_mri_cgsense.py
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from datetime import date

import numpy as np
import torch

from medimg.phantoms.mri import knee_phantom
from medimg.physics.coils import birdcage_maps
from medimg.physics.masks import acceleration_of, equispaced_mask
from medimg.physics.mri import MultiCoilMRI
from medimg.physics.noise import ComplexGaussianNoise
from medimg.tasks.reconstruct.mri.baselines import cg_sense


def _timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _nrmse(est: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(est - ref) / np.linalg.norm(ref))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=20, help="sigpy CG iterations (reference)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--coils", type=int, default=15)
    args = parser.parse_args()

    shape = (args.size, args.size)
    x = knee_phantom(shape, "pd", seed=0).image[None]  # (1, H, W) complex64
    maps = birdcage_maps(args.coils, shape)
    mask = equispaced_mask(shape, 4, center_fraction=0.08, seed=0)
    op = MultiCoilMRI(maps, mask, noise=ComplexGaussianNoise(snr_db=40.0, seed=0))
    kspace = op(x)  # (1, N, H, W)
    truth = x[0].numpy()
    print(f"data: {shape[0]}x{shape[1]}, {args.coils} coils, knee phantom, equispaced mask "
          f"R={acceleration_of(mask):.2f}, 40 dB k-space SNR")  # fmt: skip

    try:
        import sigpy.mri.app as sigpy_app
    except ImportError as err:  # the bench still reports medimg alone
        sigpy_app = None
        print(f"sigpy unavailable ({err}); pip install -c constraints.txt sigpy")

    y_np, maps_np, mask_np = kspace[0].numpy(), maps.numpy(), mask.numpy().astype(np.complex64)
    runners: dict[str, tuple[int, Callable[[], np.ndarray]]] = {}
    target = None
    if sigpy_app is not None:

        def run_sigpy() -> np.ndarray:
            app = sigpy_app.SenseRecon(
                y_np, maps_np, lamda=0, weights=mask_np, max_iter=args.iters, show_pbar=False
            )
            return np.asarray(app.run())

        target = _nrmse(run_sigpy(), truth)
        runners["sigpy SenseRecon (numpy)"] = (1, run_sigpy)

    # medimg: the smallest iteration count reaching sigpy's NRMSE (or --iters without sigpy).
    iters = args.iters
    if target is not None:
        for k in range(1, 4 * args.iters + 1):
            iters = k
            if _nrmse(cg_sense(kspace, mask, maps, max_iter=k)[0].numpy(), truth) <= target * 1.001:
                break

    def run_ours() -> np.ndarray:
        return cg_sense(kspace, mask, maps, max_iter=iters, tol=0)[0].numpy()

    runners["medimg cg_sense, 1 thread"] = (1, run_ours)
    runners["medimg cg_sense, 2 threads"] = (2, run_ours)
    # Interleaved repeats, so that load from other processes hits every contender alike.
    times: dict[str, list[float]] = {name: [] for name in runners}
    errors: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, (threads, fn) in runners.items():
            torch.set_num_threads(threads)
            elapsed, img = _timed(fn)
            times[name].append(elapsed)
            errors[name] = _nrmse(img, truth)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, med in medians.items():
        n = args.iters if name.startswith("sigpy") else iters
        print(f"{name:28s}: {n:3d} iters, NRMSE {errors[name]:.5f}, median {med * 1e3:7.1f} ms")
    if target is not None:
        ref = medians["sigpy SenseRecon (numpy)"]
        for name, med in medians.items():
            if name.startswith("medimg"):
                print(f"sigpy time / medimg time ({name.split(', ')[1]}): {ref / med:.2f}x")
    print(f"{date.today()}, torch {torch.__version__}, {platform.machine()}, "
          f"{args.repeats} interleaved repeats")  # fmt: skip


if __name__ == "__main__":
    main()
