"""Self-supervised MRI adaptation (SSDU, `recon mri adapt`) and the prediction safeguard on real
brain slices.

k-space is SIMULATED from real magnitude images (no raw k-space is available offline): 8
birdcage coils, 4x equispaced, 8 % ACS, 30 dB SNR, one fastMRI file per subject.
Adapt set: the ITK KmeansTest T1 head (slices 16-45). Held-apart subject, never adapted on:
Colin27 skull-stripped (`ch2bet`, slices 50-126 in steps of 4). Scores: PSNR per slice against
the magnitude reference, mean over slices; zero-filled, CG-SENSE, the default VarNet (with the
safeguard's flags and its `--fallback` result), then the adapted model.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_mri_adapt.py --work /tmp/mri-adapt
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medimg.datasets.fastmri import read_fastmri, write_fastmri
from medimg.datasets.real_sources import real_file
from medimg.engine import TrainConfig
from medimg.tasks.reconstruct.mri.adapt import AdaptConfig, adapt
from medimg.tasks.reconstruct.mri.data import make_mask, simulate_slice
from medimg.tasks.reconstruct.mri.infer import Reconstructor


def axial_slices(path: Path, zs: range, size: int = 128) -> list[torch.Tensor]:
    """Axial slices with enough tissue, resized to ``size``², scaled to a maximum of 1."""
    v = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    out = []
    for z in zs:
        sl = torch.tensor(v[:, :, z].T[::-1].copy())
        if sl.shape != (size, size):
            sl = torch.nn.functional.interpolate(sl[None, None], size=(size, size), mode="bilinear")
            sl = sl[0, 0]
        if sl.max() > 0 and (sl > 0.1 * sl.max()).float().mean() > 0.1:
            out.append(sl / sl.max())
    return out


def write_subject(path: Path, slices: list[torch.Tensor], seed: int) -> Path:
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = make_mask("equispaced", (128, 128), 4.0, 0.08, seed)
    ks, ts = [], []
    for i, img in enumerate(slices):
        s = simulate_slice(img.to(torch.complex64), 8, mask, 30.0, seed=seed * 1000 + i)
        ks.append(s["kspace"])
        ts.append(s["target"])
    write_fastmri(
        path, torch.stack(ks).numpy(), reconstruction=torch.stack(ts).numpy(), mask=mask[0].numpy()
    )
    return path


def psnr(recs: np.ndarray, targets: np.ndarray) -> list[float]:
    return [
        float(10 * np.log10(t.max() ** 2 / ((r - t) ** 2).mean())) for r, t in zip(recs, targets)
    ]


def score(model: Path | None, f: Path, method: str = "net") -> dict:
    vol = read_fastmri(f)
    rec = Reconstructor(method, model, safeguard=method == "net")
    t0 = time.process_time()
    r = rec(vol.kspace, vol.mask)
    dt = (time.process_time() - t0) / len(r)
    row = {"psnr": round(float(np.mean(psnr(r, vol.reconstruction))), 2), "n": len(r)}
    row["cpu_s_per_slice"] = round(dt, 3)
    check = rec.last_check
    if check is not None:
        fallback = r.copy()
        fallback[check.flagged] = check.classical[check.flagged]
        row["flagged"] = int(check.flagged.sum())
        row["fallback_psnr"] = round(float(np.mean(psnr(fallback, vol.reconstruction))), 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/medimg-bench-mri-adapt"))
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(1)
    kmeans = real_file("itk-examples", "KmeansTest_T1UCharRaw.nii.gz")
    colin = real_file("mricron-data", "ch2bet.nii.gz")
    fa = write_subject(args.work / "adapt" / "kmeans_t1.h5", axial_slices(kmeans, range(16, 46)), 1)
    fh = write_subject(args.work / "held" / "ch2bet.h5", axial_slices(colin, range(50, 130, 4)), 2)
    sets = (("adapt set (KmeansTest)", fa), ("held-apart subject (ch2bet)", fh))
    res = {}
    for name, f in sets:
        for method in ("zero_filled", "cg_sense"):
            res[f"{name} {method}"] = score(None, f, method)
        res[f"{name} default"] = score(None, f)
    base = AdaptConfig()
    train = TrainConfig(
        **{**base.train.__dict__, "lr": args.lr, "max_steps": args.steps, "progress": False}
    )
    out = args.work / f"adapted_lr{args.lr:g}_{args.steps}"
    t0 = time.process_time()
    resume = (out / "adapt_run").exists()  # a killed run continues
    adapt(args.work / "adapt", out, AdaptConfig(train=train), resume=resume)
    print(f"adapt: {time.process_time() - t0:.0f} CPU s", flush=True)
    for name, f in sets:
        res[f"{name} adapted"] = score(out, f)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
