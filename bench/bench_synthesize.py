"""Cross-modality synthesis: SynthRAD metrics of the shipped models on held-out generated heads,
and the synthetic CT of real T1 heads (pictures only: no paired real CT exists).

* ``heldout``: ``--heads`` held-out Colin27 slices (slice index a multiple of 5, never trained
  on) with deformation seeds training never drew, rendered as T1 (three in four) or T2 and CT;
  the shipped mr2ct model scored with MAE / PSNR / SSIM inside the body and bone (> 250 HU)
  Dice; the shipped ct2mr model with MAE / PSNR / SSIM in MR units; each against the
  mean-value baseline. The same on toy heads (another anatomy generator, a fifth of training).
* ``real``: mr2ct on pydeface's mean T1 head (many subjects averaged, 1 mm) and on the ITK
  KmeansTest T1 (2 x 2 x 3 mm); writes PNGs (axial and coronal slices, CT window) and the
  HU statistics inside the head, for a person to look at.
* ``cyclegan`` (``--cyclegan-steps N``): a short unpaired CycleGAN run (mr2ct) from scratch,
  scored the same way, to show the option works; not shipped.

CPU seconds are of this process, one thread (the shared machine's wall time is 2-4x).

Run: ``OMP_NUM_THREADS=1 MEDIMG_DATA_CACHE=/tmp/rdcache nice -n 5 .venv/bin/python
bench/bench_synthesize.py [--parts heldout real] [--heads 32] [--out runs/bench/synthesize]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from medimg.tasks.synthesize.evaluate import evaluate_generated


def heldout(n: int) -> dict:
    out = {}
    for direction in ("mr2ct", "ct2mr"):
        for anatomy in ("colin27", "toy"):
            t = time.process_time()
            rows, summary = evaluate_generated(direction, None, anatomy=anatomy, n=n)
            res = {"summary": summary, "cpu_s": time.process_time() - t}
            if direction == "mr2ct":
                for c in ("t1", "t2"):
                    sel = [r for r in rows if r["contrast"] == c]
                    res[c] = {k: float(np.mean([r[k] for r in sel]))
                              for k in ("mae_hu", "bone_dice", "ssim", "psnr_db")}  # fmt: skip
            out[f"{direction}/{anatomy}"] = res
            print(direction, anatomy, json.dumps(res, indent=None)[:600], flush=True)
    return out


def _png(path: Path, t1: np.ndarray, sct: np.ndarray, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zs = [int(t1.shape[2] * f) for f in (0.35, 0.55, 0.75)]
    y = t1.shape[1] // 2
    fig, ax = plt.subplots(2, 4, figsize=(14, 7))
    views = [(t1[:, :, z], sct[:, :, z], f"axial z={z}") for z in zs]
    views.append((t1[:, y, :], sct[:, y, :], f"coronal y={y}"))
    for i, (a, b, name) in enumerate(views):
        ax[0, i].imshow(a.T, origin="lower", cmap="gray", vmax=np.percentile(t1, 99.5))
        ax[1, i].imshow(b.T, origin="lower", cmap="gray", vmin=-200, vmax=1600)
        ax[0, i].set_title(f"T1 {name}", fontsize=8)
        ax[1, i].set_title("synthetic CT [-200, 1600] HU", fontsize=8)
        for a_ in ax[:, i]:
            a_.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def real(out: Path) -> dict:
    from medimg.datasets.real_sources import real_file
    from medimg.io.api import load
    from medimg.tasks.synthesize.predict import synthesize_volume

    cases = {
        "pydeface_mean_t1": real_file("pydeface", "mean_reg2mean.nii.gz"),
        "itk_kmeans_t1": real_file("itk-examples", "KmeansTest_T1UCharRaw.nii.gz"),
    }
    res = {}
    for name, path in cases.items():
        img = load(path)
        t = time.process_time()
        sct = synthesize_volume(img, "mr2ct")
        cpu = time.process_time() - t
        hu = sct.array[0].astype(np.float32)
        t1 = img.canonical().array[0]
        from medimg.io.image import Image

        hu_c = Image(hu[None], img.affine).canonical().array[0]
        head = hu_c > -400
        res[name] = {
            "shape": list(img.spatial_shape), "spacing": [round(s, 2) for s in img.spacing],
            "cpu_s": round(cpu, 1), "head_voxels": int(head.sum()),
            "bone_fraction_of_head": float((hu_c[head] > 250).mean()),
            "hu_percentiles_head_5_50_95_99": np.percentile(hu_c[head], [5, 50, 95, 99]).tolist(),
        }  # fmt: skip
        _png(out / f"{name}.png", t1, hu_c, f"{name}: T1 and its synthetic CT (mr2ct default)")
        print(name, res[name], flush=True)
    return res


def cyclegan(steps: int, n: int, out: Path) -> dict:
    import dataclasses

    from medimg.tasks.synthesize.predict import load_model
    from medimg.tasks.synthesize.train import SynthConfig, train_synth

    cfg = SynthConfig(unpaired=True, channels=(8, 8, 16, 32, 64, 8), pool=300, crop=48)
    cfg.train = dataclasses.replace(cfg.train, max_steps=steps, batch_size=8, val_every=steps,
                                    checkpoint_every=steps, progress=False)  # fmt: skip
    t = time.process_time()
    train_synth(cfg, out / "cyclegan_run", overwrite=True)
    net = load_model(out / "cyclegan_run", "mr2ct")[0]
    _, summary = evaluate_generated("mr2ct", net, anatomy="colin27", n=n)
    res = {"steps": steps, "cpu_s": time.process_time() - t, "summary": summary}
    print("cyclegan", res, flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", nargs="+", default=["heldout", "real"],
                    choices=("heldout", "real", "cyclegan"))  # fmt: skip
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--cyclegan-steps", type=int, default=150)
    ap.add_argument("--out", default="runs/bench/synthesize")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    if "heldout" in args.parts:
        results["heldout"] = heldout(args.heads)
    if "real" in args.parts:
        results["real"] = real(out)
    if "cyclegan" in args.parts:
        results["cyclegan"] = cyclegan(args.cyclegan_steps, args.heads, out)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out}/results.json and PNGs")


if __name__ == "__main__":
    main()
