"""The one in-memory image type: a channel-first voxel array plus an affine in RAS+ millimetres.

Geometry has a single source of truth, the 4x4 ``affine`` that maps a voxel index ``(i, j, k)`` of
``array[c, i, j, k]`` to a world point in RAS+ millimetres; spacing, origin, direction and the
orientation code are derived from it. DICOM's LPS is converted at the io edge (:data:`LPS_TO_RAS`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from medimg.errors import InputError

if TYPE_CHECKING:  # heavy imports only when used
    import nibabel as nib
    import SimpleITK as sitk
    from monai.data import MetaTensor

#: Flips x and y: multiplies an LPS affine into RAS+ (and back; it is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def quiet_sitk() -> ModuleType:
    """SimpleITK with ITK's own C++ warning output switched off (it bypasses Python's warnings
    and would print multi-line notes on ordinary commands); kept on with ``MEDIMG_DEBUG``."""
    import SimpleITK as sitk

    if not os.environ.get("MEDIMG_DEBUG"):
        sitk.ProcessObject.SetGlobalWarningDisplay(False)
    return sitk


def nifti_channels_first(data: np.ndarray) -> np.ndarray:
    """NIfTI data ``(X, Y[, Z[, C]])`` as channel-first ``(C, X, Y[, Z])``.

    A 5th axis after a singleton 4th (NIfTI vector images ``(X, Y, Z, 1, C)``) holds channels;
    RGB/RGBA voxels (nibabel's structured ``RGB24``/``RGBA32`` dtypes) become 3 or 4 float32
    channels, so a colour volume is a multi-channel image like an ITK RGB one.
    """
    if data.dtype.names:  # structured colour voxels: one channel per field
        if data.ndim not in (2, 3):
            raise InputError(
                f"colour (RGB/RGBA) NIfTI data of shape {data.shape} is not 2D/3D; only one "
                "colour image per file is supported"
            )
        return np.stack([np.asarray(data[name], dtype=np.float32) for name in data.dtype.names])
    if data.ndim == 5 and data.shape[3] == 1:  # NIfTI vector images: (X, Y, Z, 1, C)
        data = data[:, :, :, 0, :]
    if data.ndim in (2, 3):
        return data[None]
    if data.ndim == 4:
        return np.moveaxis(data, -1, 0)
    raise InputError(f"NIfTI data of shape {data.shape} is not 2D/3D/4D")


def _check_affine(affine: Any) -> np.ndarray:
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise InputError(f"affine must be a 4x4 matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError("affine contains NaN or Inf; the image geometry is undefined")
    if not np.allclose(a[3], [0, 0, 0, 1]):
        raise InputError(f"affine's last row must be [0, 0, 0, 1], got {a[3].tolist()}")
    if abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise InputError("affine is singular (a zero spacing or collinear axes)")
    return a


class Image:
    """A channel-first image ``(C, X, Y)`` or ``(C, X, Y, Z)`` with geometry.

    Parameters
    ----------
    array
        Voxel values, channel first. Intensity images are usually float32 (CT in HU); label maps
        are integer with ``is_label=True``. The array is not copied.
    affine
        4x4 voxel-index to RAS+ world (mm) matrix. Identity (1 mm isotropic) when omitted. For a 2D
        image the third column describes the (single) slice's normal and thickness.
    modality
        DICOM modality code: ``CT``, ``MR``, ``US``, ``DX``/``CR`` (X-ray), ``PT``, ``SEG``,
        ``OT``.
    is_label
        A label map: resampling uses nearest neighbour and values are class indices.
    meta
        Small free-form metadata (series UID, description, source path...).

    Examples
    --------
    >>> import numpy as np
    >>> arr = np.zeros((1, 4, 5, 6), np.float32)
    >>> img = Image(arr, np.diag([0.5, 0.5, 2.0, 1.0]), modality="CT")
    >>> img.spacing, img.orientation
    ((0.5, 0.5, 2.0), 'RAS')
    """

    __slots__ = ("affine", "array", "is_label", "meta", "modality")

    def __init__(
        self,
        array: Any,
        affine: Any = None,
        *,
        modality: str = "OT",
        is_label: bool = False,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        arr = np.asarray(array)
        if arr.ndim not in (3, 4):
            raise InputError(
                "image array must be channel-first (C, X, Y) or (C, X, Y, Z); "
                f"got shape {arr.shape}. Add a channel axis with array[None]"
            )
        if 0 in arr.shape:
            raise InputError(f"image array has an empty axis: shape {arr.shape}")
        self.array: np.ndarray = arr
        self.affine: np.ndarray = _check_affine(np.eye(4) if affine is None else affine)
        self.modality: str = str(modality).upper()
        self.is_label: bool = bool(is_label)
        self.meta: dict[str, Any] = dict(meta or {})

    # ----------------------------------------------------------------- derived geometry
    @property
    def spatial_ndim(self) -> int:
        return self.array.ndim - 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape[1:])

    @property
    def num_channels(self) -> int:
        return int(self.array.shape[0])

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each spatial array axis."""
        norms = np.linalg.norm(self.affine[:3, : self.spatial_ndim], axis=0)
        return tuple(float(s) for s in norms)

    @property
    def origin(self) -> tuple[float, float, float]:
        """World position (RAS+ mm) of the centre of voxel (0, 0, 0)."""
        return tuple(float(v) for v in self.affine[:3, 3])  # type: ignore[return-value]

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit RAS+ directions of the array axes."""
        m = self.affine[:3, :3]
        return m / np.linalg.norm(m, axis=0)

    @property
    def orientation(self) -> str:
        """Closest axis codes, e.g. ``'RAS'`` or ``'LPS'`` (nibabel's: where the axes point)."""
        import nibabel as nib

        codes = nib.orientations.aff2axcodes(self.affine)
        return "".join(c for c in codes[: max(self.spatial_ndim, 3)] if c is not None)

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)

    def voxel_to_world(self, ijk: Any) -> np.ndarray:
        """Map voxel indices ``(..., 3)`` (or ``(..., 2)`` for 2D) to RAS+ mm."""
        pts = np.asarray(ijk, dtype=np.float64)
        if pts.shape[-1] == 2:
            pts = np.concatenate([pts, np.zeros((*pts.shape[:-1], 1))], axis=-1)
        return pts @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_voxel(self, xyz: Any) -> np.ndarray:
        """Map RAS+ mm points ``(..., 3)`` to (fractional) voxel indices ``(..., 3)``."""
        inv = np.linalg.inv(self.affine)
        pts = np.asarray(xyz, dtype=np.float64)
        return pts @ inv[:3, :3].T + inv[:3, 3]

    # ----------------------------------------------------------------- derived images
    def with_array(self, array: Any, *, is_label: bool | None = None, **meta: Any) -> Image:
        """A new image on the same grid (same affine and modality) holding ``array``."""
        arr = np.asarray(array)
        if arr.shape[1:] != self.array.shape[1:]:
            raise InputError(
                f"with_array needs the same spatial shape {self.spatial_shape}, got {arr.shape[1:]}"
            )
        return Image(
            arr,
            self.affine.copy(),
            modality=self.modality,
            is_label=self.is_label if is_label is None else is_label,
            meta={**self.meta, **meta},
        )

    def check_finite(self, source: str | None = None) -> Image:
        """Raise :class:`InputError` if the voxel data holds NaN or Inf; return self otherwise."""
        if np.issubdtype(self.array.dtype, np.floating) or np.iscomplexobj(self.array):
            bad = ~np.isfinite(self.array)
            n = int(np.count_nonzero(bad))
            if n:
                first = tuple(int(v) for v in np.argwhere(bad)[0])
                where = f"{source}: " if source else ""
                raise InputError(
                    f"{where}image holds {n} NaN/Inf voxel(s) (first at index {first}); "
                    "fix or mask them before use (e.g. numpy.nan_to_num)"
                )
        return self

    def canonical(self) -> Image:
        """The same image reoriented (by axis flips/permutations only) to the closest RAS+."""
        import nibabel as nib

        if self.spatial_ndim != 3:
            raise InputError("canonical() needs a 3D image")
        ornt = nib.orientations.io_orientation(self.affine)
        if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
            return self
        spatial = [np.asarray(nib.orientations.apply_orientation(c, ornt)) for c in self.array]
        affine = self.affine @ nib.orientations.inv_ornt_aff(ornt, self.spatial_shape)
        return Image(
            np.stack(spatial),
            affine,
            modality=self.modality,
            is_label=self.is_label,
            meta=self.meta,
        )

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.2f}" for s in self.spacing)
        mib = self.nbytes / 2**20
        kind = "label" if self.is_label else "intensity"
        return (
            f"Image(shape: {tuple(self.array.shape)}; spacing: ({sp}) mm; "
            f"orientation: {self.orientation}+; dtype: {self.array.dtype}; memory: {mib:.1f} MiB; "
            f"modality: {self.modality}; type: {kind})"
        )

    # ----------------------------------------------------------------- conversions
    def to_metatensor(self) -> MetaTensor:
        """MONAI MetaTensor (channel-first, affine in RAS+) sharing memory where possible."""
        import torch
        from monai.data import MetaTensor
        from monai.utils import SpaceKeys

        arr = self.array
        if not arr.flags.writeable or arr.dtype.byteorder not in ("=", "|"):
            arr = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("="), copy=True)
        meta = {"space": SpaceKeys.RAS, "modality": self.modality, "is_label": self.is_label}
        meta.update({k: v for k, v in self.meta.items() if isinstance(v, (str, int, float))})
        return MetaTensor(torch.from_numpy(arr), affine=torch.as_tensor(self.affine), meta=meta)

    @classmethod
    def from_metatensor(cls, tensor: MetaTensor, **kwargs: Any) -> Image:
        """Build from a MONAI MetaTensor; an LPS-space affine is converted to RAS+."""
        affine = np.asarray(tensor.affine.detach().cpu().numpy(), dtype=np.float64)
        if affine.shape == (3, 3):  # MONAI keeps 2D affines as 3x3
            a2 = affine
            affine = np.eye(4)
            affine[:2, :2], affine[:2, 3] = a2[:2, :2], a2[:2, 2]
        if str(tensor.meta.get("space", "RAS")).upper().endswith("LPS"):
            affine = LPS_TO_RAS @ affine
        meta = dict(kwargs.pop("meta", {}))
        kwargs.setdefault("modality", str(tensor.meta.get("modality", "OT")))
        kwargs.setdefault("is_label", bool(tensor.meta.get("is_label", False)))
        return cls(tensor.detach().cpu().numpy(), affine, meta=meta, **kwargs)

    def to_sitk(self) -> sitk.Image:
        """SimpleITK image (LPS world, as ITK expects); several channels become a vector image."""
        sitk = quiet_sitk()

        nd = self.spatial_ndim
        lps = LPS_TO_RAS @ self.affine
        # ours: (C, X, Y[, Z]); ITK's numpy view: ([Z,] Y, X[, C])
        spatial_rev = tuple(range(nd, 0, -1))
        if self.num_channels == 1:
            data = np.ascontiguousarray(self.array[0].transpose(tuple(range(nd - 1, -1, -1))))
            img = sitk.GetImageFromArray(data, isVector=False)
        else:
            data = np.ascontiguousarray(self.array.transpose((*spatial_rev, 0)))
            img = sitk.GetImageFromArray(data, isVector=True)
        m = lps[:nd, :nd]
        spacing = np.linalg.norm(m, axis=0)
        img.SetSpacing([float(s) for s in spacing])
        img.SetDirection([float(v) for v in (m / spacing).ravel()])
        img.SetOrigin([float(v) for v in lps[:nd, 3]])
        return img

    @classmethod
    def from_sitk(cls, img: sitk.Image, **kwargs: Any) -> Image:
        """Build from a SimpleITK image (LPS world); vector pixels become channels."""
        sitk = quiet_sitk()

        nd = img.GetDimension()
        if nd not in (2, 3):
            raise InputError(f"only 2D and 3D images are supported, this one is {nd}D")
        data = sitk.GetArrayFromImage(img)  # ([Z,] Y, X[, C])
        if img.GetNumberOfComponentsPerPixel() > 1:
            arr = data.transpose((nd, *range(nd - 1, -1, -1)))
        else:
            arr = data.transpose(tuple(range(nd - 1, -1, -1)))[None]
        direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(nd, nd)
        spacing = np.asarray(img.GetSpacing(), dtype=np.float64)
        lps = np.eye(4)
        lps[:nd, :nd] = direction * spacing
        lps[:nd, 3] = img.GetOrigin()
        return cls(arr, LPS_TO_RAS @ lps, **kwargs)

    def to_nibabel(self) -> nib.Nifti1Image:
        """NIfTI-1 image: ``(X, Y, Z)`` for one channel, ``(X, Y, Z, C)`` for several."""
        import nibabel as nib

        data = self.array[0] if self.num_channels == 1 else np.moveaxis(self.array, 0, -1)
        img = nib.Nifti1Image(data, self.affine)
        img.header.set_xyzt_units("mm", "sec")
        img.set_qform(self.affine, code=1)
        img.set_sform(self.affine, code=1)
        return img

    @classmethod
    def from_nibabel(cls, img: nib.spatialimages.SpatialImage, **kwargs: Any) -> Image:
        """Build from a nibabel image; a 4th axis (or a 5th, NIfTI vector intent) holds channels."""
        arr = nifti_channels_first(np.asanyarray(img.dataobj))
        return cls(arr, np.asarray(img.affine, dtype=np.float64), **kwargs)
