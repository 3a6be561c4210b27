"""Scoring predictions: per-class table with AUC confidence intervals, operating-point metrics,
ECE before/after temperature scaling, ROC curve and reliability diagram PNGs.

Every AUC names the probability it ranks: ``raw`` (``prob_<class>``, or its logit
``logit_<class>`` when the predictions hold one, which ranks the same without the ties of
saturated probabilities) or ``temperature-scaled`` (``calibrated_<class>``). Temperature
scaling keeps the ranking, so the two agree unless rounding in the file made ties.

The report folder is written whole (:mod:`.outputs`): checked before any work, replaced only
with ``overwrite``, never left half-written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import InputError
from medimg.io.inputs import read_csv_rows
from medimg.io.output import atomic_dir, atomic_path, check_output_dir
from medimg.metrics.classification import (
    auc_bootstrap_ci,
    auc_delong_ci,
    binary_metrics,
    expected_calibration_error,
    per_class_table,
    reliability_curve,
    roc_curve,
)
from medimg.typing import PathType

__all__ = ["evaluate_binary", "evaluate_predictions", "plot_reliability", "plot_roc"]


def evaluate_binary(
    labels: np.ndarray,
    probs: np.ndarray,
    calibrated: np.ndarray | None = None,
    threshold: float = 0.5,
    scores: np.ndarray | None = None,
) -> dict[str, Any]:
    """AUC with DeLong and bootstrap intervals of the raw probability (ranked by ``scores``,
    its logits, when given) and AUC of the calibrated one; metrics at ``threshold`` (on the
    calibrated probability when given) and ECE of both probabilities."""
    cal = probs if calibrated is None else calibrated
    rank = probs if scores is None else scores
    out: dict[str, Any] = {"n": len(labels), "n_positive": int(np.sum(labels))}
    d, b = auc_delong_ci(labels, rank), auc_bootstrap_ci(labels, rank)
    out["auc"] = d.value  # raw probability (module doc)
    out["auc_ranked_by"] = "raw logit" if scores is not None else "raw probability"
    out["auc_delong_ci"] = [d.low, d.high]
    out["auc_bootstrap_ci"] = [b.low, b.high]
    dc = auc_delong_ci(labels, cal)
    out["auc_calibrated"] = dc.value
    out["auc_calibrated_delong_ci"] = [dc.low, dc.high]
    out.update(binary_metrics(labels, cal, threshold))
    out["ece"] = expected_calibration_error(probs, labels)
    out["ece_calibrated"] = expected_calibration_error(cal, labels)
    return out


def plot_roc(labels: np.ndarray, probs: np.ndarray, path: PathType, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr, _ = roc_curve(labels, probs)
    ci = auc_delong_ci(labels, probs)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, lw=2, label=f"AUC {ci.value:.3f} [{ci.low:.3f}, {ci.high:.3f}]")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title or "ROC")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_reliability(
    labels: np.ndarray, curves: dict[str, np.ndarray], path: PathType, n_bins: int = 10
) -> Path:
    """Reliability diagram: accuracy against confidence per bin for each named probability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    for name, p in curves.items():
        rc = reliability_curve(p, labels, n_bins)
        ok = rc["count"] > 0
        ece = expected_calibration_error(p, labels, n_bins)
        ax.plot(rc["confidence"][ok], rc["accuracy"][ok], "o-", label=f"{name} (ECE {ece:.3f})")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0.45, 1), ylim=(0, 1.02),
           title="reliability")  # fmt: skip
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def _save(fig: Any, path: PathType) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)


def _read_predictions(path: Path) -> tuple[dict[str, dict[str, str]], list[str]]:
    rows = read_csv_rows(path, required=["case_id"])
    classes = [k[5:] for k in rows[0] if k and k.startswith("prob_")] if rows else []
    if not rows or not classes:
        raise InputError(
            "has no prob_<class> rows; give the predictions.csv 'medimg diagnose predict' wrote",
            path,
        )
    return {r["case_id"]: r for r in rows}, classes


def _logits(preds: dict, rows: list, name: str, path: Path) -> np.ndarray | None:
    """The ``logit_<name>`` column as floats, or ``None`` when the file has none (older files)."""
    if not all(preds[r.case_id].get(f"logit_{name}") for r in rows):
        return None
    try:
        z = np.array([float(preds[r.case_id][f"logit_{name}"]) for r in rows])
    except ValueError:
        z = np.array([np.nan])
    if not np.isfinite(z).all():
        raise InputError(f"logit_{name} holds values that are not finite numbers", path)
    return z


