"""``evaluate``: a candidates CSV against LUNA16 annotations -> FROC table, curve PNG, CPM + CIs,
and sensitivity at the operating point per nodule size and type (:mod:`.strata`).

The scans counted are those of ``seriesuids`` (LUNA16's ``seriesuids.csv``: one uid a line, no
header) or of a folder of ``.mhd`` volumes; without either, the union of the series named in the
annotations and the candidates (a scan with neither nodules nor candidates would then be missed,
which overstates FPs per scan: pass the list). Annotations or candidates naming a series outside
that list are an error. Rules and formulas: :mod:`medimg.metrics.detection`.

The report folder is checked before any work and written whole (:mod:`.outputs`): an earlier
report is replaced only with ``overwrite``; a refusal or interrupt leaves nothing behind.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from medimg.datasets.luna16 import read_annotations
from medimg.errors import InputError
from medimg.io.inputs import read_csv_rows, read_text
from medimg.io.output import atomic_dir, atomic_path, check_output_dir
from medimg.metrics.detection import (
    FROC_RATES,
    ScanMatch,
    centers_to_boxes,
    froc,
    froc_bootstrap,
    match_iou,
    match_luna16,
    operating_point,
)
from medimg.tasks.detect.strata import read_nodule_types, sensitivity_by_group, size_groups
from medimg.typing import PathType

__all__ = ["evaluate_candidates", "read_candidates", "read_scan_list"]


def read_candidates(path: PathType) -> dict[str, np.ndarray]:
    """``{uid: (K, 5) [x, y, z, probability, diameter (NaN if absent)]}`` (LPS mm)."""
    p = Path(path)
    if not p.exists():
        raise InputError("candidates file not found", p)
    cols = ("seriesuid", "coordX", "coordY", "coordZ", "probability")
    rows = read_csv_rows(p, required=cols)
    has_d = bool(rows) and "diameter_mm" in rows[0]
    out: dict[str, list[list[float]]] = {}
    for line, row in enumerate(rows, start=2):
        try:
            vals = [float(row[c]) for c in cols[1:]]
            vals.append(float(row["diameter_mm"]) if has_d else np.nan)
        except (TypeError, ValueError):
            raise InputError(
                f"line {line}: coordinates and probability must be numbers", p
            ) from None
        if not np.all(np.isfinite(vals[:4])):
            raise InputError(f"line {line}: coordinates and probability must be finite", p)
        out.setdefault((row["seriesuid"] or "").strip(), []).append(vals)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def read_scan_list(path: PathType) -> list[str]:
    """Series uids from a ``seriesuids.csv`` (first column; a ``seriesuid`` header is skipped)
    or from the ``.mhd`` names under a folder."""
    p = Path(path)
    if p.is_dir():
        uids = sorted(f.stem for f in p.rglob("*.mhd"))
    elif p.exists():
        lines = read_text(p).splitlines()  # header-less: not read_csv_rows
        uids = [r[0].strip() for r in csv.reader(lines) if r and r[0].strip()]
        uids = [u for u in uids if u != "seriesuid"]
    else:
        raise InputError("scan list not found (seriesuids.csv or a folder of .mhd volumes)", p)
    if not uids:
        raise InputError("the scan list is empty", p)
    return uids


def _plot(res, est, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    ok = res.fps > 0
    ax.plot(res.fps[ok], res.sens[ok], "b-", lw=1.5, label=f"CPM {est['cpm']}")
    lo = [est[f"sens@{r:g}"].low for r in res.rates]
    hi = [est[f"sens@{r:g}"].high for r in res.rates]
    ax.fill_between(res.rates, lo, hi, color="b", alpha=0.15, label="95% CI (bootstrap)")
    ax.plot(res.rates, res.sensitivities, "ko", ms=4)
    ax.set(xscale="log", xlim=(0.1, 10), ylim=(0, 1.02), xlabel="false positives per scan",
           ylabel="sensitivity", title=title)  # fmt: skip
    ax.set_xticks(res.rates, [f"{r:g}" for r in res.rates])
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def evaluate_candidates(
    candidates: PathType,
    annotations: PathType,
    out_dir: PathType,
    *,
    excluded: PathType | None = None,
    scans: PathType | None = None,
    iou_threshold: float = 0.1,
    fp_per_scan: float = 1.0,
    threshold: float | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Score ``candidates`` (CSV) against ``annotations`` (LUNA16 CSV); write ``froc.csv``,
    ``summary.md``, ``froc.png`` and ``summary.json`` into ``out_dir`` and return the summary."""
    sources = [x for x in (candidates, annotations, excluded, scans) if x is not None]
    check_output_dir(out_dir, overwrite, inputs=sources)
    if n_resamples < 1:
        raise InputError(f"need at least 1 bootstrap resample, got {n_resamples}")
    if threshold is not None and not np.isfinite(threshold):
        raise InputError(f"threshold {threshold} is not a number")
    if not 0 < fp_per_scan < np.inf:
        raise InputError(f"false positives per scan must be positive, got {fp_per_scan}")
    ann = read_annotations(annotations)
    exc = read_annotations(excluded, allow_empty=True) if excluded else {}
    cand = read_candidates(candidates)
    if scans is not None:
        uids = read_scan_list(scans)
    else:
        uids = sorted(set(ann) | set(cand))
    known = set(uids)
    for name, table in (("annotations", ann), ("excluded annotations", exc), ("candidates", cand)):
        unknown = sorted(set(table) - known)
        if unknown:
            raise InputError(
                f"the {name} name {len(unknown)} series not in the scan list (first: "
                f"{unknown[0]}); add it to seriesuids.csv or remove its rows"
            )
    empty4, empty5 = np.zeros((0, 4)), np.zeros((0, 5))
    centre: list[ScanMatch] = []
    by_iou: list[ScanMatch] = []
    has_d = all(np.isfinite(c[:, 4]).all() for c in cand.values())
    for u in uids:
        c, a, e = cand.get(u, empty5), ann.get(u, empty4), exc.get(u, empty4)
        centre.append(match_luna16(c[:, :3], c[:, 3], a[:, :3], a[:, 3], e[:, :3], e[:, 3]))
        if has_d:
            ed = np.where(e[:, 3] < 0, 10.0, e[:, 3])
            by_iou.append(match_iou(centers_to_boxes(c[:, :3], c[:, 4]), c[:, 3],
                                    centers_to_boxes(a[:, :3], a[:, 3]),
                                    centers_to_boxes(e[:, :3], ed), iou_threshold))  # fmt: skip
    res = froc(centre)
    est = froc_bootstrap(centre, n_resamples=n_resamples, seed=seed)
    op = operating_point(centre, threshold=threshold, fp_per_scan=None if threshold is not None
                         else fp_per_scan, n_resamples=n_resamples, seed=seed)  # fmt: skip
    strata = _strata(centre, uids, ann, annotations, float(op["threshold"]), n_resamples, seed)
    with atomic_dir(out_dir, overwrite, inputs=sources) as out:
        return _write_report(out, res, est, op, by_iou, has_d, iou_threshold, strata)


