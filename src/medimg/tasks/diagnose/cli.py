"""``medimg diagnose simulate|train|predict|evaluate|explain``."""

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
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    set_threads,
)

__all__ = ["add_verbs"]


def _simulate(args: argparse.Namespace) -> int:
    from medimg.tasks.diagnose.sources import write_simulated_set

    root = write_simulated_set(args.out, args.kind, n_train=args.cases, n_val=args.val,
                               n_test=args.test, seed=args.seed, overwrite=args.overwrite)  # fmt: skip
    print(f"wrote a synthetic {args.kind} set to {root} (manifest.csv, ground_truth.json)")
    return 0


def _train(args: argparse.Namespace) -> int:
    import time

    from medimg.tasks.diagnose.sources import train_from_args

    set_threads(args.threads or None)
    if args.export:  # before hours of training, not after
        from medimg.tasks.diagnose.sources import check_export

        check_export(args.export, overwrite=args.overwrite)
    cpu0 = time.process_time()
    res, summary, out = train_from_args(args)
    print(f"trained to step {res.last_step}; best validation AUC {res.best_metric:.4f} at step "
          f"{res.best_step}; temperature {summary['temperature']:.3f}; model folder {out}; "
          f"{time.process_time() - cpu0:.0f} s CPU")  # fmt: skip
    if args.export:
        from medimg.tasks.diagnose.sources import export_model

        print(f"exported the model to {export_model(out, args.export, args.overwrite)}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from medimg.tasks.diagnose.predict import predict_path

    set_threads(args.threads)
    backend = getattr(args, "backend", "torch")
    onnx = backend == "onnxruntime" or str(args.model).lower().endswith(".onnx")
    explain = args.explain or ("occlusion" if onnx else "layercam")
    explain = None if explain == "none" else explain
    written = predict_path(args.input, args.output, model=args.model, device=args.device,
                           explain=explain, overwrite=args.overwrite, backend=backend)  # fmt: skip
    print(f"wrote {written[0]} and {len(written) - 1} explanation files")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from medimg.tasks.diagnose.evaluate import evaluate_predictions

    out = args.out or default_report_dir("diagnose", Path(args.predictions).parent)
    res = evaluate_predictions(args.predictions, args.manifest, out, threshold=args.threshold,
                               overwrite=args.overwrite)  # fmt: skip
    print((Path(out) / "metrics.md").read_text().rstrip())
    print(
        f"wrote {out}/metrics.json, metrics.md"
        + (", roc.png, reliability.png" if "binary" in res else "")
    )
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from medimg.tasks.diagnose.sources import calibrate_model

    set_threads(args.threads or None)
    path = calibrate_model(args.model, args.data, args.cases, args.preset)
    print(f"wrote {path}")
    return 0


def add_verbs(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Add the diagnosis verbs to ``medimg diagnose``."""
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    p = add_verb(sub, "simulate", "write a synthetic diagnosis set: NIfTI images + manifest.csv + lesion boxes",
              "medimg diagnose simulate data/dx_xray --kind xray --cases 400\n"
              "medimg diagnose simulate data/dx_ctpet --kind ctpet   # CT + PET, for fusion")  # fmt: skip
    p.add_argument("out", help="output folder")
    p.add_argument("--kind", choices=("chest", "xray", "ctpet", "ct3d"), default="xray",
                   help="chest: films of projected 3D thoraxes (the chest-films preset's data); "
                        "xray: simple 2D chest phantoms; ctpet: paired CT + PET; ct3d: 3D CT "
                        "volumes (default: xray)")  # fmt: skip
    p.add_argument("--cases", type=positive_int, default=200, help="training cases")
    p.add_argument("--val", type=non_negative_int, default=50, help="validation cases")
    p.add_argument("--test", type=non_negative_int, default=100, help="test cases")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier set in OUT")
    p.set_defaults(func=_simulate)

    p = add_verb(sub, "train", "train a classifier (full, MIL or semi supervision; fusion of modalities)",
              "medimg diagnose train data/dx_xray --supervision full\n"
              "medimg diagnose train data/dx_xray --supervision semi --labelled-fraction 0.1\n"
              "medimg diagnose train data/dx_ctpet --fusion late\n"
              "medimg diagnose train data/dx_ct3d --supervision mil\n"
              "medimg diagnose train pneumoniamnist.npz\n"
              "medimg diagnose train --preset default --export src/medimg/tasks/diagnose/default --overwrite")  # fmt: skip
    p.add_argument(
        "data", nargs="?", help="folder with manifest.csv, a manifest .csv, or a MedMNIST .npz"
    )
    p.add_argument(
        "--preset",
        choices=("default", "chest-films", "chest-heatmap"),
        help="default: the shipped model's recipe; chest-films: a classifier on films of "
        "projected 3D thoraxes (cached thorax renders, ~10 min the first time); chest-heatmap: "
        "a nodule heat-map detector on the same films",
    )
    p.add_argument("--supervision", choices=("full", "mil", "semi"), default="full",
                   help="full: a label per image; mil: per-volume labels over slices; semi: "
                        "labels for a share of cases (default: full)")  # fmt: skip
    p.add_argument("--labelled-fraction", type=probability, default=1.0,
                   help="semi: keep labels of this share of training cases (patient-level)")  # fmt: skip
    p.add_argument(
        "--modalities",
        action=ListAction,
        help="modality names in manifest column order (default: from the data)",
    )
    p.add_argument("--fusion", choices=("early", "late", "intermediate"), default="early",
                   help="how several modalities are combined: stacked as channels (early), "
                        "per-modality features (intermediate) or scores (late)")  # fmt: skip
    p.add_argument("--arch", choices=("resnet", "densenet"), default="resnet",
                   help="network architecture (default: resnet)")  # fmt: skip
    p.add_argument(
        "--width", type=positive_int, default=16, help="network width (channels of the first stage)"
    )
    p.add_argument(
        "--classes", action=ListAction, help="declared class names (default: labels found)"
    )
    p.add_argument(
        "--input-size", action=ListAction, item_type=positive_int, help="resize images to this size"
    )
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="images per step (default: 32)")  # fmt: skip
    p.add_argument("--lr", type=positive_float, default=2e-3, help="learning rate (default: 2e-3)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    add_run_flags(p, out="run/model folder (default runs/diagnose/<data>_<supervision>)",
                  settings="600 steps; device auto",
                  init="fine-tune this model or run folder ('default': the shipped model; "
                       "heads for other classes start fresh)",
                  export="model.yaml")  # fmt: skip
    p.set_defaults(func=_train)

    p = add_verb(sub, "predict", "probabilities, calibrated probabilities and explanation maps",
              "medimg diagnose predict chest.nii.gz out/\n"
              "medimg diagnose predict data/dx_xray/images/ out/ --explain gradcam++\n"
              "medimg diagnose predict data/dx_ctpet/manifest.csv out/ --model runs/diagnose/dx_ctpet_full")  # fmt: skip
    p.add_argument(
        "input",
        help="image file, folder of images, DICOM folder or manifest .csv (multi-modal); "
        "a single slice is read as a 2D image, RGB as grey (BT.601 luma)",
    )
    p.add_argument(
        "output", help="output folder (predictions.csv, *_heatmap.nii.gz, *_overlay.png)"
    )
    p.add_argument("--model", help="model/run folder, or an exported .onnx with --backend "
                   "onnxruntime (default: the shipped default model)")  # fmt: skip
    p.add_argument(
        "--explain",
        choices=("layercam", "gradcam", "gradcam++", "occlusion", "none"),
        default=None,
        help="explanation map (default LayerCAM: finest faithful map; occlusion with "
        "--backend onnxruntime, which has no gradients)",
    )
    add_device(p, default="auto")
    add_threads(p)
    add_backend(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=_predict)

    p = add_verb(sub, "explain", "explanation maps only (same outputs as predict)",
              "medimg diagnose explain case.nii.gz out/ --explain occlusion")  # fmt: skip
    p.add_argument("input", help="image file, folder of images, DICOM folder or manifest .csv")
    p.add_argument("output", help="output folder (predictions.csv, heatmaps, overlays)")
    p.add_argument("--model", help="model/run folder (default: the shipped default model)")
    p.add_argument("--explain", choices=("layercam", "gradcam", "gradcam++", "occlusion"),
                   default="layercam", help="explanation map (default: layercam)")  # fmt: skip
    add_device(p, default="auto")
    add_threads(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=_predict)

    p = add_verb(sub, "calibrate", "recompute a model's out-of-distribution safeguard",
              "medimg diagnose calibrate                       # the shipped model, its phantoms\n"
              "medimg diagnose calibrate runs/diagnose/my_run --data data/my_set/manifest.csv")  # fmt: skip
    p.add_argument("model", nargs="?", help="model/run folder (default: the shipped model)")
    p.add_argument("--data", help="in-distribution images: manifest .csv or folder holding one")
    p.add_argument("--preset", choices=("default", "chest-films", "chest-heatmap"),
                   help="in-distribution images from this training recipe (default for the "
                        "shipped model: default)")  # fmt: skip
    p.add_argument("--cases", type=positive_int, default=600,
                   help="--preset: images to fit on (half as many more for the threshold)")  # fmt: skip
    add_threads(p)
    p.set_defaults(func=_calibrate)

    p = add_verb(sub, "evaluate", "score predictions: AUC with CIs, sens/spec, ECE, ROC + reliability PNGs",
              "medimg diagnose evaluate out/predictions.csv data/dx_xray/manifest.csv")  # fmt: skip
    p.add_argument("predictions", help="predictions.csv from predict")
    p.add_argument("manifest", help="manifest .csv with the true labels")
    p.add_argument(
        "--out", help="report folder (default: runs/diagnose/evaluation/<predictions folder>)"
    )
    p.add_argument(
        "--threshold",
        type=probability,
        default=0.5,
        help="operating point on the calibrated probability",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report")
    p.set_defaults(func=_evaluate)
