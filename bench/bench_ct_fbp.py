"""CT FBP and forward projector against scikit-image's ``iradon`` / ``radon``, clinical sizes.

Modified Shepp-Logan as exact ellipses (:func:`medimg.physics.ct.ellipse_phantom`): an 8x8
supersampled raster and its exact line integrals, averaged over 8 rays across each detector
element (a detector integrates over its width). Sizes 256^2 and 512^2 x 180 / 720 / 1000
parallel views over [0, 180); scikit-image's geometry (rotation axis at pixel n // 2, n detector
elements at element n // 2), ramp filter, reconstruction circle.

- FBP: both reconstruct the same exact sinogram; RMSE against the raster phantom. Also shown:
  RMSE from point-sampled line integrals (one ray per element centre; aliased at sharp edges).
- Projector: both project the raster; RMSE against the exact line integrals (element-averaged;
  also shown against point-sampled ones).

Times, in this process, back to back, one thread for both (``OMP_NUM_THREADS=1``,
``torch.set_num_threads(1)``): "first" = everything the first call at that geometry costs (for
medimg: building the operator + the call, float32; for scikit-image: its first call), "steady" =
median of alternating repeat calls. The ratio that counts is scikit-image's steady time over our
first call. Peak memory: growth of the peak resident set (``VmHWM``, reset before the call)
over the resident set before the call, in a fresh child process per operator and size, large
blocks memory-mapped (torch allocations included).

Run: ``OMP_NUM_THREADS=1 nice .venv/bin/python bench/bench_ct_fbp.py [--quick]`` (~5 min;
``--quick``: 256^2 and 512^2 x 180 only). Exit status 1 if a target is missed: at 512^2 with 720
and 1000 views, FBP and projector >= 3x faster than scikit-image including the first call, RMSE
not above scikit-image's, peak memory <= 2 GiB. Other processes on the machine inflate both
timings: check the load average printed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch load their thread pools

import ctypes
import json
import platform
import subprocess
import sys
import time
from datetime import date
from functools import partial

import numpy as np
import skimage
import torch
from skimage.transform import iradon, radon

from medimg.physics.ct import CTProjector, ParallelBeamGeometry, ellipse_phantom
from medimg.physics.ct_fbp import FBP

SIZES, VIEWS = (256, 512), (180, 720, 1000)
TARGET_VIEWS, RATIO, PEAK_GIB = (720, 1000), 3.0, 2.0


def _case(n: int, views: int):
    """(theta in degrees, raster, element-averaged and point-sampled line integrals, geometry)."""
    theta = np.linspace(0.0, 180.0, views, endpoint=False)
    angles = torch.from_numpy(np.deg2rad(theta))
    img, exact = ellipse_phantom(n, angles, aperture=8)
    point = ellipse_phantom(n, angles, supersample=1)[1]
    g = ParallelBeamGeometry(image_shape=(n, n), n_views=views, n_det=n, det_center=n // 2,
                             iso_center=(n // 2, n // 2))  # fmt: skip
    return theta, img.numpy(), exact.numpy(), point.numpy(), g


def _run(which: str, case: tuple, sino: str = "exact"):
    """One operator's first call on fresh state: returns (seconds, output)."""
    theta, img, exact, point, g = case
    y = exact if sino == "exact" else point
    t0 = time.perf_counter()
    if which == "iradon":
        out = iradon(y.T, theta, filter_name="ramp", circle=True)
    elif which == "radon":
        out = radon(img, theta, circle=True).T
    elif which == "fbp":
        out = FBP(g, "ramp", circle=True)(torch.from_numpy(y).float()).numpy()
    else:
        out = CTProjector(g).A(torch.from_numpy(img).float()).numpy()
    return time.perf_counter() - t0, out


