"""``medimg recon mri simulate|train|predict|adapt|calibrate|evaluate``: the MRI verbs."""

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
    probability,
    set_threads,
)

__all__ = ["add_verbs"]

_ALL = ("zero_filled", "cg_sense", "cs_wavelet", "cs_tv")
PRESETS = ("default", "finetune-4x", "realistic", "tiny")  # train.PRESETS, no torch import


def _simulate(args: argparse.Namespace) -> int:
    from medimg.tasks.reconstruct.mri.simulate import (
        SimulateSpec,
        write_realistic_set,
        write_simulated_set,
    )

    if args.realistic or args.from_real:  # every factor drawn per slice (see data.RealisticSlices)
        files = write_realistic_set(args.out, n=args.volumes, seed=args.seed,
                                    from_real=args.from_real, overwrite=args.overwrite,
                                    progress=not args.quiet)  # fmt: skip
        src = "real training-side brains and phantoms" if args.from_real else "phantoms"
        print(f"wrote {len(files)} one-slice volume(s) drawn from {src} (random matrix, coils, "
              f"contrast, noise, mask) to {args.out}")  # fmt: skip
        return 0
    spec = SimulateSpec(kind=args.kind, contrast=args.contrast, shape=(args.size, args.size),
                        slices=args.slices, coils=args.coils, mask=args.mask,
                        acceleration=args.acceleration, center_fraction=args.center_fraction,
                        snr_db=None if args.snr_db <= 0 else args.snr_db, full=args.full)  # fmt: skip
    files = write_simulated_set(args.out, spec, n=args.volumes, seed=args.seed,
                                overwrite=args.overwrite, progress=not args.quiet)  # fmt: skip
    what = "fully sampled" if args.full else f"{args.mask} {args.acceleration:g}x"
    print(f"wrote {len(files)} fastMRI-layout volume(s) ({what}, {args.coils} coils) to {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    import dataclasses

    from medimg.engine import from_yaml
    from medimg.tasks.reconstruct.mri.train import (
        DEFAULT_DIR,
        MRITrainConfig,
        export_model,
        preset,
        train_mri,
    )

    set_threads(args.threads)
    if args.distill_from or args.model == "small":
        return _distill(args)
    # fastMRI files train the VarNet (the MoDL's recipe simulates realistic slices)
    args.preset = args.preset or ("phantom-varnet" if args.h5 else "default")
    cfg = from_yaml(MRITrainConfig, args.config) if args.config else preset(args.preset, args.model)
    if args.h5:
        cfg.h5_files = [str(p) for p in _h5_files(args.h5)]
    if args.max_steps is not None:
        cfg.train = dataclasses.replace(cfg.train, max_steps=args.max_steps,
                                        val_every=min(cfg.train.val_every, args.max_steps))  # fmt: skip
    cfg.train = dataclasses.replace(cfg.train, progress=not args.quiet,
                                    device=args.device or cfg.train.device)  # fmt: skip
    out = args.out or f"runs/recon_mri/{args.preset}_{cfg.model.name}"
    res = train_mri(cfg, out, resume=args.resume, overwrite=args.overwrite, init=args.init,
                    allow_config_change=args.allow_config_change)  # fmt: skip
    print(f"trained to step {res.last_step}; best validation PSNR {res.best_metric:.2f} dB at "
          f"step {res.best_step}; run folder {res.run_dir}")  # fmt: skip
    if args.export:
        dest = DEFAULT_DIR if args.export == "default" else args.export
        done = export_model(res.run_dir, dest, overwrite=args.overwrite or args.export == "default")
        print(f"exported the model to {done}")
    return 0


def _distill(args: argparse.Namespace) -> int:
    """``train --distill-from MODEL [--arch small]``: a small student of MODEL."""
    from medimg.errors import InputError
    from medimg.tasks.reconstruct.mri.distill import distill_mri

    if not args.distill_from:
        raise InputError("--arch small trains a student of a model: add --distill-from MODEL "
                         "('default' for the shipped one)")  # fmt: skip
    clash = [f for f, v in (("--preset", args.preset), ("--config", args.config),
                            ("--h5", args.h5), ("--init", args.init)) if v]  # fmt: skip
    if clash:
        raise InputError(f"--distill-from trains on the teacher's data and recipe; drop "
                         f"{', '.join(clash)}")  # fmt: skip
    out = args.out or f"runs/recon_mri/student_{Path(str(args.distill_from)).name}"
    res = distill_mri(args.distill_from, out, alpha=args.alpha, max_steps=args.max_steps,
                      device=args.device, progress=not args.quiet, resume=args.resume,
                      overwrite=args.overwrite)  # fmt: skip
    print(f"trained the student to step {res.last_step}; best validation PSNR "
          f"{res.best_metric:.2f} dB at step {res.best_step}; run folder {res.run_dir}")  # fmt: skip
    if args.export:
        from medimg.tasks.reconstruct.mri.train import export_model

        if args.export == "default":
            raise InputError("--export default would replace the shipped model with a student; "
                             "give a folder")  # fmt: skip
        print(f"exported the model to {export_model(res.run_dir, args.export, args.overwrite)}")
    return 0


def _h5_files(paths: Sequence[str]) -> list[Path]:
    from medimg.errors import InputError

    out: list[Path] = []
    for p in map(Path, paths):
        out += sorted(p.glob("*.h5")) if p.is_dir() else [p]
    if not out:
        raise InputError(f"no .h5 files in {', '.join(paths)}")
    return out


def _predict(args: argparse.Namespace) -> int:
    from medimg.tasks.reconstruct.mri.predict import predict_path

    set_threads(args.threads)
    formats = ("nifti", "dicom") if args.format == "both" else (args.format,)
    written = predict_path(args.input, args.output, method=args.method, model=args.model,
                           formats=formats, device=args.device, overwrite=args.overwrite,
                           progress=not args.quiet, acceleration=args.acceleration,
                           mask_kind=args.mask, center_fraction=args.center_fraction,
                           coils=args.coils, seed=args.seed, fallback=args.fallback,
                           safeguard=not args.no_safeguard,
                           backend=getattr(args, "backend", "torch"))  # fmt: skip
    for p in written:
        print(f"wrote {p}")
    return 0


def _adapt(args: argparse.Namespace) -> int:
    import dataclasses

    from medimg.tasks.reconstruct.mri.adapt import AdaptConfig, adapt, adapt_lr

    set_threads(args.threads)
    base = AdaptConfig()
    train = dataclasses.replace(base.train, progress=not args.quiet,
                                max_steps=args.max_steps or base.train.max_steps,
                                lr=args.lr or adapt_lr(args.init), device=args.device)  # fmt: skip
    cfg = AdaptConfig(init=args.init, rho=args.rho, train=train)
    res, n = adapt(args.data, args.out, cfg, resume=args.resume, overwrite=args.overwrite,
                   allow_config_change=args.allow_config_change)  # fmt: skip
    print(f"adapted {args.init} by SSDU on {n} undersampled slice(s) to step {res.last_step}; "
          f"model folder {args.out} (recon mri predict --model {args.out})")  # fmt: skip
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from medimg.tasks.reconstruct.mri.safeguard import calibrate

    set_threads(args.threads)
    th, _ = calibrate(args.model, slices=args.slices, accelerations=args.accelerations)
    for accel, t in th.thresholds.items():
        print(f"{accel}x: data-consistency residual <= {t['dc']:.4f}, "
              f"difference from CG-SENSE <= {t['classical']:.4f}")  # fmt: skip
    print(f"wrote {args.model or 'the shipped model'}/safeguard.json")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from medimg.tasks.reconstruct.mri.evaluate import evaluate_files
    from medimg.tasks.reconstruct.mri.train import default_label

    set_threads(args.threads)
    models: dict[str, str | None] = {} if args.no_default else {default_label(): None}
    for m in args.model or []:
        label, _, path = m.rpartition("=")
        models[label or Path(path).name] = path
    out = args.out or default_report_dir("recon_mri", args.data)
    summary = evaluate_files(args.data, out, classical=args.methods, models=models,
                             progress=not args.quiet, overwrite=args.overwrite,
                             targets=args.targets)  # fmt: skip
    for label, est in summary.items():
        print(f"{label:>20}: PSNR {est['psnr']} dB  SSIM {est['ssim']}  NMSE {est['nmse']}")
    print(f"wrote {out}/metrics.csv, summary.md, panel.png")
    return 0


def add_verbs(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Add the MRI verbs to ``medimg recon mri``."""
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    p = add_verb(sub, "simulate", "write phantom volumes as fastMRI-layout HDF5 (undersampled k-space + ground truth)",
              "medimg recon mri simulate data/mri_4x --kind brain --volumes 8 --acceleration 4\n"
              "medimg recon mri simulate data/knee_full --kind knee --full   # fully sampled\n"
              "medimg recon mri simulate data/realistic --from-real --volumes 64   # varied, real brains")  # fmt: skip
    p.add_argument("out", help="output folder for phantom_<seed>.h5 files")
    p.add_argument("--kind", choices=("brain", "knee", "mixed"), default="brain",
                   help="phantom anatomy (default: brain)")  # fmt: skip
    p.add_argument("--contrast", choices=("t1", "t2", "pd"), default="t1",
                   help="phantom contrast (default: t1)")  # fmt: skip
    p.add_argument("--volumes", type=positive_int, default=4, help="phantom volumes (default: 4)")
    p.add_argument("--slices", type=positive_int, default=4, help="slices per volume")
    p.add_argument("--size", type=positive_int, default=128, help="matrix H = W")
    p.add_argument("--coils", type=positive_int, default=8, help="receive coils (default: 8)")
    p.add_argument("--mask", choices=("equispaced", "random"), default="equispaced",
                   help="undersampling line pattern (default: equispaced)")  # fmt: skip
    p.add_argument("--acceleration", type=positive_float, default=4.0,
                   help="undersampling factor (default: 4)")  # fmt: skip
    p.add_argument("--center-fraction", type=fraction, default=0.08, help="ACS fraction")
    p.add_argument("--snr-db", type=finite_float, default=30.0, help="k-space SNR; <= 0: no noise")
    p.add_argument("--full", action="store_true", help="store fully sampled k-space, no mask")
    p.add_argument("--realistic", action="store_true",
                   help="draw each slice's matrix (128-384), coils (4-32), contrast, scalp, "
                        "noise and mask (equispaced/random/Poisson-disc, 4-8x) at random")  # fmt: skip
    p.add_argument("--from-real", action="store_true",
                   help="--realistic with real training-side brain MR (Colin27, pydeface mean "
                        "head, dipy) mixed in; fetched on first use")  # fmt: skip
    p.add_argument(
        "--seed", type=non_negative_int, default=200_000, help="first phantom seed (held out)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier set in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_simulate)

    p = add_verb(sub, "train", "train a VarNet, MoDL or U-Net on realistic slices, phantoms or fastMRI files",
              "medimg recon mri train --preset default --export default   # the shipped MoDL\n"
              "medimg recon mri train --preset phantom-varnet   # the previous default: stage 1, then 2:\n"
              "medimg recon mri train --preset finetune-4x --init runs/recon_mri/phantom-varnet_varnet/best\n"
              "medimg recon mri train --h5 data/knee_full --init phantom-varnet\n"
              "medimg recon mri train --distill-from default --arch small   # a 5x smaller student")  # fmt: skip
    p.add_argument("--preset", choices=PRESETS,
                   help="default (or realistic): the shipped MoDL (real brains + phantoms; "
                        "--arch ignored); phantom-varnet, finetune-4x (its 2nd stage, with "
                        "--init): the previous default, a VarNet on phantoms (default: default; "
                        "with --h5: phantom-varnet)")  # fmt: skip
    p.add_argument("--arch", "--model", dest="model",
                   choices=("varnet", "modl", "unet", "small"), default="varnet",
                   help="architecture of the phantom and tiny presets (default: varnet; "
                        "--model: the older spelling); small: with --distill-from, the "
                        "teacher's network with >= 4x fewer parameters")  # fmt: skip
    p.add_argument("--distill-from", metavar="MODEL",
                   help="train a small student of this model ('default': the shipped one; a "
                        "model/run folder) on its training data, the targets and its outputs")  # fmt: skip
    p.add_argument("--alpha", type=probability, default=0.5,
                   help="with --distill-from: weight of the teacher term (default: 0.5)")  # fmt: skip
    p.add_argument("--config", help="a config.yaml (from a run) instead of a preset")
    p.add_argument(
        "--h5", action=ListAction, help="train on fastMRI .h5 files/folders (varnet only)"
    )
    add_run_flags(p, out="run folder (default runs/recon_mri/<preset>_<model>)",
                  init="fine-tune this model or run folder ('default', 'phantom-varnet': the "
                       "shipped ones)",
                  export="the config ('default': the shipped model's folder)")  # fmt: skip
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume a run with changed settings (e.g. a larger --max-steps)")  # fmt: skip
    p.set_defaults(func=_train)

    p = add_verb(sub, "predict", "reconstruct .h5 k-space, or undersample + reconstruct an image/DICOM series",
              "medimg recon mri predict data/mri_4x/phantom_100000.h5 out/\n"
              "medimg recon mri predict data/mri_4x/ out/ --method cs_wavelet\n"
              "medimg recon mri predict t1_dicom/ out/ --acceleration 4   # retrospective")  # fmt: skip
    p.add_argument("input", help=".h5 file, folder of .h5 files, image file or DICOM folder")
    p.add_argument("output", help="output folder (<name>.nii.gz and <name>_dicom/)")
    p.add_argument("--method", choices=(*_ALL, "net"), default="net",
                   help="net: the trained network (default); the others are classical "
                        "reconstructions")  # fmt: skip
    p.add_argument("--model", help="model/run folder for --method net, or 'phantom-varnet' "
                   "(default: the shipped model)")  # fmt: skip
    p.add_argument("--format", choices=("both", "nifti", "dicom"), default="both",
                   help="what to write per input (default: both NIfTI and a DICOM series)")  # fmt: skip
    p.add_argument("--acceleration", type=positive_float,
                   help="undersample fully sampled input (images: default 4)")  # fmt: skip
    p.add_argument("--mask", choices=("equispaced", "random"), default="equispaced",
                   help="retrospective undersampling pattern (default: equispaced)")  # fmt: skip
    p.add_argument("--center-fraction", type=fraction, default=0.08,
                   help="fully sampled centre (ACS) fraction (default: 0.08)")  # fmt: skip
    p.add_argument("--coils", type=positive_int, default=8, help="simulated coils for image input")
    p.add_argument("--seed", type=non_negative_int, default=0, help="mask seed")
    add_device(p)
    add_threads(p)
    p.add_argument("--fallback", action="store_true",
                   help="slices the safeguard flags get the CG-SENSE image instead")  # fmt: skip
    p.add_argument("--no-safeguard", action="store_true",
                   help="skip the network's safeguard check (and its .json sidecar)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace earlier outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_backend(p)
    p.set_defaults(func=_predict)

    p = add_verb(sub, "adapt", "fine-tune a network on undersampled k-space only (self-supervised, SSDU)",
              "medimg recon mri adapt my_scans/ --out models/my_scanner\n"
              "medimg recon mri adapt my_scans/ --out models/my_scanner --resume --max-steps 400\n"
              "medimg recon mri predict my_scans/ out/ --model models/my_scanner")  # fmt: skip
    p.add_argument("data", help="fastMRI-layout .h5 file or folder (undersampled, with ACS)")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument(
        "--init", default="default", help="model folder to start from (default: shipped)"
    )
    p.add_argument("--rho", type=fraction, default=0.4,
                   help="share of acquired samples outside the ACS held back for the loss")  # fmt: skip
    p.add_argument("--max-steps", type=positive_int, help="default 300 (one slice per step)")
    p.add_argument("--lr", type=positive_float,
                   help="learning rate (default: 3e-5 for a MoDL such as the shipped default, "
                        "3e-4 for a VarNet)")  # fmt: skip
    add_device(p)
    add_threads(p)
    p.add_argument("--resume", action="store_true",
                   help="continue the adaptation in --out from its last/ checkpoint")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="restart over an existing --out")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume with changed settings (e.g. a larger --max-steps)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_adapt)

    p = add_verb(sub, "calibrate", "recompute a model's safeguard thresholds (safeguard.json)",
              "medimg recon mri calibrate models/my_model --accelerations 4 8")  # fmt: skip
    p.add_argument("model", nargs="?", help="model folder (default: the shipped model)")
    p.add_argument(
        "--slices", type=positive_int, default=32, help="held-out phantoms per acceleration"
    )
    p.add_argument("--accelerations", action=ListAction, item_type=positive_float,
                   help="default: the model's training accelerations")  # fmt: skip
    add_threads(p)
    p.set_defaults(func=_calibrate)

    p = add_verb(sub, "evaluate", "NMSE/PSNR/SSIM per method and acceleration with bootstrap 95%% CIs and a PNG panel",
              "medimg recon mri evaluate data/mri_4x\n"
              "medimg recon mri evaluate data/mri_4x --methods zero_filled cs_wavelet cs_tv \\\n"
              "    --model modl=runs/recon_mri/modl")  # fmt: skip
    p.add_argument("data", help="folder of .h5 files with reconstruction_rss (from simulate)")
    p.add_argument("--methods", action=ListAction, choices=_ALL,
                   default=["zero_filled", "cs_wavelet", "cs_tv"],
                   help="classical methods to score (default: zero_filled cs_wavelet cs_tv)")  # fmt: skip
    p.add_argument("--targets", help="folder of reference images <volume>.npy/.nii.gz/... for "
                   "files without reconstruction_rss")  # fmt: skip
    p.add_argument("--model", action="append", help="LABEL=FOLDER of a trained network (repeat)")
    p.add_argument("--no-default", action="store_true", help="leave out the shipped model")
    p.add_argument("--out", help="report folder (default runs/recon_mri/evaluation/<DATA name>)")
    add_threads(p)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_evaluate)
