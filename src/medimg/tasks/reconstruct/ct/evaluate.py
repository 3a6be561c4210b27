"""Score low-dose FBP, the iterative baseline and each network on a simulated set, with CIs.

Input: a folder written by :func:`~.data.write_pairs` (``medimg recon ct simulate``): per case
``full``, ``low_<pct>`` (NIfTI or DICOM), optional ``phantom``, ``labels.nii.gz``,
``sino_low_<pct>.npy``, plus ``cases.json`` with the scanner settings. The reference of RMSE,
PSNR and SSIM is the full-dose FBP (as with scanner pairs); PSNR/SSIM clip both images to the
stated window. Where the phantom is present: noise std = std of ``image - phantom`` in soft
tissue eroded by 2 pixels (liver, spleen, muscle, heart, kidney: no edges inside), and the
10-90 % edge width of every nodule of >= 9 mm (:func:`medimg.metrics.ct.disk_edge_width`).
Each method's per-case values are summarised as mean [95 % bootstrap CI over cases].
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from medimg.errors import InputError
from medimg.metrics.ct import WINDOWS, Window, ct_metrics, disk_edge_width, windowed_psnr
from medimg.metrics.stats import bootstrap_ci
from medimg.tasks.reconstruct.ct import data as D

__all__ = ["evaluate_folder", "load_case", "save_panel"]

_FLAT = ("liver", "spleen", "muscle", "heart", "kidney")
MIN_NODULE_MM = 9.0  # smaller nodules are ~3 pixels across at 3 mm: no edge profile to speak of


def _find(case: Path, stem: str) -> Path | None:
    for cand in (case / f"{stem}.nii.gz", case / f"{stem}.nii", case / stem):
        if cand.exists():
            return cand
    return None


def _slice(path: Path) -> np.ndarray:
    """A stored 2D slice as ``(row, col)`` HU (the files hold the project's ``(X=col, Y=row)``)."""
    from medimg.io.api import load

    img = load(path)
    arr = img.array[0]
    if arr.ndim == 3:
        if arr.shape[2] != 1:
            raise InputError(f"expected one axial slice, got shape {arr.shape}", path)
        arr = arr[..., 0]
    return np.ascontiguousarray(arr.T.astype(np.float32))


def load_case(case: Path, dose_tag: str) -> dict[str, Any]:
    """Arrays of one case folder: ``full``, ``low`` (HU), optional ``phantom``, ``labels``,
    ``sino`` (low-dose line integrals)."""
    full, low = _find(case, "full"), _find(case, f"low_{dose_tag}")
    if full is None or low is None:
        raise InputError(f"needs full and low_{dose_tag} images (simulate with that dose)", case)
    out: dict[str, Any] = {"full": _slice(full), "low": _slice(low)}
    if (ph := _find(case, "phantom")) is not None:
        out["phantom"] = _slice(ph)
    if (lab := _find(case, "labels")) is not None:
        out["labels"] = _slice(lab).astype(np.uint8)
    if (sino := case / f"sino_low_{dose_tag}.npy").is_file():
        try:
            out["sino"] = np.load(sino, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(
                f"cannot read the sinogram ({exc}); simulate the set again", sino
            ) from None
    shapes = {k: v.shape for k, v in out.items() if k != "sino"}
    if len(set(shapes.values())) != 1 or out["full"].ndim != 2:
        raise InputError(f"images of different shapes {shapes}; simulate the set again", case)
    return out


def _flat_roi(labels: np.ndarray) -> np.ndarray:
    from medimg.phantoms.ct import LABELS

    ids = [k for k, v in LABELS.items() if v in _FLAT]
    return ndimage.binary_erosion(np.isin(labels, ids), iterations=2)


def _nodules(meta: dict[str, Any], pixel_mm: float) -> list[tuple[tuple[float, float], float]]:
    """(row, col) centre and radius (pixels) of the case's nodules of at least 9 mm."""
    return [(tuple(map(float, n["center_voxel"][-2:])), n["diameter_mm"] / 2 / pixel_mm)
            for n in meta.get("nodules", []) if n["diameter_mm"] >= MIN_NODULE_MM]  # fmt: skip


def _networks(models: Sequence[str], device: str) -> dict[str, torch.nn.Module]:
    from medimg.tasks.reconstruct.ct.predict import DEFAULT_DIR, load_model

    if not models:  # the shipped ones
        models = [m for m in ("redcnn", "wgan") if (DEFAULT_DIR / m / "config.yaml").is_file()]
    nets = {}
    for m in models:
        net, cfg = load_model(m, device=device)
        name = m if m in ("redcnn", "wgan") else f"{cfg.model}:{Path(m).name}"  # type: ignore[attr-defined]
        nets[name] = net
    return nets


def evaluate_folder(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    models: Sequence[str] = (),
    dose: float | None = None,
    window: str = "soft_tissue",
    iterative: bool = True,
    tv_lam: float = 5.0,
    tv_iter: int = 100,
    device: str = "cpu",
    max_cases: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate every method on every case of ``data_dir``; write ``metrics.csv``,
    ``summary.md`` and ``panel.png`` into ``out_dir``; return per-case rows and the summary.

    ``out_dir`` may lie in ``data_dir`` (the default ``DATA/evaluation``) but not in a case;
    it is checked first and written whole at the end, replacing an earlier report only with
    ``overwrite``."""
    from tqdm import tqdm

    from medimg.io.output import atomic_dir, check_output_dir
    from medimg.physics.ct import CTProjector
    from medimg.tasks.reconstruct.ct.baselines import tv_reconstruct_hu
    from medimg.tasks.reconstruct.ct.predict import denoise_slices

    root = Path(data_dir)
    if not (root / "cases.json").is_file():
        raise InputError("no cases.json: not a folder written by 'medimg recon ct simulate'", root)
    try:
        meta = json.loads((root / "cases.json").read_text())
        cases_in = [root / str(c["case"]) for c in meta["cases"]]
        sim = D.SimConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in meta["sim"].items()}
        )
        doses = [float(d) for d in meta["doses"]]
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise InputError(f"cases.json is not a medimg case list ({exc})", root) from None
    inputs = [root / "cases.json", *cases_in]
    check_output_dir(out_dir, overwrite, inputs=inputs)
    dose = doses[0] if dose is None else float(dose)
    if not any(abs(dose - d) < 1e-9 for d in doses):
        raise InputError(f"dose {dose} was not simulated here; choose one of {doses}", root)
    tag, win = f"{round(100 * dose):03d}", Window(*WINDOWS[window], name=window)
    nets = _networks(models, device)
    op = CTProjector(D.geometry(sim)) if iterative else None
    cases = meta["cases"][:max_cases]
    rows: list[dict[str, Any]] = []
    panel: dict[str, np.ndarray] = {}
    for ci, case in enumerate(tqdm(cases, desc="evaluate", disable=not progress)):
        arr = load_case(root / case["case"], tag)
        images = {"full-dose FBP": arr["full"], f"low-dose FBP ({dose:.0%})": arr["low"]}
        if op is not None and "sino" in arr:
            sino = torch.from_numpy(arr["sino"]).float()[None, None]
            tv = tv_reconstruct_hu(sino, op, i0=sim.i0 * dose, lam=tv_lam, n_iter=tv_iter)
            images["PWLS-TV"] = tv[0, 0].numpy()
        for name, net in nets.items():
            images[name] = denoise_slices(net, arr["low"][None])[0]
        roi = _flat_roi(arr["labels"]) if "labels" in arr else None
        nods = _nodules(case, sim.pixel_mm)
        for method, img in images.items():
            row = {
                "case": case["case"],
                "method": method,
                **ct_metrics(arr["full"], img, window=win),
            }
            if "phantom" in arr:  # the truth: rewards resolution that the full-dose FBP lacks
                row["psnr_phantom_db"] = windowed_psnr(arr["phantom"], img, window=win).value
            if "phantom" in arr and roi is not None and roi.sum() > 10:
                row["noise_std_hu"] = float(np.std((img - arr["phantom"])[roi], ddof=1))
            widths = [disk_edge_width(img, c, r, sim.pixel_mm) for c, r in nods]
            if widths:
                row["edge_width_mm"] = float(np.mean(widths))
            rows.append(row)
        if ci == 0:
            panel = images
    if not rows:
        raise InputError("no cases listed in cases.json", root)
    summary = _summarise(rows)
    with atomic_dir(out_dir, overwrite, inputs=inputs) as out:
        _write_csv(rows, out / "metrics.csv")
        (out / "summary.md").write_text(_markdown(summary, win, dose, len(cases)))
        save_panel(panel, out / "panel.png", win, title=f"{cases[0]['case']}, {dose:.0%} dose")
    return {"rows": rows, "summary": summary, "window": str(win)}


_METRICS = ("rmse_hu", "psnr_db", "ssim", "psnr_phantom_db", "noise_std_hu", "edge_width_mm")


def _summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    summary: dict[str, dict[str, Any]] = {}
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        summary[m] = {}
        for k in _METRICS:
            vals = [r[k] for r in mine if k in r and np.isfinite(r[k])]
            if vals:
                summary[m][k] = bootstrap_ci(vals, seed=0)
    return summary


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def _markdown(summary: dict[str, dict[str, Any]], win: Window, dose: float, n: int) -> str:
    head = ["method", "RMSE HU", "PSNR dB", "SSIM", "PSNR vs phantom dB", "noise std HU",
            "edge 10-90% mm"]  # fmt: skip
    intro = (f"Low-dose CT at {dose:.0%} dose, {n} cases; reference: full-dose FBP (PSNR vs "
             f"phantom: the noiseless truth, which also rewards resolution); PSNR/SSIM in the "
             f"{win}; mean [95% bootstrap CI over cases].")  # fmt: skip
    lines = [intro, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, est in summary.items():
        cells = [str(est[k]) if k in est else "ref" if k == "psnr_db" else "-" for k in _METRICS]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def save_panel(images: dict[str, np.ndarray], path: Path, win: Window, *, title: str = "") -> Path:
    """One column per method in the fixed ``win`` (top) and its difference to the first image,
    +-100 HU (bottom), each row with its colour bar; patient's right on the left, as
    radiologists read."""
    from medimg.report.figures import TEXT_SIZE, add_colorbar, new_figure, save_figure

    names = list(images)
    ref = images[names[0]]
    fig, axes = new_figure(2 * len(names), panel_inches=2.8, rows=2)
    for j, name in enumerate(names):
        top = axes[0, j].imshow(images[name], cmap="gray", vmin=win.limits[0], vmax=win.limits[1])
        axes[0, j].set_title(name, fontsize=TEXT_SIZE + 1)
        diff = axes[1, j].imshow(images[name] - ref, cmap="RdBu_r", vmin=-100, vmax=100)
        axes[1, j].set_title(f"{name} minus {names[0]}" if j else "(reference)",
                             fontsize=TEXT_SIZE)  # fmt: skip
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    add_colorbar(fig, axes[0, :], top, f"HU (C={win.center:g} W={win.width:g})")
    add_colorbar(fig, axes[1, :], diff, "difference, HU")
    return save_figure(fig, path, f"{title}   {win}".strip())