def _child(which: str, n: int, views: int) -> None:
    """Peak memory of one first call, in a fresh process: print the growth in bytes."""
    torch.set_num_threads(1)
    case = _case(n, views)  # inputs (and lazy imports) before the baseline
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed pages back to the OS: growth is real
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set (VmHWM) to the current one
    status = lambda key: int(  # noqa: E731
        next(ln for ln in open("/proc/self/status") if ln.startswith(key)).split()[1]
    )
    before = status("VmRSS:")
    _run(which, case)
    print(json.dumps({"peak_growth": max(0, status("VmHWM:") - before) * 1024}))


def _peak(which: str, n: int, views: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--child", which, str(n), str(views)],
        capture_output=True, text=True, check=True,
        # fixed mmap threshold: large arrays are mapped on use and unmapped on free
        env={**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "131072"},
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_growth"] / 2**20


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b) ** 2)))


def main(quick: bool = False) -> int:
    torch.set_num_threads(1)
    print(f"date {date.today()}  {platform.machine()}, {os.cpu_count()} CPUs  "
          f"torch {torch.__version__}  scikit-image {skimage.__version__}  numpy {np.__version__}  "
          f"python {sys.version.split()[0]}  threads 1  load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    head = ("| operator | size | views | scikit-image first / steady | medimg first / steady | "
            "ratio (ski steady / our first) | steady ratio | RMSE ski / medimg | "
            "RMSE, point-sampled | peak MB ski / medimg |")  # fmt: skip
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    ok = True
    cases = [(n, v) for n in SIZES for v in VIEWS if not quick or v == 180]
    for n, views in cases:
        case = _case(n, views)
        theta, img, exact, point, g = case
        reps = 3 if n * views < 512 * 700 else 2
        for op, ski_name, ours_name in (("FBP", "iradon", "fbp"), ("projector", "radon", "proj")):
            ski_first, ski_out = _run(ski_name, case)
            ours_first, ours_out = _run(ours_name, case)
            if op == "FBP":
                ours_op = FBP(g, "ramp", circle=True)
                y = torch.from_numpy(exact).float()
                call = partial(ours_op, y)
                ski_call = partial(iradon, exact.T, theta, filter_name="ramp", circle=True)
                truth = img
                r2_ski = _rmse(_run("iradon", case, "point")[1], img)
                r2_ours = _rmse(_run("fbp", case, "point")[1], img)
            else:
                proj = CTProjector(g)
                call = partial(proj.A, torch.from_numpy(img).float())
                ski_call = partial(radon, img, theta, circle=True)
                truth = exact
                r2_ski, r2_ours = _rmse(ski_out, point), _rmse(ours_out, point)
            call()
            t_ski, t_ours = [], []
            for _ in range(reps):  # alternating: load changes hit both alike
                t0 = time.perf_counter()
                ski_call()
                t_ski.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                call()
                t_ours.append(time.perf_counter() - t0)
            ski_s, ours_s = float(np.median(t_ski)), float(np.median(t_ours))
            r_ski, r_ours = _rmse(ski_out, truth), _rmse(ours_out, truth)
            m_ski, m_ours = _peak(ski_name, n, views), _peak(ours_name, n, views)
            ratio = ski_s / ours_first
            if n == 512 and views in TARGET_VIEWS:
                ok = ok and ratio >= RATIO and r_ours <= r_ski and m_ours <= PEAK_GIB * 1024
            print(f"| {op} | {n}² | {views} | {ski_first:.3f} / {ski_s:.3f} s | "
                  f"{ours_first:.3f} / {ours_s:.3f} s | **{ratio:.1f}×** | {ski_s / ours_s:.1f}× | "
                  f"{r_ski:.4f} / {r_ours:.4f} ({r_ours / r_ski - 1:+.0%}) | "
                  f"{r2_ski:.4f} / {r2_ours:.4f} ({r2_ours / r2_ski - 1:+.0%}) | "
                  f"{m_ski:.0f} / {m_ours:.0f} |", flush=True)  # fmt: skip
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        sys.exit(0)
    sys.exit(main(quick="--quick" in sys.argv))
