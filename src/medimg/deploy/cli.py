"""``medimg export MODEL --format onnx|torchscript [--int8 dynamic|static] --out FILE``
(light: torch is imported only when the command runs)."""

from __future__ import annotations

import argparse

from medimg.tasks.cli_helpers import add_threads, add_verb, positive_int, set_threads

__all__ = ["add_export"]


def _export(args: argparse.Namespace) -> int:
    from medimg.deploy.export import export_model, report_path
    from medimg.deploy.parity import format_report
    from medimg.deploy.runtime import sidecar_path

    set_threads(args.threads)
    if args.format == "monai-bundle":
        if args.int8 or args.calibration:
            from medimg.errors import InputError

            raise InputError("a MONAI bundle holds fp32 weights; int8 is for --format onnx")
        export_model(args.model, args.out, format=args.format, overwrite=args.overwrite)
        print(f"wrote the MONAI bundle {args.out} (run it: python -m monai.bundle run "
              f"--config_file {args.out}/configs/inference.json --bundle_root {args.out} "
              "--dataset_dir IMAGES --output_dir LABELS)")  # fmt: skip
        return 0
    report = export_model(args.model, args.out, format=args.format, int8=args.int8,
                          overwrite=args.overwrite, check=not args.no_check,
                          check_samples=args.check_samples,
                          calibration_samples=args.calibration_samples,
                          calibration=args.calibration)  # fmt: skip
    stages = [(args.out, report)]
    if "coarse" in report:  # the report, or the sidecar naming the file under --no-check
        from medimg.deploy.export import coarse_path

        stages.insert(0, (str(coarse_path(args.out)), report["coarse"]))
    for out, rep in stages:  # a registration model with a coarse stage: two files
        print(f"wrote {out} and {sidecar_path(out)}")
        if not args.no_check and rep is not None:
            for line in format_report(rep):
                print(line)
            print(f"wrote {report_path(out)}")
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    """Add ``medimg export`` to the top-level commands."""
    p = add_verb(sub, "export", "export a model to ONNX (fp32 or int8) or TorchScript, with a "
                 "sidecar JSON for predict --backend onnxruntime and a parity report",
                 "medimg export segment --format onnx --int8 static --out seg_int8.onnx\n"
                 "medimg export redcnn --format onnx --out redcnn.onnx\n"
                 "medimg export segment --format monai-bundle --out seg_bundle\n"
                 "medimg segment predict ct.nii.gz labels.nii.gz --model seg_int8.onnx "
                 "--backend onnxruntime")  # fmt: skip
    p.add_argument("model", help="segment, redcnn, wgan, diagnose, register, detect, us-learned, "
                   "mri, or a model/run folder")  # fmt: skip
    p.add_argument("--format", choices=("onnx", "torchscript", "monai-bundle"), default="onnx",
                   help="file format (default: onnx); monai-bundle: a MONAI bundle folder "
                        "(segmentation)")  # fmt: skip
    p.add_argument("--int8", choices=("dynamic", "static"),
                   help="ONNX Runtime int8 quantisation: dynamic (no calibration) or static "
                        "(QDQ, calibrated on a few generated inputs)")  # fmt: skip
    p.add_argument(
        "--out", required=True, help="file to write (.onnx or .pt; a folder for monai-bundle)"
    )
    p.add_argument("--no-check", action="store_true", help="skip the parity report")
    p.add_argument("--check-samples", type=positive_int, default=2,
                   help="generated cases/slices in the parity check (default: 2)")  # fmt: skip
    p.add_argument("--calibration-samples", type=positive_int, default=4,
                   help="inputs for static int8 calibration (default: 4)")  # fmt: skip
    p.add_argument("--calibration", metavar="FOLDER",
                   help="static int8: calibrate on the images in FOLDER (NIfTI/NRRD/MHA; "
                        "default: inputs generated for the task)")  # fmt: skip
    add_threads(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=_export)
