"""``medimg recon ct simulate|reconstruct|train|predict|evaluate``: the low-dose CT verbs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from medimg.tasks.cli_helpers import (
    ListAction,
    add_backend,
    add_device,
    add_run_flags,
    add_threads,
    add_verb,
    default_report_dir,
    finite_float,
    fraction,
    non_negative_int,
    positive_float,
    positive_int,
    set_threads,
)

__all__ = ["add_verbs"]


def _sim_config(args: argparse.Namespace, dose: float = 1.0):
    from medimg.tasks.reconstruct.ct.data import SimConfig

    return SimConfig(image_size=args.size, pixel_mm=args.pixel_mm, n_views=args.views, i0=args.i0,
                     dose_fraction=dose, filter_name=args.filter)  # fmt: skip


def _simulate(args: argparse.Namespace) -> int:
    from medimg.tasks.reconstruct.ct.data import check_scan_size, write_from_image, write_pairs

    if args.from_image:  # the user's own CT: its grid and pixel size, --size/--pixel-mm unused
        out = write_from_image(args.out, args.from_image, n_views=args.views,
                               filter_name=args.filter, i0=args.i0, full_noise_hu=args.noise_hu,
                               doses=tuple(args.doses), slices=args.slices, seed=args.seed,
                               fmt=args.format, sinograms=not args.no_sinograms,
                               overwrite=args.overwrite)  # fmt: skip
        print(f"wrote full dose + {', '.join(f'{d:.0%}' for d in args.doses)} scans of "
              f"{args.from_image} to {out}")  # fmt: skip
        return 0
    cfg = _sim_config(args, args.doses[0])
    check_scan_size(cfg)
    seeds = range(args.seed, args.seed + args.cases)
    out = write_pairs(args.out, seeds, cfg, doses=tuple(args.doses), fmt=args.format,
                      sinograms=not args.no_sinograms, overwrite=args.overwrite)  # fmt: skip
    doses = ", ".join(f"{d:.0%}" for d in args.doses)
    print(f"wrote {args.cases} cases (full dose + {doses}, {args.format}) to {out}")
    return 0


def _read_sinogram(src: Path, counts: bool, i0: float):
    """The ``(views, detectors)`` sinogram of a ``.npy`` file, checked before it is loaded."""
    import numpy as np
    import torch

    from medimg.errors import InputError
    from medimg.io.inputs import check_allocation, check_real, check_regular_file
    from medimg.physics.ct_dose import counts_to_line_integrals

    check_regular_file(src)
    try:  # memory-mapped: the header's shape is checked before anything is read
        raw = np.load(src, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read a .npy sinogram ({exc})", src) from None
    if not isinstance(raw, np.ndarray):
        raise InputError("holds several arrays (.npz); give one .npy sinogram", src)
    check_real(raw, src, what="CT reconstruction")
    if raw.dtype.kind not in "biuf":
        raise InputError(f"holds {raw.dtype} values, not numbers; give a numeric sinogram", src)
    shape = tuple(int(s) for s in raw.shape)
    if len(shape) < 2 or any(s != 1 for s in shape[:-2]):
        raise InputError(
            f"sinogram shape {shape} is not (views, detectors); give one 2D sinogram", src
        )
    check_allocation(shape, np.float32, what="the sinogram", path=src, copies=2)
    arr = np.array(raw, dtype=np.float32).reshape(shape[-2:])  # a copy, not the map
    if not np.isfinite(arr).all():
        raise InputError("the sinogram holds NaN or Inf values; fix or drop those views", src)
    sino = torch.from_numpy(arr)
    return counts_to_line_integrals(sino, i0) if counts else sino


def _reconstruct(args: argparse.Namespace) -> int:
    import dataclasses

    from medimg.engine import resolve_device
    from medimg.errors import InputError
    from medimg.io.api import save

    set_threads(args.threads)
    from medimg.physics.ct import CTProjector
    from medimg.physics.ct_dose import MU_WATER, mu_to_hu
    from medimg.physics.ct_fbp import fbp
    from medimg.tasks.reconstruct.ct.baselines import tv_reconstruct_hu
    from medimg.tasks.reconstruct.ct.data import (
        axial_affine,
        check_scan_size,
        geometry,
        slice_image,
    )
    from medimg.tasks.reconstruct.outputs import check_image_outputs

    src = Path(args.sinogram)
    check_image_outputs([args.output], inputs=[src], overwrite=args.overwrite)
    cfg = _sim_config(args)
    check_scan_size(cfg)
    sino = _read_sinogram(src, args.counts, args.i0)
    g = geometry(cfg)
    n_det = args.detectors or int(g.n_det)  # type: ignore[arg-type]
    if tuple(sino.shape[-2:]) != (args.views, n_det):
        raise InputError(
            f"sinogram shape {tuple(sino.shape)} does not match the geometry "
            f"(views, detectors) = {(args.views, n_det)} of --size {args.size} --views "
            f"{args.views}; pass the scan's --size/--views (and --detectors for another "
            "detector count, e.g. --size for scikit-image's radon(circle=True))", src,
        )  # fmt: skip
    center = n_det // 2 if args.center is None else args.center  # scikit-image's convention
    if not 0 <= center <= n_det - 1:
        raise InputError(f"--center {center} is off the detector (0 to {n_det - 1})", src)
    n, mu_water = args.size, args.mu_water or MU_WATER
    axis = n // 2 if args.grid == "iradon" else (n - 1) / 2  # image pixel the axis crosses
    g = dataclasses.replace(g, n_det=n_det, det_center=float(center), iso_center=(axis, axis))
    sino = sino.to(resolve_device(args.device))  # the operators follow their input's device
    if args.method == "fbp":
        up = 1 if args.interpolation == "linear" else None
        hu = mu_to_hu(fbp(sino, g, args.filter, upsample=up), mu_water)
    else:
        op = CTProjector(g).to(sino.device)
        hu = tv_reconstruct_hu(sino, op, i0=args.i0, lam=args.tv_lam, mu_water=mu_water)
    affine = axial_affine(n, args.pixel_mm)
    affine[:2, 3] = axis * args.pixel_mm  # world origin on the rotation axis
    image = slice_image(hu.reshape(n, n).cpu().numpy(), affine)
    out = save(image, args.output, overwrite=args.overwrite)
    print(f"wrote {out} ({args.method}, HU)")
    return 0


def _train(args: argparse.Namespace) -> int:
    import dataclasses

    from medimg.engine import from_yaml
    from medimg.tasks.reconstruct.ct.train import (
        CTTrainConfig,
        export_model,
        preset_config,
        train_ct,
    )

    set_threads(args.threads)
    cfg = (
        from_yaml(CTTrainConfig, args.config)
        if args.config
        else preset_config(args.model, args.preset)
    )
    changes = {"progress": not args.quiet}
    if args.max_steps is not None:
        changes["max_steps"] = args.max_steps
    if args.device is not None:
        changes["device"] = args.device
    cfg.train = dataclasses.replace(cfg.train, **changes)
    if args.init is not None:
        cfg.init = args.init
    out = args.out or f"runs/recon/ct/{cfg.model}-{args.preset}"
    res = train_ct(cfg, out, resume=args.resume, overwrite=args.overwrite)
    print(f"trained {cfg.model} to step {res.last_step}; best validation PSNR {res.best_metric} dB "
          f"(soft-tissue window, reference: {cfg.target}) at step {res.best_step}; "
          f"model folder {res.run_dir}")  # fmt: skip
    if args.export:
        dest = export_model(res.run_dir, args.export, overwrite=args.overwrite)
        print(f"exported the model to {dest}")
    return 0


def _adapt(args: argparse.Namespace) -> int:
    import dataclasses

    from medimg.tasks.reconstruct.ct.adapt import AdaptConfig, adapt

    set_threads(args.threads)
    base = AdaptConfig()
    train = dataclasses.replace(base.train, progress=not args.quiet, max_steps=args.max_steps,
                                lr=args.lr, device=args.device)  # fmt: skip
    cfg = AdaptConfig(init=args.init, method=args.method, splits=args.splits, cell=args.cell,
                      gamma=args.gamma, patch=args.patch, dose=args.dose, train=train)  # fmt: skip
    res, data = adapt(args.data, args.out, cfg, resume=args.resume, overwrite=args.overwrite)
    name = {"n2i": "Noise2Inverse", "n2n": "Neighbor2Neighbor"}[data.method]
    print(f"adapted {args.init} by {name} on {len(data.sources)} low-dose scan(s) to step "
          f"{res.last_step}; model folder {args.out} (recon ct predict --model {args.out})")  # fmt: skip
    return 0


def _predict(args: argparse.Namespace) -> int:
    from medimg.tasks.reconstruct.ct.predict import predict_path

    set_threads(args.threads)
    out = predict_path(args.input, args.output, model=args.model, device=args.device,
                       overwrite=args.overwrite, assume_hu=args.assume_hu,
                       backend=args.backend)  # fmt: skip
    print(f"wrote {out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from medimg.tasks.reconstruct.ct.evaluate import evaluate_folder

    set_threads(args.threads)
    out = args.out or default_report_dir("recon-ct", args.data)
    res = evaluate_folder(args.data, out, models=args.models or (), dose=args.dose,
                          window=args.window, iterative=not args.no_iterative,
                          device=args.device, max_cases=args.max_cases,
                          overwrite=args.overwrite)  # fmt: skip
    print((Path(out) / "summary.md").read_text(), end="")
    print(f"wrote {out}/metrics.csv, summary.md, panel.png ({res['window']})")
    return 0


def _add_scanner(p: argparse.ArgumentParser, i0_help: str | None = None) -> None:
    p.add_argument(
        "--size", type=positive_int, default=128, help="image size in pixels (default 128)"
    )
    p.add_argument(
        "--pixel-mm", type=positive_float, default=3.0, help="pixel size in mm (default 3)"
    )
    p.add_argument(
        "--views", type=positive_int, default=192, help="parallel-beam views over 180 degrees"
    )
    p.add_argument("--i0", type=positive_float, default=1e5,
                   help=i0_help or "incident photons per detector element and view at full dose "
                   "(the unattenuated flux; low-dose scans get --doses times it; default 1e5)")  # fmt: skip
    p.add_argument(
        "--filter", default="hann", help="FBP filter: ram-lak, shepp-logan, cosine, hann"
    )


def add_verbs(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Add the low-dose CT verbs to ``medimg recon ct``."""
    from medimg.metrics.ct import WINDOWS

    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    p = add_verb(sub, "simulate", "simulate body phantoms as full-dose / low-dose FBP pairs",
              "medimg recon ct simulate data/ldct --cases 8 --doses 0.25 0.1\n"
              "medimg recon ct simulate data/ldct_dicom --format dicom --cases 2\n"
              "medimg recon ct simulate mine --from scan/ --views 720 --filter ram-lak --doses 0.25 0.1")  # fmt: skip
    p.add_argument("out", help="output folder (case_<seed>/ + cases.json)")
    p.add_argument("--from", dest="from_image", metavar="IMAGE",
                   help="your own CT (image file or DICOM series, HU) as the anatomy instead of "
                        "phantoms: scanned on its own grid and pixel size (--size/--pixel-mm "
                        "unused)")  # fmt: skip
    p.add_argument("--slices", action=ListAction, item_type=non_negative_int,
                   help="--from: axial slice indices to scan (default: the middle one)")  # fmt: skip
    p.add_argument("--noise-hu", type=positive_float,
                   help="--from: choose the flux so the full-dose scan has this soft-tissue "
                        "noise (HU) instead of using --i0")  # fmt: skip
    p.add_argument("--cases", type=positive_int, default=8, help="phantom cases (default: 8)")
    p.add_argument("--seed", type=non_negative_int, default=10000,
                   help="first phantom seed (default 10000: held out from training)")  # fmt: skip
    p.add_argument("--doses", action=ListAction, item_type=fraction, default=[0.25],
                   help="dose fractions of the low-dose scans (default 0.25)")  # fmt: skip
    p.add_argument("--format", choices=("nifti", "dicom"), default="nifti",
                   help="image files: NIfTI (default) or DICOM series")  # fmt: skip
    p.add_argument("--no-sinograms", action="store_true", help="skip the .npy sinograms")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier set in OUT")
    _add_scanner(p)
    p.set_defaults(func=_simulate)

    p = add_verb(sub, "reconstruct", "reconstruct a parallel-beam sinogram (.npy) by FBP or PWLS-TV",
              "medimg recon ct reconstruct data/ldct/case_10000/sino_low_025.npy low.nii.gz\n"
              "medimg recon ct reconstruct counts.npy tv.nii.gz --counts --i0 2.5e4 --method pwls-tv")  # fmt: skip
    p.add_argument("sinogram", help="(views, detectors) line integrals, or counts with --counts")
    p.add_argument("output", help="output .nii.gz or DICOM folder")
    p.add_argument("--method", choices=("fbp", "pwls-tv"), default="fbp",
                   help="fbp: filtered back-projection (default); pwls-tv: penalised weighted "
                        "least squares with a total-variation prior (slower, less noise)")  # fmt: skip
    p.add_argument("--counts", action="store_true", help="the file holds photon counts")
    p.add_argument("--tv-lam", type=positive_float, default=5.0, help="PWLS-TV prior weight")
    p.add_argument("--detectors", type=positive_int,
                   help="detector elements per view in the file (default: the count simulate "
                        "uses, covering the image diagonal; scikit-image's radon(circle=True) "
                        "gives --size)")  # fmt: skip
    p.add_argument("--center", type=finite_float, metavar="ELEMENT",
                   help="detector element (0-based, may be fractional) the rotation axis "
                        "projects to (default: detectors // 2, scikit-image's convention)")  # fmt: skip
    p.add_argument("--grid", choices=("centre", "iradon"), default="centre",
                   help="image pixel the rotation axis crosses: 'centre' (size - 1) / 2, as "
                        "simulate lays out its images, or 'iradon' size // 2, as scikit-image's "
                        "iradon (they differ by half a pixel for even sizes)")  # fmt: skip
    p.add_argument("--interpolation", choices=("sinc", "linear"), default="sinc",
                   help="FBP: 'sinc' interpolates the filtered projections as band-limited "
                        "signals (Fourier back-projection: fastest, lowest error); 'linear' as "
                        "iradon (same image to >= 60 dB PSNR with --grid iradon; ~10x slower "
                        "at 512^2)")  # fmt: skip
    add_device(p)
    add_threads(p)
    p.add_argument("--mu-water", type=positive_float,
                   help="water's attenuation (1/mm) at the scan's effective energy, for "
                        "HU = 1000 (mu - mu_water) / mu_water (default 0.0193, 70 keV)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    _add_scanner(p, i0_help="incident photons per detector element and view of THIS scan (its "
                 "unattenuated, air-scan flux; for a 25%% dose scan simulated at 1e5 give "
                 "2.5e4): converts --counts to line integrals and weights PWLS-TV (default 1e5)")  # fmt: skip
    p.set_defaults(func=_reconstruct)

    p = add_verb(sub, "train", "train a denoiser (redcnn, wgan) or learned primal-dual (lpd)",
              "medimg recon ct train --preset base --arch redcnn\n"
              "medimg recon ct train --preset default --arch redcnn\n"
              "medimg recon ct train --arch wgan --init runs/recon/ct/redcnn-default --resume\n"
              "medimg recon ct train --preset default --export src/medimg/tasks/reconstruct/ct/default/redcnn")  # fmt: skip
    p.add_argument("--arch", "--model", dest="model", choices=("redcnn", "wgan", "lpd"),
                   default="redcnn",
                   help="architecture: redcnn, wgan (RED-CNN generator + critic) or lpd "
                        "(learned primal-dual) (default: redcnn; --model: the older spelling)")  # fmt: skip
    p.add_argument(
        "--preset",
        choices=("default", "base", "tiny"),
        default="default",
        help="default: the shipped recipe (redcnn: fine-tunes a 'base' run in "
        "runs/recon/ct/redcnn-base; train that first)",
    )
    p.add_argument(
        "--config", help="CTTrainConfig YAML (e.g. a run's config.yaml) instead of a preset"
    )
    add_run_flags(p, out="run folder (default runs/recon/ct/<model>-<preset>)",
                  init="RED-CNN model folder whose weights start the net (wgan: the generator; "
                       "'default': the shipped one)",
                  export="the config")  # fmt: skip
    p.set_defaults(func=_train)

    p = add_verb(sub, "adapt", "fine-tune a denoiser on low-dose data alone (Noise2Inverse / N2N)",
              "medimg recon ct adapt data/ldct --out models/ct_adapted\n"
              "medimg recon ct adapt scans/low_dose/ --out models/ct_n2n --method n2n --max-steps 500\n"
              "medimg recon ct predict low.nii.gz denoised.nii.gz --model models/ct_adapted")  # fmt: skip
    p.add_argument("data", help="'recon ct simulate'-style folder with low-dose sinograms "
                   "(Noise2Inverse), or low-dose CT images in HU: file, DICOM series, folder")  # fmt: skip
    p.add_argument("--out", required=True, help="model folder to write (predict --model OUT)")
    p.add_argument("--init", default="default",
                   help="model folder to start from (default: the shipped RED-CNN)")  # fmt: skip
    p.add_argument("--method", choices=("auto", "n2i", "n2n"), default="auto",
                   help="auto: n2i when DATA holds sinograms, else n2n")  # fmt: skip
    p.add_argument("--splits", type=positive_int, default=4, help="n2i view subsets (default 4)")
    p.add_argument("--cell", type=positive_int, default=2,
                   help="n2n sub-sampling cell, even (default 2; pairs are cell/2 pixels apart)")  # fmt: skip
    p.add_argument("--gamma", type=positive_float, default=2.0, help="n2n regulariser weight")
    p.add_argument("--patch", type=positive_int, default=64, help="training crop in pixels")
    p.add_argument("--dose", type=fraction, help="use only this simulated dose (default: all)")
    p.add_argument("--max-steps", type=positive_int, default=300,
                   help="adaptation steps (default: 300)")  # fmt: skip
    p.add_argument("--lr", type=positive_float, default=3e-4, help="learning rate (default: 3e-4)")
    add_device(p, default="auto")
    p.add_argument(
        "--resume", action="store_true", help="continue the adaptation in --out from last/"
    )
    p.add_argument("--overwrite", action="store_true", help="restart over an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads(p)
    p.set_defaults(func=_adapt)

    p = add_verb(sub, "predict", "denoise a low-dose CT image (NIfTI/MHA or DICOM series, HU)",
              "medimg recon ct predict low.nii.gz denoised.nii.gz\n"
              "medimg recon ct predict scans/low_dose/ denoised_dicom/ --model wgan")  # fmt: skip
    p.add_argument("input", help="image file or DICOM folder, in HU")
    p.add_argument("output", help="output file (.nii.gz ...) or folder for a DICOM series")
    p.add_argument("--model", help="redcnn (default), wgan, a model/run folder, or an exported "
                   ".onnx (with --backend onnxruntime)")  # fmt: skip
    add_device(p)
    add_backend(p)
    p.add_argument("--assume-hu", action="store_true",
                   help="accept an image without negative values as HU")  # fmt: skip
    add_threads(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    p.set_defaults(func=_predict)

    p = add_verb(sub, "evaluate", "score FBP, PWLS-TV and networks on a simulated set (table + PNG)",
              "medimg recon ct evaluate data/ldct --out reports/ldct\n"
              "medimg recon ct evaluate data/ldct --models redcnn wgan runs/recon/ct/lpd-default")  # fmt: skip
    p.add_argument("data", help="folder written by 'medimg recon ct simulate'")
    p.add_argument("--out", help="report folder (default: runs/recon-ct/evaluation/<DATA name>)")
    p.add_argument(
        "--models", action=ListAction, help="redcnn, wgan or model folders (default: shipped)"
    )
    p.add_argument("--dose", type=fraction, help="which simulated dose (default: the first)")
    p.add_argument("--window", choices=sorted(WINDOWS), default="soft_tissue",
                   help="display window the metrics and panel use (default: soft_tissue)")  # fmt: skip
    p.add_argument("--no-iterative", action="store_true", help="skip PWLS-TV (slowest column)")
    p.add_argument("--max-cases", type=positive_int, help="score only the first N cases")
    add_device(p)
    add_threads(p)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report")
    p.set_defaults(func=_evaluate)
