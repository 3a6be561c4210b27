"""Training pairs from real brain images under known smooth warps (full supervision).

A network that has to move real anatomy learns fastest from pairs whose true displacement is
known: each step takes a real skull-stripped T1 with its tissue map, makes a new "subject" of
it (random flips, axis order, scaling, rotation and a mild smooth warp), draws a smooth
diffeomorphic warp of the size seen between brains after a rough alignment (a 5-point-per-axis
spline velocity, as the real-pair bench uses, with a random linear part), and gives the pair
fixed = subject, moving = subject warped by the inverse, so that ``fixed(x) = moving(x + u(x))``
with ``u`` known exactly. Each side gets its own appearance: the real intensities, a random
intensity map of them (keeps the real texture; decreasing maps give T2-like contrast), or an
image synthesised from the tissue map (:func:`medimg.phantoms.synth.synthesize_image`), then a
smooth bias, gamma and Rician noise.

Sources are kept at 2 mm and area-averaged to the network's 4 mm grid, as
:class:`~.predict.Registrator` sees a 2 mm pair; warps are drawn and applied on that grid (the
fields are smooth; warping at 2 mm cost three times the CPU per pair). Our own generator rather than :class:`~.synth_data.SynthPairDataset`: that
one synthesises every image from labels; here the images keep the real T1's texture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch.utils.data import Dataset

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.tasks.register.data import normalise
from medimg.tasks.register.transform import integrate, warp

__all__ = ["BrainSource", "BrainWarpDataset", "WarpRanges", "brain_source", "fixed_brain_pairs"]


@dataclass
class BrainSource:
    """One training brain on an isotropic grid of half the network's voxel size, cropped to the
    brain with a margin, every axis even: ``image`` float32 in [0, 1] (zero outside the brain),
    ``labels`` int64 0 background, 1 CSF, 2 GM, 3 WM."""

    image: torch.Tensor
    labels: torch.Tensor


@dataclass
class WarpRanges:
    """What a pair draws: the pair's warp (largest velocity in mm, uniform in ``max_mm``;
    ``control`` points per axis; a linear part of up to ``rotate`` degrees, ``scale``, ``shift_mm``
    with probability ``linear_prob``); the subject's own variation (``subject_scale``,
    ``subject_rotate``, ``subject_warp_mm``); appearance (``cross_prob``: the moving image gets
    an independent appearance; ``bias``, ``noise``, ``gamma_std``)."""

    max_mm: tuple[float, float] = (2.0, 14.0)
    control: tuple[int, int] = (4, 6)
    linear_prob: float = 0.5
    rotate: float = 4.0
    scale: float = 0.04
    shift_mm: float = 4.0
    subject_scale: float = 0.1
    subject_rotate: float = 8.0
    subject_warp_mm: float = 6.0
    cross_prob: float = 0.5
    bias: float = 0.3
    noise: tuple[float, float] = (0.0, 0.04)
    gamma_std: float = 0.2


def brain_source(t1: Image, labels: Image, spacing_mm: float = 2.0, margin: int = 4) -> BrainSource:
    """A :class:`BrainSource` from a skull-stripped T1 and its tissue map (values 0-3, same
    grid): reoriented to RAS+, resampled to ``spacing_mm`` (linear / per-label linear), cropped
    to the brain plus ``margin`` voxels."""
    from medimg.phantoms.synth_brain import labels_at_spacing

    if t1.spatial_shape != labels.spatial_shape or t1.spatial_ndim != 3:
        raise InputError("brain_source needs a 3D T1 and a tissue map on the same grid")
    t1, labels = t1.canonical(), labels.canonical()
    lab = labels_at_spacing(labels, spacing_mm)
    img = torch.from_numpy(np.asarray(t1.array[0], np.float32))[None, None]
    img = F.interpolate(img, size=tuple(lab.shape), mode="trilinear", align_corners=False)[0, 0]
    brain = lab > 0
    top = float(torch.quantile(img[brain][::7], 0.995))
    img = torch.where(brain, (img / max(top, 1e-6)).clamp(0, 1), torch.zeros(()))
    idx = torch.nonzero(brain)
    box = []
    for lo, hi, n in zip(idx.min(0).values.tolist(), idx.max(0).values.tolist(), lab.shape):
        a, b = max(0, lo - margin), min(n, hi + margin + 1)
        b = b - (b - a) % 2  # even, so that area averaging halves it exactly
        box.append(slice(a, b))
    return BrainSource(img[tuple(box)].contiguous(), lab[tuple(box)].contiguous())


def _smooth(rng: np.random.Generator, shape: tuple[int, ...], control: int, channels: int):
    """Gaussian noise on a ``control``-point lattice, cubic-spline upsampled onto a lattice of
    at most 16 points per axis, then linearly onto ``shape`` (a full cubic upsampling of a 2 mm
    brain grid took 0.5 s per channel; the coarse lattice is already smooth)."""
    mid = [min(int(s), 16) for s in shape]
    coarse = rng.standard_normal((channels, *[control] * len(shape)))
    smooth = np.stack([ndimage.zoom(c, [m / control for m in mid], order=3) for c in coarse])
    smooth = torch.from_numpy(smooth[(slice(None), *[slice(0, m) for m in mid])].astype(np.float32))
    fine = F.interpolate(smooth[None], size=tuple(shape), mode="trilinear", align_corners=True)
    return fine[0].numpy()


def _linear_velocity(rng, shape, rotate_deg: float, scale: float, shift_vox: float) -> np.ndarray:
    """Velocity ``W (x - c) + t`` whose exponential is a rotation, scaling and shift."""
    nd = len(shape)
    w = np.zeros((nd, nd))
    for i, j in ((0, 1), (0, 2), (1, 2)):
        t = np.deg2rad(rng.uniform(-rotate_deg, rotate_deg))
        w[i, j], w[j, i] = -t, t
    w += np.diag(np.log(rng.uniform(1 - scale, 1 + scale, nd)))
    grid = np.indices(shape, dtype=np.float32)
    centred = grid - ((np.array(shape) - 1) / 2).reshape(-1, 1, 1, 1)
    v = np.einsum("ij,j...->i...", w, centred) + rng.uniform(-shift_vox, shift_vox, nd).reshape(
        -1, 1, 1, 1
    )
    return v.astype(np.float32)


def _velocity(rng, shape, max_vox: float, control: int) -> np.ndarray:
    v = _smooth(rng, shape, control, len(shape))
    return v * (max_vox / (np.sqrt((v**2).sum(0)).max() + 1e-12))


def _appearance(rng, src: BrainSource, labels: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """One random look of a warped subject: real intensities, a random intensity map of them,
    or an image synthesised from the labels; zero outside the brain."""
    from medimg.phantoms.synth import Appearance, synthesize_image

    kind = rng.choice(3, p=[0.4, 0.4, 0.2])
    brain = labels > 0
    if kind == 1:  # piecewise-linear map of the intensities; decreasing half of the time
        x = np.linspace(0, 1, 6)
        y = np.sort(rng.uniform(0, 1, 6))
        y = y[::-1].copy() if rng.uniform() < 0.5 else y
        y = np.clip(y + rng.normal(0, 0.1, 6), 0, 1)
        image = torch.from_numpy(np.interp(image.numpy(), x, y).astype(np.float32))
    elif kind == 2:
        app = Appearance(background_zero=1.0, bias_std=0.0, lowres_prob=0.0, noise_std=(0, 0),
                         gamma_std=0.0, blur_max=0.5, partial_volume=(0.0, 1.0))  # fmt: skip
        image = synthesize_image(labels, seed=int(rng.integers(2**62)), appearance=app)
    return torch.where(brain, image.float().clamp_min(0), torch.zeros(()))


def _degrade(rng, image: torch.Tensor, r: WarpRanges) -> torch.Tensor:
    """Smooth multiplicative bias, gamma, Rician noise (as a scanner would add)."""
    bias = torch.from_numpy(_smooth(rng, tuple(image.shape), 4, 1)[0])
    bias = torch.exp(rng.uniform(0, r.bias) * bias / bias.abs().max().clamp_min(1e-6))
    top = float(image.max().clamp_min(1e-6))
    out = (image / top).clamp(0, 1) ** float(np.exp(rng.normal(0, r.gamma_std))) * bias
    sd = rng.uniform(*r.noise)
    noise = torch.from_numpy(rng.standard_normal((2, *image.shape)).astype(np.float32)) * sd
    return torch.sqrt((out + noise[0]) ** 2 + noise[1] ** 2)


class BrainWarpDataset(Dataset):
    """``{"fixed", "moving": (1, *S) float32 normalised, "fixed_label", "moving_label": (4, *S)
    soft one-hot, "field": (3, *S) true displacement in voxels, "mask": (1, *S) brain}`` on the
    network's grid (half of a source's resolution), drawn per read from ``sources``: item ``i``
    uses torch's global generator (reseeded per step by the engine), so a resumed run draws the
    same pairs."""

    def __init__(
        self, sources: list[BrainSource], ranges: WarpRanges | None = None, samples: int = 1000
    ) -> None:
        if not sources:
            raise InputError("BrainWarpDataset needs at least one brain")
        self.sources, self.ranges, self.n = list(sources), ranges or WarpRanges(), int(samples)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.draw(int(torch.randint(2**62, ())))

    def draw(self, seed: int, *, cross: bool | None = None, fine_mm: float = 2.0) -> dict:
        """The pair of ``seed``; ``cross`` fixes whether the two sides differ in appearance;
        ``fine_mm``: the sources' voxel size (the network's is twice it)."""
        rng, r = np.random.default_rng(seed), self.ranges
        src = self.sources[int(rng.integers(len(self.sources)))]
        img, lab = src.image, src.labels
        flips = [a for a in range(3) if rng.uniform() < 0.5]
        order = [int(i) for i in rng.permutation(3)] if rng.uniform() < 0.3 else [0, 1, 2]
        img, lab = img.flip(flips).permute(order), lab.flip(flips).permute(order)
        shape = tuple(n // 2 for n in img.shape)
        vox = 2 * fine_mm
        # everything on the network's grid: the source area-averaged to it (as the
        # Registrator averages a 2 mm pair), labels as soft one-hot maps (what Dice needs)
        img4 = F.avg_pool3d(img[None, None], 2)
        oh4 = F.avg_pool3d(F.one_hot(lab, 4).movedim(-1, 0).float()[None], 2)
        # the subject: the source under a random scaling, rotation and mild warp (or as it is,
        # so the network also sees fixed images that were never interpolated)
        if rng.uniform() < 0.8:
            vs = _linear_velocity(rng, shape, r.subject_rotate, r.subject_scale, 0.0)
            vs = vs + _velocity(rng, shape, rng.uniform(0, r.subject_warp_mm) / vox, 5)
            s4 = integrate(torch.from_numpy(vs)[None], 5)  # 5 squarings: |v| / 32 < 0.2 voxel
            img4, oh4 = warp(img4, s4), warp(oh4, s4)
        subj, subj_lab = img4[0, 0], oh4[0].argmax(0)
        # the pair's warp u = exp(v); the moving image is the subject under exp(-v)
        control = int(rng.integers(r.control[0], r.control[1] + 1))
        v = _velocity(rng, shape, rng.uniform(*r.max_mm) / vox, control)
        if rng.uniform() < r.linear_prob:
            v = v + _linear_velocity(rng, shape, r.rotate, r.scale, r.shift_mm / vox)
        vt = torch.from_numpy(v)[None]
        u, back4 = integrate(vt, 6), integrate(-vt, 6)
        same = (rng.uniform() >= r.cross_prob) if cross is None else not cross
        look_f = _appearance(rng, src, subj_lab, subj)
        look_m = look_f if same else _appearance(rng, src, subj_lab, subj)
        f4 = _degrade(rng, look_f, r)[None]
        m4 = _degrade(rng, warp(look_m[None, None], back4)[0, 0], r)[None]
        f_oh4, m_oh4 = oh4[0], warp(oh4, back4)[0]
        return {
            "fixed": torch.from_numpy(normalise(f4.numpy())),
            "moving": torch.from_numpy(normalise(m4.numpy())),
            "fixed_label": f_oh4,
            "moving_label": m_oh4,
            "field": u[0],
            "mask": (f_oh4[1:].sum(0, keepdim=True) > 0.5).float(),
        }


def fixed_brain_pairs(data: BrainWarpDataset, n: int, seed: int) -> list[dict]:
    """``n`` pairs drawn once (validation), alternating same and cross appearance."""
    return [data.draw(seed + i, cross=bool(i % 2)) for i in range(n)]