def _probability(row: dict[str, str], column: str, path: Path) -> float:
    try:
        value = float(row.get(column) or "nan")
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # also NaN
        raise InputError(
            f"case {row.get('case_id')!r}: {column} is {row.get(column)!r}, not a probability "
            "in [0, 1]",
            path,
        )
    return value


def evaluate_predictions(
    predictions: PathType, manifest: PathType, out_dir: PathType, *, threshold: float = 0.5,
    overwrite: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Score ``predictions.csv`` against the labels of a manifest (cases matched by id); writes
    ``metrics.json``, ``metrics.md``, ``roc.png`` and ``reliability.png`` into ``out_dir``."""
    from medimg.datasets.manifest import read_manifest

    out = Path(out_dir)
    check_output_dir(out, overwrite, inputs=[predictions, manifest])
    pred_path = Path(predictions)
    preds, pos_names = _read_predictions(pred_path)
    man = read_manifest(manifest, check_files=False, allow_missing_modality=True)
    rows = [r for r in man.rows if r.case_id in preds]
    if not rows:
        raise InputError(
            "no case of the manifest appears in the predictions (ids differ)", manifest
        )
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold {threshold} is not a probability; give one in [0, 1]")
    with atomic_dir(out, overwrite, inputs=[predictions, manifest]) as tmp:
        return _evaluate(preds, pos_names, pred_path, man, rows, tmp, threshold)


def _evaluate(
    preds, pos_names, pred_path, man, rows, out: Path, threshold: float
) -> dict[str, Any]:
    """The scores and files of :func:`evaluate_predictions`, written into ``out``."""
    result: dict[str, Any] = {"cases": len(rows), "missing": len(man.rows) - len(rows)}
    y = np.array([r.labels[0] for r in rows])
    if len(pos_names) == 1:  # binary
        name = pos_names[0]
        p = np.array([_probability(preds[r.case_id], f"prob_{name}", pred_path) for r in rows])
        pc = np.array(
            [_probability(preds[r.case_id], f"calibrated_{name}", pred_path) for r in rows]
        )
        z = _logits(preds, rows, name, pred_path)
        result["binary"] = evaluate_binary(y, p, pc, threshold, scores=z)
        plot_roc(y, p if z is None else z, out / "roc.png",
                 title=f"{pos_names[0]} vs rest (raw)")  # fmt: skip
        plot_reliability(y, {"raw": p, "temperature-scaled": pc}, out / "reliability.png")
        table = per_class_table(
            y, pc, "binary", man.classes or ["negative", pos_names[0]], threshold
        )
    else:
        pc = np.array(
            [
                [_probability(preds[r.case_id], f"calibrated_{c}", pred_path) for c in pos_names]
                for r in rows
            ]
        )
        table = per_class_table(y, pc, "multiclass", pos_names, threshold)
        result["ece_calibrated"] = expected_calibration_error(pc, y)
    result["per_class"] = table
    result["per_class_probability"] = "temperature-scaled"
    lines = [
        "| class | n pos | AUC (temperature-scaled) | sens | spec | F1 | bal. acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in table:
        lines.append(f"| {t['class']} | {int(t['n_positive'])} | {t['auc']:.3f} | {t['sensitivity']:.3f} | "
                     f"{t['specificity']:.3f} | {t['f1']:.3f} | {t['balanced_accuracy']:.3f} |")  # fmt: skip
    if "binary" in result:
        b = result["binary"]
        lines += ["", (f"AUC (raw, ranked by {b['auc_ranked_by']}) {b['auc']:.3f}, 95% CI "
                  f"DeLong [{b['auc_delong_ci'][0]:.3f}, {b['auc_delong_ci'][1]:.3f}], bootstrap "
                  f"[{b['auc_bootstrap_ci'][0]:.3f}, {b['auc_bootstrap_ci'][1]:.3f}]; "
                  f"AUC (temperature-scaled) {b['auc_calibrated']:.3f}; ECE raw {b['ece']:.3f}, "
                  f"temperature-scaled {b['ece_calibrated']:.3f}")]  # fmt: skip
    with atomic_path(out / "metrics.md", overwrite=True) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    with atomic_path(out / "metrics.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=float))
    return result
