"""Memory-bounded sliding-window segmentation with Gaussian blending and test-time mirroring.

Windows tile the (zero-padded) image exactly as MONAI's ``sliding_window_inference`` places them:
stride ``int(patch * (1 - overlap))`` per axis, the last window flush with the far edge, and
images smaller than the patch padded symmetrically. Each window's output is weighted by a
Gaussian importance map (``sigma = patch / 8`` per axis, as nnU-Net; floored at 1e-3) and the
blend is ``Σ w·y / Σ w``.

Memory: windows are visited column by column along the **last** spatial axis. All windows of one
column cover the same slab ``[z0, z0 + patch_z)`` and no later window reaches below the next
column's start, so after each column ``[z0, z1)`` is final: it is normalised, reduced (streaming
argmax into a uint8 label map, or copied out as probabilities) and cleared. The only float
accumulator is a ``(K, X, Y, patch_z)`` float32 ring buffer along the last axis plus its
``(X, Y, patch_z)`` weight sum: peak memory grows with ``K·X·Y·patch_z``, not ``K`` × volume.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from medimg.errors import InputError

__all__ = ["gaussian_importance_map", "sliding_window_logits", "sliding_window_segment"]

Predictor = Callable[[torch.Tensor], torch.Tensor]


def gaussian_importance_map(
    patch_size: Sequence[int], sigma_scale: float = 0.125, *, device: torch.device | None = None
) -> torch.Tensor:
    """Separable Gaussian weights ``exp(-x²/2σ²)``, ``σ = sigma_scale·p``, peak 1, floor 1e-3.

    ``x`` runs over voxel centres measured from the patch centre; values below ``1e-3`` are
    raised to it so that patch corners keep a small, non-zero weight.
    """
    weights = torch.ones((), dtype=torch.float32, device=device)
    for p in patch_size:
        x = torch.arange(p, dtype=torch.float32, device=device) - (p - 1) / 2.0
        g = torch.exp(-(x**2) / (2.0 * (sigma_scale * p) ** 2))
        weights = weights[..., None] * g
    return weights.clamp_(min=max(float(weights.min()), 1e-3))


def _window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices along one axis: a regular stride, the last window flush with the end."""
    if patch >= size:
        return [0]
    stride = max(int(patch * (1 - overlap)), 1)
    count = math.ceil((size - patch) / stride) + 1
    return sorted({min(i * stride, size - patch) for i in range(count)})


def check_window_settings(overlap: float, batch_size: int) -> None:
    """One-line errors for a window overlap outside [0, 1) or a batch size below 1."""
    if not 0 <= overlap < 1:
        raise InputError(f"overlap must be in [0, 1), got {overlap}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")


def _check_args(
    image: torch.Tensor, patch_size: Sequence[int], overlap: float, bs: int, mirror: Sequence[int]
) -> tuple[int, ...]:
    if not isinstance(image, torch.Tensor):
        raise InputError(f"image must be a torch.Tensor (C, *spatial), got {type(image).__name__}")
    patch = tuple(int(p) for p in patch_size)
    if image.ndim != len(patch) + 1:
        raise InputError(
            f"image must be channel-first (C, *spatial) with {len(patch)} spatial axes to match "
            f"patch_size {patch}; got shape {tuple(image.shape)}"
        )
    if any(p < 1 for p in patch):
        raise InputError(f"patch_size must be positive, got {patch}")
    check_window_settings(overlap, bs)
    if any(not 0 <= int(a) < len(patch) for a in mirror):
        raise InputError(f"mirror_axes are spatial axes 0..{len(patch) - 1}, got {list(mirror)}")
    return patch


def _predict_mirrored(
    predictor: Predictor, x: torch.Tensor, flips: list[tuple[int, ...]], softmax: bool
) -> torch.Tensor:
    """Mean over flip combinations of ``predictor`` (softmax first if asked), float32."""
    total = torch.zeros(())
    for dims in flips:
        y = predictor(x.flip(dims) if dims else x).float()
        y = torch.softmax(y, dim=1) if softmax else y
        y = y.flip(dims) if dims else y
        total = y if dims == () else total.add_(y)  # flips[0] is () : no extra copy
    return total.div_(len(flips)) if len(flips) > 1 else total


