"""``medimg recon mri evaluate``: every method on fastMRI-layout files with ground truth.

Per volume, exactly as fastMRI's ``evaluate.py``: NMSE over the volume, PSNR and SSIM (7x7
window, K1 0.01, K2 0.03) with data range = the ground-truth volume's maximum
(:mod:`medimg.metrics.image_quality`). The summary gives each method's mean over volumes with a
percentile-bootstrap 95 % CI over volumes (:func:`medimg.metrics.stats.bootstrap_ci`). Classical
methods that need coil maps estimate them by ESPIRiT, as they would on scanner data.

Writes ``metrics.csv`` (one row per volume and method), ``summary.md`` and ``panel.png``
(middle slice of the first volume: ground truth and each method, error maps below).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medimg.errors import InputError
from medimg.metrics.image_quality import nmse, psnr, ssim, volume_max
from medimg.metrics.stats import Estimate, bootstrap_ci
from medimg.tasks.reconstruct.mri.infer import Reconstructor
from medimg.tasks.reconstruct.mri.predict import _crop, case_from_h5

__all__ = ["evaluate_files", "score_volume"]

METRICS = ("nmse", "psnr", "ssim")


def score_volume(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """fastMRI's per-volume NMSE, PSNR and SSIM of ``pred`` against ``gt`` (both ``(S, h, w)``)."""
    rng = volume_max(gt)
    return {"nmse": nmse(gt, pred), "psnr": psnr(gt, pred, data_range=rng),
            "ssim": ssim(gt, pred, data_range=rng)}  # fmt: skip


def _methods(classical: Sequence[str], models: dict[str, str | None]) -> dict[str, Reconstructor]:
    out = {name: Reconstructor(name) for name in classical}
    for label, path in models.items():
        out[label] = Reconstructor("net", path)
    return out


def evaluate_files(
    files: Sequence[str | Path] | str | Path,
    out_dir: str | Path,
    *,
    classical: Sequence[str] = ("zero_filled", "cs_wavelet"),
    models: dict[str, str | None] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, dict[str, Estimate]]:
    """Score ``classical`` methods and ``models`` (label -> model folder, ``None`` = default)
    on ``files`` (``.h5`` paths or a folder of them); returns method -> metric -> estimate.

    The report folder ``out_dir`` is checked first and written whole at the end; an earlier
    report is replaced only with ``overwrite``."""
    from medimg.datasets.fastmri import check_fastmri
    from medimg.io.output import atomic_dir, check_output_dir

    given = [files] if isinstance(files, (str, Path)) else list(files)
    if isinstance(files, (str, Path)):
        folder = Path(files)
        files = sorted(folder.glob("*.h5")) if folder.is_dir() else [folder]
    files = [Path(f) for f in files]
    if not files:
        raise InputError("no .h5 files to evaluate; write some with 'medimg recon mri simulate'")
    check_output_dir(out_dir, overwrite, inputs=given)
    for f in files:
        check_fastmri(f)
    methods = _methods(classical, {"varnet (default)": None} if models is None else models)
    rows: list[dict[str, object]] = []
    panel: dict[str, np.ndarray] = {}
    for i, f in enumerate(files):
        case = case_from_h5(f)
        if case.target is None:
            raise InputError("no reconstruction_rss matching the recon matrix: no ground truth", f)
        if i == 0:
            panel["ground truth"] = case.target[len(case.target) // 2]
        for label, rec in methods.items():
            try:
                pred = _crop(rec(case.kspace, case.mask, progress=progress), case.crop)
            except InputError as exc:  # name the file the k-space or mask came from
                raise exc if exc.path else InputError(str(exc), f) from None
            rows.append({"volume": case.name, "method": label, **score_volume(case.target, pred)})
            if i == 0:
                panel[label] = pred[len(pred) // 2]
    summary = {
        label: {
            m: bootstrap_ci([float(r[m]) for r in rows if r["method"] == label]) for m in METRICS
        }  # type: ignore[arg-type]
        for label in methods
    }
    with atomic_dir(out_dir, overwrite, inputs=given) as out:
        _write_csv(rows, out / "metrics.csv")
        (out / "summary.md").write_text(_markdown(summary, len(files)))
        _save_panel(panel, out / "panel.png")
    return summary


def _write_csv(rows: list[dict[str, object]], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["volume", "method", *METRICS])
        writer.writeheader()
        writer.writerows(rows)


def _markdown(summary: dict[str, dict[str, Estimate]], n: int) -> str:
    lines = [f"MRI reconstruction on {n} volume(s): mean [bootstrap 95% CI over volumes]", "",
             "| method | NMSE | PSNR dB | SSIM |", "|---|---|---|---|"]  # fmt: skip
    for label, est in summary.items():
        lines.append(f"| {label} | {est['nmse']} | {est['psnr']} | {est['ssim']} |")
    return "\n".join(lines) + "\n"


def _save_panel(images: dict[str, np.ndarray], path: Path) -> None:
    """Ground truth and each method on one grey scale; error maps ``|x - gt|`` at 5x below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gt = images["ground truth"]
    vmax = float(gt.max())
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 5.4), squeeze=False)
    for col, (label, img) in enumerate(images.items()):
        axes[0, col].imshow(img, cmap="gray", vmin=0, vmax=vmax)
        title = (
            label
            if label == "ground truth"
            else f"{label}\n{psnr(gt, img, data_range=vmax):.1f} dB"
        )
        axes[0, col].set_title(title, fontsize=8)
        if label != "ground truth":
            axes[1, col].imshow(np.abs(img - gt), cmap="magma", vmin=0, vmax=vmax / 5)
            axes[1, col].set_title("|error| (x5)", fontsize=8)
        for ax in axes[:, col]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
