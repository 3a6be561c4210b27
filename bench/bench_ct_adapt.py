"""Self-supervised adaptation (``medimg recon ct adapt``) on real CT anatomy, scored on held-out
real slices against the full-dose images adaptation never sees.

Scanner: parallel beam, 256 x 256 at 1 mm pixels (real slices resampled to that grid), 720
views, ramp (ram-lak) FBP, ``--i0`` photons per element at full dose, 25 % dose (Poisson +
electronic noise, ``physics.ct_dose``). That is far from what the shipped RED-CNN was trained on
(3 mm pixels, Hann FBP, 192 views), the situation adaptation is for.

- Adaptation set (non-GPL, low-dose data only): pydicom-data ``693_UNCR`` (head),
  ``bad_sequence`` (neck), ``explicit_VR-UN`` (abdomen) and pydicom's ``CT_small`` (head); one
  low-dose scan each, written as ``recon ct simulate`` writes a folder (``cases.json`` +
  ``case_*/sino_low_025.npy`` + ``low_025.nii.gz``).
- Validation set (other subjects, GPL, never adapted on): invesalius ``Cranium`` head CT (8 axial
  slices, z = 30..100) and the octave-dicom ankle; each simulated at full and 25 % dose.

Rows: low-dose FBP, the shipped RED-CNN before adaptation, after Noise2Inverse (``--splits 4``,
network on the full FBP, and the paper's mean over split outputs), after Neighbor2Neighbor on the
low-dose images (cells 4 and 2). Scores per slice, averaged: PSNR/SSIM in the soft-tissue window
(C=40 W=400) and RMSE (HU, body) against the full-dose FBP and against the noiseless scan, and
the HU shift (mean difference in soft tissue vs the noiseless scan); every image clipped to
[-1024, 3071] HU first.

Run: ``OMP_NUM_THREADS=1 nice .venv/bin/python bench/bench_ct_adapt.py [--steps 300]`` (about
10-15 CPU minutes with one thread; needs the real-data cache, ``MEDIMG_DATA_CACHE``).
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from medimg.cli import main as cli
from medimg.datasets.real_sources import real_file
from medimg.io.api import save
from medimg.metrics.ct import windowed_psnr, windowed_ssim
from medimg.physics.ct import CTProjector
from medimg.physics.ct_dose import hu_to_mu, simulate_sinogram
from medimg.tasks.reconstruct.ct import data as D
from medimg.tasks.reconstruct.ct.adapt import n2i_denoise
from medimg.tasks.reconstruct.ct.baselines import fbp_hu
from medimg.tasks.reconstruct.ct.predict import denoise_slices, load_model

N, PIX, DOSE = 256, 1.0, 0.25


def _dicom_hu(path: Path) -> np.ndarray:
    import pydicom

    ds = pydicom.dcmread(str(path))
    a = np.asarray(ds.pixel_array, np.float32)
    hu = a * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    return hu


def _to_grid(hu: np.ndarray) -> np.ndarray:
    """Square, ``N`` x ``N`` (zoomed, or padded with air when smaller), HU in [-1000, 3071]."""
    hu = np.clip(hu, -1000, 3071)
    if hu.shape[0] > N:
        hu = ndimage.zoom(hu, N / hu.shape[0], order=1)
    pad = (N - hu.shape[0]) // 2
    out = np.full((N, N), -1000.0, np.float32)
    out[pad : pad + hu.shape[0], pad : pad + hu.shape[1]] = hu[:N, :N]
    return out


def adapt_slices() -> list[np.ndarray]:
    from pydicom.data import get_testdata_file

    files = [real_file("pydicom-data", f) for f in
             ("693_UNCR.dcm", "bad_sequence.dcm", "explicit_VR-UN.dcm")]  # fmt: skip
    files.append(Path(str(get_testdata_file("CT_small.dcm"))))
    return [_to_grid(_dicom_hu(f)) for f in files]


def validation_slices() -> tuple[list[np.ndarray], list[str]]:
    inv3 = real_file("invesalius-examples", "Cranium.inv3")
    with tarfile.open(inv3) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("matrix.dat"))
        raw = tar.extractfile(member).read()  # type: ignore[union-attr]
    vol = np.frombuffer(io.BytesIO(raw).getbuffer(), np.int16).reshape(108, 256, 256)
    zs = list(range(30, 101, 10))
    ankle = real_file("octave-dicom", "CT-MONO2-16-ankle.dcm")
    slices = [_to_grid(vol[z].astype(np.float32)) for z in zs] + [_to_grid(_dicom_hu(ankle))]
    return slices, [f"cranium z={z}" for z in zs] + ["ankle"]


def scan(hu: list[np.ndarray], sim: D.SimConfig, seed: int) -> dict[str, np.ndarray]:
    """Noiseless, full-dose and low-dose sinograms and FBPs of HU slices (one batch)."""
    g = D.geometry(sim)
    x = torch.from_numpy(np.stack(hu))[:, None]
    op = CTProjector(g)
    kw = {"i0": sim.i0, "electronic_std": sim.electronic_std}
    s_full = simulate_sinogram(x, op, dose_fraction=1.0, seed=seed, **kw)[:, 0]
    s_low = simulate_sinogram(x, op, dose_fraction=DOSE, seed=seed + 1, **kw)[:, 0]
    with torch.no_grad():
        s_clean = op.A(hu_to_mu(x))[:, 0]

    def rec(s: torch.Tensor) -> np.ndarray:
        return fbp_hu(s, g, filter_name=sim.filter_name).numpy()

    return {"sino_low": s_low, "low": rec(s_low), "full": rec(s_full), "clean": rec(s_clean)}


def write_adapt_folder(root: Path, hu: list[np.ndarray], sim: D.SimConfig) -> Path:
    s = scan(hu, sim, seed=100)
    root.mkdir(parents=True)
    for i, (sino, low) in enumerate(zip(s["sino_low"], s["low"])):
        case = root / f"case_{i:05d}"
        case.mkdir()
        np.save(case / "sino_low_025.npy", sino.numpy())
        save(D.slice_image(low, D.axial_affine(N, PIX)), case / "low_025.nii.gz")
    meta = {"sim": {k: getattr(sim, k) for k in ("image_size", "pixel_mm", "n_views", "i0",
                                                  "dose_fraction", "electronic_std", "filter_name")},
            "doses": [DOSE], "note": "real CT slices, simulated low-dose scans"}  # fmt: skip
    (root / "cases.json").write_text(json.dumps(meta, indent=1))
    return root


def _noise_correlation(val: dict[str, np.ndarray], lag: int = 1) -> float:
    """Correlation of the low-dose noise (low - noiseless) between pixels ``lag`` apart (rows and
    columns), inside soft tissue: what limits Neighbor2Neighbor's pairs."""
    num, den = [], []
    for low, clean in zip(val["low"], val["clean"]):
        n, m = low - clean, (clean > -150) & (clean < 250)
        for a, b, ma in ((n[:-lag], n[lag:], m[:-lag] & m[lag:]),
                         (n[:, :-lag], n[:, lag:], m[:, :-lag] & m[:, lag:])):  # fmt: skip
            num.append(float(np.sum(a[ma] * b[ma])))
            den.append(float(np.sum(a[ma] ** 2)))
    return sum(num) / sum(den)


