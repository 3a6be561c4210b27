"""Despeckling network: speckle SNR and edge width before/after, against classical filters.

Three sets (see :mod:`medimg.tasks.reconstruct.us.despeckle_eval` for the metrics):

- held-out generated frames (seeds never used in training): step edges of known place, lateral
  and axial, with random PSF width / density / dynamic range / noise;
- frames of the channel-data simulator (mixed phantom, 11 plane waves, DAS, 60 dB, 0.1 mm
  pixels): speckle SNR in 4 x 4 mm tiles of background, edge width across the anechoic cysts'
  boundaries (radial profiles);
- real scanners' B-modes (pydicom-data GE LOGIQ ``US1_UNCR``, Philips CX50 ``OBXXXX1A``; deid-data
  EPIQ kidney, S2000 chest wall, Affiniti cine frame 0): homogeneous windows and strongest edges
  picked on the input (reproducible), PNGs of each image before/after into ``--out``.

Baselines: median filter and non-local means at the speckle SNR gain nearest the network's.
``--check-simulator``: the pair generator's speckle statistics against the simulator's.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python bench/bench_us_despeckle.py \\
        [--model src/medimg/tasks/reconstruct/us/despeckle] [--check-simulator]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from medimg.tasks.reconstruct.us.despeckle import despeckle_array, load_despeckle
from medimg.tasks.reconstruct.us.despeckle_data import PairParams, random_params, speckle_pair
from medimg.tasks.reconstruct.us.despeckle_eval import (
    baseline_at_gain,
    edge_width,
    homogeneous_windows,
    mean_speckle_snr,
    profile_width,
    strong_edges,
)

REAL = [  # (label, source, path inside it, frames to read)
    ("GE LOGIQ 700 (US1_UNCR)", "pydicom-data", "US1_UNCR.dcm"),
    ("Philips CX50 (OBXXXX1A)", "pydicom-data", "OBXXXX1A.dcm"),
    ("Philips EPIQ kidney", "deid-data", "ultrasounds/GREYSCALE_IMAGE.dcm"),
    ("Siemens S2000 chest wall", "deid-data", "ultrasounds/RGB_IMAGE.dcm"),
    ("Philips Affiniti cine, frame 0", "deid-data", "ultrasounds/ultrasound-multiframe.dcm"),
    ("Philips EPIQ 7C echo", "pydicom-data", "JPGLosslessP14SV1_1s_1f_8b.dcm"),
    ("SonoSite Turbo cine, frame 0", "pydicom-data", "color3d_jpeg_baseline.dcm"),
    ("Aloka SSD-4000 (dual view)", "pydicom-data", "gdcm-US-ALOKA-16.dcm"),
]


def _fmt(a: float, b: float) -> str:
    return f"{a:.2f} -> {b:.2f} ({b / a:.2f}x)"


def generated(net, n: int) -> dict:
    """Step-edge scenes: ``n`` lateral and ``n`` axial, random knobs, 192 x 192."""
    size, rows = 192, []
    for k in range(n):
        for axis in (0, 1):
            rng = np.random.default_rng(20_000_000 + 2 * k + axis)
            p = dataclasses.replace(random_params(rng), tgc_db=0.0)  # a clean step to measure
            db = np.zeros((size, size))
            half = [slice(None)] * 2
            half[axis] = slice(size // 2, None)
            db[tuple(half)] = rng.choice([-10.0, -6.0, 6.0, 10.0])
            noisy, clean = speckle_pair(rng, (size, size), p, db_map=db)
            out = despeckle_array(noisy, net)
            q = size // 4
            wins = [(slice(8, 48), slice(8, 48)), (slice(-48, -8), slice(-48, -8))]
            prof = [im.mean(1 - axis)[q : size - q] for im in (noisy, out, clean)]
            w_in, w_out, w_true = (profile_width(pr) for pr in prof)
            rows.append((mean_speckle_snr(noisy, wins), mean_speckle_snr(out, wins), w_in, w_out,
                         w_true, p.fwhm_lateral if axis == 0 else p.fwhm_axial))  # fmt: skip
    a = np.array(rows)
    return {"snr_in": a[:, 0].mean(), "snr_out": a[:, 1].mean(),
            "snr_gain_median": float(np.median(a[:, 1] / a[:, 0])),
            "edge_in": a[:, 2].mean(), "edge_out": a[:, 3].mean(), "edge_true": a[:, 4].mean(),
            "edge_ratio_median": float(np.median(a[:, 3] / a[:, 2])),
            "edge_ratio_max": float(np.max(a[:, 3] / a[:, 2])), "frames": len(rows)}  # fmt: skip


def _simulated_frame(seed: int, angles: int = 11):
    from medimg.physics.ultrasound_das import Grid, log_compress
    from medimg.tasks.reconstruct.us.data import make_phantom, plane_waves, simulate
    from medimg.tasks.reconstruct.us.predict import reconstruct

    ph = make_phantom("mixed", seed=seed)
    data = simulate(ph, plane_waves(angles), seed=seed)
    x0, x1, z0, z1 = ph.extent
    grid = Grid.from_extent((x0, x1), (z0, z1), 1e-4, 1e-4)
    env = reconstruct(data, grid=grid).envelope
    return ph, grid, env, (log_compress(env, 60.0) + 60) / 60


def simulator(net, seeds: list[int]) -> dict:
    rows = []
    for seed in seeds:
        ph, grid, _, img = _simulated_frame(seed)
        out = despeckle_array(img, net)
        xx, zz = np.meshgrid(grid.x, grid.z, indexing="ij")
        bg = np.ones(img.shape, bool)
        for cx, cz, r, _db in ph.cysts:
            bg &= np.hypot(xx - cx, zz - cz) > r + 1.5e-3
        for px, pz in ph.points:
            bg &= np.hypot(xx - px, zz - pz) > 2e-3
        tiles = [(slice(i, i + 40), slice(k, k + 40)) for i in range(0, img.shape[0] - 40, 40)
                 for k in range(0, img.shape[1] - 40, 40)]  # fmt: skip
        tiles = [t for t in tiles if bg[t].all()]
        widths = []
        for cx, cz, r, db in ph.cysts:
            if not math.isinf(db):
                continue
            ci, ck = (cx - grid.x[0]) / 1e-4, (cz - grid.z[0]) / 1e-4
            for th in np.linspace(0, 2 * math.pi, 12, endpoint=False):
                e = (ci + r / 1e-4 * math.cos(th), ck + r / 1e-4 * math.sin(th), th)
                widths.append((edge_width(img, e, 10, 4), edge_width(out, e, 10, 4)))
        w = np.array(widths)
        ok = np.isfinite(w).all(1)
        rows.append((mean_speckle_snr(img, tiles), mean_speckle_snr(out, tiles),
                     float(np.median(w[ok, 0])), float(np.median(w[ok, 1]))))  # fmt: skip
    a = np.array(rows)
    return {"snr_in": a[:, 0].mean(), "snr_out": a[:, 1].mean(), "edge_in": a[:, 2].mean(),
            "edge_out": a[:, 3].mean(), "frames": len(rows)}  # fmt: skip


def real(net, out_dir: Path) -> list[dict]:
    from medimg.datasets.real_sources import real_file
    from medimg.tasks.reconstruct.us.despeckle_io import read_bmode

    rows = []
    for label, source, rel in REAL:
        bm = read_bmode(real_file(source, rel), frames=1)
        img, mask = bm.frames[0], bm.masks[0]
        t0 = time.process_time()
        out = despeckle_array(img, net, mask)
        cpu = time.process_time() - t0
        wins = homogeneous_windows(img, mask, size=32, count=8)
        edges = strong_edges(img, mask, count=8)
        if not wins:  # an air scan: no tissue to measure speckle in
            s_in = s_out = gain = float("nan")
        else:
            s_in, s_out = mean_speckle_snr(img, wins), mean_speckle_snr(out, wins)
            gain = s_out / s_in

        def ratio(im, edges=edges, img=img):
            r = [edge_width(im, e) / edge_width(img, e) for e in edges]
            r = [v for v in r if np.isfinite(v)]
            return float(np.median(r)) if r else float("nan")

        row = {"image": label, "shape": "x".join(map(str, img.shape)), "windows": len(wins),
               "edges": len(edges), "snr_in": s_in, "snr_out": s_out, "gain": gain,
               "edge_ratio": ratio(out), "cpu_s": cpu}  # fmt: skip
        outs = {"network": out}
        for method in ("median", "nlm") if wins else ():
            filt, setting, g = baseline_at_gain(img, mask, wins, gain, method)
            row[method] = {"setting": setting, "gain": g, "edge_ratio": ratio(filt)}
            outs[setting] = filt
        rows.append(row)
        _figure(img, mask, outs, wins, edges, out_dir / f"{Path(rel).stem}.png", label)
        print(json.dumps(row), flush=True)
    return rows


def _figure(img, mask, outs, wins, edges, path: Path, title: str) -> None:
    from matplotlib.patches import Rectangle

    from medimg.report.figures import new_figure, save_figure

    xs, zs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    crop = (slice(xs[0], xs[-1] + 1), slice(zs[0], zs[-1] + 1))
    fig, axes = new_figure(1 + len(outs), panel_inches=5.0)
    for ax, (name, im) in zip(axes[0], [("input", img), *outs.items()], strict=True):
        ax.imshow(im[crop].T, cmap="gray", vmin=0, vmax=1)
        ax.set_title(name)
        ax.set_axis_off()
    for w in wins:  # homogeneous windows (green) and edge points (red) on the input
        axes[0, 0].add_patch(Rectangle((w[0].start - xs[0], w[1].start - zs[0]),
                                       w[0].stop - w[0].start, w[1].stop - w[1].start,
                                       fill=False, color="lime", lw=0.8))  # fmt: skip
    for x, z, _ in edges:
        axes[0, 0].plot(x - xs[0], z - zs[0], "r+", ms=8)
    save_figure(fig, path, title=title)


def check_simulator() -> dict:
    """Speckle SNR and speckle-spot size (autocorrelation FWHM, pixels) of the simulator's
    background against the generator's with the simulator's point FWHMs."""
    from medimg.metrics.ultrasound import point_fwhm, speckle_snr

    ph, grid, env, _ = _simulated_frame(100)
    xx, zz = np.meshgrid(grid.x, grid.z, indexing="ij")
    bg = np.ones(env.shape, bool)
    for cx, cz, r, _ in ph.cysts:
        bg &= np.hypot(xx - cx, zz - cz) > r + 1.5e-3
    for px, pz in ph.points:
        bg &= np.hypot(xx - px, zz - pz) > 2e-3
    fw = [point_fwhm(env, grid.x, grid.z, p) for p in ph.points]
    lat, ax = (float(np.median([f[k] for f in fw])) / 1e-4 for k in (0, 1))  # pixels of 0.1 mm
    sl = (slice(20, 120), slice(120, 220))  # background between the top cyst and the points

    def acf_fwhm(e: np.ndarray) -> tuple[float, float]:
        e = e - e.mean()
        f = np.abs(np.fft.ifft2(np.abs(np.fft.fft2(e)) ** 2))
        f = np.fft.fftshift(f / f.max())
        c = np.array(f.shape) // 2
        return tuple(float(2 * np.argmax(f[c[0]:, c[1]] < 0.5)) if k == 0 else
                     float(2 * np.argmax(f[c[0], c[1]:] < 0.5)) for k in (0, 1))  # fmt: skip

    sim_snr = speckle_snr(env, bg)
    p = PairParams(fwhm_lateral=lat, fwhm_axial=ax, dynamic_range=80, snr_db=40,
                   quantise=False)  # fmt: skip
    gen_env = [10 ** ((speckle_pair(np.random.default_rng(s), (256, 256), p,
                                    db_map=np.zeros((256, 256)))[0] - 1) * 80 / 20)
               for s in range(4)]  # fmt: skip
    return {"psf_fwhm_px (lat, ax)": (round(lat, 2), round(ax, 2)),
            "simulator": {"speckle_snr": sim_snr, "acf_fwhm_px": acf_fwhm(env[sl])},
            "generator": {"speckle_snr": float(np.mean([e.mean() / e.std() for e in gen_env])),
                          "acf_fwhm_px": acf_fwhm(gen_env[0][:100, :100])}}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    ap.add_argument("--out", default="runs/bench/us_despeckle", help="figures and results.json")
    ap.add_argument("--generated", type=int, default=12, help="held-out scenes per edge axis")
    ap.add_argument("--sim-seeds", type=int, nargs="*", default=[100, 101])
    ap.add_argument("--check-simulator", action="store_true")
    ap.add_argument("--skip", nargs="*", default=[], choices=["generated", "simulator", "real"])
    args = ap.parse_args()
    os.environ.setdefault("MEDIMG_DATA_CACHE", "/tmp/rdcache")
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    net = load_despeckle(args.model)
    res: dict = {}
    if args.check_simulator:
        res["check_simulator"] = check_simulator()
        print(json.dumps(res["check_simulator"]), flush=True)
    if "generated" not in args.skip:
        res["generated"] = generated(net, args.generated)
        print(json.dumps(res["generated"]), flush=True)
    if "simulator" not in args.skip:
        res["simulator"] = simulator(net, args.sim_seeds)
        print(json.dumps(res["simulator"]), flush=True)
    if "real" not in args.skip:
        res["real"] = real(net, out)
    (out / "results.json").write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {out}/results.json and the real images' figures")


if __name__ == "__main__":
    main()
