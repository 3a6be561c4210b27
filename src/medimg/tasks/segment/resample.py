"""Resampling to a target spacing and back to the original geometry, in bounded memory.

Grids are defined by the :class:`~medimg.io.image.Image` affine (voxel index -> RAS+ mm). An output
voxel ``j`` takes the value at the source position ``i = A_src⁻¹ · A_out · j`` (voxel centres),
interpolated with scipy's B-splines (order 0 nearest, 1 linear, 3 cubic; edges extended by
repeating the border voxel). The output is computed in slabs along the last axis, each with its
own offset, so the temporaries of one call stay within ``max_slab_mib`` whatever the volume size;
resampling probabilities back and taking the argmax happens slab by slab too, so the
full-resolution ``K``-channel float stack never exists.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medimg.errors import InputError
from medimg.io.image import Image

__all__ = ["resample_labels_like", "resample_to_spacing", "resampled_shape"]


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]
) -> tuple[int, ...]:
    """``round(n · s / t)`` voxels per axis (at least 1): the same field of view at spacing ``t``."""
    return tuple(
        max(1, round(float(n) * float(s) / float(t)))
        for n, s, t in zip(shape, spacing, new_spacing)
    )


def _index_map(src_affine: np.ndarray, out_affine: np.ndarray, nd: int) -> tuple[np.ndarray, ...]:
    """``(matrix, offset)`` with ``source_index = matrix @ out_index + offset``."""
    m = np.linalg.inv(src_affine) @ out_affine
    matrix, offset = m[:nd, :nd], m[:nd, 3]
    if np.allclose(matrix, np.diag(np.diag(matrix)), atol=1e-12):
        matrix = np.diag(matrix).copy()  # axis-aligned: scipy's faster zoom/shift path
    return matrix, offset


def _prefilter(data: np.ndarray, order: int) -> np.ndarray:
    """B-spline coefficients for order > 1, computed once (not once per slab)."""
    if order > 1:
        return ndimage.spline_filter(data, order=order, output=np.float32, mode="nearest")
    return data if order == 0 else data.astype(np.float32, copy=False)


def _slab(
    coeffs: np.ndarray,
    matrix: np.ndarray,
    offset: np.ndarray,
    out_shape: Sequence[int],
    order: int,
    z0: int,
    z1: int,
) -> np.ndarray:
    """Output voxels ``[..., z0:z1]`` of one channel (``coeffs`` from :func:`_prefilter`)."""
    last = matrix[:, -1] if matrix.ndim == 2 else np.eye(len(offset))[-1] * matrix[-1]
    with warnings.catch_warnings():
        # a 1-D matrix is scipy's zoom/shift path (3x faster, and nearest-neighbour ties fall as
        # they always did); scipy warns on every call that its meaning changed in 0.18, the
        # meaning this code is written for
        warnings.filterwarnings(
            "ignore", "The behavior of affine_transform with a 1-D", UserWarning
        )
        return ndimage.affine_transform(
            coeffs,
            matrix,
            offset=offset + last * z0,  # slab-local index k is global index z0 + k
            output_shape=(*out_shape[:-1], z1 - z0),
            order=order,
            mode="nearest",
            prefilter=False,
            output=coeffs.dtype if order == 0 else np.float32,
        )


def _bounds(out_shape: Sequence[int], channels: int, max_slab_mib: float) -> list[tuple[int, int]]:
    """Slabs ``[z0, z1)`` along the last axis holding at most ``max_slab_mib`` of float32."""
    if not max_slab_mib > 0:
        raise InputError(f"max_slab_mib must be positive, got {max_slab_mib}")
    per_slice = 4 * channels * int(np.prod(out_shape[:-1]))
    depth = max(1, int(max_slab_mib * 2**20 // per_slice))
    n = out_shape[-1]
    return [(z0, min(z0 + depth, n)) for z0 in range(0, n, depth)]


def _check_order(order: int | None, is_label: bool) -> int:
    if order is None:
        return 0 if is_label else 3
    if order not in (0, 1, 3):
        raise InputError(f"order must be 0 (nearest), 1 (linear) or 3 (cubic), got {order}")
    if is_label and order != 0:
        raise InputError(
            f"label maps are resampled with nearest neighbour (order=0), got order={order}; "
            "resample one-hot probabilities with resample_labels_like for smooth boundaries"
        )
    return order


def resample_to_spacing(
    image: Image,
    spacing: Sequence[float],
    *,
    order: int | None = None,
    max_slab_mib: float = 256.0,
) -> Image:
    """The same field of view sampled at ``spacing`` mm.

    Parameters
    ----------
    image
        Intensity image or label map (``is_label=True``).
    spacing
        Target voxel size (mm) per spatial axis.
    order
        0 nearest (the only choice for label maps), 1 linear, 3 cubic (the default for
        intensity images, as nnU-Net).
    max_slab_mib
        Memory budget of one output slab per channel (float32).

    Returns
    -------
    Image
        Shape ``round(n · s / t)`` per axis; the centre of voxel ``(0, 0, 0)`` and the axis
        directions are kept, each affine column is rescaled to the new spacing. Intensities are
        float32; labels keep their dtype.
    """
    nd = image.spatial_ndim
    new_sp = np.asarray(spacing, dtype=np.float64).ravel()
    if new_sp.size != nd or not np.all(np.isfinite(new_sp) & (new_sp > 0)):
        raise InputError(f"spacing needs {nd} positive values in mm, got {list(spacing)}")
    order = _check_order(order, image.is_label)
    old_sp = np.asarray(image.spacing)
    shape = resampled_shape(image.spatial_shape, old_sp, new_sp)
    affine = image.affine.copy()
    affine[:3, :nd] = image.affine[:3, :nd] * (new_sp / old_sp)
    matrix, offset = _index_map(image.affine, affine, nd)
    dtype = image.array.dtype if order == 0 else np.float32
    out = np.empty((image.num_channels, *shape), dtype=dtype)
    bounds = _bounds(shape, 1, max_slab_mib)
    for c in range(image.num_channels):
        coeffs = _prefilter(image.array[c], order)
        for z0, z1 in bounds:
            out[c, ..., z0:z1] = _slab(coeffs, matrix, offset, shape, order, z0, z1)
    return Image(out, affine, modality=image.modality, is_label=image.is_label, meta=image.meta)


def resample_labels_like(
    labels_or_probs: Image, reference: Image, *, max_slab_mib: float = 256.0
) -> Image:
    """A label map on ``reference``'s grid (e.g. a prediction back to the original image).

    Parameters
    ----------
    labels_or_probs
        Either a label map (one integer channel, or ``is_label=True``): resampled by nearest
        neighbour; or class probabilities ``(K, ...)`` float: each channel is interpolated
        linearly and the argmax taken per slab (smoother boundaries than nearest neighbour,
        as nnU-Net does when exporting).
    reference
        The image whose grid (affine and spatial shape) the output takes.
    max_slab_mib
        Memory budget of one slab of interpolated probabilities (``K`` channels, float32).

    Returns
    -------
    Image
        ``(1, *reference.spatial_shape)`` label map with ``reference.affine``, ``is_label=True``
        (uint8 from probabilities, the input dtype from labels).
    """
    src = labels_or_probs
    if not isinstance(src, Image) or not isinstance(reference, Image):
        raise InputError(
            "resample_labels_like takes medimg Images; wrap an array as Image(array[None], affine)"
        )
    nd = reference.spatial_ndim
    if src.spatial_ndim != nd:
        raise InputError(f"source is {src.spatial_ndim}D but reference is {nd}D")
    shape = reference.spatial_shape
    matrix, offset = _index_map(src.affine, reference.affine, nd)
    is_probs = np.issubdtype(src.array.dtype, np.floating) and not src.is_label
    if not is_probs:
        if src.num_channels != 1:
            raise InputError(f"a label map has one channel, got {src.num_channels}")
        out = np.empty((1, *shape), dtype=src.array.dtype)
        for z0, z1 in _bounds(shape, 1, max_slab_mib):
            out[0, ..., z0:z1] = _slab(src.array[0], matrix, offset, shape, 0, z0, z1)
    else:
        k = src.num_channels
        if k > 256:
            raise InputError(f"at most 256 classes fit a uint8 label map, got {k} channels")
        out = np.empty((1, *shape), dtype=np.uint8)
        chans = [_prefilter(src.array[c], 1) for c in range(k)]
        for z0, z1 in _bounds(shape, k, max_slab_mib):
            probs = np.stack([_slab(ch, matrix, offset, shape, 1, z0, z1) for ch in chans])
            out[0, ..., z0:z1] = np.argmax(probs, axis=0)
    return Image(out, reference.affine.copy(), modality="SEG", is_label=True, meta=src.meta)
