"""Acceptance check for a new CT denoiser on real CT that is neither training anatomy nor the
figures' head CT (``bench_ct_real.py``): choose between models here, then measure them there.

Images: the two frames of pydicom-data's ``eCT_Supplemental.dcm`` (an enhanced CT of a
skull-stripped brain, 512 x 512 at 0.389 mm, tissue values floored near 0 HU so CSF is flat;
MIT), scanned as ``bench_ct_real.py`` scans its
slices (``medimg.tasks.reconstruct.ct.data.scan_image``: 720 parallel views, ramp FBP, flux for
40 HU full-dose soft-tissue noise, 25 % and 10 % dose). Reference: the noiseless scan. PSNR and
SSIM with both images clipped to C=40 W=400 HU, per frame and mean.

Run: ``MEDIMG_DATA_CACHE=... OMP_NUM_THREADS=1 .venv/bin/python bench/bench_ct_accept.py
redcnn runs/recon/ct/redcnn-base`` (model folders or ``redcnn``/``wgan``; ~1 min). Prints
figures only; no target (the first model is accepted when it is ahead at both doses).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from medimg.datasets.real_sources import real_file
from medimg.metrics.ct import windowed_psnr, windowed_ssim
from medimg.tasks.reconstruct.ct import data as D

DOSES = (0.25, 0.10)
PIXEL_MM = 0.388672  # the file's shared functional group PixelSpacing


def scans() -> list[dict[str, np.ndarray]]:
    import pydicom

    root = Path(os.environ.get("MEDIMG_CACHE", Path.home() / ".cache" / "medimg")) / "ct-accept"
    root.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(str(real_file("pydicom-data", "eCT_Supplemental.dcm")))
    hu = ds.pixel_array.astype(np.float32) - 1024.0  # rescale: slope 1, intercept -1024
    out = []
    for f in range(hu.shape[0]):
        path = root / f"ect_frame{f}.npz"
        if not path.is_file():
            o = D.scan_image(np.clip(hu[f], -1000, 3071), PIXEL_MM, n_views=720,
                             filter_name="ram-lak", full_noise_hu=40.0, doses=(1.0, *DOSES),
                             seed=77 + f)  # fmt: skip
            np.savez(path, clean=o["clean"], **{f"low{d}": o[d] for d in DOSES})
        with np.load(path) as z:
            out.append({k: z[k] for k in z.files})
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from medimg.tasks.reconstruct.ct.predict import denoise_slices, load_model

    data = scans()
    print("| model | dose | PSNR dB (per frame) | SSIM |\n|---|---|---|---|")
    for m in ["low-dose FBP", *args.models]:
        net = None if m == "low-dose FBP" else load_model(m)[0]
        for d in DOSES:
            outs = [s[f"low{d}"] if net is None else denoise_slices(net, s[f"low{d}"][None])[0]
                    for s in data]  # fmt: skip
            ps = [windowed_psnr(s["clean"], y).value for s, y in zip(data, outs)]
            ss = [windowed_ssim(s["clean"], y).value for s, y in zip(data, outs)]
            print(f"| {m} | {d:.0%} | {np.mean(ps):.2f} ({', '.join(f'{p:.2f}' for p in ps)}) "
                  f"| {np.mean(ss):.3f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
