"""Beamform channel data into B-mode images: NIfTI (dB and envelope), ultrasound DICOM, PNG.

Input contract: a channel-data ``.npz`` from ``medimg recon us simulate`` (or written with
:func:`~medimg.tasks.reconstruct.us.data.save_channel_data` from a scanner's data): linear
array, plane-wave or focused transmits, RF sampled at >= 4x the centre frequency.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.io.output import atomic_dir, check_output_dir
from medimg.physics.ultrasound import ChannelData
from medimg.physics.ultrasound_das import Grid, beamform, log_compress, to_baseband
from medimg.typing import PathType

__all__ = [
    "Reconstruction",
    "bmode_image",
    "default_grid",
    "even_subset",
    "predict_file",
    "reconstruct",
    "save_bmode_png",
]

#: names ``predict`` writes into its output folder
OUTPUTS = ("bmode.nii.gz", "envelope.nii.gz", "dicom", "bmode.png")


@dataclass
class Reconstruction:
    """A beamformed image: complex ``iq`` and its ``envelope`` ``(n_x, n_z)`` on ``grid``."""

    iq: np.ndarray
    grid: Grid
    transmits: np.ndarray
    seconds: float

    @property
    def envelope(self) -> np.ndarray:
        return np.abs(self.iq)


def default_grid(data: ChannelData, dx: float = 1e-4, dz: float = 5e-5) -> Grid:
    """The phantom's field when the file records it (``meta.truth.extent``), else the array's
    width from 2 mm to the recorded depth; focused data: one column per transmit line."""
    extent = data.meta.get("truth", {}).get("extent") if isinstance(data.meta, dict) else None
    n_t = data.rf.shape[-1]
    z_max = (data.t0 + (n_t - 1) / data.probe.fs) * data.probe.c / 2
    if extent is not None and len(extent) == 4:
        x0, x1, z0, z1 = (float(v) for v in extent)
    else:
        half = data.probe.element_x[-1]
        x0, x1, z0, z1 = -half, half, 2e-3, z_max
    z0, z1 = max(z0, 1e-3), min(z1, z_max)
    if data.transmits.kind == "focused":
        xs = np.sort(data.transmits.focus[:, 0])
        xs = xs[(xs >= x0 - 1e-9) & (xs <= x1 + 1e-9)]
        if xs.size == 0:
            raise InputError("no focused line lies within the imaged field")
        return Grid(xs, Grid.from_extent((0, 0), (z0, z1), dx, dz).z)
    return Grid.from_extent((x0, x1), (z0, z1), dx, dz)


def even_subset(n_total: int, n: int | None) -> np.ndarray:
    """``n`` transmit indices spread evenly over ``0..n_total-1`` (all when ``n`` is None; the
    middle one when ``n == 1``)."""
    if n is None or n >= n_total:
        return np.arange(n_total)
    if n < 1:
        raise InputError(f"choose at least one transmit, got {n}")
    if n == 1:
        return np.array([n_total // 2])
    return np.unique(np.round(np.linspace(0, n_total - 1, n)).astype(int))


def reconstruct(
    data: ChannelData,
    n_transmits: int | None = None,
    *,
    grid: Grid | None = None,
    fnumber: float = 1.75,
    iq: np.ndarray | None = None,
) -> Reconstruction:
    """Delay-and-sum with ``n_transmits`` evenly chosen transmits (default all), coherently
    compounded (plane waves) or line by line (focused)."""
    grid = grid or default_grid(data)
    chosen = even_subset(len(data.transmits), n_transmits)
    t0 = time.perf_counter()
    iq = to_baseband(data) if iq is None else iq
    img = beamform(data, grid.x, grid.z, transmits=chosen, fnumber=fnumber, iq=iq)
    return Reconstruction(img, grid, chosen, time.perf_counter() - t0)


def bmode_image(envelope: np.ndarray, grid: Grid, dynamic_range: float = 60.0,
                description: str = "B-mode") -> Image:  # fmt: skip
    """Log-compressed B-mode ``(1, X lateral, Z depth)`` in dB with its spacing in mm."""
    dx, dz = grid.spacing
    affine = np.diag([dx * 1e3, dz * 1e3, 1.0, 1.0])
    affine[:2, 3] = grid.x[0] * 1e3, grid.z[0] * 1e3
    db = log_compress(envelope, dynamic_range)[None]
    return Image(db, affine, modality="US", meta={"description": description})


def envelope_image(envelope: np.ndarray, grid: Grid) -> Image:
    """The linear envelope as an Image (for metrics on the saved file)."""
    ref = bmode_image(envelope, grid)
    return ref.with_array(np.asarray(envelope, np.float32)[None])


def save_bmode_png(db: np.ndarray, grid: Grid, path: PathType, title: str = "",
                   dynamic_range: float = 60.0) -> Path:  # fmt: skip
    """A B-mode panel, depth downwards, axes in mm."""
    from medimg.report.figures import new_figure, save_figure

    fig, axes = new_figure(1, panel_inches=4.0)
    ax = axes[0, 0]
    ext = (grid.x[0] * 1e3, grid.x[-1] * 1e3, grid.z[-1] * 1e3, grid.z[0] * 1e3)
    ax.imshow(np.asarray(db).T, cmap="gray", vmin=-dynamic_range, vmax=0, extent=ext,
              aspect="equal")  # fmt: skip
    ax.set_xlabel("lateral (mm)")
    ax.set_ylabel("depth (mm)")
    return save_figure(fig, path, title=title or None)


def predict_file(
    src: PathType,
    out_dir: PathType,
    *,
    n_transmits: int | None = None,
    fnumber: float = 1.75,
    dynamic_range: float = 60.0,
    dx: float = 1e-4,
    dz: float = 5e-5,
    method: str = "das",
    model: PathType | None = None,
    overwrite: bool = False,
) -> Path:
    """Beamform a channel-data file into ``out_dir``: ``bmode.nii.gz`` (dB), ``envelope.nii.gz``,
    ``dicom/bmode.dcm`` (US Image Storage) and ``bmode.png``. ``method="learned"``: the learned
    beamformer (``model``, default the shipped one) from 3 of the plane waves. Nothing is
    written if a check fails; the folder appears whole."""
    from medimg.io.api import save
    from medimg.tasks.reconstruct.us.data import load_channel_data
    from medimg.tasks.reconstruct.us.dicom_out import write_us_dicom

    if dynamic_range <= 0 or fnumber <= 0 or dx <= 0 or dz <= 0:
        raise InputError("dynamic range, f-number and pixel sizes must be > 0")
    if method not in ("das", "learned"):
        raise InputError(f"method {method!r} is not 'das' or 'learned'")
    check_output_dir(out_dir, overwrite, inputs=[src])
    data = load_channel_data(src)
    grid = default_grid(data, dx, dz)
    if method == "learned":
        from medimg.tasks.reconstruct.us.learned import learned_bmode, load_learned

        net = load_learned(model)  # checked before the beamforming
        envelope = learned_bmode(data, grid, net)
        what = "learned beamformer, 3 plane waves"
    else:
        rec = reconstruct(data, n_transmits, grid=grid, fnumber=fnumber)
        envelope = rec.envelope
        n = len(rec.transmits)
        what = f"DAS, {n} {'plane waves' if data.transmits.kind == 'plane' else 'focused lines'}"
    bmode = bmode_image(envelope, grid, dynamic_range, description=f"B-mode ({what})")
    with atomic_dir(out_dir, overwrite, inputs=[src]) as tmp:
        save(bmode, tmp / "bmode.nii.gz")
        save(envelope_image(envelope, grid), tmp / "envelope.nii.gz")
        write_us_dicom(bmode, tmp / "dicom", dynamic_range=dynamic_range,
                       description=f"medimg B-mode ({what})")  # fmt: skip
        save_bmode_png(bmode.array[0], grid, tmp / "bmode.png",
                       title=f"{Path(src).name}: {what}", dynamic_range=dynamic_range)  # fmt: skip
    return Path(out_dir)
