"""``medimg superres train|predict|evaluate``: thick slices to thin (through-plane SR)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from medimg.tasks.cli_helpers import (
    ListAction,
    add_overwrite,
    add_run_flags,
    add_threads,
    add_verb,
    default_report_dir,
    non_negative_int,
    positive_int,
    set_threads,
)

__all__ = ["add_verbs"]

METHODS = ("cubic", "sinc", "supervised", "smore")
PROFILES = ("gaussian", "boxcar")
DEFAULT_SOURCE = "usr/share/mricron/templates/ch2.nii.gz"  # Colin27 T1, 1 mm


def _factor(text: str) -> int:
    value = positive_int(text)
    if not 2 <= value <= 8:
        raise argparse.ArgumentTypeError(f"{value} is not in 2..8; give e.g. 4 (4 mm -> 1 mm)")
    return value


def _axis(text: str) -> int:
    value = non_negative_int(text)
    if value > 2:
        raise argparse.ArgumentTypeError(f"{value} is not 0, 1 or 2 (the volume's voxel axes)")
    return value


def _init(name: str | None):
    """``--smore-init``: ``default`` names the shipped model."""
    if name == "default":
        from medimg.tasks.superres.predict import DEFAULT_MODEL

        return DEFAULT_MODEL
    return name


def _train(args: argparse.Namespace) -> int:
    import dataclasses

    import numpy as np

    from medimg.errors import InputError
    from medimg.io.api import load
    from medimg.tasks.superres.train import SRConfig, export_model, train_supervised

    set_threads(args.threads)
    if not args.volumes and args.preset != "default":
        raise InputError("name isotropic training volumes, or use --preset default (Colin27)")
    cfg = SRConfig(factor=args.factor, profile=args.profile)
    if args.volumes:
        paths = list(args.volumes)
    else:
        from medimg.datasets.real_sources import real_file

        paths = [str(real_file("mricron-data", "ch2.nii.gz"))]
    # where the volumes came from, without this machine's cache folder
    cfg.sources = tuple(args.volumes) if args.volumes else (f"mricron-data:{DEFAULT_SOURCE}",)
    changes: dict = {"progress": not args.quiet}
    if args.max_steps is not None:
        changes["max_steps"] = args.max_steps
        changes["warmup_steps"] = min(cfg.train.warmup_steps, args.max_steps // 10)
    if args.device is not None:
        changes["device"] = args.device
    cfg.train = dataclasses.replace(cfg.train, **changes)
    volumes = []
    for p in paths:
        image = load(p)
        if image.spatial_ndim != 3:
            raise InputError("training needs 3D volumes", p)
        volumes.append(np.asarray(image.array[0], np.float32))
    out = args.out or f"runs/superres/supervised-{args.factor}x"
    res = train_supervised(cfg, volumes, out, resume=args.resume, overwrite=args.overwrite)
    print(f"trained to step {res.last_step}; best validation gain over cubic "
          f"{res.best_metric:.2f} dB at step {res.best_step}; run folder {res.run_dir}")  # fmt: skip
    if args.export:
        print(
            f"exported the model to {export_model(res.run_dir, args.export, overwrite=args.overwrite)}"
        )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from medimg.tasks.superres.predict import predict_file

    set_threads(args.threads)
    out = predict_file(args.input, args.output, factor=args.factor, method=args.method,
                       axis=args.axis, model=args.model, smore_steps=args.smore_steps,
                       smore_init=_init(args.smore_init),
                       overwrite=args.overwrite)  # fmt: skip
    print(f"wrote {out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medimg.tasks.superres.evaluate import evaluate_file

    set_threads(args.threads)
    out = args.out or default_report_dir("superres", args.reference)
    evaluate_file(args.reference, out, factor=args.factor, axis=args.axis, methods=args.methods,
                  profile=args.profile, model=args.model, smore_steps=args.smore_steps,
                  smore_init=_init(args.smore_init),
                  overwrite=args.overwrite)  # fmt: skip
    print((Path(out) / "summary.md").read_text(), end="")
    print(f"wrote {out}/metrics.csv, summary.md, panel.png")
    return 0


def add_verbs(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Add the super-resolution verbs to ``medimg superres``."""
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")

    p = add_verb(sub, "predict", "thin slices from a thick-slice volume (NIfTI out, same extent)",
                 "medimg superres predict thick_t1.nii.gz thin_t1.nii.gz\n"
                 "medimg superres predict dicom_series/ thin.nii.gz --method smore\n"
                 "medimg superres predict ct.nii.gz ct_1mm.nii.gz --method cubic --factor 3")  # fmt: skip
    p.add_argument("input", help="3D volume: NIfTI, MHA/NRRD or a DICOM series folder")
    p.add_argument("output", help="restored volume to write (.nii.gz, .mha or .nrrd)")
    p.add_argument("--method", choices=METHODS, default="supervised",
                   help="supervised: the shipped 4x network (default); smore: self-supervised on "
                        "the input itself (minutes); cubic; sinc (Fourier zero-padding)")  # fmt: skip
    p.add_argument(
        "--factor",
        type=_factor,
        help="slices per thick slice, 2..8 (default: thick / in-plane spacing)",
    )
    p.add_argument(
        "--axis", type=_axis, help="voxel axis of the thick slices (default: the largest spacing)"
    )
    p.add_argument("--model", help="--method supervised: model folder (default: the shipped one)")
    p.add_argument(
        "--smore-steps",
        type=positive_int,
        default=200,
        help="--method smore: training steps (default 200, about 3 CPU minutes)",
    )
    p.add_argument("--smore-init", metavar="MODEL",
                   help="--method smore: start from this model folder ('default': the shipped "
                        "one) instead of the identity")  # fmt: skip
    add_threads(p)
    add_overwrite(p, "an existing OUTPUT")
    p.set_defaults(func=_predict)

    p = add_verb(sub, "evaluate",
                 "degrade a thin-slice reference, restore it, score PSNR/SSIM (whole, mask)",
                 "medimg superres evaluate t1_1mm.nii.gz --factor 4 --axis 2\n"
                 "medimg superres evaluate t1_1mm.nii.gz --methods cubic sinc supervised smore")  # fmt: skip
    p.add_argument("reference", help="thin-slice 3D volume (NIfTI, MHA/NRRD, DICOM series)")
    p.add_argument("--out", help="report folder (default runs/superres/evaluation/<name>)")
    p.add_argument("--factor", type=_factor, default=4, help="thick / thin slices (default 4)")
    p.add_argument("--axis", type=_axis, default=2, help="slice axis to degrade (default 2)")
    p.add_argument(
        "--profile",
        choices=PROFILES,
        default="gaussian",
        help="slice profile, FWHM = slice thickness (default gaussian)",
    )
    p.add_argument("--methods", action=ListAction, choices=METHODS,
                   default=["cubic", "sinc", "supervised"],
                   help="methods to compare (default cubic sinc supervised)")  # fmt: skip
    p.add_argument("--model", help="supervised: model folder (default: the shipped one)")
    p.add_argument(
        "--smore-steps", type=positive_int, default=200, help="smore: training steps (default 200)"
    )
    p.add_argument(
        "--smore-init",
        metavar="MODEL",
        help="smore: start from this model folder ('default': the shipped one)",
    )
    add_threads(p)
    add_overwrite(p, "an earlier report")
    p.set_defaults(func=_evaluate)

    p = add_verb(sub, "train", "train the supervised network on isotropic volumes",
                 "medimg superres train --preset default --threads 1\n"
                 "medimg superres train t1_a.nii.gz t1_b.nii.gz --factor 3 --out runs/sr3x\n"
                 "medimg superres train --preset default --export src/medimg/tasks/superres/default")  # fmt: skip
    p.add_argument("volumes", nargs="*", help="isotropic 3D training volumes (thin slices)")
    p.add_argument(
        "--preset",
        choices=("default",),
        help="default: Colin27's 1 mm T1 (mricron-data), as the shipped model",
    )
    p.add_argument("--factor", type=_factor, default=4, help="thick / thin slices (default 4)")
    p.add_argument("--profile", choices=PROFILES, default="gaussian", help="slice profile")
    add_run_flags(p, out="run folder (default runs/superres/supervised-<factor>x)",
                  export="config.yaml")  # fmt: skip
    p.set_defaults(func=_train)
