"""``medimg synthesize simulate|train|predict|evaluate``: MR -> CT and CT -> MR synthesis."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from medimg.tasks.cli_helpers import (
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

DIRECTIONS = ("mr2ct", "ct2mr")


def _add_direction(p: argparse.ArgumentParser) -> None:
    p.add_argument("--direction", choices=DIRECTIONS, default="mr2ct",
                   help="mr2ct: MR in, synthetic CT (HU) out (default); ct2mr: CT in, T1-like "
                        "MR out")  # fmt: skip


def _simulate(args: argparse.Namespace) -> int:
    from medimg.tasks.synthesize.simulate import write_heads

    set_threads(args.threads)
    out = write_heads(args.out, args.heads, anatomy=args.anatomy, seed=args.seed,
                      contrast=args.contrast, overwrite=args.overwrite)  # fmt: skip
    print(f"wrote {out}: mr.nii.gz, ct.nii.gz (HU), body.nii.gz, labels.nii.gz "
          f"({args.heads} held-out heads as slices, 2 mm)")  # fmt: skip
    return 0


def _train(args: argparse.Namespace) -> int:
    import dataclasses

    from medimg.tasks.synthesize.train import SynthConfig, export_model, train_synth

    set_threads(args.threads)
    cfg = SynthConfig(direction=args.direction, anatomy=args.anatomy, unpaired=args.unpaired,
                      adversarial=args.adversarial)  # fmt: skip
    changes: dict = {"progress": not args.quiet}
    if args.max_steps is not None:
        changes["max_steps"] = args.max_steps
        changes["warmup_steps"] = min(cfg.train.warmup_steps, args.max_steps - 1)
    if args.device is not None:
        changes["device"] = args.device
    cfg.train = dataclasses.replace(cfg.train, **changes)
    if args.pool is not None:
        cfg.pool = args.pool
    out = args.out or f"runs/synthesize/{args.direction}"
    res = train_synth(cfg, out, resume=args.resume, overwrite=args.overwrite,
                      log=(lambda *_: None) if args.quiet else print)  # fmt: skip
    unit = "HU" if args.direction == "mr2ct" else "(MR units)"
    print(f"trained {args.direction} to step {res.last_step}; best validation MAE in the body "
          f"{res.best_metric:.3g} {unit} at step {res.best_step}; run folder {res.run_dir}")  # fmt: skip
    if args.export:
        dest = export_model(res.run_dir, args.export, overwrite=args.overwrite)
        print(f"exported the model to {dest}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from medimg.tasks.synthesize.predict import predict_path

    set_threads(args.threads)
    out = predict_path(args.input, args.output, args.direction, args.model,
                       overwrite=args.overwrite)  # fmt: skip
    what = "synthetic CT (int16 HU)" if args.direction == "mr2ct" else "synthetic T1-like MR"
    print(f"wrote {out}: {what} on the input's grid")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medimg.errors import InputError
    from medimg.tasks.synthesize.report import write_report

    set_threads(args.threads)
    if (args.source is None) != (args.reference is None):
        raise InputError("give both SOURCE and REFERENCE, or neither (generated heads)")
    name = args.source or f"generated-{args.anatomy}"
    out = Path(args.out) if args.out else default_report_dir(f"synthesize-{args.direction}", name)
    write_report(out, args.direction, model=args.model, source=args.source,
                 reference=args.reference, mask=args.mask, anatomy=args.anatomy, n=args.heads,
                 overwrite=args.overwrite)  # fmt: skip
    print((out / "summary.md").read_text(), end="")
    print(f"wrote {out}/metrics.csv, summary.md, panel.png")
    return 0


def add_verbs(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Add the synthesis verbs to ``medimg synthesize``."""
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")

    p = add_verb(sub, "simulate", "render paired MR / CT heads (held-out anatomy) as NIfTI",
                 "medimg synthesize simulate data/syn_heads --heads 8\n"
                 "medimg synthesize simulate data/syn_t2 --contrast t2")  # fmt: skip
    p.add_argument("out", help="folder to write: mr.nii.gz, ct.nii.gz, body.nii.gz, labels")
    p.add_argument("--heads", type=positive_int, default=8,
                   help="heads, one 2 mm axial slice each, stacked (default 8)")  # fmt: skip
    p.add_argument("--anatomy", choices=("toy", "colin27"), default="toy",
                   help="toy: random heads, offline (default); colin27: held-out Colin27 "
                        "slices (fetched into the data cache on first use)")  # fmt: skip
    p.add_argument("--contrast", choices=("t1", "t2"), default="t1", help="MR contrast")
    p.add_argument("--seed", type=non_negative_int, default=0, help="first deformation seed")
    add_threads(p)
    add_overwrite(p, "an earlier OUT folder")
    p.set_defaults(func=_simulate)

    p = add_verb(sub, "train", "train a synthesis model on pairs rendered from deformed heads",
                 "medimg synthesize train --direction mr2ct --out runs/synthesize/mr2ct\n"
                 "medimg synthesize train --direction ct2mr --max-steps 500\n"
                 "medimg synthesize train --unpaired --max-steps 200   # CycleGAN, two nets")  # fmt: skip
    _add_direction(p)
    p.add_argument("--anatomy", choices=("colin27", "toy"), default="colin27",
                   help="colin27: Colin27 slices + a fifth toy heads (default; fetched once); "
                        "toy: toy heads only, offline")  # fmt: skip
    p.add_argument("--unpaired", action="store_true",
                   help="CycleGAN: two generators + two discriminators, cycle loss, unpaired "
                        "heads")  # fmt: skip
    p.add_argument(
        "--adversarial",
        type=float,
        default=0.0,
        help="paired: weight of pix2pix's adversarial term (default 0: L1 only)",
    )
    p.add_argument("--pool", type=positive_int, help="pre-rendered training pairs (default 800)")
    add_run_flags(p, out="run folder (default runs/synthesize/<direction>)",
                  settings="the default model's", export="config.yaml")  # fmt: skip
    p.set_defaults(func=_train)

    p = add_verb(sub, "predict", "synthesise CT from MR (or MR from CT) on the input's grid",
                 "medimg synthesize predict t1.nii.gz sct.nii.gz\n"
                 "medimg synthesize predict ct_dicom/ smr.nii.gz --direction ct2mr")  # fmt: skip
    p.add_argument("input", help="NIfTI, NRRD/MHA or a DICOM series folder (a head)")
    p.add_argument("output", help="output image (.nii.gz; no extension: a DICOM series folder)")
    _add_direction(p)
    p.add_argument("--model", help="model folder or training run (default: the shipped one)")
    add_threads(p)
    add_overwrite(p, "an existing OUTPUT")
    p.set_defaults(func=_predict)

    p = add_verb(sub, "evaluate",
                 "SynthRAD metrics (MAE/PSNR/SSIM in the body, bone Dice) on held-out heads",
                 "medimg synthesize evaluate --heads 16\n"
                 "medimg synthesize evaluate mr.nii.gz ct.nii.gz --out reports/syn\n"
                 "medimg synthesize evaluate --direction ct2mr --anatomy colin27")  # fmt: skip
    p.add_argument("source", nargs="?", help="image to translate (with REFERENCE)")
    p.add_argument("reference", nargs="?", help="the true image of the other modality")
    _add_direction(p)
    p.add_argument("--mask", help="body mask for SOURCE/REFERENCE (default: from the CT)")
    p.add_argument("--model", help="model folder or training run (default: the shipped one)")
    p.add_argument("--anatomy", choices=("toy", "colin27"), default="toy",
                   help="without files: toy heads (default, offline) or held-out Colin27 "
                        "slices")  # fmt: skip
    p.add_argument("--heads", type=positive_int, default=16, help="generated heads (default 16)")
    p.add_argument("--out", help="report folder (default runs/synthesize-<direction>/evaluation)")
    add_threads(p)
    add_overwrite(p, "an earlier report")
    p.set_defaults(func=_evaluate)
