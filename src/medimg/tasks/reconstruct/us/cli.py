"""``medimg recon us simulate|predict|evaluate``: ultrasound image formation from channel data."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from medimg.tasks.cli_helpers import (
    ListAction,
    add_threads,
    add_verb,
    default_report_dir,
    finite_float,
    non_negative_int,
    positive_float,
    positive_int,
    set_threads,
)

__all__ = ["add_verbs"]


def _simulate(args: argparse.Namespace) -> int:
    from medimg.errors import InputError
    from medimg.io.output import check_outputs
    from medimg.physics.ultrasound import LinearArray
    from medimg.tasks.reconstruct.us.data import (
        focused_lines,
        make_phantom,
        plane_waves,
        save_channel_data,
        simulate,
    )

    set_threads(args.threads)
    if not str(args.out).endswith(".npz"):
        raise InputError("channel data are written as .npz; name the file *.npz", args.out)
    check_outputs([args.out], overwrite=args.overwrite)
    probe = LinearArray()
    if args.focused:
        tx = focused_lines(probe, args.focused, args.focus_depth * 1e-3)
    else:
        if not 0 <= args.max_angle < 45:
            raise InputError(f"--max-angle {args.max_angle} must be in [0, 45) degrees")
        tx = plane_waves(args.angles, args.max_angle)
    phantom = make_phantom(args.phantom, seed=args.seed, density=args.density, scale=args.scale)
    snr = None if args.snr_db <= 0 else args.snr_db
    data = simulate(phantom, tx, probe, attenuation=args.attenuation, snr_db=snr, seed=args.seed)
    out = save_channel_data(data, args.out, overwrite=args.overwrite)
    kind = f"{len(tx)} focused lines" if args.focused else f"{len(tx)} plane waves"
    print(f"wrote {out}: {args.phantom} phantom ({phantom.x.size} scatterers), {kind}, "
          f"rf {tuple(data.rf.shape)} (transmits, elements, samples)")  # fmt: skip
    return 0


def _predict(args: argparse.Namespace) -> int:
    from medimg.tasks.reconstruct.us.predict import predict_file

    set_threads(args.threads)
    out = predict_file(args.input, args.output, n_transmits=args.transmits, fnumber=args.fnumber,
                       dynamic_range=args.dynamic_range, dx=args.dx * 1e-3, dz=args.dz * 1e-3,
                       method=args.method, model=args.model, overwrite=args.overwrite)  # fmt: skip
    print(f"wrote {out}/bmode.nii.gz (dB), envelope.nii.gz, dicom/bmode.dcm (US), bmode.png")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medimg.tasks.reconstruct.us.evaluate import evaluate_file

    set_threads(args.threads)
    out = args.out or default_report_dir("recon-us", args.input)
    counts = [None if c == 0 else c for c in args.transmits]
    evaluate_file(args.input, out, counts, fnumber=args.fnumber, overwrite=args.overwrite)
    print((Path(out) / "summary.md").read_text(), end="")
    print(f"wrote {out}/metrics.csv, summary.md, panel.png")
    return 0


def _train(args: argparse.Namespace) -> int:
    import dataclasses

    from medimg.tasks.reconstruct.us.train import LearnedConfig, export_learned, train_learned

    set_threads(args.threads)
    cfg = LearnedConfig()
    changes = {"progress": not args.quiet}
    if args.max_steps is not None:
        changes["max_steps"] = args.max_steps
    cfg.train = dataclasses.replace(cfg.train, **changes)
    if args.phantoms is not None:
        cfg.n_train = args.phantoms
    res = train_learned(cfg, args.out, args.cache, resume=args.resume, overwrite=args.overwrite)
    print(f"trained the learned beamformer to step {res.last_step}; best validation L1 "
          f"{res.best_metric:.2f} dB at step {res.best_step}; run folder {res.run_dir}")  # fmt: skip
    if args.export:
        dest = export_learned(res.run_dir, args.export, overwrite=args.overwrite)
        print(f"exported the model to {dest}")
    return 0


def add_verbs(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Add the ultrasound verbs to ``medimg recon us``."""
    from medimg.tasks.reconstruct.us.data import PHANTOMS

    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    p = add_verb(sub, "simulate", "simulate linear-array channel data of a phantom (.npz)",
                 "medimg recon us simulate data/us_mixed.npz --angles 75\n"
                 "medimg recon us simulate data/us_points.npz --phantom points --angles 11\n"
                 "medimg recon us simulate data/us_focused.npz --focused 128 --focus-depth 25")  # fmt: skip
    p.add_argument("out", help="channel-data file to write (.npz)")
    p.add_argument("--phantom", choices=sorted(PHANTOMS), default="mixed",
                   help="mixed: speckle + cysts + inclusion + points (default); points; cysts")  # fmt: skip
    p.add_argument("--angles", type=positive_int, default=75,
                   help="plane waves, evenly over +-max-angle (default 75, as PICMUS)")  # fmt: skip
    p.add_argument("--max-angle", type=finite_float, default=16.0,
                   help="largest steering angle in degrees (default 16)")  # fmt: skip
    p.add_argument("--focused", type=positive_int, metavar="LINES",
                   help="focused transmits instead: this many lines across the array")  # fmt: skip
    p.add_argument("--focus-depth", type=positive_float, default=25.0,
                   help="--focused: focal depth in mm (default 25)")  # fmt: skip
    p.add_argument("--attenuation", type=finite_float, default=0.5,
                   help="dB/cm/MHz (default 0.5, soft tissue; 0 for none)")  # fmt: skip
    p.add_argument("--snr-db", type=finite_float, default=40.0,
                   help="noise this far below the data's RMS (default 40; 0 = no noise)")  # fmt: skip
    p.add_argument("--density", type=positive_float, default=30.0,
                   help="speckle scatterers per mm^2 (default 30)")  # fmt: skip
    p.add_argument("--scale", type=positive_float, default=1.0,
                   help="shrink the phantom's 30 x 40 mm field (e.g. 0.5) for quick runs")  # fmt: skip
    p.add_argument("--seed", type=non_negative_int, default=0, help="phantom and noise seed")
    add_threads(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=_simulate)

    p = add_verb(sub, "predict", "beamform channel data to a B-mode image (NIfTI, US DICOM, PNG)",
                 "medimg recon us predict data/us_mixed.npz bmode/\n"
                 "medimg recon us predict data/us_mixed.npz bmode_3pw/ --transmits 3\n"
                 "medimg recon us predict data/us_mixed.npz bmode_learned/ --method learned")  # fmt: skip
    p.add_argument("input", help="channel-data .npz (from 'medimg recon us simulate')")
    p.add_argument("output", help="output folder: bmode.nii.gz, envelope.nii.gz, dicom/, bmode.png")
    p.add_argument("--method", choices=("das", "learned"), default="das",
                   help="das: delay-and-sum, compounded (default); learned: the learned "
                        "beamformer from 3 plane waves (simulation-trained, see its card)")  # fmt: skip
    p.add_argument("--model", help="--method learned: model folder (default: the shipped one)")
    p.add_argument("--transmits", type=positive_int,
                   help="use this many transmits, evenly chosen (default: all, compounded)")  # fmt: skip
    p.add_argument("--fnumber", type=positive_float, default=1.75,
                   help="receive f-number: aperture = depth / f-number (default 1.75)")  # fmt: skip
    p.add_argument("--dynamic-range", type=positive_float, default=60.0,
                   help="B-mode dynamic range in dB (default 60)")  # fmt: skip
    p.add_argument("--dx", type=positive_float, default=0.1, help="lateral pixel in mm")
    p.add_argument("--dz", type=positive_float, default=0.05, help="axial pixel in mm")
    add_threads(p)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier OUTPUT folder")
    p.set_defaults(func=_predict)

    p = add_verb(sub, "train", "train the learned beamformer (3 plane waves -> 75-angle compound)",
                 "medimg recon us train --out runs/recon/us/learned\n"
                 "medimg recon us train --export src/medimg/tasks/reconstruct/us/default/learned")  # fmt: skip
    p.add_argument("--out", default="runs/recon/us/learned", help="run folder")
    p.add_argument("--cache", default="runs/recon/us/pairs",
                   help="folder of simulated training pairs (made once, reused)")  # fmt: skip
    p.add_argument("--phantoms", type=positive_int, help="training phantoms (default 12)")
    p.add_argument("--max-steps", type=positive_int, help="optimizer steps (default 600)")
    p.add_argument("--export", help="copy the best weights + config to this model folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads(p)
    p.add_argument("--overwrite", action="store_true", help="restart over an earlier run")
    p.set_defaults(func=_train)

    p = add_verb(sub, "evaluate",
                 "PICMUS metrics (FWHM, contrast, CNR, gCNR, speckle SNR) vs transmit count",
                 "medimg recon us evaluate data/us_mixed.npz --out reports/us\n"
                 "medimg recon us evaluate data/us_mixed.npz --transmits 1 3 11 75")  # fmt: skip
    p.add_argument("input", help="simulated channel-data .npz (carries the ground truth)")
    p.add_argument("--out", help="report folder (default runs/recon-us/evaluation/<name>)")
    p.add_argument("--transmits", action=ListAction, item_type=non_negative_int,
                   default=[1, 3, 11, 0],
                   help="transmit counts to compare; 0 = all (default 1 3 11 0)")  # fmt: skip
    p.add_argument("--fnumber", type=positive_float, default=1.75, help="receive f-number")
    add_threads(p)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report")
    p.set_defaults(func=_evaluate)