def _strata(matches, uids, ann, annotations, threshold, n_resamples, seed) -> dict:
    """Sensitivity at the operating point per nodule size and (where annotated) per type."""
    out = {}
    sizes = [size_groups(ann[u][:, 3]) if u in ann else [] for u in uids]
    out["by_size"] = sensitivity_by_group(matches, sizes, threshold, n_resamples=n_resamples,
                                          seed=seed)  # fmt: skip
    types = read_nodule_types(annotations)
    if types is not None:
        kinds = [types.get(u, []) for u in uids]
        out["by_type"] = sensitivity_by_group(matches, kinds, threshold,
                                              n_resamples=n_resamples, seed=seed)  # fmt: skip
    return out


def _strata_md(strata: dict, op: dict) -> list[str]:
    md = ["", (f"Sensitivity at the operating point ({op['fp_per_scan']:.3g} FPs/scan), per "
               "group [95% CI, bootstrap over the scans holding the group]:"), "",
          "| group | nodules | sensitivity [95% CI] |", "|---|---|---|"]  # fmt: skip
    for key in ("by_type", "by_size"):
        for name, g in strata.get(key, {}).items():
            md.append(f"| {name} | {g['n']} | {g['sensitivity']} |")
    return md


def _write_report(
    out: Path, res, est, op, by_iou, has_d: bool, iou_threshold: float, strata: dict
) -> dict:
    """``froc.csv``, ``summary.md``, ``summary.json`` and ``froc.png`` into ``out``."""
    rows = [(f"{r:g}", est[f"sens@{r:g}"]) for r in FROC_RATES]
    with atomic_path(out / "froc.csv") as tmp:
        tmp.write_text("fp_per_scan,sensitivity,ci_low,ci_high\n" + "".join(
            f"{r},{e.value:.6f},{e.low:.6f},{e.high:.6f}\n" for r, e in rows))  # fmt: skip
    summary = {
        "n_scans": res.n_scans, "n_nodules": res.n_nodules, "n_detected": res.n_detected,
        "cpm": est["cpm"].__dict__, "froc": {r: e.__dict__ for r, e in rows},
        "operating_point": {k: (v.__dict__ if hasattr(v, "__dict__") else v) for k, v in op.items()},
    }  # fmt: skip
    md = [f"# FROC ({res.n_scans} scans, {res.n_nodules} nodules, {res.n_detected} ever detected)",
          "", "| FPs/scan | sensitivity [95% CI] |", "|---|---|",
          *[f"| {r} | {e} |" for r, e in rows], f"| **CPM** | **{est['cpm']}** |", "",
          (f"Operating point: threshold {op['threshold']:.4g}, {op['fp_per_scan']:.3g} "
           f"FPs/scan, sensitivity {op['sensitivity']}, precision {op['precision']}.")]  # fmt: skip
    md += _strata_md(strata, op)
    for key, groups in strata.items():
        summary[key] = {k: {"n": g["n"], "sensitivity": g["sensitivity"].__dict__}
                        for k, g in groups.items()}  # fmt: skip
    if has_d:
        r_iou = froc(by_iou)
        summary["cpm_iou"] = {"iou_threshold": iou_threshold, "cpm": r_iou.cpm,
                              "sensitivities": list(r_iou.sensitivities)}  # fmt: skip
        md.append(f"IoU variant (cube boxes, IoU >= {iou_threshold:g}): CPM {r_iou.cpm:.4f}.")
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text("\n".join(md) + "\n")
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1, default=float))
    _plot(res, est, out / "froc.png", f"FROC, {res.n_scans} scans, {res.n_nodules} nodules")
    return summary
