"""Reading B-mode images for despeckling: ultrasound DICOM (single frame or cine; greyscale, RGB,
YBR or palette colour), PNG, or a 2D NIfTI; and finding the image region inside the frame.

DICOM is read with pydicom here rather than through :func:`medimg.io.load`: despeckling needs
the displayed 8-bit values after the palette (``load`` returns a palette file's indices), which
pixels are coloured (Doppler, annotations: they stay unchanged) and the tissue region of the
*Sequence of Ultrasound Regions*, none of which an :class:`~medimg.io.image.Image` carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from medimg.errors import InputError, MedimgError
from medimg.typing import PathType

__all__ = ["BMode", "image_region_mask", "read_bmode"]

#: a pixel whose colour channels differ by more than this (of 255) is a colour overlay
COLOUR_TOLERANCE = 12
#: screenshots and exports read with Pillow
PICTURES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class BMode:
    """Frames ``(T, X lateral, Z depth)`` in [0, 1], per-frame masks of the pixels to despeckle,
    the spacing ``(dx, dz)`` in mm and how to write values back (``scale``, ``offset``)."""

    frames: np.ndarray
    masks: np.ndarray
    spacing: tuple[float, float]
    kind: str  # "dicom", "png", "nifti"
    notes: list[str] = field(default_factory=list)
    affine: np.ndarray | None = None
    scale: float = 255.0
    offset: float = 0.0
    modality_note: str = ""

    def to_values(self, frames01: np.ndarray) -> np.ndarray:
        """Back to the input's units (8-bit grey for DICOM/PNG)."""
        return frames01 * self.scale + self.offset


