"""``medimg detect train2d|predict2d``: the 2.5D key-slice lesion detector (:mod:`.lesion2d`)."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
from pathlib import Path

import numpy as np

from medimg.errors import InputError
from medimg.io.output import atomic_dir, check_output_dir
from medimg.tasks.cli_helpers import (
    add_device,
    add_run_flags,
    add_threads,
    add_verb,
    check_init_preset,
    non_negative_int,
    positive_float,
    set_threads,
)

__all__ = ["add_verbs_2d"]

DEFAULT_MODEL_2D = Path(__file__).parent / "default_lesion2d"


def _train2d(args: argparse.Namespace) -> int:
    from medimg.tasks.detect.lesion2d import (
        Lesion2DConfig,
        from_deeplesion,
        train_lesion_detector,
        train_lesion_preset,
        with_steps,
    )
    from medimg.tasks.detect.train import check_export, export_model

    set_threads(args.threads)
    if args.export:  # before training, not after
        check_export(args.export, overwrite=args.overwrite)
    check_init_preset(args)
    if args.preset:
        out = Path(args.out or "runs/detect2d/default")
        train_lesion_preset(out, max_steps=args.max_steps, progress=not args.quiet)
    else:
        if not args.dataset:
            raise InputError(
                "give a DeepLesion root (DL_info.csv + Images_png) or --preset default"
            )
        cfg = Lesion2DConfig(neighbours=args.neighbours, spacing=args.spacing)
        if args.max_steps:
            cfg = with_steps(cfg, args.max_steps)
        if args.device:
            cfg.train = dataclasses.replace(cfg.train, device=args.device)
        train = from_deeplesion(args.dataset, "train", args.neighbours)
        val = from_deeplesion(args.dataset, "val", args.neighbours)
        out = Path(args.out or f"runs/detect2d/{Path(args.dataset).name}")
        init = DEFAULT_MODEL_2D if args.init == "default" else args.init
        train_lesion_detector(train, val, out, cfg, progress=not args.quiet,
                              resume=True if args.resume else "auto", overwrite=args.overwrite,
                              init=init)  # fmt: skip
    if args.export:
        print(f"exported the best checkpoint to {export_model(out, args.export, args.overwrite)}")
    print(f"trained {out}")
    return 0


def _key_slices(args: argparse.Namespace, neighbours: int):
    """Key slices of the input: a DeepLesion split, or one slice of a volume / a 2D image."""
    from medimg.io.api import load
    from medimg.io.image import Image
    from medimg.tasks.detect.lesion2d import KeySlice, from_deeplesion, slice_affine

    src = Path(args.input)
    if (src / "DL_info.csv").is_file() or src.name == "DL_info.csv":
        return from_deeplesion(src, args.split, neighbours), True
    img = _checked_ct(load(src, modality="CT"), src)
    if img.spatial_ndim == 3:
        z = img.spatial_shape[2] // 2 if args.slice is None else args.slice
        if not 0 <= z < img.spatial_shape[2]:
            raise InputError(
                f"--slice {z} is outside the volume's {img.spatial_shape[2]} slices", src
            )
        zs = np.clip(np.arange(z - neighbours, z + neighbours + 1), 0, img.spatial_shape[2] - 1)
        planes = np.moveaxis(img.array[0][:, :, zs], 2, 0)
        sp = img.spacing
        ks = KeySlice(Image(planes, slice_affine(sp[0], sp[1]), modality="CT"),
                      np.zeros((0, 4)), f"{src.name}_z{z}")  # fmt: skip
        ks.image.meta["volume_affine"], ks.image.meta["z"] = img.affine, z
        return [ks], False
    # a lone 2D slice has no stored neighbours: it stands in for them (as at a series' edge)
    planes = np.repeat(img.array, 2 * neighbours + 1, axis=0)
    return [KeySlice(Image(planes, img.affine, modality="CT"), np.zeros((0, 4)), src.name)], False


def _checked_ct(img, src: Path):
    """A one-channel 2D slice or 3D volume of finite real CT values, or a one-line refusal."""
    from medimg.io.inputs import check_real

    check_real(img.array, src, what="lesion detection")
    if img.array.dtype.kind not in "biuf":
        raise InputError(f"holds {img.array.dtype} values, not CT numbers (HU)", src)
    if img.num_channels != 1 or img.spatial_ndim not in (2, 3):
        raise InputError(
            f"has {img.num_channels} channel(s) and {img.spatial_ndim} axes; predict2d takes a "
            "grey CT slice or volume in HU (a colour image is no CT)",
            src,
        )
    if min(img.spatial_shape[:2]) < 2:
        raise InputError(
            f"is {'x'.join(map(str, img.spatial_shape))} pixels; a CT slice needs at least 2 "
            "pixels on each side",
            src,
        )
    if not np.isfinite(img.array).all():
        raise InputError("holds NaN or infinite values; fix or mask them first", src)
    return img


def _figure(ks, boxes: np.ndarray, scores: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    key = ks.image.array[ks.image.array.shape[0] // 2]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(key.T, cmap="gray", vmin=-160, vmax=240)  # soft-tissue window, rows down
    for (x1, y1, x2, y2), s in zip(boxes[:5], scores[:5]):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="yellow", lw=1.2))
        ax.text(x1, y1 - 1, f"{s:.2f}", color="yellow", fontsize=7)
    for x1, y1, x2, y2 in ks.boxes:
        ax.add_patch(
            Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="lime", lw=0.8, ls="--")
        )
    ax.set_title(f"{ks.name}: top findings (yellow), ground truth (green)", fontsize=8)
    ax.axis("off")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _predict2d(args: argparse.Namespace) -> int:
    from medimg.engine import resolve_device
    from medimg.tasks.detect.lesion2d import load_lesion_model

    set_threads(args.threads)
    out = Path(args.output)
    sources = [args.input, args.model or DEFAULT_MODEL_2D]  # never replace the model folder
    check_output_dir(out, args.overwrite, inputs=sources)  # before any work
    model, cfg = load_lesion_model(args.model or DEFAULT_MODEL_2D)
    device = resolve_device(args.device)
    model.to(device)
    slices, has_truth = _key_slices(args, cfg.neighbours)
    if not slices:
        raise InputError(f"no key slices in the {args.split} split", args.input)
    with atomic_dir(out, args.overwrite, inputs=sources) as tmp:
        n_rows, res = _detect_slices(args, model, cfg, device, slices, has_truth, tmp)
    print(f"wrote {n_rows} findings on {len(slices)} key slice(s) to {out}/detections.csv, .json")
    if res is not None:
        table = ", ".join(f"{r:g}: {s:.3f}" for r, s in zip(res.rates, res.sensitivities))
        print(f"FROC (IoU >= {cfg.iou_hit}) sensitivity at FPs/image {table}; mean {res.cpm:.3f}")
    return 0


def _detect_slices(args, model, cfg, device, slices, has_truth: bool, out: Path):
    """Detections of every key slice into ``out`` (CSV, JSON, figures, FROC with truth);
    returns the number of findings and the FROC result (None without truth)."""
    from medimg.metrics.detection import froc, match_iou
    from medimg.tasks.detect.lesion2d import DEEPLESION_RATES, detect_key_slice

    if not args.no_figures:
        (out / "figures").mkdir()
    rows, matches = [], []
    for ks in slices:
        boxes, scores = detect_key_slice(model, ks, cfg, device)
        dx, dy = ks.image.spacing[:2]
        for b, s in zip(boxes, scores):
            row = {"slice": ks.name, "x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3],
                   "width_mm": (b[2] - b[0]) * dx, "height_mm": (b[3] - b[1]) * dy, "score": s}  # fmt: skip
            aff = ks.image.meta.get("volume_affine")
            if aff is not None:  # centre in world RAS mm for a slice of a volume
                c = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, ks.image.meta["z"], 1.0])
                row |= dict(zip(("x_ras", "y_ras", "z_ras"), (aff @ c)[:3]))
            rows.append({k: (round(float(v), 4) if not isinstance(v, str) else v)
                         for k, v in row.items()})  # fmt: skip
        if has_truth:
            matches.append(match_iou(boxes, scores, ks.boxes, iou_threshold=cfg.iou_hit))
        if not args.no_figures:
            _figure(ks, boxes, scores, out / "figures" / f"{ks.name}.png")
    keys = list(dict.fromkeys(k for r in rows for k in r)) or [
        "slice",
        "x1",
        "y1",
        "x2",
        "y2",
        "score",
    ]
    with (out / "detections.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    (out / "detections.json").write_text(json.dumps(rows, indent=1))
    if not has_truth:
        return len(rows), None
    res = froc(matches, DEEPLESION_RATES)
    (out / "froc.json").write_text(json.dumps(
        {"rates": res.rates, "sensitivities": res.sensitivities, "mean": res.cpm,
         "n_images": res.n_scans, "n_lesions": res.n_nodules}, indent=1))  # fmt: skip
    return len(rows), res


def add_verbs_2d(sub: argparse._SubParsersAction) -> None:
    """Add ``train2d`` and ``predict2d`` to ``medimg detect``."""
    p = add_verb(sub, "train2d", "train the 2.5D key-slice lesion detector (DeepLesion layout)",
              "medimg detect train2d DeepLesion/ --neighbours 1 --out runs/detect2d/dl\n"
              "medimg detect train2d --preset default --export src/medimg/tasks/detect/default_lesion2d --overwrite")  # fmt: skip
    p.add_argument("dataset", nargs="?", help="DeepLesion root: DL_info.csv + Images_png/")
    p.add_argument("--preset", choices=("default",), help="phantom key slices, the default model")
    p.add_argument(
        "--neighbours", type=non_negative_int, default=1, help="slices each side as channels"
    )
    p.add_argument("--spacing", type=positive_float, default=2.0, help="in-plane mm of the network")
    add_run_flags(p, out="run folder (default runs/detect2d/<dataset>)", settings="the recipe's",
                  init="fine-tune this 2.5D model or run folder ('default': the shipped one)",
                  export="config.yaml")  # fmt: skip
    p.set_defaults(func=_train2d)

    p = add_verb(sub, "predict2d", "find lesions on CT key slices (boxes CSV/JSON, PNGs, FROC if truth)",
              "medimg detect predict2d DeepLesion/ out/ --split test\n"
              "medimg detect predict2d ct.nii.gz out/ --slice 42")  # fmt: skip
    p.add_argument("input", help="DeepLesion root, a CT volume (+ --slice) or a 2D slice image")
    p.add_argument("output", help="output folder (detections.csv, .json, figures/, froc.json)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="DeepLesion root: which split's key slices (default: test)")  # fmt: skip
    p.add_argument(
        "--slice", type=non_negative_int, help="key slice index of a volume (default: middle)"
    )
    p.add_argument("--model", help="model/run folder (default: the shipped 2.5D model)")
    add_device(p)
    add_threads(p)
    p.add_argument("--no-figures", action="store_true", help="skip the PNG per slice")
    p.add_argument("--overwrite", action="store_true", help="replace earlier outputs in OUTPUT")
    p.set_defaults(func=_predict2d)
