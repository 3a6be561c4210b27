"""Displacement fields on disk, in the formats other tools read.

* ``field.nii.gz`` — a float32 NIfTI vector image (``(X, Y, Z, 1, nd)``, intent ``vector``) written
  by SimpleITK, with **LPS** millimetre components as ITK and ANTs store displacement fields
  (``*Warp.nii.gz``): ``sitk.DisplacementFieldTransform(sitk.ReadImage(path,
  sitk.sitkVectorFloat64))`` is the transform, and ``sitk.Resample(moving, fixed, transform)``
  reproduces our warped image. :func:`load_field` converts back to medimg's RAS+ components.
* ``transform.h5`` — the same as an ITK transform file (``sitk.ReadTransform``).

The field maps a fixed-image point to its moving-image point (``x -> x + u(x)``), which is what
ITK's resampling expects of a transform.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import ImageReadError, InputError
from medimg.io.image import LPS_TO_RAS, Image
from medimg.io.output import atomic_path

__all__ = ["field_image", "load_field", "save_field", "save_transform", "sitk_transform"]


def field_image(field_mm: np.ndarray, grid: Image) -> Image:
    """The RAS+ mm field ``(nd, *S)`` as a vector :class:`Image` on ``grid``'s geometry."""
    u = np.asarray(field_mm, dtype=np.float32)
    if u.shape != (grid.spatial_ndim, *grid.spatial_shape):
        raise InputError(
            f"field shape {u.shape} does not fit the grid {grid.spatial_shape} "
            f"({grid.spatial_ndim} components expected)"
        )
    return Image(u, grid.affine.copy(), modality="OT", meta={"units": "mm", "frame": "RAS"})


def _itk_vector_image(field: Image, double: bool = True) -> Any:
    """LPS-component SimpleITK vector image: float64 (what ``DisplacementFieldTransform`` needs)
    or float32 (for files: the fields are computed in float32, so nothing is lost)."""
    from medimg.io.image import quiet_sitk

    sitk = quiet_sitk()

    nd = field.spatial_ndim
    flip = np.diag(LPS_TO_RAS)[:nd].reshape(-1, *[1] * nd)  # RAS -> LPS components
    dtype = np.float64 if double else np.float32
    img = Image((field.array * flip).astype(dtype), field.affine).to_sitk()
    return sitk.Cast(img, sitk.sitkVectorFloat64 if double else sitk.sitkVectorFloat32)


def sitk_transform(field: Image) -> Any:
    """A ``sitk.DisplacementFieldTransform`` equal to the RAS+ mm vector image ``field``."""
    from medimg.io.image import quiet_sitk

    sitk = quiet_sitk()

    return sitk.DisplacementFieldTransform(_itk_vector_image(field))


def save_field(field: Image, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``field`` (RAS+ mm components) as an ITK/ANTs displacement image (LPS components,
    float32 like ANTs' warps: half the size and write time of float64)."""
    from medimg.io.image import quiet_sitk

    sitk = quiet_sitk()

    with atomic_path(path, overwrite) as tmp:
        sitk.WriteImage(_itk_vector_image(field, double=False), str(tmp))
    return Path(path)


def save_transform(field: Image, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``field`` as an ITK transform file (``.h5``) holding a DisplacementFieldTransform."""
    from medimg.io.image import quiet_sitk

    sitk = quiet_sitk()

    with atomic_path(path, overwrite) as tmp:
        sitk.WriteTransform(sitk_transform(field), str(tmp))
    return Path(path)


def load_field(path: str | Path) -> Image:
    """Read a displacement image written by :func:`save_field` (or ITK/ANTs) as RAS+ components."""
    from medimg.io.image import quiet_sitk

    sitk = quiet_sitk()

    p = Path(path)
    if not p.is_file():
        raise ImageReadError("no such displacement field file", p)
    try:
        img = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise ImageReadError(f"not readable as an image ({str(exc).splitlines()[-1]})", p) from None
    nd = img.GetDimension()
    if img.GetNumberOfComponentsPerPixel() != nd:
        raise InputError(
            f"a displacement field needs {nd} components per voxel, this file has "
            f"{img.GetNumberOfComponentsPerPixel()}",
            p,
        )
    field = Image.from_sitk(img)
    flip = np.diag(LPS_TO_RAS)[:nd].reshape(-1, *[1] * nd)
    return Image((field.array * flip).astype(np.float32), field.affine, meta={"units": "mm"})
