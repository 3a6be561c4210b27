"""``medimg recon mri evaluate``: every method on fastMRI-layout files with ground truth.

Per volume, exactly as fastMRI's ``evaluate.py``: NMSE over the volume, PSNR and SSIM (7x7
window, K1 0.01, K2 0.03) with data range = the ground-truth volume's maximum
(:mod:`medimg.metrics.image_quality`). The summary gives each method's mean over volumes with a
percentile-bootstrap 95 % CI over volumes (:func:`medimg.metrics.stats.bootstrap_ci`), **for each
acceleration apart** (a 4x and an 8x volume never share a CI). A file's acceleration is its
``acceleration`` attribute, else the realised acceleration of its mask. Classical methods that
need coil maps estimate them by ESPIRiT, as they would on scanner data; ``cs_tv`` (usually the
strongest classical method on real anatomy) is in the default set.

Ground truth is the file's ``reconstruction_rss`` or, from a ``targets`` folder, the image named
like the volume (``<name>.npy`` ``(S, h, w)`` or ``(h, w)``, or any image ``medimg`` reads, e.g.
the ``<name>.nii.gz`` that ``predict`` writes from fully sampled data: same grid convention).

Writes ``metrics.csv`` (one row per volume and method), ``summary.md`` and ``panel.png``
(middle slice of the first volume: ground truth and each method, error maps below).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medimg.datasets.fastmri import center_crop
from medimg.errors import InputError
from medimg.metrics.image_quality import nmse, psnr, ssim, volume_max
from medimg.metrics.stats import Estimate, bootstrap_ci
from medimg.tasks.reconstruct.mri.infer import Reconstructor
from medimg.tasks.reconstruct.mri.predict import case_from_h5

__all__ = ["DEFAULT_CLASSICAL", "evaluate_files", "score_volume", "target_from_folder"]

METRICS = ("nmse", "psnr", "ssim")
#: The classical methods ``evaluate`` scores by default.
DEFAULT_CLASSICAL = ("zero_filled", "cs_wavelet", "cs_tv")
_IMAGE_SUFFIXES = (".npy", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".tif", ".tiff")


def acceleration_label(path: Path, mask: np.ndarray, shape: tuple[int, int]) -> str:
    """``"4x"``: the file's ``acceleration`` attribute, else its mask's realised acceleration,
    rounded to 0.5 (realised rates of one nominal rate differ by a line or two)."""
    import h5py
    import torch

    from medimg.physics.masks import acceleration_of

    with h5py.File(path, "r") as f:
        accel = f.attrs.get("acceleration")
    if accel is None:
        accel = acceleration_of(torch.as_tensor(np.asarray(mask)), shape)
    return f"{round(2 * float(accel)) / 2:g}x"


def target_from_folder(folder: str | Path, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The reference ``(S, h, w)`` of volume ``name`` from ``folder`` (see the module doc)."""
    from medimg.io.api import load

    folder = Path(folder)
    found = [
        folder / f"{name}{suf}" for suf in _IMAGE_SUFFIXES if (folder / f"{name}{suf}").exists()
    ]
    dicom = folder / name
    if not found and dicom.is_dir():
        found = [dicom]
    if not found:
        raise InputError(f"no reference image {name}.<npy|nii.gz|...> for volume {name}; add "
                         "one or leave --targets out", folder)  # fmt: skip
    path = found[0]
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False).astype(np.float32)
    else:
        img = np.asarray(load(path).array, np.float32)  # (1, X, Y[, Z]): columns, rows, slices
        arr = img[0].transpose(2, 1, 0) if img.ndim == 4 else img[0].T
    arr = arr[None] if arr.ndim == 2 else arr
    if arr.shape != tuple(shape):
        raise InputError(f"reference {arr.shape} does not match the reconstruction "
                         f"{tuple(shape)} (slices, rows, columns); give one of that shape", path)  # fmt: skip
    if not np.isfinite(arr).all():
        raise InputError("the reference contains NaN or Inf values", path)
    return arr


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
    classical: Sequence[str] = DEFAULT_CLASSICAL,
    models: dict[str, str | None] | None = None,
    progress: bool = True,
    overwrite: bool = False,
    targets: str | Path | None = None,
) -> dict[str, dict[str, Estimate]]:
    """Score ``classical`` methods and ``models`` (label -> model folder, ``None`` = default)
    on ``files`` (``.h5`` paths or a folder of them); returns method -> metric -> estimate.
    When the files hold more than one acceleration, each method gets one entry per
    acceleration, labelled ``"<method> @ 4x"`` (estimates never pool accelerations).
    ``targets``: a folder of reference images for files without ``reconstruction_rss``.

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
    from medimg.tasks.reconstruct.mri.train import default_label

    methods = _methods(classical, {default_label(): None} if models is None else models)
    rows: list[dict[str, object]] = []
    panel: dict[str, np.ndarray] = {}
    if targets is not None and not Path(targets).is_dir():
        raise InputError("--targets must be a folder of reference images", targets)
    for i, f in enumerate(files):
        case = case_from_h5(f)
        accel = acceleration_label(f, case.mask.numpy(), tuple(case.kspace.shape[-2:]))
        if targets is not None:
            h, w = case.crop or tuple(case.kspace.shape[-2:])
            case.target = target_from_folder(targets, case.name, (case.kspace.shape[0], h, w))
        if case.target is None:
            raise InputError("no reconstruction_rss matching the recon matrix: no ground truth; "
                             "give reference images with --targets FOLDER", f)  # fmt: skip
        if i == 0:
            panel["ground truth"] = case.target[len(case.target) // 2]
        for label, rec in methods.items():
            try:
                pred = center_crop(rec(case.kspace, case.mask, progress=progress), case.crop)
            except InputError as exc:  # name the file the k-space or mask came from
                raise exc if exc.path else InputError(str(exc), f) from None
            rows.append({"volume": case.name, "acceleration": accel, "method": label,
                         **score_volume(case.target, pred)})  # fmt: skip
            if i == 0:
                panel[label] = pred[len(pred) // 2]
    accels = sorted({str(r["acceleration"]) for r in rows}, key=lambda a: float(a[:-1]))
    summary: dict[str, dict[str, Estimate]] = {}
    for a in accels:
        for label in methods:
            sel = [r for r in rows if r["method"] == label and r["acceleration"] == a]
            key = label if len(accels) == 1 else f"{label} @ {a}"
            summary[key] = {m: bootstrap_ci([float(r[m]) for r in sel]) for m in METRICS}  # type: ignore[arg-type]
    counts = {a: len({r["volume"] for r in rows if r["acceleration"] == a}) for a in accels}
    with atomic_dir(out_dir, overwrite, inputs=given) as out:
        _write_csv(rows, out / "metrics.csv")
        (out / "summary.md").write_text(_markdown(summary, counts, list(methods)))
        _save_panel(panel, out / "panel.png")
    return summary


def _write_csv(rows: list[dict[str, object]], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["volume", "acceleration", "method", *METRICS])
        writer.writeheader()
        writer.writerows(rows)


def _markdown(
    summary: dict[str, dict[str, Estimate]], counts: dict[str, int], methods: list[str]
) -> str:
    """One table per acceleration: mean [bootstrap 95 % CI over that acceleration's volumes]."""
    lines: list[str] = []
    for a, n in counts.items():
        head = f"MRI reconstruction at {a} on {n} volume(s): mean [bootstrap 95% CI over volumes]"
        lines += [head, "", "| method | NMSE | PSNR dB | SSIM |", "|---|---|---|---|"]
        for label in methods:
            est = summary[label if len(counts) == 1 else f"{label} @ {a}"]
            lines.append(f"| {label} | {est['nmse']} | {est['psnr']} | {est['ssim']} |")
        lines.append("")
    return "\n".join(lines)


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
