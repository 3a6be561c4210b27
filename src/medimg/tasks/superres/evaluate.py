"""Score super-resolution against a thin-slice reference: degrade it, restore it, compare.

PSNR and SSIM (:mod:`medimg.metrics.image_quality`) over the whole volume and inside a head /
body mask (Otsu threshold of the reference, closed and hole-filled), with the reference's
intensity range as the data range. SSIM is computed on the planes that contain the slice axis
(the direction the methods restore); inside the mask it is the mean of the SSIM map there.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from medimg.errors import InputError
from medimg.metrics.image_quality import psnr, ssim
from medimg.tasks.superres.degrade import check_factor, crop_to_multiple, degrade
from medimg.tasks.superres.predict import METHODS, SMORE_STEPS, load_model, restore

__all__ = ["evaluate_file", "evaluate_volume", "foreground_mask", "score"]


def foreground_mask(reference: np.ndarray) -> np.ndarray:
    """Head / body mask: above the Otsu threshold, closed, holes filled."""
    from skimage.filters import threshold_otsu

    mask = reference > threshold_otsu(reference)
    mask = ndimage.binary_closing(mask, iterations=2)
    return ndimage.binary_fill_holes(mask)


def _masked_ssim(ref: np.ndarray, out: np.ndarray, mask: np.ndarray, data_range: float) -> float:
    from skimage.metrics import structural_similarity

    maps = [structural_similarity(a, b, data_range=data_range, win_size=7, full=True)[1]
            for a, b in zip(ref, out)]  # fmt: skip
    return float(np.stack(maps)[mask].mean())


def score(reference: np.ndarray, restored: np.ndarray, axis: int, mask: np.ndarray) -> dict:
    """PSNR/SSIM of ``restored`` against ``reference`` (same shape), whole and in ``mask``."""
    rng = float(reference.max() - reference.min()) or 1.0
    # planes containing the slice axis: put it last, so each leading index is one such plane
    ref, out, m = (np.moveaxis(v, axis, -1) for v in (reference, restored, mask))
    return {
        "psnr_db": psnr(ref, out, data_range=rng),
        "ssim": ssim(ref, out, data_range=rng),
        "psnr_mask_db": psnr(ref[m], out[m], data_range=rng),
        "ssim_mask": _masked_ssim(ref, out, m, rng),
    }


def evaluate_volume(reference: np.ndarray, factor: int = 4, axis: int = 2,
                    methods: tuple[str, ...] | list[str] = ("cubic", "sinc", "supervised"), *,
                    profile: str = "gaussian", model=None, smore_steps: int = SMORE_STEPS,
                    smore_init=None) -> tuple[list[dict], dict[str, np.ndarray]]:  # fmt: skip
    """One row per method (scores, seconds) and the restored volumes (plus ``reference`` and the
    ``thick`` input) for pictures."""
    factor = check_factor(factor)
    if reference.ndim != 3 or min(reference.shape) < 2:
        raise InputError(f"the reference must be a 3D volume; got shape {reference.shape}")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise InputError(f"unknown method {bad[0]!r}; choose from {', '.join(METHODS)}")
    ref = crop_to_multiple(np.asarray(reference, np.float32), axis, factor)
    thick = degrade(ref, axis, factor, profile)
    mask = foreground_mask(ref)
    if "supervised" in methods and model is None:
        model = load_model()
    rows, volumes = [], {"reference": ref, "thick": thick}
    for method in methods:
        t0 = time.process_time()
        out = restore(
            thick, axis, factor, method, model=model, smore_steps=smore_steps, smore_init=smore_init
        )
        seconds = time.process_time() - t0
        rows.append({"method": method, **score(ref, out, axis, mask), "cpu_s": seconds})
        volumes[method] = out
    base = next((r for r in rows if r["method"] == "cubic"), None)
    for r in rows:
        r["gain_vs_cubic_db"] = r["psnr_db"] - base["psnr_db"] if base else float("nan")
        r["gain_mask_vs_cubic_db"] = (r["psnr_mask_db"] - base["psnr_mask_db"]
                                      if base else float("nan"))  # fmt: skip
    return rows, volumes


def save_sr_panel(volumes: dict[str, np.ndarray], axis: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = volumes["reference"]
    cut = 0 if axis != 0 else 1  # a plane containing the slice axis, through the middle
    names = [n for n in volumes if n != "thick"]
    fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 3.4))
    lo, hi = np.percentile(ref, [0.5, 99.5])
    for ax, name in zip(np.atleast_1d(axes), names):
        plane = np.take(volumes[name], ref.shape[cut] // 2, axis=cut)
        ax.imshow(plane.T, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect="auto")
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _fmt(v: object) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def evaluate_file(reference: str | Path, out_dir: str | Path, *, factor: int = 4, axis: int = 2,
                  methods=("cubic", "sinc", "supervised"), profile: str = "gaussian",
                  model=None, smore_steps: int = SMORE_STEPS, smore_init=None,
                  overwrite: bool = False) -> list[dict]:  # fmt: skip
    """Evaluate on the volume file ``reference``; writes ``metrics.csv``, ``summary.md`` and
    ``panel.png`` into ``out_dir`` (whole or not at all)."""
    from medimg.io.api import load
    from medimg.io.output import atomic_dir, check_output_dir

    check_output_dir(out_dir, overwrite, inputs=[reference])
    image = load(reference)
    if image.spatial_ndim != 3 or min(image.spatial_shape) < 2:
        raise InputError(f"the reference must be a 3D volume; got {image.spatial_shape} voxels",
                         reference)  # fmt: skip
    image.check_finite()
    if model is not None and not hasattr(model, "forward"):
        model = load_model(model)
    rows, volumes = evaluate_volume(np.asarray(image.array[0], np.float32), factor, axis,
                                    list(methods), profile=profile, model=model,
                                    smore_steps=smore_steps, smore_init=smore_init)  # fmt: skip
    thick_mm = image.spacing[axis] * factor
    keys = list(rows[0])
    head = (f"{Path(reference).name}: {factor}x along axis {axis} ({thick_mm:.1f} mm {profile} "
            "slices), PSNR/SSIM vs the reference")  # fmt: skip
    lines = [head, "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r[k]) for k in keys) + " |" for r in rows]
    with atomic_dir(out_dir, overwrite, inputs=[reference]) as tmp:
        with open(tmp / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
        (tmp / "summary.md").write_text("\n".join(lines) + "\n")
        save_sr_panel(volumes, axis, tmp / "panel.png", lines[0])
    return rows
