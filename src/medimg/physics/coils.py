"""Receive-coil sensitivities: simulated birdcage-like arrays and ESPIRiT estimation from ACS.

Maps are complex ``(N, H, W)`` (or ``(N, D, H, W)`` when simulated in 3D). ESPIRiT (Uecker et
al., MRM 2014) finds the k-space kernels that calibration patches span, turns them into a
per-pixel ``N x N`` matrix ``G(x)`` in the image domain, and takes its eigenvector of eigenvalue
~1 as the coil-sensitivity vector; pixels whose top eigenvalue is below ``crop`` (no signal)
are set to zero. Maps are defined up to one phase per pixel, which SENSE absorbs into the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from medimg.errors import InputError
from medimg.physics.masks import acs_region
from medimg.physics.mri import check_kspace, fft2c, ifft2c, rss

__all__ = ["birdcage_maps", "espirit_maps", "loop_maps"]


def birdcage_maps(
    num_coils: int,
    shape: tuple[int, ...],
    radius: float = 1.2,
    rings: int = 1,
    normalize: bool = True,
) -> torch.Tensor:
    """Simulated coil sensitivities of ``num_coils`` loops around the field of view.

    Coil ``c`` sits at angle ``theta_c`` on a circle of ``radius`` (in half-FOV units) around
    the centre (in 3D: on ``rings`` rings along the first axis). Its complex sensitivity is that
    of a small loop seen in the plane, ``s_c(r) = e^{-i theta_c} conj(d) / |d|^2`` with
    ``d = (r - r_c)`` written as a complex number: magnitude falls as ``1 / |d|`` and the phase
    turns around the coil. ``normalize`` divides by the root-sum-of-squares so that
    ``sum_c |s_c|^2 = 1`` everywhere; otherwise the maps are scaled to a peak RSS of 1.

    Examples
    --------
    >>> maps = birdcage_maps(8, (37, 31))
    >>> maps.shape, maps.dtype
    (torch.Size([8, 37, 31]), torch.complex64)
    """
    if num_coils < 1 or len(shape) not in (2, 3) or min(shape) < 1:
        raise InputError(
            f"need num_coils >= 1 and a 2D/3D shape, got {num_coils} coils and shape {shape}"
        )
    axes = [torch.linspace(-1, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1)
            for n in shape]  # fmt: skip
    grids = torch.meshgrid(*axes, indexing="ij")
    y, x = grids[-2], grids[-1]
    z = grids[0] if len(shape) == 3 else torch.zeros_like(x)
    rings = rings if len(shape) == 3 else 1
    per_ring = math.ceil(num_coils / rings)
    maps = []
    for c in range(num_coils):
        ring, k = divmod(c, per_ring)
        theta = 2 * math.pi * k / per_ring + math.pi * ring / per_ring  # stagger rings
        zc = 0.0 if rings == 1 else -0.8 + 1.6 * ring / (rings - 1)
        d = torch.complex(x - radius * math.cos(theta), y - radius * math.sin(theta))
        dist2 = d.abs() ** 2 + (z - zc) ** 2
        maps.append(complex(math.cos(theta), -math.sin(theta)) * d.conj() / dist2)
    s = torch.stack(maps)
    scale = rss(s, 0) if normalize else rss(s, 0).max()
    return (s / scale).to(torch.complex64)


def _calibration(
    kspace: torch.Tensor, mask: torch.Tensor | None, calib_size: int, kernel_size: int
) -> tuple[torch.Tensor, int]:
    """The central fully sampled block ``(N, h, w)`` of one k-space and the kernel width to use.

    The kernel shrinks (not below 3) when the block is narrow: the calibration matrix needs
    several kernel positions per direction to pin down the signal subspace.
    """
    if mask is None:
        mask = (kspace != 0).any(0)
    rows, cols = acs_region(mask, tuple(kspace.shape[-2:]))
    sizes = [rows.stop - rows.start, cols.stop - cols.start]
    kernel = min(kernel_size, min(sizes) - 4)
    if kernel < 3:
        raise InputError(
            f"mask has a fully sampled calibration (ACS) block of only {sizes[0]}x{sizes[1]} "
            "k-space points; ESPIRiT needs at least 7 in each direction: sample more central "
            "lines (center_fraction) or pass coil_maps"
        )
    centre = []
    for sl, n in zip((rows, cols), sizes):
        take = min(n, max(calib_size, kernel + 4))
        start = sl.start + (n - take) // 2
        centre.append(slice(start, start + take))
    return kspace[:, centre[0], centre[1]], kernel


def _espirit_one(
    kspace: torch.Tensor,
    mask: torch.Tensor | None,
    kernel_size: int,
    calib_size: int,
    threshold: float,
    crop: float,
) -> torch.Tensor:
    ncoil, height, width = kspace.shape
    calib, k = _calibration(kspace, mask, calib_size, kernel_size)
    calib = calib.to(torch.complex128)
    patches = calib.unfold(1, k, 1).unfold(2, k, 1)  # (N, h', w', k, k)
    a = patches.permute(1, 2, 0, 3, 4).reshape(-1, ncoil * k * k)  # calibration matrix
    evals, evecs = torch.linalg.eigh(a.conj().T @ a)  # singular values^2, ascending
    sv = evals.clamp_min(0).sqrt()
    v = evecs[:, sv > threshold * sv.max()]  # signal subspace (N k^2, r)
    kernels = v.conj().T.reshape(-1, ncoil, k, k)  # rows of a = U S V^H lie in span(conj V)
    # A k-space shift by o multiplies the image by exp(2 pi i o x), so a kernel acts in the
    # image domain as phi_jc(x) = sum_o v_j[c, o] exp(2 pi i o x), an inverse DFT of it, and
    # G(x) = sum_j phi_j phi_j^H / k^2 has S(x) as eigenvector of eigenvalue 1. G is a
    # trigonometric polynomial of degree < k per axis: evaluate it on a coarse 2k grid first.
    m = 2 * k
    grid = torch.zeros(kernels.shape[0], ncoil, m, m, dtype=torch.complex128)
    grid[..., m // 2 : m // 2 + k, m // 2 : m // 2 + k] = kernels
    phi = ifft2c(grid) * m
    g_small = torch.einsum("jcxy,jdxy->cdxy", phi, phi.conj()) / (k * k)  # (N, N, m, m)
    # Evaluate the polynomial exactly on the image grid, G[y, x] = E_y coef E_x^T, in blocks of
    # rows so that memory stays O(rows W N^2) even for 640x368 15-coil k-space.
    coef = fft2c(g_small) / m  # (N, N, m, m) coefficients at frequencies -m/2..m/2-1
    freq = torch.arange(m, dtype=torch.float64) - m // 2

    def basis(n: int) -> torch.Tensor:  # (n, m): exp(2 pi i f (p - n // 2) / n)
        pos = torch.arange(n, dtype=torch.float64) - n // 2
        return torch.exp(2j * math.pi * pos[:, None] * freq[None] / n)

    ey, right = basis(height), torch.einsum("cdab,xb->cdax", coef, basis(width))
    lam = torch.empty(height, width, dtype=torch.float64)
    maps = torch.empty(height, width, ncoil, dtype=torch.complex128)
    for r in range(0, height, 16):
        g = torch.einsum("ya,cdax->yxcd", ey[r : r + 16], right)  # (rows, W, N, N)
        vals, vecs = torch.linalg.eigh(0.5 * (g + g.conj().transpose(-1, -2)))
        lam[r : r + 16], maps[r : r + 16] = vals[..., -1], vecs[..., -1]  # eigenvalue ~1
    keep = lam > crop
    # Remove the per-pixel phase ambiguity against one virtual coil (the maps' main mode).
    cov = torch.einsum("pc,pd->cd", maps[keep], maps[keep].conj()) if keep.any() else None
    ref = torch.linalg.eigh(cov)[1][:, -1] if cov is not None else maps.new_ones(ncoil)
    proj = (maps * ref.conj()).sum(-1, keepdim=True)
    maps = maps * (proj.conj() / proj.abs().clamp_min(1e-12)) * keep[..., None]
    return maps.permute(2, 0, 1).to(torch.complex64)


def espirit_maps(
    kspace: torch.Tensor,
    mask: torch.Tensor | None = None,
    kernel_size: int = 6,
    calib_size: int = 24,
    threshold: float = 0.02,
    crop: float = 0.8,
) -> torch.Tensor:
    """Estimate coil sensitivities from the ACS block of undersampled 2D k-space (ESPIRiT).

    Parameters
    ----------
    kspace
        ``(N, H, W)`` or ``(B, N, H, W)`` complex k-space, zero where not sampled.
    mask
        Sampling mask (``(H, W)``, ``(W,)``...); when omitted, points non-zero in any coil.
        Its fully sampled central box (:func:`acs_region`), cut to ``calib_size``, calibrates.
    kernel_size
        Width of the square k-space kernel (reduced to ACS width - 4 for narrow ACS blocks).
    threshold
        Singular values above ``threshold * max`` span the signal subspace.
    crop
        Pixels whose top eigenvalue is below ``crop`` get zero sensitivity (outside the object).
        0.8 as BART's ``ecalib``: 0.95 also zeroed dark tissue (bone, T1 CSF) inside phantoms,
        which cost CS/SENSE 15 dB at 4x, 128x128, 8 coils.

    Returns
    -------
    torch.Tensor
        complex64 maps shaped like ``kspace``, with ``sum_c |S_c|^2 = 1`` inside the support,
        on ``kspace``'s device (the small eigenproblems are solved on the CPU in float64).

    Raises
    ------
    InputError
        For real or non-finite k-space, or when the mask has no usable ACS block.
    """
    check_kspace(kspace)
    if kspace.ndim not in (3, 4):
        raise InputError(f"kspace must be (N, H, W) or (B, N, H, W), got {tuple(kspace.shape)}")
    batch = kspace if kspace.ndim == 4 else kspace[None]
    masks: list[torch.Tensor | None] = [None] * batch.shape[0]
    if mask is not None:
        m = torch.as_tensor(mask).detach().cpu()
        per_item = m.ndim == 3 and m.shape[0] == batch.shape[0] and batch.shape[0] > 1
        masks = [m[i] if per_item else m for i in range(batch.shape[0])]
    out = [
        _espirit_one(y.detach().cpu(), mi, kernel_size, calib_size, threshold, crop)
        for y, mi in zip(batch, masks)
    ]
    maps = torch.stack(out).to(kspace.device)
    return maps if kspace.ndim == 4 else maps[0]


def loop_maps(
    centres: Sequence[tuple[float, float]], shape: tuple[int, int], normalize: bool = True
) -> torch.Tensor:
    """Sensitivities ``(N, H, W)`` of small loops at ``centres`` ``(x, y)`` (half-FOV units,
    the image spans ``[-1, 1]^2``), each with the in-plane loop model of :func:`birdcage_maps`
    (magnitude ``1 / |d|``, phase turning around the coil). Loops outside the FOV on a circle
    make a birdcage-like array; loops along one side a surface (e.g. posterior spine) array.
    ``normalize``: ``sum_c |s_c|^2 = 1`` everywhere (else peak RSS 1)."""
    if not centres or len(shape) != 2 or min(shape) < 1:
        raise InputError(f"need >= 1 coil centre and a 2D shape, got {len(centres)} and {shape}")
    y, x = torch.meshgrid(*(torch.linspace(-1, 1, n, dtype=torch.float64) for n in shape),
                          indexing="ij")  # fmt: skip
    maps = []
    for cx, cy in centres:
        theta = math.atan2(cy, cx)
        d = torch.complex(x - cx, y - cy)
        maps.append(complex(math.cos(theta), -math.sin(theta)) * d.conj() / (d.abs() ** 2 + 1e-3))
    s = torch.stack(maps)
    scale = rss(s, 0) if normalize else rss(s, 0).max()
    return (s / scale).to(torch.complex64)
