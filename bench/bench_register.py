"""Registration bench: learned model (alone and with instance optimisation) vs SimpleITK demons.

Held-out synthetic T1-like brain pairs, by default at 48^3, 4 mm (the default model's training
grid); ``--size 96 --spacing 2`` gives the issue's ~96^3 (the network then works on the pair
resampled to its 4 mm, demons on the full grid; Dice is scored on the 96^3 labels). Prints Dice
of warped labels, TRE, % folded voxels, and the CPU-time ratio demons / learned per pair, from
one run.

    python bench/bench_register.py [--pairs 8] [--size 96 --spacing 2] [--io-steps 60]
                                   [--model DIR] [--methods ...] [--data DIR]

``--model`` scores another model folder (e.g. a fully supervised run, whose mean end-point error
against the known field is printed in mm and in voxels of the 4 mm grid).

``--real`` measures real brain pairs instead: the Colin27 T1 (``mricron-data`` ``ch2bet.nii.gz``,
skull-stripped, 1 mm, averaged from 27 scans) block-averaged to 2 mm is the fixed image; each
moving image is it under a known smooth random warp (scaling and squaring of a 5-point spline
velocity), with a smooth multiplicative bias (+-20 %) and Rician noise (2 %), either the same
contrast or inverted inside the brain (T2-like: CSF bright, WM dark). Reference tissue map: a
3-class multi-Otsu of the brain voxels of the 2 mm image (CSF 1, GM 2, WM 3), warped with the
image. Prints Dice GM/WM, % folded voxels and CPU s per method, and the instance optimisation
from the identity (``io``) with each ``--similarities`` against SimpleITK demons (same contrast)
and B-spline/Mattes MI (cross-contrast, ``--bspline-pairs``: it is slow).

    MEDIMG_DATA_CACHE=/tmp/rdcache nice -n 5 python bench/bench_register.py --real \
        [--pairs 3] [--io-steps 100] [--similarities lncc,mind] [--bspline-pairs 1] \
        [--models default,runs/register/synth/model] [--no-baselines]

``--models`` scores several model folders on the same pairs in one process (``model:NAME`` rows);
``--similarities ''`` skips instance optimisation.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _real_pairs(n: int, seed: int, max_disp_mm: float) -> tuple[list, list]:
    """Same-contrast and cross-contrast :class:`Pair` lists built from the Colin27 T1."""
    from scipy import ndimage
    from skimage.filters import threshold_multiotsu

    from medimg.datasets.real_sources import real_file
    from medimg.io.api import load
    from medimg.io.image import Image
    from medimg.phantoms.registration import integrate_velocity, random_velocity, warp_array
    from medimg.tasks.register.data import Pair

    t1 = load(real_file("mricron-data", "ch2bet.nii.gz"))
    a = t1.array[0]
    a = a[: a.shape[0] // 2 * 2, : a.shape[1] // 2 * 2, : a.shape[2] // 2 * 2]
    a = a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2, a.shape[2] // 2, 2).mean((1, 3, 5))
    brain = a > 0.05 * a.max()
    box = tuple(slice(max(0, int(i.min()) - 4), int(i.max()) + 5) for i in np.nonzero(brain))
    a, brain = a[box].astype(np.float32), brain[box]
    labels = np.zeros(a.shape, np.uint8)
    labels[brain] = 1 + np.digitize(a[brain], threshold_multiotsu(a[brain], 3))
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    fixed = Image(a[None], affine, modality="MR")
    fixed_labels = Image(labels[None], affine, modality="SEG", is_label=True)
    top = float(np.percentile(a[brain], 99.5))
    inverted = np.where(brain, np.clip(1.1 * top - a, 0, None), 0).astype(np.float32)
    same, cross = [], []
    for k in range(n):
        rng = np.random.default_rng([seed + k, 23])
        v = random_velocity(a.shape, rng, max_disp_mm / 2.0)
        # the moving image is the fixed one warped by the inverse (exp(-v)), so that
        # fixed(x) = moving(x + u(x)) with u = exp(v): the field registration must find
        u = integrate_velocity(v)
        back = integrate_velocity(-v)
        coarse = rng.standard_normal((4, 4, 4))
        bias = ndimage.zoom(coarse, [s / 4 for s in a.shape], order=3)[tuple(map(slice, a.shape))]
        bias = np.exp(0.2 * bias / np.abs(bias).max())
        ml = warp_array(labels, back, order=0).astype(np.uint8)
        for contrast, out in ((a, same), (inverted, cross)):
            m = warp_array(contrast, back, order=1) * bias
            sd = 0.02 * top
            m = np.hypot(m + sd * rng.standard_normal(a.shape), sd * rng.standard_normal(a.shape))
            out.append(Pair(f"colin27_{seed + k}", fixed, Image(m[None].astype(np.float32),
                            affine, modality="MR"), fixed_labels,
                            Image(ml[None], affine, modality="SEG", is_label=True), None, None,
                            (2.0 * u).astype(np.float32)))  # fmt: skip
        print(f"pair {seed + k}: grid {'x'.join(map(str, a.shape))} at 2 mm, true displacement "
              f"max {2 * np.sqrt((u**2).sum(0)).max():.1f} mm, mean inside the brain "
              f"{2 * np.sqrt((u**2).sum(0))[brain].mean():.1f} mm", flush=True)  # fmt: skip
    return same, cross


def real_main(argv: list[str]) -> None:
    """Real brain pairs (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="bench_register.py --real")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--io-steps", type=int, default=100)
    ap.add_argument("--max-disp-mm", type=float, default=8.0)
    ap.add_argument("--similarities", default="lncc,mind")
    ap.add_argument("--bspline-pairs", type=int, default=1)
    ap.add_argument("--skip-model", action="store_true")
    ap.add_argument("--models", default="default",
                    help="comma-separated model folders scored back to back on the same pairs "
                         "('default': the shipped model)")  # fmt: skip
    ap.add_argument(
        "--no-baselines",
        action="store_true",
        help="skip SimpleITK demons and B-spline (the slow references)",
    )
    args = ap.parse_args(argv)
    from medimg.metrics.registration import label_overlap
    from medimg.metrics.stats import bootstrap_ci
    from medimg.tasks.register.evaluate import pair_metrics, run_method
    from medimg.tasks.register.predict import Registrator

    regs = {m: Registrator(None if m == "default" else m) for m in args.models.split(",")}
    reg = next(iter(regs.values()))
    same, cross = _real_pairs(args.pairs, args.seed, args.max_disp_mm)
    sims = [s for s in args.similarities.split(",") if s]
    nets = [] if args.skip_model else [f"model:{m}" for m in regs]
    ref = [] if args.no_baselines else [["sitk-demons"], ["sitk-bspline"]]
    plans = {
        "same contrast": (same, ["identity", *nets, *[f"io-{s}" for s in sims],
                                 *(ref[0] if ref else [])]),
        "inverted contrast (T2-like)": (cross, ["identity", *nets, *[f"io-{s}" for s in sims],
                                                *(ref[1] if ref else [])]),
    }  # fmt: skip
    for title, (pairs, methods) in plans.items():
        rows: dict[str, list] = {m: [] for m in methods}
        for i, pair in enumerate(pairs):
            for method in methods:
                if method == "sitk-bspline" and i >= args.bspline_pairs:
                    continue
                name, sim = method.split("-", 1) if method.startswith("io-") else (method, None)
                which = reg
                if method.startswith("model:"):
                    name, which = "model", regs[method.split(":", 1)[1]]
                res = run_method(name, pair, which, args.io_steps, sim)
                met = pair_metrics(pair, res)
                lab = label_overlap(res.warped_labels.array, pair.fixed_label.array, [2, 3],
                                    pair.fixed.spacing)  # fmt: skip
                row = (lab[2]["dice"], lab[3]["dice"], met["folding_pct"], met["cpu_seconds"],
                       met["epe_fg_mm"])  # fmt: skip
                rows[method].append(row)
                print(f"{title} {pair.name} {method} GM {row[0]:.3f} WM {row[1]:.3f} "
                      f"folded {row[2]:.3f} % EPE(brain) {row[4]:.2f} mm CPU {row[3]:.1f} s "
                      f"{res.info.get('instance_start', '')}", flush=True)  # fmt: skip
        print(f"\n{title}: mean [95 % bootstrap CI over pairs]")
        for method, vals in rows.items():
            v = np.array(vals)
            ci = [bootstrap_ci(v[:, j]) if len(v) > 1 else f"{v[0, j]:.3f}" for j in range(5)]
            print(f"| {method} ({len(v)} pairs) | GM {ci[0]} | WM {ci[1]} | folded % {ci[2]} | "
                  f"EPE brain mm {ci[4]} | CPU s {ci[3]} |")  # fmt: skip
    print(f"loadavg {Path('/proc/loadavg').read_text().split()[:3]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--io-steps", type=int, default=60)
    ap.add_argument("--size", type=int, default=48, help="voxels per axis of the pairs")
    ap.add_argument("--spacing", type=float, default=4.0, help="their voxel size (mm)")
    ap.add_argument("--seed", type=int, default=5000, help="first subject seed of the pairs")
    ap.add_argument("--data", help="dataset folder (default: written to a temp folder)")
    ap.add_argument("--model", help="model folder (default: the shipped default model)")
    ap.add_argument("--methods", default="identity,model,model+io,sitk-demons")
    ap.add_argument("--real", action="store_true",
                    help="real brain pairs instead (its own options follow, see above)")  # fmt: skip
    args, rest = ap.parse_known_args()
    torch.set_num_threads(1)
    if args.real:
        real_main(rest)
        return
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    from medimg.phantoms.registration import write_pair_dataset
    from medimg.tasks.register.evaluate import evaluate_dataset

    data = Path(args.data or tempfile.mkdtemp(prefix="bench_register_"))
    if not (data / "dataset.json").is_file():  # held out: the preset trains on seeds 0-199
        write_pair_dataset(data, "mr", n_train=0, n_test=args.pairs, seed=args.seed,
                           shape=(args.size,) * 3, spacing=args.spacing)  # fmt: skip
    t0 = time.perf_counter()
    methods = tuple(args.methods.split(","))
    out = tempfile.mkdtemp(prefix="bench_register_ev_")
    res = evaluate_dataset(data, out, methods=methods, model=args.model,
                           instance_steps=args.io_steps, progress=False)  # fmt: skip
    s = res["summary"]
    vox = args.spacing
    for method, est in s.items():
        epe, fg = est["epe_mm"], est["epe_fg_mm"]
        print(f"{method:12s} dice {est['dice']}  tre_mm {est['tre_mm']}  folding_pct "
              f"{est['folding_pct']}  epe_mm {epe} (= {epe.value / vox:.3f} voxels of {vox:g} mm; "
              f"inside the anatomy {fg.value:.2f} mm = {fg.value / vox:.3f} voxels)  "
              f"cpu_s {est['cpu_seconds']}  wall_s {est['seconds']}")  # fmt: skip
    for learned in [m for m in ("model", "model+io") if m in s and "sitk-demons" in s]:
        ratio = s["sitk-demons"]["cpu_seconds"].value / s[learned]["cpu_seconds"].value
        print(
            f"CPU time ratio sitk-demons / {learned}: {ratio:.2f}x; "
            f"Dice {s[learned]['dice'].value:.3f} vs {s['sitk-demons']['dice'].value:.3f}"
        )
    print(
        f"total {time.perf_counter() - t0:.0f} s; loadavg {Path('/proc/loadavg').read_text().split()[:3]}"
    )


if __name__ == "__main__":
    main()
