"""Super-resolution on real volumes: 4x thick slices restored by cubic, sinc, the shipped
supervised network and SMORE, scored against the thin-slice original.

Each reference is cropped to its head (Otsu mask bounding box + 4 voxels, to spend the CPU on
the head rather than on air), degraded along its slice axis (Gaussian slice profile, FWHM =
the thick slice), restored, and scored with PSNR/SSIM over the whole crop and inside the head
mask (``medimg.tasks.superres.evaluate``). None of these subjects is Colin27, the shipped
model's only training subject (``colin27`` is listed for reference and marked as training):

* ``pydeface``: pydeface's mean T1 head (many subjects averaged; 1 x 0.98 x 0.98 mm), axial
  4 mm slices (axis 2, S-I);
* ``itk``: the ITK KmeansTest real T1 (2 x 2 x 3 mm), 12 mm slices along its own slice axis;
* ``nibabel``: nibabel's anatomical.nii real T1 crop (2 mm), 8 mm axial slices;
* ``ct``: invesalius Cranium head CT in HU (0.96 x 0.96 x 1.5 mm, GPL: validation only),
  6 mm slices; CT slice super-resolution with the MR-trained network and SMORE.

CPU seconds are of this process, one thread (the shared machine's wall time is 2-4x).

Run: ``OMP_NUM_THREADS=1 MEDIMG_DATA_CACHE=/tmp/rdcache nice -n 5 .venv/bin/python
bench/bench_superres.py [--volumes pydeface itk] [--methods cubic sinc supervised smore]``
"""

from __future__ import annotations

import argparse
import json
import os
import tarfile

import numpy as np
import torch

from medimg.datasets.real_sources import real_file
from medimg.io.api import load
from medimg.tasks.superres.evaluate import evaluate_volume, foreground_mask
from medimg.tasks.superres.predict import load_model

VOLUMES = ("pydeface", "itk", "nibabel", "ct", "colin27")


def _cranium_hu() -> np.ndarray:
    src = real_file("invesalius-examples", "Cranium.inv3")
    with tarfile.open(src) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("matrix.dat"))
        raw = tar.extractfile(member).read()  # type: ignore[union-attr]
    return np.frombuffer(raw, np.int16).reshape(108, 256, 256).astype(np.float32).transpose(2, 1, 0)


def reference(name: str) -> tuple[np.ndarray, int, str]:
    """(3D array, slice axis to degrade, description)."""
    if name == "pydeface":
        img = load(real_file("pydeface", "mean_reg2mean.nii.gz"))
        return img.array[0], 2, "pydeface mean T1 head, axial 4 mm"
    if name == "itk":
        path = real_file("itk-examples", "KmeansTest_T1UCharRaw.nii.gz")
        return load(path).array[0], 2, "ITK KmeansTest T1, 12 mm along its 3 mm slice axis"
    if name == "nibabel":
        import nibabel

        path = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", "anatomical.nii")
        return load(path).array[0], 2, "nibabel anatomical.nii T1 (2 mm), axial 8 mm"
    if name == "ct":
        return _cranium_hu(), 2, "invesalius Cranium head CT (HU), 6 mm from 1.5 mm"
    img = load(real_file("mricron-data", "ch2.nii.gz"))
    return img.array[0], 2, "Colin27 T1 (TRAINING subject), axial 4 mm"


def crop_to_head(volume: np.ndarray, margin: int = 4) -> np.ndarray:
    idx = np.argwhere(foreground_mask(volume))
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, volume.shape)
    return volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volumes", nargs="+", choices=VOLUMES, default=["pydeface", "itk"])
    ap.add_argument("--methods", nargs="+", default=["cubic", "sinc", "supervised", "smore"])
    ap.add_argument("--factor", type=int, default=4)
    ap.add_argument("--smore-steps", type=int, default=200)
    ap.add_argument("--model", help="supervised model folder (default: the shipped one)")
    ap.add_argument("--json", help="append one JSON line per result to this file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.1f}; factor {args.factor}; "
          f"SMORE steps {args.smore_steps}", flush=True)  # fmt: skip
    model = load_model(args.model) if {"supervised", "smore-init"} & set(args.methods) else None
    print("| volume | method | PSNR dB | SSIM | PSNR mask dB | SSIM mask | vs cubic dB (mask) "
          "| CPU s |\n|---|---|---|---|---|---|---|---|", flush=True)  # fmt: skip
    for name in args.volumes:
        vol, axis, what = reference(name)
        vol = crop_to_head(np.asarray(vol, np.float32))
        plain = [m for m in args.methods if m != "smore-init"]
        rows, _ = evaluate_volume(vol, args.factor, axis, plain, model=model,
                                  smore_steps=args.smore_steps)  # fmt: skip
        if "smore-init" in args.methods:  # SMORE starting from the shipped network
            extra, _ = evaluate_volume(vol, args.factor, axis, ["cubic", "smore"],
                                       smore_steps=args.smore_steps, smore_init=model)  # fmt: skip
            rows.append({**extra[1], "method": "smore-init"})
        for r in rows:
            print(f"| {what} {'x'.join(map(str, vol.shape))} | {r['method']} "
                  f"| {r['psnr_db']:.2f} | {r['ssim']:.4f} | {r['psnr_mask_db']:.2f} "
                  f"| {r['ssim_mask']:.4f} | {r['gain_vs_cubic_db']:+.2f} "
                  f"({r['gain_mask_vs_cubic_db']:+.2f}) | {r['cpu_s']:.0f} |", flush=True)  # fmt: skip
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps({"volume": name, **r}) + "\n")


if __name__ == "__main__":
    main()
