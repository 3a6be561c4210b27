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

    set_threads(args.threads)
    changes = {"progress": not args.quiet}
    if args.max_steps is not None:
        changes["max_steps"] = args.max_steps
    if args.target == "despeckle":
        from medimg.tasks.reconstruct.us.despeckle_train import (
            DespeckleConfig,
            export_despeckle,
            train_despeckle,
        )

        cfg_d = DespeckleConfig()
        cfg_d.train = dataclasses.replace(cfg_d.train, **changes)
        out = args.out or "runs/recon/us/despeckle"
        res = train_despeckle(cfg_d, out, resume=args.resume, overwrite=args.overwrite)
        print(f"trained the despeckling network to step {res.last_step}; best validation L1 "
              f"{res.best_metric:.4f} at step {res.best_step}; run folder {res.run_dir}")  # fmt: skip
        export = export_despeckle
    else:
        from medimg.tasks.reconstruct.us.train import LearnedConfig, export_learned, train_learned

        cfg = LearnedConfig()
        cfg.train = dataclasses.replace(cfg.train, **changes)
        if args.phantoms is not None:
            cfg.n_train = args.phantoms
        out = args.out or "runs/recon/us/learned"
        res = train_learned(cfg, out, args.cache, resume=args.resume, overwrite=args.overwrite)
        print(f"trained the learned beamformer to step {res.last_step}; best validation L1 "
              f"{res.best_metric:.2f} dB at step {res.best_step}; run folder {res.run_dir}")  # fmt: skip
        export = export_learned
    if args.export:
        dest = export(res.run_dir, args.export, overwrite=args.overwrite)
        print(f"exported the model to {dest}")
    return 0


def _frames(text: str) -> int | None:
    """``all`` -> None, else a count >= 1."""
    if text.strip().lower() == "all":
        return None
    return positive_int(text)


def _despeckle(args: argparse.Namespace) -> int:
    from medimg.tasks.reconstruct.us.despeckle import despeckle_file

    set_threads(args.threads)
    out, notes = despeckle_file(args.input, args.out, model=args.model, frames=args.frames,
                                overwrite=args.overwrite)  # fmt: skip
    for note in notes:
        print(f"note: {note}")
    extra = ", dicom/bmode.dcm (US)" if (out / "dicom").is_dir() else ""
    print(f"wrote {out}/despeckled.nii.gz, before_after.png{extra}")
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

    p = add_verb(sub, "train", "train the learned beamformer (3 plane waves -> 75-angle "
                 "compound) or, with --target despeckle, the despeckling network",
                 "medimg recon us train --out runs/recon/us/learned\n"
                 "medimg recon us train --export src/medimg/tasks/reconstruct/us/default/learned\n"
                 "medimg recon us train --target despeckle --threads 1 "
                 "--export src/medimg/tasks/reconstruct/us/despeckle")  # fmt: skip
    p.add_argument("--target", choices=("beamformer", "despeckle"), default="beamformer",
                   help="beamformer: the learned beamformer (default); despeckle: the B-mode "
                        "despeckling network, on generated speckle images")  # fmt: skip
    p.add_argument("--out", help="run folder (default runs/recon/us/learned or .../despeckle)")
    p.add_argument("--cache", default="runs/recon/us/pairs",
                   help="folder of simulated training pairs (made once, reused)")  # fmt: skip
    p.add_argument(
        "--phantoms", type=positive_int, help="beamformer: training phantoms (default 12)"
    )
    p.add_argument(
        "--max-steps",
        type=positive_int,
        help="optimizer steps (default 600 beamformer, 1000 despeckle)",
    )
    p.add_argument("--export", help="copy the best weights + config to this model folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads(p)
    p.add_argument("--overwrite", action="store_true", help="restart over an earlier run")
    p.set_defaults(func=_train)

    p = add_verb(sub, "despeckle",
                 "reduce speckle in a B-mode image (ultrasound DICOM, PNG or NIfTI) with the "
                 "simulation-trained network; only the image region changes",
                 "medimg recon us despeckle scan.dcm --out scan_despeckled/\n"
                 "medimg recon us despeckle cine.dcm --out cine_despeckled/ --frames 10\n"
                 "medimg recon us despeckle bmode.png --out bmode_despeckled/")  # fmt: skip
    p.add_argument("input", help="B-mode image: ultrasound DICOM (frame or cine), PNG or 2D NIfTI")
    p.add_argument(
        "--out",
        required=True,
        help="output folder: despeckled.nii.gz, before_after.png, dicom/ (DICOM input)",
    )
    p.add_argument("--model", help="model folder (default: the shipped one, see its card)")
    p.add_argument("--frames", type=_frames, default=None, metavar="all|N",
                   help="a cine: all frames (default) or only the first N")  # fmt: skip
    add_threads(p)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier --out folder")
    p.set_defaults(func=_despeckle)

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
