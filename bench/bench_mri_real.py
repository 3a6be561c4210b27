"""MRI reconstruction on real brain MR that no model saw: networks against tuned classical CS.

Validation subjects (held apart from any training; Apache-2.0 / MIT):

* the ITK ``KmeansTest_T1UCharRaw`` T1 head (128 x 128 x 62 at 2 x 2 x 3 mm, with scalp):
  axial slices 14, 18, ..., 50 (10 slices, 128 x 128);
* nibabel's ``anatomical.nii`` T1 crop (33 x 41 x 25 at 2 mm): slices 6, 9, ..., 18 along the
  last axis, cubic-spline upsampled x3 in plane and zero-padded to 144 x 128 (non-square).

Tuning subject for the classical lambdas (never scored): dipy's ``t1_coronal_slice.npy``
(256 x 256) and two slices of dipy's ``S0_10slices``. Colin27 (mricron ``ch2*``), the pydeface
mean head and dipy stay on the training side (:data:`medimg.tasks.reconstruct.mri.data.REAL_TRAIN`).

k-space is *simulated* from the real magnitude (no raw k-space is available offline): slice
normalised to peak 1, times a smooth random phase (:func:`~...data.smooth_phase`, seeded per
slice), 8 birdcage coils (normalised maps), FFT, complex Gaussian noise at 30 dB k-space SNR,
equispaced column mask with 8 % ACS at 4x and 8x. Reference: the noise-free RSS = the magnitude.

Methods: zero-filled RSS; ``cs_tv`` with lambda tuned per acceleration on the tuning slices;
``cs_wavelet`` (shipped lambda); the shipped default network (and ``--models`` LABEL=FOLDER). CS methods get ESPIRiT maps from the
ACS block, as on scanner data. Metrics per slice as fastMRI computes them: PSNR and SSIM (7x7, K1
0.01, K2 0.03) with data range = the subject volume's maximum; mean [95 % bootstrap CI over
slices], reported per acceleration. Time: seconds per slice on this machine (one thread).

Run: ``MEDIMG_DATA_CACHE=... nice .venv/bin/python bench/bench_mri_real.py [--quick]``;
``--sizes [FOLDER]``: only the matrix-size check, the ITK slices' anatomy on 160^2, 224x192 and
320^2 matrices (cubic zoom, same share of the field of view) at 4x.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from medimg.datasets.real_sources import real_file
from medimg.metrics.image_quality import psnr_slicewise, ssim_slicewise
from medimg.metrics.stats import bootstrap_ci
from medimg.physics.coils import espirit_maps
from medimg.tasks.reconstruct.mri.baselines import cs_tv, cs_wavelet, zero_filled
from medimg.tasks.reconstruct.mri.data import make_mask, simulate_slice, smooth_phase
from medimg.tasks.reconstruct.mri.infer import Reconstructor

ACCELS = (4.0, 8.0)
ACS, COILS, SNR_DB = 0.08, 8, 30.0
TV_LAMS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def _norm(sl: np.ndarray) -> np.ndarray:
    sl = np.clip(np.asarray(sl, np.float64), 0, None)
    return (sl / max(np.percentile(sl, 99.9), 1e-12)).clip(0, 1.2)


def validation_subjects(quick: bool = False) -> dict[str, np.ndarray]:
    """Subject name -> ``(S, H, W)`` magnitude slices (peak ~1)."""
    km = nib.load(real_file("itk-examples", "KmeansTest_T1UCharRaw.nii.gz")).get_fdata()
    zs = range(14, 51, 4) if not quick else (26, 34)
    itk = np.stack([_norm(np.rot90(km[:, :, z])) for z in zs])
    path = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
    an = nib.load(path).get_fdata()
    out = []
    for z in range(6, 19, 3) if not quick else (12,):
        up = ndimage.zoom(np.rot90(an[:, :, z]), 3, order=3)  # (123, 99)
        pad = np.zeros((144, 128))  # a margin around the crop, as a head in its FOV
        pad[10 : 10 + up.shape[0], 14 : 14 + up.shape[1]] = up
        out.append(_norm(pad))
    return {"itk-kmeans": itk, "nibabel-anatomical": np.stack(out)}


def tuning_slices() -> list[np.ndarray]:
    """Slices of a subject that is never scored (dipy), for the classical lambdas."""
    t1 = np.load(real_file("dipy", "t1_coronal_slice.npy"))
    s0 = nib.load(real_file("dipy", "S0_10slices.nii.gz")).get_fdata()[..., 0]
    return [_norm(t1), _norm(s0[:, :, 4]), _norm(s0[:, :, 7])]


def kspace_of(mag: np.ndarray, accel: float, seed: int) -> dict[str, torch.Tensor]:
    """8-coil undersampled k-space of one real magnitude slice with a smooth random phase."""
    rng = np.random.default_rng(seed)
    shape = mag.shape
    img = torch.from_numpy(mag).float() * torch.exp(1j * smooth_phase(shape, rng))
    mask = make_mask("equispaced", shape, accel, ACS, seed)
    return simulate_slice(img.to(torch.complex64), COILS, mask, SNR_DB, seed=seed)


def _tv(lam: float):
    def run(y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return cs_tv(y, m, espirit_maps(y, m), lam=lam).abs()

    return run


def _wav(y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return cs_wavelet(y, m, espirit_maps(y, m)).abs()


def _wrap(rec: Reconstructor):
    def run(y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(rec(y, m))

    return run


def tune_tv(accel: float) -> float:
    best, best_lam = -np.inf, TV_LAMS[0]
    cases = [kspace_of(s, accel, 900 + i) for i, s in enumerate(tuning_slices())]
    for lam in TV_LAMS:
        score = 0.0
        for c in cases:
            pred = _tv(lam)(c["kspace"][None], c["mask"])[0].numpy()
            gt = c["target"].numpy()
            score += float(psnr_slicewise(gt[None], pred[None], data_range=gt.max())[0])
        print(f"  tune cs_tv {accel:g}x lambda {lam:g}: mean PSNR {score / len(cases):.2f}")
        if score > best:
            best, best_lam = score, lam
    return best_lam


SIZES = ((160, 160), (224, 192), (320, 320))


def on_matrix(sl: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """One slice's anatomy on another matrix: cubic zoom so the head keeps the same share of
    the field of view (the shorter side decides), centred, zero-padded (a finer or coarser
    acquisition of the same head)."""
    z = ndimage.zoom(sl, min(shape[0] / sl.shape[0], shape[1] / sl.shape[1]), order=3)
    out = np.zeros(shape)
    oy, ox = (shape[0] - z.shape[0]) // 2, (shape[1] - z.shape[1]) // 2
    out[oy : oy + z.shape[0], ox : ox + z.shape[1]] = z[: shape[0], : shape[1]]
    return _norm(out)


def size_invariance(rec: Reconstructor, quick: bool) -> None:
    """The network's PSNR on the same ITK slices at 160^2, 224x192 and 320^2 (4x)."""
    itk = validation_subjects(quick)["itk-kmeans"]
    print("\nmatrix size (same anatomy, 4x equispaced, 8 % ACS) | PSNR dB | SSIM | s/slice")
    for shape in SIZES:
        cases = [kspace_of(on_matrix(s, shape), 4.0, 7000 + i) for i, s in enumerate(itk)]
        gt = np.stack([c["target"].numpy() for c in cases])
        t0 = time.perf_counter()
        pred = np.stack([rec(c["kspace"][None], c["mask"])[0] for c in cases])
        dt = (time.perf_counter() - t0) / len(cases)
        ps = psnr_slicewise(gt, pred, data_range=float(gt.max()))
        ss = ssim_slicewise(gt, pred, data_range=float(gt.max()))
        print(f"{shape[0]}x{shape[1]} | {bootstrap_ci(list(ps))} | {bootstrap_ci(list(ss))} | "
              f"{dt:.2f}", flush=True)  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="3 slices, for a smoke test")
    ap.add_argument("--models", nargs="*", default=[], help="extra LABEL=FOLDER networks")
    ap.add_argument("--sizes", metavar="FOLDER", nargs="?", const="default",
                    help="only the matrix-size check (160^2, 224x192, 320^2) of a model "
                         "folder (default: the shipped model)")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.sizes:
        size_invariance(Reconstructor("net", None if args.sizes == "default" else args.sizes),
                        args.quick)  # fmt: skip
        return 0
    subjects = validation_subjects(args.quick)
    net = Reconstructor("net")
    extra = {lbl: Reconstructor("net", p) for lbl, _, p in (m.partition("=") for m in args.models)}
    lines = []
    for accel in ACCELS:
        lam = tune_tv(accel)
        methods = {
            "zero-filled": lambda y, m: zero_filled(y),
            f"cs_tv (lambda {lam:g}, tuned)": _tv(lam),
            "cs_wavelet": _wav,
            "default network": _wrap(net),
        }
        methods.update({k: _wrap(r) for k, r in extra.items()})
        scores: dict[str, dict[str, list[float]]] = {k: {"psnr": [], "ssim": [], "t": []}
                                                     for k in methods}  # fmt: skip
        peaks: dict[str, float] = {k: 0.0 for k in methods}
        per_subject: dict[str, list[str]] = {}
        for si, (subject, vol) in enumerate(subjects.items()):
            cases = [kspace_of(s, accel, 1000 * si + i) for i, s in enumerate(vol)]
            gt = np.stack([c["target"].numpy() for c in cases])
            rng_ = float(gt.max())  # fastMRI: the volume's maximum
            for label, fn in methods.items():
                preds = []
                for c in cases:
                    t0 = time.perf_counter()
                    preds.append(fn(c["kspace"][None], c["mask"])[0].float().numpy())
                    scores[label]["t"].append(time.perf_counter() - t0)
                pred = np.stack(preds)
                peaks[label] = max(peaks[label], float(pred.max()))
                ps = psnr_slicewise(gt, pred, data_range=rng_)
                scores[label]["psnr"] += list(ps)
                per_subject.setdefault(subject, []).append(
                    f"{label.split(' (')[0]} {ps.mean():.1f}"
                )
                scores[label]["ssim"] += list(ssim_slicewise(gt, pred, data_range=rng_))
        n = len(scores["zero-filled"]["psnr"])
        head = (f"\n{accel:g}x equispaced, {ACS:.0%} ACS, {COILS} coils, {SNR_DB:g} dB k-space SNR; "
                f"{n} slices of {len(subjects)} held-out subjects")  # fmt: skip
        lines += [head, "",
                  "| method | PSNR dB | SSIM | s/slice | peak (ref <= 1.2) |", "|---|---|---|---|---|"]  # fmt: skip
        for label, s in scores.items():
            lines.append(f"| {label} | {bootstrap_ci(s['psnr'])} | {bootstrap_ci(s['ssim'])} | "
                         f"{np.mean(s['t']):.2f} | {peaks[label]:.2f} |")  # fmt: skip
        lines += [""] + [f"PSNR dB on {k}: {', '.join(v)}" for k, v in per_subject.items()]
        print("\n".join(lines[-len(scores) - 4 - len(per_subject) - 1 :]), flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
