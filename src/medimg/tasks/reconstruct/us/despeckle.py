"""Despeckle B-mode ultrasound images with the simulation-trained network.

Input contract: a log-compressed, scan-converted B-mode as scanners display it (8-bit grey,
speckle a few pixels wide): an ultrasound DICOM (one frame or a cine; colour files are made grey
and their coloured pixels left as they are), a PNG, or a 2D NIfTI (8-bit, [0, 1], or dB as
``medimg recon us predict`` writes). Only the image region changes: pixels outside the sector
(burned-in text, rulers, the black frame) keep their values. The shipped model is
``despeckle/`` (see its MODEL_CARD.md: trained only on simulated speckle).

>>> from medimg.tasks.reconstruct.us.despeckle import despeckle_file
>>> despeckle_file("scan.dcm", "scan_despeckled/")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medimg.errors import InputError
from medimg.io.output import atomic_dir, check_output_dir
from medimg.typing import PathType

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_MODEL", "despeckle_array", "despeckle_file", "load_despeckle"]

DEFAULT_MODEL = Path(__file__).parent / "despeckle"
#: names ``despeckle`` writes into its output folder
OUTPUTS = ("despeckled.nii.gz", "before_after.png", "dicom")


def load_despeckle(path: PathType | None = None) -> torch.nn.Module:
    """The network of a model folder (or a training run: its ``best/``), in eval mode."""
    from medimg.engine import find_checkpoint, from_yaml, load_weights
    from medimg.tasks.reconstruct.us.despeckle_train import DespeckleConfig, DespeckleNet

    folder = Path(path) if path is not None else DEFAULT_MODEL
    if not (folder / "config.yaml").is_file():
        raise InputError("not a despeckling model folder (config.yaml missing)", folder)
    cfg = from_yaml(DespeckleConfig, folder / "config.yaml")
    net = DespeckleNet(tuple(cfg.features), cfg.norm)
    ckpt = folder if (folder / "model.safetensors").is_file() else find_checkpoint(folder / "best")
    if ckpt is None:
        raise InputError("no model.safetensors here or in best/", folder)
    load_weights(net, ckpt)
    return net.eval()


def despeckle_array(
    image: np.ndarray,
    model: torch.nn.Module | PathType | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Despeckle one ``(X lateral, Z depth)`` B-mode in [0, 1]; pixels outside ``mask`` are
    returned unchanged. Black outside the mask is filled with the region's edge values first,
    so the sector's border does not read as a strong edge."""
    import torch

    img = np.asarray(image, np.float32)
    if img.ndim != 2:
        raise InputError(f"expected a 2D (X, Z) image, got shape {img.shape}")
    net = model if isinstance(model, torch.nn.Module) else load_despeckle(model)  # type: ignore[arg-type]
    x = img
    if mask is not None and not mask.all():
        if not mask.any():
            return img.copy()
        from scipy import ndimage

        # nearest image-region value for every pixel outside it
        idx = ndimage.distance_transform_edt(~mask, return_distances=False, return_indices=True)
        x = img[tuple(idx)]
    with torch.no_grad():
        out = net(torch.from_numpy(np.ascontiguousarray(x))[None, None])[0, 0].clamp(0, 1)
    out = out.numpy()
    return np.where(mask, out, img) if mask is not None else out


def _save_png(before: np.ndarray, after: np.ndarray, mask: np.ndarray, spacing, path: Path,
              title: str) -> None:  # fmt: skip
    """Input and output side by side, cropped to the image region (a few pixels around it)."""
    from medimg.report.figures import new_figure, save_figure

    xs, zs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    x0, x1 = max(int(xs[0]) - 4, 0), min(int(xs[-1]) + 5, mask.shape[0])
    z0, z1 = max(int(zs[0]) - 4, 0), min(int(zs[-1]) + 5, mask.shape[1])
    ext = (x0 * spacing[0], x1 * spacing[0], z1 * spacing[1], z0 * spacing[1])
    fig, axes = new_figure(2, panel_inches=5.0)
    for ax, img, name in zip(axes[0], (before, after), ("input", "despeckled"), strict=True):
        ax.imshow(img[x0:x1, z0:z1].T, cmap="gray", vmin=0, vmax=1, extent=ext, aspect="equal")
        ax.set_title(name)
        ax.set_xlabel("lateral (mm)")
        ax.set_ylabel("depth (mm)")
    save_figure(fig, path, title=title)


def despeckle_file(
    src: PathType,
    out_dir: PathType,
    *,
    model: PathType | None = None,
    frames: int | None = None,
    overwrite: bool = False,
) -> tuple[Path, list[str]]:
    """Despeckle an ultrasound DICOM / PNG / NIfTI B-mode into ``out_dir``:
    ``despeckled.nii.gz`` (input units; a cine as ``(1, X, Z, T)``), ``before_after.png`` (first
    frame) and, for a DICOM input, ``dicom/bmode.dcm`` (8-bit US). ``frames``: only the first N
    frames of a cine. Returns the folder and notes about the input (colour, spacing)."""
    from medimg.io.api import save
    from medimg.io.image import Image
    from medimg.tasks.reconstruct.us.despeckle_io import read_bmode
    from medimg.tasks.reconstruct.us.dicom_out import write_us_grey_dicom

    if frames is not None and frames < 1:
        raise InputError(f"--frames must be 'all' or a count >= 1, got {frames}")
    check_output_dir(out_dir, overwrite, inputs=[src])
    net = load_despeckle(model)  # checked before the reading
    bmode = read_bmode(src, frames)
    out = np.stack([despeckle_array(f, net, m) for f, m in zip(bmode.frames, bmode.masks,
                                                                 strict=True)])  # fmt: skip
    dx, dz = bmode.spacing
    affine = bmode.affine if bmode.affine is not None else np.diag([dx, dz, 1.0, 1.0])
    values = bmode.to_values(out).astype(np.float32)
    arr = values[0][None] if len(values) == 1 else np.moveaxis(values, 0, -1)[None]
    meta = {"description": "despeckled B-mode (medimg)"}
    if len(values) > 1:
        meta["frame_axis"] = "frames (no slice geometry)"
    image = Image(arr, affine, modality="US", meta=meta)
    with atomic_dir(out_dir, overwrite, inputs=[src]) as tmp:
        save(image, tmp / "despeckled.nii.gz")
        _save_png(bmode.frames[0], out[0], bmode.masks[0], bmode.spacing, tmp / "before_after.png",
                  f"{Path(src).name}: despeckled (simulation-trained network)")  # fmt: skip
        if bmode.kind == "dicom":
            write_us_grey_dicom(out * 255.0, bmode.spacing, tmp / "dicom",
                                description="medimg despeckled B-mode")  # fmt: skip
    return Path(out_dir), bmode.notes
