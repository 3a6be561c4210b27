"""Evaluation: several methods on the same pairs, side by side, with bootstrap CIs.

Methods: ``identity``, ``model`` (the network), ``model+io`` (instance optimisation from the better
of the network's field and the identity), ``io`` (instance optimisation from the identity, no
network), ``sitk-demons``, ``sitk-bspline``, ``ants-syn`` (with ANTsPy installed). Per pair and method: mean Dice and HD95 (mm) of the warped
moving labels, % folded voxels, std of log-Jacobian, end-point error (mm, with a true field), TRE
(mm, with landmarks), wall and CPU seconds. Writes ``metrics.csv`` and ``summary.md`` (mean with a
95 % percentile-bootstrap interval over pairs).
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

from medimg.errors import InputError
from medimg.metrics.registration import (
    endpoint_error,
    folding_fraction,
    jacobian_determinant,
    label_overlap,
    log_jacobian_std,
    target_registration_error,
)
from medimg.metrics.stats import bootstrap_ci
from medimg.tasks.register.data import Pair, load_pair, read_pairs
from medimg.tasks.register.predict import RegResult

__all__ = ["ALL_METHODS", "evaluate_dataset", "pair_metrics", "run_method"]

ALL_METHODS = ("identity", "model", "model+io", "io", "sitk-demons", "sitk-bspline", "ants-syn")
COLUMNS = ("dice", "hd95_mm", "folding_pct", "sdlogj", "epe_mm", "epe_fg_mm", "tre_mm", "seconds",
           "cpu_seconds")  # fmt: skip


def _identity(pair: Pair) -> RegResult:
    from medimg.tasks.register.fields import field_image

    nd = pair.fixed.spatial_ndim
    zero = np.zeros((nd, *pair.fixed.spatial_shape), np.float32)
    return RegResult(pair.moving, field_image(zero, pair.fixed), pair.moving_label)


def run_method(
    method: str,
    pair: Pair,
    registrator=None,
    instance_steps: int = 50,
    similarity: str | None = None,
) -> RegResult:
    """Register ``pair`` with ``method`` (see :data:`ALL_METHODS`); ``similarity`` drives the
    instance optimisation of ``model+io`` and ``io``."""
    if method == "identity":
        return _identity(pair)
    if method in ("model", "model+io", "io"):
        steps = 0 if method == "model" else instance_steps
        return registrator.register(pair.fixed, pair.moving, moving_labels=pair.moving_label,
                                    instance_steps=steps, similarity=similarity,
                                    start="identity" if method == "io" else "auto")  # fmt: skip
    if method.startswith(("sitk-", "ants-")):
        from medimg.tasks.register.baseline import baseline_register

        return baseline_register(pair.fixed, pair.moving, method, moving_labels=pair.moving_label)
    raise InputError(f"unknown method {method!r}; choose from {', '.join(ALL_METHODS)}")


def pair_metrics(pair: Pair, result: RegResult) -> dict[str, float]:
    """The :data:`COLUMNS` of one registered pair (NaN where the pair lacks the ground truth)."""
    affine = pair.fixed.affine
    jac = jacobian_determinant(result.field.array, affine)
    row = {"folding_pct": 100 * folding_fraction(jac), "sdlogj": log_jacobian_std(jac),
           "seconds": result.seconds, "cpu_seconds": result.cpu_seconds}  # fmt: skip
    row["dice"] = row["hd95_mm"] = row["epe_mm"] = row["epe_fg_mm"] = row["tre_mm"] = float("nan")
    if pair.fixed_label is not None and result.warped_labels is not None:
        labels = [int(v) for v in np.unique(pair.fixed_label.array) if v]
        scores = label_overlap(result.warped_labels.array, pair.fixed_label.array, labels,
                               pair.fixed.spacing)  # fmt: skip
        row["dice"] = float(np.mean([s["dice"] for s in scores.values()]))
        row["hd95_mm"] = float(np.mean([s["hd95"] for s in scores.values()]))
    if pair.field is not None:
        row["epe_mm"] = endpoint_error(result.field.array, pair.field)
        if pair.fixed_label is not None:  # inside the anatomy, where the images say anything
            fg = pair.fixed_label.array[0] > 0
            row["epe_fg_mm"] = endpoint_error(result.field.array, pair.field, mask=fg)
    if pair.fixed_landmarks is not None and pair.moving_landmarks is not None:
        tre = target_registration_error(pair.fixed_landmarks, pair.moving_landmarks,
                                        result.field.array, affine)  # fmt: skip
        row["tre_mm"] = float(tre.mean())
    return row


def evaluate_dataset(
    dataset: str | Path,
    out_dir: str | Path,
    *,
    methods: tuple[str, ...] = ("identity", "model", "sitk-demons"),
    model: str | Path | None = None,
    split: str = "test",
    instance_steps: int = 50,
    similarity: str | None = None,
    device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Run ``methods`` on the ``split`` pairs of ``dataset``; write ``metrics.csv`` and
    ``summary.md`` into ``out_dir``; return ``{"rows": [...], "summary": {method: {col: Estimate}}}``.

    ``out_dir`` is checked before any registration runs and appears whole at the end; an
    earlier report there is replaced only with ``overwrite``."""
    from tqdm import tqdm

    from medimg.io.output import atomic_dir, check_output_dir, is_owned

    bad = [m for m in methods if m not in ALL_METHODS]
    if bad:
        raise InputError(f"unknown method {bad[0]!r}; choose from {', '.join(ALL_METHODS)}")
    specs = read_pairs(dataset, split)
    if not specs:
        raise InputError(f"no '{split}' pairs in the pair list", dataset)
    inputs = [Path(dataset), *(p for s in specs for p in dataclasses.astuple(s) if p is not None)]
    check_output_dir(out_dir, overwrite, inputs=inputs, owned=is_owned(out_dir, _REPORT))
    registrator = None
    if any(m.startswith("model") or m == "io" for m in methods):
        from medimg.tasks.register.predict import Registrator

        registrator = Registrator(model, device=device)
    rows = []
    for spec in tqdm(specs, desc="evaluate", disable=not progress):
        pair = load_pair(spec)
        for method in methods:
            res = run_method(method, pair, registrator, instance_steps, similarity)
            rows.append({"pair": pair.name, "method": method, **pair_metrics(pair, res)})
    summary = _summary(rows, methods)
    with atomic_dir(out_dir, overwrite, inputs=inputs, owned=is_owned(out_dir, _REPORT)) as out:
        _write_report(out, rows, summary, specs, split, dataset)
    return {"rows": rows, "summary": summary}


_REPORT = ("metrics.csv", "summary.md")


def _summary(rows: list[dict], methods: tuple[str, ...]) -> dict[str, dict]:
    summary: dict[str, dict] = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        summary[method] = {c: bootstrap_ci([r[c] for r in mine]) for c in COLUMNS
                           if all(np.isfinite(r[c]) for r in mine)}  # fmt: skip
    return summary


def _write_report(out: Path, rows: list[dict], summary: dict, specs: list, split: str,
                  dataset: str | Path) -> None:  # fmt: skip
    with (out / "metrics.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["pair", "method", *COLUMNS])
        w.writeheader()
        w.writerows(
            [{k: (f"{v:.5g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
        )
    lines = [f"# Registration: {len(specs)} '{split}' pairs of {dataset}", "",
             "| method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]  # fmt: skip
    for method, est in summary.items():
        lines.append(f"| {method} | " + " | ".join(str(est.get(c, "n/a")) for c in COLUMNS) + " |")
    note = (
        "Mean [95 % bootstrap interval over pairs]. Dice/HD95: warped moving labels vs fixed "
        "labels (mean over labels); EPE/TRE in mm; folding: % voxels with det J <= 0."
    )
    lines += ["", note]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
