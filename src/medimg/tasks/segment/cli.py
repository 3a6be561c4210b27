"""``medimg segment simulate|plan|train|predict|evaluate``: the pipeline verbs, one each."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from medimg.tasks.cli_helpers import (
    add_backend,
    add_device,
    add_quiet,
    add_run_flags,
    add_threads,
    add_verb,
    add_window,
    check_init_preset,
    default_report_dir,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    set_threads,
)
from medimg.tasks.cohort_cli import add_cohort_flags
from medimg.tasks.segment.semi_cli import add_label_flags, add_pretrain_verb

__all__ = ["add_verbs"]


def _simulate(args: argparse.Namespace) -> int:
    from medimg.phantoms.segmentation import write_folder_dataset, write_msd_dataset

    if args.layout == "msd":
        root = write_msd_dataset(args.out, args.kind, n_train=args.cases, n_test=args.test,
                                 seed=args.seed, overwrite=args.overwrite)  # fmt: skip
    else:
        root = write_folder_dataset(
            args.out, args.kind, n=args.cases, seed=args.seed, overwrite=args.overwrite
        )
    print(f"wrote a synthetic {args.kind.upper()} set ({args.layout} layout) to {root}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from medimg.datasets.msd import check_dataset, open_dataset
    from medimg.io.output import check_outputs
    from medimg.tasks.segment.fingerprint import fingerprint_from_cases, save_fingerprint
    from medimg.tasks.segment.plan import make_plan, save_plan

    ds = open_dataset(args.dataset, modality=args.modality)
    out = Path(args.out or Path(args.dataset) / "plan.yaml")
    fp_path = out.with_name("fingerprint.json")
    # the plan lives beside the data by default, but never on one of its files
    check_outputs([out, fp_path], inputs=ds.files(), overwrite=args.overwrite)
    fp = fingerprint_from_cases(ds, check_dataset(ds))
    plan = make_plan(fp, memory_budget_mb=args.memory_mb, base_features=args.base_features,
                     network=args.network, configuration=args.configuration,
                     max_steps=args.max_steps)  # fmt: skip
    save_fingerprint(fp, fp_path, overwrite=args.overwrite)
    save_plan(plan, out, overwrite=args.overwrite)
    print(f"wrote {out}: {plan.configuration}, spacing {plan.target_spacing} mm, "
          f"patch {plan.patch_size}, batch {plan.batch_size}, {len(plan.pool_strides)} poolings")  # fmt: skip
    return 0


def _train(args: argparse.Namespace) -> int:
    from medimg.tasks.segment.presets import train_preset
    from medimg.tasks.segment.semi_cli import check_label_flags, train_add_labels_cli
    from medimg.tasks.segment.train import check_export, train_segmentation

    set_threads(args.threads)
    check_label_flags(args)
    if args.add_labels:
        return train_add_labels_cli(args)
    if args.distill_from or args.arch:
        return _distill(args)
    if args.fold is None:  # 1-5 labelled cases cannot fill k folds: train on all of them
        args.fold = -1 if args.few_shot or args.semi else 0
    if args.reviewed:
        args.dataset, args.fold = _reviewed_dataset(args), -1
        run_dir = work = Path(args.out)
    elif args.preset in ("default", "brain"):
        work = Path(args.out or f"runs/segment/{args.preset}")
        run_dir = work / "model"
    else:
        if args.dataset is None:
            from medimg.errors import InputError

            raise InputError("train needs a DATASET folder (or --preset default|brain)")
        run_dir = work = Path(
            args.out or f"runs/segment/{Path(args.dataset).name}/fold_{args.fold}"
        )
    check_init_preset(args)
    if args.export:  # checked now, not after hours of training
        check_export(run_dir, args.export, args.overwrite)
    if args.preset == "brain":
        from medimg.tasks.segment.brain import train_brain_preset

        res = train_brain_preset(work, max_steps=args.max_steps, device=args.device,
                                 progress=not args.quiet, resume=args.resume,
                                 overwrite=args.overwrite)  # fmt: skip
    elif args.preset == "default":
        res = train_preset(work, max_steps=args.max_steps, device=args.device,
                           progress=not args.quiet, resume=args.resume,
                           overwrite=args.overwrite)  # fmt: skip
    else:
        res = train_segmentation(args.dataset, work, fold=args.fold, plan=args.plan,
                                 max_steps=args.max_steps, device=args.device,
                                 progress=not args.quiet, resume=args.resume,
                                 overwrite=args.overwrite, init=args.init, semi=args.semi,
                                 unlabelled=args.unlabelled,
                                 unlabelled_weight=args.unlabelled_weight,
                                 few_shot=args.few_shot)  # fmt: skip
    if args.export:
        from medimg.tasks.segment.train import export_model

        print(
            f"exported the model to {export_model(res.run_dir, args.export, overwrite=args.overwrite)}"
        )
    print(f"trained to step {res.last_step}; best dice {res.best_metric} at step {res.best_step}; "
          f"model folder {res.run_dir}")  # fmt: skip
    return 0


def _distill(args: argparse.Namespace) -> int:
    """``train DATA --distill-from MODEL [--arch small]``: a small student of MODEL."""
    from medimg.errors import InputError
    from medimg.tasks.segment.distill import distill_segmentation

    if not args.distill_from:
        raise InputError("--arch small trains a student of a model: add --distill-from MODEL "
                         "('default' for the shipped one)")  # fmt: skip
    clash = [f for f, v in (("--preset", args.preset), ("--reviewed", args.reviewed),
                            ("--init", args.init), ("--plan", args.plan)) if v]  # fmt: skip
    if clash:
        raise InputError(f"--distill-from takes its plan and start from the teacher; drop "
                         f"{', '.join(clash)}")  # fmt: skip
    if args.dataset is None:
        raise InputError("--distill-from needs a DATASET folder with the teacher's labels")
    fold = -1 if args.fold is None else args.fold
    out = Path(args.out or f"runs/segment/{Path(args.dataset).name}/student"
               + ("" if fold < 0 else f"_fold_{fold}"))  # fmt: skip
    if args.export:
        from medimg.tasks.segment.train import check_export

        check_export(out, args.export, args.overwrite)
    res = distill_segmentation(args.dataset, out, args.distill_from, arch=args.arch or "small",
                               temperature=args.temperature, alpha=args.alpha, fold=fold,
                               max_steps=args.max_steps, device=args.device,
                               progress=not args.quiet, resume=args.resume,
                               overwrite=args.overwrite)  # fmt: skip
    if args.export:
        from medimg.tasks.segment.train import export_model

        print(f"exported the model to {export_model(out, args.export, overwrite=args.overwrite)}")
    sizes = (out / "distill.json").read_text() if (out / "distill.json").is_file() else "{}"
    import json

    ratio = json.loads(sizes).get("ratio")
    print(f"trained the student to step {res.last_step}; best dice {res.best_metric} at step "
          f"{res.best_step}; {ratio}x fewer parameters than the teacher; model folder {out}")  # fmt: skip
    return 0


def _reviewed_dataset(args: argparse.Namespace) -> Path:
    """The dataset of a ``--reviewed`` run (checked before any training), and its run folder."""
    from medimg.errors import InputError
    from medimg.tasks.segment.reviewed import reviewed_dataset

    if args.dataset or args.preset:
        raise InputError("--reviewed trains on the review folder's corrections; drop DATASET "
                         "and --preset")  # fmt: skip
    if not args.init:
        raise InputError("--reviewed fine-tunes a model: give --init M (the model that made the "
                         "proposals, 'default' for the shipped one)")  # fmt: skip
    if str(args.init) == "default":
        from medimg.tasks.segment.predict import DEFAULT_MODEL

        args.init = DEFAULT_MODEL
    args.out = args.out or f"runs/segment/reviewed/{Path(args.reviewed).resolve().name}"
    return reviewed_dataset(args.reviewed, args.init, args.out)


def _predict(args: argparse.Namespace) -> int:
    from medimg.tasks.cohort_cli import wants_cohort
    from medimg.tasks.segment.brain import resolve_model
    from medimg.tasks.segment.predict import predict_path

    set_threads(args.threads)
    if wants_cohort(args, args.input):
        return _predict_cohort(args, resolve_model(args.model))
    notes: list[str] = []

    written = predict_path(args.input, args.output, model=resolve_model(args.model),
                           device=args.device,
                           mirror=not args.no_mirror, overwrite=args.overwrite,
                           notes=notes, force=args.force, overlap=args.overlap,
                           batch_size=args.batch, backend=args.backend,
                           progress=not args.quiet, prior=args.prior)  # fmt: skip
    for p in written:
        print(f"wrote {p}")
    for line in notes:
        print(f"note: {line}")
    return 0


def _predict_cohort(args: argparse.Namespace, model) -> int:
    from medimg.tasks.cohort_cli import cohort_cases, run_cohort_verb
    from medimg.tasks.segment.cohort import find_cases

    model = str(Path(model).resolve()) if model else None
    options = {"model": model, "device": args.device, "mirror": not args.no_mirror,
               "force": args.force, "overlap": args.overlap, "batch_size": args.batch,
               "backend": args.backend, "prior": args.prior}  # fmt: skip
    summary = run_cohort_verb(args, cohort_cases(args.input, find_cases), args.output,
                              "medimg.tasks.segment.cohort:predict_case", options)  # fmt: skip
    print(f"wrote {Path(args.output) / 'cases'}/<case>/ and {Path(args.output) / 'summary.csv'}")
    return 1 if summary.failed else 0


def _evaluate(args: argparse.Namespace) -> int:
    from medimg.tasks.segment.evaluate import evaluate_folders

    out = args.out or default_report_dir("segment", args.pred_dir)
    res = evaluate_folders(args.pred_dir, args.gt_dir, out, nsd_tolerance_mm=args.nsd_tolerance,
                           images_dir=args.images, overwrite=args.overwrite)  # fmt: skip
    for k, est in res["summary"].items():
        print(f"label {k}: Dice {est['dice']}  HD95 {est['hd95']} mm")
    print(f"wrote {out}/metrics.csv, summary.md, cases.png")
    return 0


def _fold(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < -1:
        raise argparse.ArgumentTypeError(f"{value}: give a fold 0..K-1, or -1 for all cases")
    return value


def add_verbs(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Add the segmentation verbs to ``medimg segment``."""
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    p = add_verb(sub, "simulate", "write a synthetic 3D segmentation set (CT-like organs or MR-like tissues)",
              "medimg segment simulate data/SynthCT --kind ct --cases 16 --test 4\n"
              "medimg segment simulate data/AbdomenCT --kind abdomen --cases 60")  # fmt: skip
    p.add_argument("out", help="output folder")
    p.add_argument("--kind", choices=("ct", "abdomen", "mr"), default="ct",
                   help="ct: small ellipsoid organs in HU (fast, for trials); abdomen: realistic "
                        "generated abdomens in three contrast phases (what the default model was "
                        "trained on); mr: MR-like tissues (default: ct)")  # fmt: skip
    p.add_argument("--layout", choices=("msd", "folder"), default="msd",
                   help="msd: dataset.json + imagesTr/labelsTr; folder: images/ + labels/")  # fmt: skip
    p.add_argument("--cases", type=positive_int, default=12, help="training cases")
    p.add_argument("--test", type=non_negative_int, default=4,
                   help="held-out cases (msd layout: imagesTs)")  # fmt: skip
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier synthetic set in OUT")  # fmt: skip
    p.set_defaults(func=_simulate)

    p = add_verb(sub, "plan", "fingerprint a dataset and write its training plan (editable YAML)",
              "medimg segment plan data/SynthCT            # writes data/SynthCT/plan.yaml")  # fmt: skip
    p.add_argument(
        "dataset", help="MSD/nnU-Net raw folder (dataset.json) or images/+labels/ folder"
    )
    p.add_argument("--out", help="plan file (default DATASET/plan.yaml)")
    p.add_argument("--modality", help="CT or MR for a plain folder (default: MR, z-score)")
    p.add_argument("--memory-mb", type=positive_float, default=1024.0,
                   help="training memory budget")  # fmt: skip
    p.add_argument("--base-features", type=positive_int, default=16,
                   help="channels of the first U-Net level (default: 16)")  # fmt: skip
    p.add_argument("--arch", "--network", dest="network", choices=("dynunet", "segresnet"),
                   default="dynunet",
                   help="architecture (default: dynunet; --network: the older spelling)")  # fmt: skip
    p.add_argument("--configuration", choices=("2d", "3d"), help="override the 2D/3D choice")
    p.add_argument("--max-steps", type=positive_int, default=1000,
                   help="training steps written into the plan (default: 1000)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing plan")
    p.set_defaults(func=_plan)

    p = add_verb(sub, "train", "train one fold (or all cases) of a planned dataset",
              "medimg segment train data/SynthCT --fold 0 --plan data/SynthCT/plan.yaml\n"
              "medimg segment train --preset default --export src/medimg/tasks/segment/default --overwrite\n"
              "medimg segment train --init default --reviewed review/ --max-steps 200\n"
              "medimg segment train data/SynthCT --distill-from default --arch small   # a 5x smaller student\n"
              "medimg segment train data/Few --semi uamt --unlabelled scans/   # + unlabelled images\n"
              "medimg segment train data/Few --init default --few-shot\n"
              "medimg segment train data/Spleen --init default --add-labels spleen")  # fmt: skip
    p.add_argument("dataset", nargs="?", help="dataset folder")
    p.add_argument("--fold", type=_fold, default=None,
                   help="fold K of the k-fold split; -1 = all cases (default: 0; with "
                        "--distill-from, --semi or --few-shot: -1)")  # fmt: skip
    p.add_argument("--plan", help="plan YAML (default: planned now with default settings)")
    p.add_argument("--preset", choices=("default", "brain"),
                   help="train a shipped model from scratch: default (abdominal CT) or brain "
                        "(brain MRI, from synthesised images)")  # fmt: skip
    p.add_argument("--reviewed", metavar="DIR",
                   help="fine-tune --init on the accepted corrections of a review folder "
                        "(medimg review) instead of a DATASET")  # fmt: skip
    add_run_flags(p, out="run/model folder (default runs/segment/<dataset>/fold_K)",
                  settings="the plan's",
                  init="fine-tune this model or run folder ('default': the shipped model); "
                       "its plan is used unless --plan is given",
                  export="plan.yaml")  # fmt: skip
    p.add_argument("--distill-from", metavar="MODEL",
                   help="train a small student of this model ('default': the shipped one; a "
                        "model/run folder) on DATASET's labels and the model's soft outputs")  # fmt: skip
    p.add_argument("--arch", choices=("small",),
                   help="the student's size: small = the teacher's plan with layers narrow "
                        "enough for >= 4x fewer parameters (needs --distill-from)")  # fmt: skip
    p.add_argument("--temperature", type=positive_float, default=2.0,
                   help="distillation temperature T (default: 2)")  # fmt: skip
    p.add_argument("--alpha", type=probability, default=0.5,
                   help="weight of the teacher term; 1 - alpha weighs the labels (default: 0.5)")  # fmt: skip
    add_label_flags(p)
    p.set_defaults(func=_train)
    add_pretrain_verb(sub)

    p = add_verb(sub, "predict", "segment a file, a folder of images or a DICOM series",
              "medimg segment predict ct.nii.gz ct_labels.nii.gz\n"
              "medimg segment predict scans/ preds/ --model runs/segment/SynthCT/fold_0\n"
              "medimg segment predict dicom_series/ out/   # NIfTI + DICOM-SEG")  # fmt: skip
    p.add_argument("input", help="image file, folder of images (_0000 channels), DICOM folder, or "
                   "a manifest .csv (a cohort run)")  # fmt: skip
    p.add_argument("output", help="output .nii.gz (single input) or folder")
    p.add_argument(
        "--model",
        help="model/run folder, or 'brain' for the shipped brain MRI "
        "model (default: the shipped abdominal CT model)",
    )
    add_device(p)
    add_threads(p)
    add_window(p, overlap=0.5, batch=2)
    add_backend(p)
    p.add_argument("--no-mirror", action="store_true", help="skip test-time mirroring (faster)")
    p.add_argument("--force", action="store_true",
                   help="segment an image unlike the model's training data (another modality, "
                        "not Hounsfield units for a CT model) instead of refusing it")  # fmt: skip
    p.add_argument("--prior", choices=("off", "check", "enforce"), default="off",
                   help="anatomical prior: 'check' writes <case>.prior.json listing components "
                        "that cannot be the organ they are labelled (a third kidney, a spleen "
                        "on the right, a liver outside the body); 'enforce' also removes them "
                        "(default: off)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_quiet(p)
    add_cohort_flags(p)
    p.set_defaults(func=_predict)

    p = add_verb(sub, "evaluate", "score predictions against ground truth (CSV, Markdown, PNG)",
              "medimg segment evaluate preds/ data/SynthCT/labelsTs --images data/SynthCT/imagesTs")  # fmt: skip
    p.add_argument("pred_dir", help="folder of predicted label files")
    p.add_argument("gt_dir", help="folder of ground-truth label files with the same names")
    p.add_argument("--out", help="report folder (default: runs/segment/evaluation/<PRED_DIR name>)")
    p.add_argument("--images", help="image folder for the PNG background")
    p.add_argument("--nsd-tolerance", type=positive_float, default=1.0,
                   help="NSD tolerance in mm")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report")
    p.set_defaults(func=_evaluate)

    from medimg.tasks.segment.suggest import add_suggest_verb  # active learning: what to label

    add_suggest_verb(sub)