def scores(pred: np.ndarray, ref: dict[str, np.ndarray]) -> dict[str, float]:
    # the 12-bit DICOM range: low-dose ramp FBP swings past -3000 HU in air, which is not CT data
    pred = np.clip(pred, -1024, 3071)
    ref = {k: np.clip(v, -1024, 3071) for k, v in ref.items() if k != "sino_low"}
    out: dict[str, list[float]] = {}
    for i in range(len(pred)):
        body = ref["clean"][i] > -500
        soft = ndimage.binary_erosion(
            (ref["clean"][i] > -150) & (ref["clean"][i] < 250), iterations=2
        )
        for name in ("full", "clean"):
            out.setdefault(f"psnr_{name}", []).append(windowed_psnr(ref[name][i], pred[i]).value)
            out.setdefault(f"ssim_{name}", []).append(windowed_ssim(ref[name][i], pred[i]).value)
            err = (pred[i] - ref[name][i])[body]
            out.setdefault(f"rmse_{name}", []).append(float(np.sqrt(np.mean(err**2))))
        out.setdefault("shift", []).append(float(np.mean((pred[i] - ref["clean"][i])[soft])))
    return {k: float(np.mean(v)) for k, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--i0", type=float, default=1e5)
    ap.add_argument("--filter", default="ram-lak", help="FBP filter of the simulated scanner")
    ap.add_argument("--methods", nargs="+", default=["n2i k4", "n2n cell4", "n2n cell2"])
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    sim = D.SimConfig(image_size=N, pixel_mm=PIX, n_views=720, i0=args.i0, dose_fraction=DOSE,
                      filter_name=args.filter)  # fmt: skip
    work = Path(args.work or tempfile.mkdtemp(prefix="ct_adapt_bench_"))
    data = write_adapt_folder(work / "adapt_data", adapt_slices(), sim)
    val_hu, names = validation_slices()
    val = scan(val_hu, sim, seed=200)
    noise = np.mean([np.std((val["low"][i] - val["clean"][i])[(val["clean"][i] > 0) &
                                                             (val["clean"][i] < 80)])
                     for i in range(len(names))])  # fmt: skip
    corr = "/".join(f"{_noise_correlation(val, lag):.2f}" for lag in (1, 2, 3))
    print(f"{args.filter} FBP; adapt set: 4 real slices; validation: {len(names)} "
          f"({', '.join(names)}); low-dose brain/soft-tissue noise {noise:.0f} HU, correlated "
          f"{corr} between pixels 1/2/3 apart; setup {time.perf_counter() - t0:.0f} s")  # fmt: skip

    rows: dict[str, dict[str, float]] = {"low-dose FBP": scores(val["low"], val)}
    shipped, _ = load_model(None)
    rows["shipped RED-CNN (before)"] = scores(denoise_slices(shipped, val["low"]), val)
    common = ["--max-steps", str(args.steps), "--quiet", "--device", "cpu", "--threads", "1"]
    runs = {"n2i k4": ["--method", "n2i", "--splits", "4"],
            "n2n cell4": ["--method", "n2n", "--cell", "4"],
            "n2n cell2": ["--method", "n2n", "--cell", "2"]}  # fmt: skip
    for name, extra in ((k, runs[k]) for k in args.methods):
        t1 = time.process_time()
        model = work / name.replace(" ", "_")
        assert cli(["recon", "ct", "adapt", str(data), "--out", str(model), *extra, *common]) == 0
        spent = time.process_time() - t1
        net, _ = load_model(model)
        label = {"n2i k4": "Noise2Inverse k=4", "n2n cell4": "N2N cell 4",
                 "n2n cell2": "N2N cell 2"}[name]  # fmt: skip
        rows[f"{label}: net(full FBP) [{spent / 60:.1f} CPU-min]"] = scores(
            denoise_slices(net, val["low"]), val
        )
        if name.startswith("n2i"):
            splits = n2i_denoise(net, val["sino_low"], sim, 4, mode="splits")
            rows[f"{label}: mean of split outputs"] = scores(splits, val)
    head = ("| method | PSNR vs full | SSIM vs full | RMSE vs full | PSNR vs noiseless | "
            "SSIM vs noiseless | RMSE vs noiseless | HU shift |")  # fmt: skip
    print(head + "\n|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['psnr_full']:.2f} | {r['ssim_full']:.3f} | {r['rmse_full']:.1f} | "
              f"{r['psnr_clean']:.2f} | {r['ssim_clean']:.3f} | {r['rmse_clean']:.1f} | "
              f"{r['shift']:+.1f} |")  # fmt: skip
    print(f"total {time.perf_counter() - t0:.0f} s wall, {(time.process_time() - c0) / 60:.1f} "
          f"CPU-min (one torch thread); work folder {work}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
