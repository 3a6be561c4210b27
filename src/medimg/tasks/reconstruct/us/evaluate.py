"""Score delay-and-sum with few vs many transmits on a simulated phantom, PICMUS-style.

Every method beamforms the same channel data on the same grid; the ground truth stored in the
file (point positions, cyst centres and radii) places the measurements:

- lateral / axial FWHM (mm): mean over the point targets;
- contrast, CNR (dB) and gCNR: mean over the anechoic cysts (inner disc vs an equal-area
  annulus around it, :func:`medimg.metrics.ultrasound.cyst_masks`); hyperechoic inclusions get
  their own contrast column;
- speckle SNR: mean over 4 x 4 mm tiles (smaller in a small field) of plain speckle;
- seconds: beamforming time on this machine (baseband conversion included).

Channel-data results are simulation-only: they say how the beamformers compare on this
simulator, not how a scanner's images will score.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import InputError
from medimg.io.output import atomic_dir, check_output_dir
from medimg.metrics.ultrasound import (
    cnr_db,
    contrast_db,
    cyst_masks,
    gcnr,
    point_fwhm,
    speckle_snr,
)
from medimg.physics.ultrasound import ChannelData
from medimg.physics.ultrasound_das import Grid, log_compress, to_baseband
from medimg.tasks.reconstruct.us.predict import (
    default_grid,
    even_subset,
    reconstruct,
    save_bmode_png,
)
from medimg.typing import PathType

__all__ = ["COLUMNS", "evaluate_channel_data", "evaluate_file", "score_envelope"]

COLUMNS = ("method", "transmits", "lateral_fwhm_mm", "axial_fwhm_mm", "contrast_db", "cnr_db",
           "gcnr", "hyper_contrast_db", "speckle_snr", "seconds")  # fmt: skip


def _speckle_tiles(grid: Grid, truth: dict) -> list[np.ndarray]:
    """4 x 4 mm tiles (smaller in a small field) holding no cyst or point."""
    x, z = grid.x, grid.z
    tile = min(4e-3, (x[-1] - x[0]) / 4, (z[-1] - z[0]) / 4)
    blocked = np.zeros(grid.shape, bool)
    for cx, cz, r, _ in truth.get("cysts", []):
        blocked |= np.hypot(x[:, None] - cx, z[None, :] - cz) <= 1.5 * r + 1e-3
    for px, pz in truth.get("points", []):
        blocked |= (np.abs(x[:, None] - px) <= 1.5e-3) & (np.abs(z[None, :] - pz) <= 1e-3)
    tiles = []
    for x0 in np.arange(x[0], x[-1] - tile + 1e-9, tile):
        for z0 in np.arange(z[0], z[-1] - tile + 1e-9, tile):
            sel = (x[:, None] >= x0) & (x[:, None] < x0 + tile)
            sel = sel & (z[None, :] >= z0) & (z[None, :] < z0 + tile)
            if sel.sum() > 16 and not (sel & blocked).any():
                tiles.append(sel)
    return tiles


def score_envelope(envelope: np.ndarray, grid: Grid, truth: dict) -> dict[str, float]:
    """PICMUS figures of one envelope image against the phantom's ``truth``."""
    env = np.abs(envelope)
    out: dict[str, float] = {}
    fw = [point_fwhm(env, grid.x, grid.z, tuple(p)) for p in truth.get("points", [])]
    fw = [f for f in fw if math.isfinite(f[0]) and math.isfinite(f[1])]
    out["lateral_fwhm_mm"] = float(np.mean([f[0] for f in fw]) * 1e3) if fw else math.nan
    out["axial_fwhm_mm"] = float(np.mean([f[1] for f in fw]) * 1e3) if fw else math.nan
    cr, cnr, g, hyper = [], [], [], []
    for cx, cz, r, db in truth.get("cysts", []):
        inside, outside = cyst_masks(grid.x, grid.z, (cx, cz), r)
        if db is None:  # anechoic
            cr.append(contrast_db(env, inside, outside))
            cnr.append(cnr_db(env, inside, outside))
            g.append(gcnr(env[inside], env[outside]))
        else:
            hyper.append(contrast_db(env, inside, outside))
    out["contrast_db"] = float(np.mean(cr)) if cr else math.nan
    out["cnr_db"] = float(np.mean(cnr)) if cnr else math.nan
    out["gcnr"] = float(np.mean(g)) if g else math.nan
    out["hyper_contrast_db"] = float(np.mean(hyper)) if hyper else math.nan
    tiles = _speckle_tiles(grid, truth)
    out["speckle_snr"] = float(np.mean([speckle_snr(env, t) for t in tiles])) if tiles else math.nan
    return out


