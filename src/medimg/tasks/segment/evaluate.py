"""Evaluate a folder of predicted label maps against ground truth, the standard way.

Cases are matched by file name (``<case>.nii.gz`` in both folders). Metrics come from
:mod:`medimg.metrics.segmentation` (Dice, IoU, HD95, ASSD, NSD in mm, with its documented
empty-mask convention). Writes ``metrics.csv`` (one row per case and label), ``summary.md``
(per-label means with 95 % bootstrap CIs) and ``cases.png`` (middle slice of the worst and
best cases by mean Dice, ground-truth contours over predicted fills).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medimg.datasets.msd import IMAGE_ENDINGS, _stem
from medimg.errors import InputError

__all__ = ["evaluate_folders"]

METRICS = ("dice", "iou", "hd95", "assd", "nsd")


def _label_table(pred: Path) -> dict[int, str]:
    """The names in the label table ``segment predict`` wrote beside a prediction, if any."""
    from medimg.io.label_table import label_table_path, read_label_table

    table = label_table_path(pred)
    return read_label_table(table) if table.is_file() else {}


def _files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError("folder not found", folder)
    out = {_stem(p): p for p in sorted(folder.iterdir()) if p.name.lower().endswith(IMAGE_ENDINGS)}
    if not out:
        raise InputError("no label files (.nii.gz, .nrrd, .mha) in this folder", folder)
    return out


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    labels: dict[int, str] | None = None,
    nsd_tolerance_mm: float = 1.0,
    images_dir: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Score every prediction that has a ground truth; returns ``{"per_case", "summary"}``.

    ``labels`` (id -> name) defaults to the foreground values found in the ground truth, named
    by the label table beside the predictions (``segment predict`` writes one) when present.
    ``images_dir`` (optional, ``<case>_0000.nii.gz`` or ``<case>.nii.gz``) gives the PNG a
    grey background. The report folder ``out_dir`` is checked before anything is computed and
    appears whole at the end; an earlier report there is replaced only with ``overwrite``.
    """
    from medimg.io.api import load
    from medimg.io.output import atomic_dir, check_output_dir, is_owned
    from medimg.metrics.segmentation import case_metrics, summarize

    preds, gts = _files(Path(pred_dir)), _files(Path(gt_dir))
    if images_dir is not None and not Path(images_dir).is_dir():
        raise InputError("image folder (--images) not found; check the path", images_dir)
    inputs = [*preds.values(), Path(gt_dir), *([Path(images_dir)] if images_dir else [])]
    if out_dir is not None:
        check_output_dir(out_dir, overwrite, inputs=inputs, owned=is_owned(out_dir, _REPORT))
    common = sorted(set(preds) & set(gts))
    if not common:
        raise InputError(f"no prediction matches a ground-truth file name in {gt_dir}", pred_dir)
    loaded = {}
    for cid in common:
        p, g = load(preds[cid], is_label=True), load(gts[cid], is_label=True)
        if p.spatial_shape != g.spatial_shape or not np.allclose(p.affine, g.affine, atol=1e-3):
            raise InputError(
                f"prediction grid {p.spatial_shape} differs from the ground truth "
                f"{g.spatial_shape}; predict on the original image geometry",
                preds[cid],
            )
        loaded[cid] = (p, g)
    if labels is None:
        found = sorted({int(v) for _, g in loaded.values() for v in np.unique(g.array)} - {0})
        table = _label_table(preds[common[0]])
        labels = {v: table.get(v, f"label {v}") for v in found}
    ids = sorted(labels)
    per_case = {
        cid: case_metrics(p.array[0], g.array[0], labels=ids, spacing=g.spacing,
                          nsd_tolerance_mm=nsd_tolerance_mm)
        for cid, (p, g) in loaded.items()
    }  # fmt: skip
    summary = summarize(list(per_case.values()))
    if out_dir is not None:
        with atomic_dir(out_dir, overwrite, inputs=inputs, owned=is_owned(out_dir, _REPORT)) as out:
            _write_csv(out / "metrics.csv", per_case, labels)
            _write_markdown(out / "summary.md", summary, labels, len(per_case), nsd_tolerance_mm)
            _write_png(out / "cases.png", per_case, loaded, images_dir, labels)
    return {"per_case": per_case, "summary": summary}


_REPORT = ("metrics.csv", "summary.md", "cases.png")


def _write_csv(path: Path, per_case: dict, labels: dict[int, str]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "label", "name", *METRICS])
        for cid, scores in per_case.items():
            for k, m in scores.items():
                w.writerow([cid, k, labels[k], *(f"{m[n]:.6g}" for n in METRICS)])


def _write_markdown(path: Path, summary: dict, labels: dict[int, str], n: int, tol: float) -> None:
    head = "| label | " + " | ".join(METRICS) + " |"
    lines = [
        (
            f"Segmentation metrics over {n} case(s): mean [95% bootstrap CI]; distances in mm, "
            f"NSD at {tol:g} mm."
        ),
        "",
        head,
        "|" + "---|" * (len(METRICS) + 1),
    ]
    for k, est in summary.items():
        cells = [f"{est[m].value:.3f} [{est[m].low:.3f}, {est[m].high:.3f}]" for m in METRICS]
        lines.append(f"| {labels[k]} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def _write_png(
    path: Path,
    per_case: dict,
    loaded: dict,
    images_dir: str | Path | None,
    names: Mapping[int, str],
) -> None:
    """The two worst and two best cases (mean Dice): the axial slice with the most reference
    voxels, radiological view, prediction filled in the label colours, reference contoured."""
    from medimg.io.api import load
    from medimg.report.figures import (
        axial_slice,
        label_colormap,
        label_legend,
        new_figure,
        orientation_letters,
        save_figure,
    )

    mean = {c: float(np.mean([m["dice"] for m in s.values()])) for c, s in per_case.items()}
    order = sorted(mean, key=mean.get)  # type: ignore[arg-type]
    picks = list(dict.fromkeys([*order[:2], *order[-2:]]))
    cmap = label_colormap(names)
    fig, axes = new_figure(len(picks))
    for ax, cid in zip(axes[0], picks):
        pred, ref = loaded[cid]
        g = ref.canonical().array[0] if ref.spatial_ndim == 3 else ref.array[0]
        z = int(np.argmax((g > 0).reshape(-1, g.shape[-1]).sum(0))) if g.ndim == 3 else None
        p_sl, g_sl = axial_slice(pred, z), axial_slice(ref, z)
        bg = np.zeros_like(g_sl, dtype=float)
        if images_dir is not None:
            cands = [Path(images_dir) / f"{cid}_0000.nii.gz", Path(images_dir) / f"{cid}.nii.gz"]
            found = next((c for c in cands if c.is_file()), None)
            if found is not None:
                bg = axial_slice(load(found), z)
        ax.imshow(bg, cmap="gray")
        ax.imshow(np.ma.masked_equal(p_sl, 0), cmap=cmap, alpha=0.5, vmin=0,
                  vmax=len(cmap.colors) - 1, interpolation="nearest")  # fmt: skip
        if g_sl.any():
            ax.contour(g_sl, levels=np.arange(0.5, g_sl.max() + 0.5), colors="yellow",
                       linewidths=0.7)  # fmt: skip
        ax.set_title(f"{cid}: mean Dice {mean[cid]:.3f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        orientation_letters(ax)
    label_legend(fig, names, extra={"reference contour": "yellow"})
    fig.subplots_adjust(bottom=0.12)
    save_figure(fig, path, "worst (left) to best (right) cases; prediction filled, "
                "reference contoured; radiological view")  # fmt: skip
