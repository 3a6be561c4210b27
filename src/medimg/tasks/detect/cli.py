"""``medimg detect simulate|train|predict|evaluate``: the nodule-detection verbs, one each (plus
``train2d|predict2d`` for the 2.5D key-slice lesion detector, :mod:`.cli2d`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from medimg.tasks.cli_helpers import (
    ListAction,
    add_backend,
    add_device,
    add_quiet,
    add_run_flags,
    add_threads,
    add_verb,
    check_init_preset,
    default_report_dir,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    set_threads,
)
from medimg.tasks.cohort_cli import add_cohort_flags

__all__ = ["add_verbs"]


def _simulate(args: argparse.Namespace) -> int:
    if args.varied:
        from medimg.tasks.detect.simulate import write_thorax_luna16 as write
    else:
        from medimg.datasets.luna16 import write_luna16 as write

    root = write(args.out, args.cases, seed=args.seed, n_subsets=args.subsets,
                 progress=not args.quiet, overwrite=args.overwrite)  # fmt: skip
    what = "varied thorax CTs with typed nodules" if args.varied else "synthetic chest CTs"
    print(f"wrote {args.cases} {what} in the LUNA16 layout to {root}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from medimg.tasks.detect.train import (
        DEFAULT_STAGES,
        DetectConfig,
        train_detector,
        train_preset,
    )

    set_threads(args.threads)
    if args.export:  # before training, not after
        from medimg.tasks.detect.train import check_export

        check_export(args.export, overwrite=args.overwrite)
    resume = "auto" if args.resume else False
    check_init_preset(args)
    if args.preset == "default":  # both stages; the shipped model is OUT/model2's
        work = Path(args.out or "runs/detect/default")
        res = train_preset(work, stages=DEFAULT_STAGES, max_steps=args.max_steps, device=args.device,
                           progress=not args.quiet, resume=resume)  # fmt: skip
    else:
        if args.dataset is None:
            from medimg.errors import InputError

            raise InputError("train needs a LUNA16 DATASET folder (or --preset default)")
        cfg = DetectConfig(val_subsets=tuple(args.val_subsets))
        if args.init:
            from medimg.tasks.detect.predict import DEFAULT_MODEL

            cfg.init_weights = str(DEFAULT_MODEL if args.init == "default" else args.init)
        if args.patch is not None:
            cfg.patch = args.patch
        if args.spacing is not None:
            cfg.model.spacing = args.spacing
        out = args.out or f"runs/detect/{Path(args.dataset).name}"
        res = train_detector(args.dataset, out, cfg, max_steps=args.max_steps, device=args.device,
                             progress=not args.quiet, resume=resume,
                             overwrite=args.overwrite)  # fmt: skip
    if args.export:
        from medimg.tasks.detect.train import export_model

        print(f"exported the model to {export_model(res.run_dir, args.export, args.overwrite)}")
    print(f"trained to step {res.last_step}; best CPM {res.best_metric} at step {res.best_step}; "
          f"model folder {res.run_dir}")  # fmt: skip
    return 0


def _predict(args: argparse.Namespace) -> int:
    from medimg.tasks.cohort_cli import wants_cohort
    from medimg.tasks.detect.predict import predict_path

    set_threads(args.threads)
    if wants_cohort(args, args.input):
        return _predict_cohort(args)
    written = predict_path(args.input, args.output, model=args.model, device=args.device,
                           flips=args.flips, figures=not args.no_figures,
                           overwrite=args.overwrite, seg_threshold=args.seg,
                           progress=not args.quiet, backend=args.backend)  # fmt: skip
    print(f"wrote {written[0]} and {written[1]}" + (f" and {len(written) - 2} figure(s)"
                                                    if len(written) > 2 else ""))  # fmt: skip
    return 0


def _predict_cohort(args: argparse.Namespace) -> int:
    from medimg.errors import InputError
    from medimg.tasks.cohort_cli import cohort_cases, run_cohort_verb
    from medimg.tasks.detect.cohort import merge_candidates
    from medimg.tasks.detect.predict import find_inputs

    if args.seg is not None:
        raise InputError("--seg writes one DICOM SEG per series; run it without --workers/--ray "
                         "or a manifest")  # fmt: skip
    cases = cohort_cases(args.input, find_inputs)
    model = str(Path(args.model).resolve()) if args.model else None
    options = {"model": model, "device": args.device, "flips": args.flips,
               "figures": not args.no_figures, "backend": args.backend}  # fmt: skip
    summary = run_cohort_verb(args, cases, args.output, "medimg.tasks.detect.cohort:predict_case",
                              options)  # fmt: skip
    table = merge_candidates(args.output, [c.case_id for c in cases])
    print(f"wrote {table} and {Path(args.output) / 'summary.csv'}")
    return 1 if summary.failed else 0


def _evaluate(args: argparse.Namespace) -> int:
    from medimg.tasks.detect.evaluate import evaluate_candidates

    out = args.out or default_report_dir("detect", Path(args.candidates).parent)
    s = evaluate_candidates(args.candidates, args.annotations, out, excluded=args.excluded,
                            scans=args.scans, fp_per_scan=args.fp_per_scan,
                            threshold=args.threshold, n_resamples=args.bootstrap,
                            overwrite=args.overwrite)  # fmt: skip
    for r, e in s["froc"].items():
        print(f"sensitivity at {r:>5} FPs/scan: {e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]")
    c = s["cpm"]
    print(f"CPM {c['value']:.4f} [{c['low']:.4f}, {c['high']:.4f}] over {s['n_scans']} scans, "
          f"{s['n_nodules']} nodules")  # fmt: skip
    op = s["operating_point"]
    print(f"at threshold {op['threshold']:.4g} ({op['fp_per_scan']:.3g} FPs/scan): sensitivity "
          f"{op['sensitivity']['value']:.3f}, precision {op['precision']['value']:.3f}")  # fmt: skip
    for key in ("by_type", "by_size"):
        for name, g in s.get(key, {}).items():
            e = g["sensitivity"]
            print(f"  {name:>16} ({g['n']:>3} nodules): {e['value']:.3f} "
                  f"[{e['low']:.3f}, {e['high']:.3f}]")  # fmt: skip
    print(f"wrote {out}/froc.csv, summary.md, summary.json, froc.png")
    return 0


def add_verbs(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Add the detection verbs to ``medimg detect``."""
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    p = add_verb(sub, "simulate", "write synthetic chest CTs with nodules in the LUNA16 layout",
              "medimg detect simulate data/SynthLUNA --cases 20 --subsets 4\n"
              "medimg detect simulate data/Thorax --cases 10 --varied")  # fmt: skip
    p.add_argument("out", help="output folder (new or empty, or --overwrite)")
    p.add_argument("--cases", type=positive_int, default=10, help="CT volumes (default: 10)")
    p.add_argument(
        "--subsets", type=positive_int, default=2, help="subset<k> folders (LUNA16's folds)"
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    p.add_argument("--varied", action="store_true",
                   help="varied thoraxes (size, coverage, spacing, noise, kernel, orientation) with "
                   "every nodule type (nodule_type column) and hard_negatives.csv; ~20 s a case")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier simulated set")
    p.set_defaults(func=_simulate)

    p = add_verb(sub, "train", "train the centre-point nodule detector on a LUNA16-layout folder",
              "medimg detect train data/SynthLUNA --val-subsets subset0\n"
              "medimg detect train --preset default --export src/medimg/tasks/detect/default --overwrite")  # fmt: skip
    p.add_argument("dataset", nargs="?", help="LUNA16-layout folder")
    p.add_argument(
        "--preset",
        choices=("default",),
        help="simulate data and train the default model (two stages: OUT/model, then the "
        "shipped OUT/model2)",
    )
    p.add_argument(
        "--val-subsets", action=ListAction, default=["subset0"], help="held-out subset folders"
    )
    add_run_flags(p, out="run folder (default runs/detect/<dataset>)", settings="the config's",
                  init="fine-tune this model or run folder ('default': the shipped model)",
                  export="config.yaml")  # fmt: skip
    p.add_argument("--patch", type=positive_int, help="training patch edge in voxels (default 40)")
    p.add_argument(
        "--spacing", type=positive_float, help="isotropic grid of the model, mm (default 2)"
    )
    p.set_defaults(func=_train)

    p = add_verb(sub, "predict", "find nodule candidates in CT volumes (CSV/JSON in world mm, PNGs)",
              "medimg detect predict scan.mhd out/\n"
              "medimg detect predict data/SynthLUNA/subset0 preds/ --model runs/detect/SynthLUNA\n"
              "medimg detect predict dicom_series/ out/ --flips --seg 0.5")  # fmt: skip
    p.add_argument("input", help="CT file (.mhd/.mha/.nrrd/.nii[.gz]), folder of them, DICOM "
                   "folder, or a manifest .csv (a cohort run)")  # fmt: skip
    p.add_argument("output", help="output folder (candidates.csv, candidates.json, figures/)")
    p.add_argument("--model", help="model/run folder (default: the shipped default model)")
    add_device(p)
    p.add_argument("--flips", action="store_true", help="test-time flips (4x slower)")
    add_backend(p)
    p.add_argument("--seg", type=probability, metavar="SCORE", help="DICOM series in: also write a "
                   "DICOM SEG of the findings scoring >= SCORE (e.g. 0.5), referencing it")  # fmt: skip
    p.add_argument("--no-figures", action="store_true", help="skip the PNG per scan")
    add_threads(p)
    p.add_argument("--overwrite", action="store_true", help="replace earlier outputs in OUTPUT")
    add_quiet(p)
    add_cohort_flags(p)
    p.set_defaults(func=_predict)

    p = add_verb(sub, "evaluate", "LUNA16 FROC/CPM of a candidates CSV, with bootstrap CIs and a curve",
              "medimg detect evaluate preds/candidates.csv data/SynthLUNA/annotations.csv \\\n"
              "    --excluded data/SynthLUNA/annotations_excluded.csv --scans data/SynthLUNA/subset0")  # fmt: skip
    p.add_argument(
        "candidates", help="CSV: seriesuid,coordX,coordY,coordZ,probability[,diameter_mm]"
    )
    p.add_argument("annotations", help="LUNA16 annotations.csv (world LPS mm)")
    p.add_argument("--excluded", help="annotations_excluded.csv (hits there are ignored)")
    p.add_argument("--scans", help="seriesuids.csv or a folder of .mhd volumes: the scans counted")
    p.add_argument(
        "--out", help="report folder (default: runs/detect/evaluation/<candidates folder>)"
    )
    p.add_argument(
        "--fp-per-scan", type=positive_float, default=1.0, help="operating point to report"
    )
    p.add_argument("--threshold", type=float, help="report the operating point at this score")
    p.add_argument("--bootstrap", type=positive_int, default=1000, help="bootstrap resamples")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report")
    p.set_defaults(func=_evaluate)

    from medimg.tasks.detect.cli2d import add_verbs_2d

    add_verbs_2d(sub)  # the 2.5D key-slice lesion detector