def evaluate_channel_data(
    data: ChannelData, counts: Sequence[int | None] = (1, 3, 11, None), *, grid: Grid | None = None,
    fnumber: float = 1.75,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], Grid]:  # fmt: skip
    """One row per transmit count (``None`` = all); also the envelopes, by method name."""
    truth = data.meta.get("truth") if isinstance(data.meta, dict) else None
    if not truth:
        raise InputError("the channel data carry no ground truth; evaluate needs a simulated file")
    grid = grid or default_grid(data)
    iq = to_baseband(data)
    rows, envelopes = [], {}
    kind = "plane waves" if data.transmits.kind == "plane" else "focused lines"
    seen: set[int] = set()
    for n in counts:
        size = len(even_subset(len(data.transmits), n))
        if size in seen:  # e.g. 11 and "all" of an 11-transmit file
            continue
        seen.add(size)
        rec = reconstruct(data, n, grid=grid, fnumber=fnumber, iq=iq)
        name = f"DAS {len(rec.transmits)} {kind}"
        row = {"method": name, "transmits": len(rec.transmits), "seconds": rec.seconds}
        row.update(score_envelope(rec.envelope, grid, truth))
        rows.append(row)
        envelopes[name] = rec.envelope
    return rows, envelopes, grid


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def save_panel(envelopes: dict[str, np.ndarray], grid: Grid, path: Path, title: str,
               dynamic_range: float = 60.0) -> Path:  # fmt: skip
    """B-modes side by side (depth downwards, mm)."""
    from medimg.report.figures import new_figure, save_figure

    fig, axes = new_figure(len(envelopes), panel_inches=3.2)
    ext = (grid.x[0] * 1e3, grid.x[-1] * 1e3, grid.z[-1] * 1e3, grid.z[0] * 1e3)
    for ax, (name, env) in zip(axes.ravel(), envelopes.items()):
        ax.imshow(log_compress(env, dynamic_range).T, cmap="gray", vmin=-dynamic_range, vmax=0,
                  extent=ext)  # fmt: skip
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("lateral (mm)", fontsize=8)
    axes.ravel()[0].set_ylabel("depth (mm)", fontsize=8)
    return save_figure(fig, path, title=title)


def evaluate_file(
    src: PathType,
    out_dir: PathType,
    counts: Sequence[int | None] = (1, 3, 11, None),
    *,
    fnumber: float = 1.75,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Evaluate a simulated channel-data file; writes ``metrics.csv``, ``summary.md`` and
    ``panel.png`` (plus one ``bmode_<n>.png`` per method) into ``out_dir``."""
    from medimg.tasks.reconstruct.us.data import load_channel_data

    check_output_dir(out_dir, overwrite, inputs=[src])
    data = load_channel_data(src)
    rows, envelopes, grid = evaluate_channel_data(data, counts, fnumber=fnumber)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r.get(c, math.nan)) for c in COLUMNS) + " |" for r in rows]
    note = ("Simulated channel data (medimg's linear-acoustics simulator); FWHM over the point "
            "targets, contrast/CNR/gCNR over the anechoic cysts. Simulation-only figures.")  # fmt: skip
    with atomic_dir(out_dir, overwrite, inputs=[src]) as tmp:
        with open(tmp / "metrics.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        (tmp / "summary.md").write_text("\n".join(lines) + "\n\n" + note + "\n")
        save_panel(envelopes, grid, tmp / "panel.png", f"{Path(src).name}: delay-and-sum")
        for name, env in envelopes.items():
            n = name.split()[1]
            save_bmode_png(log_compress(env), grid, tmp / f"bmode_{n}.png", title=name)
    return rows