def _windows(
    image: torch.Tensor,
    predictor: Predictor,
    patch: tuple[int, ...],
    overlap: float,
    batch_size: int,
    mirror_axes: Sequence[int],
    device: torch.device,
    softmax: bool,
    progress: bool,
    num_classes: int | None = None,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Blend windows column by column; yield ``(z_start, z_stop, slab)`` final slabs.

    ``slab`` is the blended ``(K, *padded_spatial[:-1], z_stop - z_start)`` view of the
    accumulator on ``device``, valid until the next iteration. Coordinates are on the padded grid.
    """
    padded = [max(s, p) for s, p in zip(image.shape[1:], patch)]
    weight = gaussian_importance_map(patch, device=device)
    starts = [_window_starts(s, p, overlap) for s, p in zip(padded, patch)]
    # every subset of the mirror axes (the empty one = no flip); dims are offset by (B, C)
    flips = [
        tuple(a + 2 for a in combo)
        for r in range(len(set(mirror_axes)) + 1)
        for combo in itertools.combinations(sorted({int(a) for a in mirror_axes}), r)
    ]
    corners = list(itertools.product(*starts[:-1]))
    depth = patch[-1]  # ring buffer along the last axis: absolute z lives at z % depth
    # every column adds the same weights at the same (x, y) and local z: sum them once
    col_w = torch.zeros((*padded[:-1], depth), dtype=torch.float32, device=device)
    for corner in corners:
        col_w[tuple(slice(c, c + p) for c, p in zip(corner, patch))] += weight
    wsum, acc = torch.zeros_like(col_w), None
    n_win = len(corners) * len(starts[-1])
    bar = tqdm(total=n_win, desc="sliding window", unit="win", disable=not progress)
    z_starts = starts[-1]
    for j, z0 in enumerate(z_starts):
        ring = _ring_pieces(z0, depth, depth)
        for b0 in range(0, len(corners), batch_size):
            batch = corners[b0 : b0 + batch_size]
            boxes = [tuple(slice(c, c + p) for c, p in zip(corner, patch)) for corner in batch]
            x = torch.stack([image[(slice(None), *b, slice(z0, z0 + depth))] for b in boxes])
            out = _predict_mirrored(predictor, x.to(device), flips, softmax)
            k_ok = num_classes is None or out.shape[1] == num_classes
            if out.shape[0] != len(batch) or tuple(out.shape[2:]) != patch or not k_ok:
                raise InputError(
                    f"predictor must map (B, C, *{patch}) to (B, {num_classes or 'K'}, *{patch}); "
                    f"got {tuple(out.shape)} for a batch of {len(batch)}"
                )
            if acc is None:
                acc = torch.zeros((out.shape[1], *wsum.shape), dtype=torch.float32, device=device)
            for k, box in enumerate(boxes):
                for r, a, b in ring:  # += y·w without a temporary
                    acc[(slice(None), *box, r)].addcmul_(out[k][..., a:b], weight[..., a:b])
            bar.update(len(batch))
        assert acc is not None
        for r, a, b in ring:
            wsum[..., r] += col_w[..., a:b]
        z1 = z_starts[j + 1] if j + 1 < len(z_starts) else padded[-1]
        for r, a, b in _ring_pieces(z0, z1 - z0, depth):  # [z0, z1) is final: emit and clear
            slab = acc[..., r].div_(wsum[..., r])
            yield z0 + a, z0 + b, slab
            slab.zero_()
            wsum[..., r] = 0
    bar.close()


def _ring_pieces(z0: int, n: int, depth: int) -> list[tuple[slice, int, int]]:
    """Ring slices holding absolute ``[z0, z0 + n)``, each with its offsets ``[a, b)`` from z0."""
    r = z0 % depth
    first = min(n, depth - r)
    pieces = [(slice(r, r + first), 0, first)]
    if n > first:
        pieces.append((slice(0, n - first), first, n))
    return pieces


def _prepare(
    image: torch.Tensor, patch: tuple[int, ...], device: str | torch.device | None
) -> tuple[torch.Tensor, list[tuple[int, int]], torch.device]:
    """Float32 image padded (zeros, symmetric) up to the patch; pads ``(before, after)``."""
    dev = image.device if device is None else torch.device(device)
    gaps = [max(p - s, 0) for s, p in zip(image.shape[1:], patch)]
    pads = [(g // 2, g - g // 2) for g in gaps]  # symmetric, as MONAI
    x = image.float()
    if any(a or b for a, b in pads):
        flat = [v for a, b in reversed(pads) for v in (a, b)]  # F.pad wants last axis first
        x = F.pad(x[None], flat)[0]
    return x, pads, dev


def _crop(pads: list[tuple[int, int]], shape: Sequence[int], z0: int, z1: int) -> tuple | None:
    """Slices mapping a padded slab ``[z0, z1)`` into the original grid: (src, dst) or None."""
    lo = pads[-1][0]
    a, b = max(z0, lo), min(z1, lo + shape[-1])
    if a >= b:
        return None
    src = (*(slice(p[0], p[0] + s) for p, s in zip(pads[:-1], shape[:-1])), slice(a - z0, b - z0))
    return src, slice(a - lo, b - lo)


def _argmax_uint8(probs: torch.Tensor) -> torch.Tensor:
    """``argmax`` over axis 0 as uint8, first maximum wins (no int64 index array, no strided
    reduction: one elementwise pass per class)."""
    best = probs[0].clone()
    labels = torch.zeros(best.shape, dtype=torch.uint8, device=probs.device)
    for k in range(1, probs.shape[0]):
        better = probs[k] > best
        labels.masked_fill_(better, k)
        torch.maximum(best, probs[k], out=best)
    return labels


@torch.inference_mode()
def sliding_window_segment(
    image: torch.Tensor,
    predictor: Predictor,
    *,
    patch_size: Sequence[int],
    num_classes: int,
    overlap: float = 0.5,
    batch_size: int = 2,
    mirror_axes: Sequence[int] = (),
    device: str | torch.device | None = None,
    progress: bool = False,
    return_probabilities: bool = False,
    softmax: bool = True,
) -> np.ndarray:
    """Segment a whole image with a patch-based network, within bounded memory.

    Parameters
    ----------
    image
        ``(C, *spatial)`` tensor, 2D or 3D (any float dtype; computed in float32).
    predictor
        Maps a batch ``(B, C, *patch_size)`` to logits ``(B, K, *patch_size)`` (e.g. an
        ``nn.Module`` in eval mode, already on ``device``).
    patch_size, overlap, batch_size
        Window size, fractional overlap in ``[0, 1)`` and windows per predictor call.
    num_classes
        ``K``, checked against the predictor's output (at most 255 for a uint8 label map).
    mirror_axes
        Spatial axes (0-based, excluding the channel) for test-time mirroring: the softmax is
        averaged over all ``2**len(mirror_axes)`` flip combinations of each window.
    device
        Where windows and the slab accumulator live (default: the image's device).
    return_probabilities
        Return the blended softmax ``(K, *spatial)`` float32 instead of labels.
    softmax
        Blend per-window softmax probabilities (default; what mirroring and fold ensembles
        average). ``False`` blends the predictor's raw outputs, as MONAI's
        ``sliding_window_inference`` does, when it already returns probabilities or when labels
        from blended logits are wanted.

    Returns
    -------
    numpy.ndarray
        uint8 labels ``argmax_k p_k`` with shape ``spatial``, or float32 probabilities.
    """
    patch = _check_args(image, patch_size, overlap, batch_size, mirror_axes)
    if not 1 <= num_classes <= 255:
        raise InputError(f"num_classes must be in 1..255 for a uint8 label map, got {num_classes}")
    x, pads, dev = _prepare(image, patch, device)
    shape = tuple(image.shape[1:])
    probs = return_probabilities
    out = np.empty((num_classes, *shape) if probs else shape, np.float32 if probs else np.uint8)
    blocks = _windows(
        x, predictor, patch, overlap, batch_size, mirror_axes, dev, softmax, progress, num_classes
    )
    for z0, z1, slab in blocks:
        if (where := _crop(pads, shape, z0, z1)) is not None:
            part = slab[(slice(None), *where[0])]
            out[..., where[1]] = (part if probs else _argmax_uint8(part)).cpu().numpy()
    return out


@torch.inference_mode()
def sliding_window_logits(
    image: torch.Tensor,
    predictor: Predictor,
    *,
    patch_size: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 2,
    mirror_axes: Sequence[int] = (),
    device: str | torch.device | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Gaussian-blended raw predictor outputs ``(K, *spatial)`` float32, on the CPU.

    With ``mirror_axes=()`` this equals ``monai.inferers.sliding_window_inference(image[None],
    patch_size, batch_size, predictor, overlap=overlap, mode="gaussian", sigma_scale=0.125)[0]``
    up to float32 summation order; mirroring averages the raw outputs over flips. The result is a
    full-volume ``K``-channel array: use :func:`sliding_window_segment` for bounded memory.
    """
    patch = _check_args(image, patch_size, overlap, batch_size, mirror_axes)
    x, pads, dev = _prepare(image, patch, device)
    shape = tuple(image.shape[1:])
    out: torch.Tensor | None = None
    for z0, z1, slab in _windows(
        x, predictor, patch, overlap, batch_size, mirror_axes, dev, False, progress
    ):
        if out is None:
            out = torch.empty((slab.shape[0], *shape), dtype=torch.float32)
        if (where := _crop(pads, shape, z0, z1)) is not None:
            out[..., where[1]] = slab[(slice(None), *where[0])].cpu()
    assert out is not None
    return out