def _grey_and_colour(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(grey 0..255, coloured mask)`` of ``(..., 3)`` RGB values in 0..255."""
    rgb = rgb.astype(np.float32)
    spread = rgb.max(-1) - rgb.min(-1)
    return rgb.mean(-1), spread > COLOUR_TOLERANCE


def image_region_mask(
    grey: np.ndarray,
    coloured: np.ndarray | None = None,
    boxes: list[tuple[int, int, int, int]] | None = None,
) -> np.ndarray:
    """Pixels of the ultrasound image proper in one ``(X, Z)`` frame of 0..1 values: inside the
    tissue regions ``boxes`` (x0, z0, x1, z1 inclusive, when known), the convex hull of each
    large non-black area (a sector or rectangle is convex; the hull keeps its anechoic parts),
    minus coloured pixels. Burned-in text is thinner than the opening and stays out; a dual
    view gives two areas."""
    from skimage.morphology import convex_hull_image

    inside = np.zeros(grey.shape, bool)
    for x0, z0, x1, z1 in boxes or [(0, 0, grey.shape[0] - 1, grey.shape[1] - 1)]:
        inside[max(x0, 0) : x1 + 1, max(z0, 0) : z1 + 1] = True
    lit = (grey > 2 / 255) & inside
    if coloured is not None:
        lit |= coloured & inside  # Doppler boxes belong to the image area
    lit = ndimage.binary_closing(lit, np.ones((7, 7)), border_value=0)
    lit = ndimage.binary_opening(lit, np.ones((15, 15)))  # text strokes are thinner than this
    lab, n = ndimage.label(lit)
    region = np.zeros(grey.shape, bool)
    if n == 0:
        return region
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
    for k in np.flatnonzero(sizes >= 0.1 * sizes.max()):
        region |= convex_hull_image(lab == k + 1)
    region &= inside
    if coloured is not None:
        region &= ~coloured
    return region


def _tissue_boxes(ds) -> list[tuple[int, int, int, int]] | None:
    """The tissue regions (``RegionDataType`` 1) as ``(x0, z0, x1, z1)``; None if none."""
    boxes = []
    for r in getattr(ds, "SequenceOfUltrasoundRegions", None) or ():
        try:
            if int(r.get("RegionDataType", 1)) != 1:
                continue
            boxes.append((int(r.RegionLocationMinX0), int(r.RegionLocationMinY0),
                          int(r.RegionLocationMaxX1), int(r.RegionLocationMaxY1)))  # fmt: skip
        except (AttributeError, TypeError, ValueError):
            continue
    return boxes or None


def _read_dicom(path: Path, frames: int | None) -> BMode:
    import pydicom
    from pydicom.pixels import apply_color_lut

    from medimg.io.dicom.geometry import ultrasound_region_spacing

    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many types on a broken file
        raise InputError(f"cannot read as DICOM ({type(exc).__name__})", path) from None
    modality = str(ds.get("Modality", "")).upper()
    if modality != "US":
        raise InputError(f"not an ultrasound image (modality {modality or 'missing'}); the "
                         "despeckler takes B-mode ultrasound", path)  # fmt: skip
    if "PixelData" not in ds:
        raise InputError("holds no pixel data", path)
    try:
        px = ds.pixel_array
    except Exception as exc:
        raise InputError(
            f"cannot decode the pixels ({type(exc).__name__}: {exc})"[:200], path
        ) from None
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    notes: list[str] = []
    if photometric == "PALETTE COLOR":
        px = apply_color_lut(px, ds)
        px = px / 257.0 if px.max() > 255 else px  # 16-bit LUT entries
        photometric = "RGB"
    if n_frames == 1:
        px = px[None]
    if px.ndim == 3 and photometric in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT"):
        raise InputError("colour pixels without a colour axis; an unusual file", path)
    if photometric.startswith(("RGB", "YBR")):
        grey, coloured = _grey_and_colour(np.asarray(px))
        frac = float(coloured.mean())
        notes.append(f"colour image made grey (channel mean); {100 * frac:.1f} % coloured pixels "
                     "(Doppler, annotations) left unchanged")  # fmt: skip
    else:
        grey = np.asarray(px, np.float32)
        bits = int(ds.get("BitsStored", 8))
        grey = grey * (255.0 / (2**bits - 1)) if bits != 8 else grey
        if photometric == "MONOCHROME1":
            grey = 255.0 - grey
        coloured = np.zeros(grey.shape, bool)
    if grey.ndim != 3:
        raise InputError(f"pixel array of shape {px.shape} is not a 2D image or cine", path)
    if frames is not None:
        grey, coloured = grey[:frames], coloured[:frames]
    grey = np.transpose(grey, (0, 2, 1)) / 255.0  # (T, X lateral, Z depth)
    coloured = np.transpose(coloured, (0, 2, 1))
    boxes = _tissue_boxes(ds)
    masks = np.stack([image_region_mask(g, c, boxes) for g, c in zip(grey, coloured, strict=True)])
    spacing = ultrasound_region_spacing(ds)
    if spacing is None:
        notes.append("no calibrated region: spacing 1 mm assumed")
        spacing = [1.0, 1.0]
    return BMode(grey.astype(np.float32), masks, (spacing[1], spacing[0]), "dicom", notes)


def _read_png(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(C, X, Z)`` values of a PNG/JPEG (medimg's readers take no screenshots), identity
    affine at 1 mm."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as im:
            arr = np.asarray(im.convert("RGB") if im.mode == "P" else im, np.float32)
    except Exception as exc:  # PIL raises several types on a broken file
        raise InputError(f"cannot read the picture ({type(exc).__name__})", path) from None
    if arr.max() > 255:  # 16-bit PNG
        arr = arr * (255.0 / 65535.0)
    arr = arr[..., None] if arr.ndim == 2 else arr
    return np.moveaxis(arr, -1, 0).transpose(0, 2, 1), np.eye(4), ["no pixel spacing: 1 mm"]


def _read_other(path: Path, frames: int | None) -> BMode:
    from medimg.io.api import load

    notes: list[str] = []
    if path.suffix.lower() in PICTURES:
        arr, affine, notes = _read_png(path)
        spacing, kind = (1.0, 1.0), "png"
    else:
        img = load(path)
        arr = np.asarray(img.array, np.float32)
        if img.spatial_ndim == 3 and img.spatial_shape[2] == 1:
            arr = arr[..., 0]
        if arr.ndim != 3:
            raise InputError(f"a {'x'.join(map(str, img.spatial_shape))} volume; the despeckler "
                             "takes a 2D B-mode image (or an ultrasound DICOM cine)", path)  # fmt: skip
        if img.meta.get("spacing_unknown"):
            notes.append("no pixel spacing recorded: 1 mm assumed")
        spacing = (float(img.spacing[0]), float(img.spacing[1]))
        affine, kind = np.asarray(img.affine, float), "nifti"
    coloured = np.zeros(arr.shape[1:], bool)
    if arr.shape[0] in (3, 4):  # RGB(A) PNG
        grey, coloured = _grey_and_colour(np.moveaxis(arr[:3], 0, -1))
        notes.append(f"colour image made grey; {100 * coloured.mean():.1f} % coloured pixels "
                     "left unchanged")  # fmt: skip
    elif arr.shape[0] == 2:  # grey + alpha
        grey = arr[0]
    elif arr.shape[0] == 1:
        grey = arr[0]
    else:
        raise InputError(f"{arr.shape[0]} channels; expected a grey or RGB B-mode image", path)
    lo, hi = float(np.nanmin(grey)), float(np.nanmax(grey))
    if not np.isfinite(grey).all():
        raise InputError("the image holds NaN or Inf values", path)
    if hi <= lo:
        raise InputError("the image is constant; nothing to despeckle", path)
    if hi <= 0:  # a B-mode in dB (0 = brightest), as medimg recon us predict writes
        dr = max(-lo, 1e-3)
        scale, offset = dr, -dr
        notes.append(f"values read as dB: [-{dr:.0f}, 0] mapped to [0, 1]")
    elif lo >= 0 and hi <= 1:
        scale, offset = 1.0, 0.0
    elif lo >= 0 and hi <= 255:
        scale, offset = 255.0, 0.0
    else:
        scale, offset = hi - lo, lo
        notes.append(f"values [{lo:.3g}, {hi:.3g}] mapped to [0, 1] (min to max)")
    grey01 = (grey - offset) / scale
    mask = image_region_mask(grey01, coloured)
    return BMode(grey01[None].astype(np.float32), mask[None], spacing, kind, notes, affine,
                 scale, offset)  # fmt: skip


def read_bmode(path: PathType, frames: int | None = None) -> BMode:
    """A B-mode image (or the first ``frames`` frames of a cine) and its image region; one-line
    :class:`~medimg.errors.InputError` for an empty file, a CT, a 3D volume and the like."""
    from medimg.io.api import format_of

    p = Path(path)
    if not p.is_file():
        raise InputError("no such file (name a DICOM, PNG or NIfTI B-mode image)", p)
    if p.stat().st_size == 0:
        raise InputError("the file is empty", p)
    if p.suffix.lower() in PICTURES:
        fmt = "picture"
    else:
        try:
            fmt = format_of(p)
        except MedimgError as exc:
            raise InputError(str(exc).split("\n")[0]) from None
    try:
        bmode = _read_dicom(p, frames) if fmt == "dicom" else _read_other(p, frames)
    except InputError:
        raise
    except MedimgError as exc:
        raise InputError(str(exc).split("\n")[0]) from None
    if not bmode.masks.any():
        raise InputError("found no image region (the frame is black)", p)
    return bmode
