"""What the detector sees: CT resampled to an isotropic grid, HU window, centre-point targets.

A *prepared volume* is the CT linearly resampled to ``spacing`` mm isotropic (origin voxel kept),
cropped to the bounding box of the body (voxels above -400 HU, plus a margin; saves a third of the
voxels), HU clipped to [-1000, 400] and scaled to [0, 1]; its ``affine`` maps prepared voxels to
RAS+ mm, so candidates go to world coordinates without undoing anything.

Targets follow CenterNet (Zhou et al. 2019) in 3D: a heatmap with a Gaussian peak at each
nodule centre (sigma = max(0.75 voxel, a quarter of the diameter)), and, near each centre, the
log diameter (mm) and the sub-voxel offset from the voxel to the true centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.io.inputs import check_allocation, check_real

__all__ = ["PatchDataset", "Prepared", "check_ct_volume", "make_targets", "prepare", "to_voxels"]

HU_RANGE = (-1000.0, 400.0)


@dataclass
class Prepared:
    """``x`` (X, Y, Z) float32 in [0, 1] on an isotropic grid; ``affine`` voxel -> RAS+ mm."""

    x: np.ndarray
    affine: np.ndarray
    spacing: float


def check_ct_volume(image: Image, path: object = None) -> np.ndarray:
    """The HU voxels ``(X, Y, Z)`` of a CT the nodule detector can take, or a one-line refusal
    naming ``path``: more than one channel (a colour image is no CT), complex or non-numeric
    values, a single slice or a side under 2 voxels, NaN/Inf, values that are not HU."""
    where = None if path is None else str(path)
    check_real(image.array, where, what="nodule detection")
    if image.array.dtype.kind not in "biuf":
        raise InputError(f"holds {image.array.dtype} values, not CT numbers (HU)", where)
    if image.spatial_ndim != 3 or image.num_channels != 1:
        raise InputError(
            f"the nodule detector needs one 3D CT volume of HU, got {image.num_channels} "
            f"channel(s), {image.spatial_ndim}D; give a grey CT volume",
            where,
        )
    shape = image.spatial_shape
    if min(shape) < 2:
        raise InputError(
            f"is {'x'.join(map(str, shape))} voxels: a single slice or line, not a volume; give "
            "the whole CT series (for one slice use 'medimg detect predict2d')",
            where,
        )
    hu = image.array[0].astype(np.float32)
    if not np.isfinite(hu).all():
        raise InputError("the CT contains NaN/Inf voxels; fix or mask them before detection", where)
    if hu.max() <= 0 or hu.min() > -500:
        raise InputError(
            f"values {hu.min():.0f}..{hu.max():.0f} do not look like CT Hounsfield units "
            "(air -1000, soft tissue 0-100); rescale the image to HU",
            where,
        )
    return hu


def prepare(image: Image, spacing: float = 2.0, crop_body: bool = True) -> Prepared:
    """Resample a CT :class:`Image` (HU) to ``spacing`` mm, crop to the body, scale (module doc).
    The image is checked first (:func:`check_ct_volume`)."""
    hu = check_ct_volume(image)
    sp = np.asarray(image.spacing, dtype=np.float64)
    scale = spacing / sp
    shape = np.maximum(np.round((np.asarray(hu.shape) - 1) / scale).astype(int) + 1, 1)
    check_allocation(shape, np.float32, copies=3, what=f"the CT resampled to {spacing:g} mm")
    out = ndimage.affine_transform(hu, np.diag(scale), output_shape=tuple(shape), order=1,
                                   mode="nearest")  # fmt: skip
    affine = image.affine @ np.diag([*scale, 1.0])
    if crop_body:
        body = np.argwhere(out > -400)
        if len(body):
            m = int(np.ceil(10.0 / spacing))
            lo = np.maximum(body.min(0) - m, 0)
            hi = np.minimum(body.max(0) + m + 1, out.shape)
            out = out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
            affine = affine.copy()
            affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    x = (np.clip(out, *HU_RANGE) - HU_RANGE[0]) / (HU_RANGE[1] - HU_RANGE[0])
    return Prepared(np.ascontiguousarray(x, dtype=np.float32), affine, float(spacing))


def to_voxels(prep: Prepared, rows_ras: np.ndarray) -> np.ndarray:
    """``[x, y, z, diameter]`` RAS+ mm rows -> ``[i, j, k, diameter_vox]`` on the prepared grid."""
    r = np.asarray(rows_ras, dtype=np.float64).reshape(-1, 4)
    inv = np.linalg.inv(prep.affine)
    return np.c_[r[:, :3] @ inv[:3, :3].T + inv[:3, 3], r[:, 3] / prep.spacing]


def make_targets(shape: tuple[int, ...], nodules_vox: np.ndarray) -> dict[str, np.ndarray]:
    """Centre-point targets on a grid ``shape``: ``heatmap`` (1, *shape), ``size`` (1, *shape)
    log diameter in voxels, ``offset`` (3, *shape), ``reg_mask`` (1, *shape) where size/offset
    are supervised (within max(1.5, r/2) voxels of a centre; smaller nodules win overlaps)."""
    heat = np.zeros(shape, np.float32)
    size, offset = np.zeros((1, *shape), np.float32), np.zeros((3, *shape), np.float32)
    mask = np.zeros((1, *shape), np.float32)
    for c in sorted(np.asarray(nodules_vox).reshape(-1, 4), key=lambda r: -r[3]):
        centre, dia = c[:3], c[3]
        sigma = max(0.75, dia / 4)
        reach = int(np.ceil(3 * sigma))
        lo = np.maximum(np.floor(centre).astype(int) - reach, 0)
        hi = np.minimum(np.floor(centre).astype(int) + reach + 2, shape)
        if np.any(hi <= lo):
            continue
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        g = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
        d = [gi - ci for gi, ci in zip(g, centre)]
        r2 = sum(di**2 for di in d)
        heat[box] = np.maximum(heat[box], np.exp(-r2 / (2 * sigma**2)))
        near = r2 <= max(1.5, dia / 4) ** 2
        for k in range(3):
            offset[k][box][near] = -d[k][near]
        size[0][box][near] = np.log(max(dia, 0.5))
        mask[0][box][near] = 1.0
        # the voxel nearest the centre is the peak: exactly 1 (the focal loss's positive)
        peak = tuple(np.clip(np.round(centre).astype(int), 0, np.asarray(shape) - 1))
        if np.all((np.round(centre) >= 0) & (np.round(centre) < shape)):
            heat[peak] = 1.0
    return {"heatmap": heat[None], "size": size, "offset": offset, "reg_mask": mask}


def _weighted_rows(
    weights: list[np.ndarray] | None, tables: list[np.ndarray], what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(cumulative share, volume, row)`` over every row of every table for draws in
    proportion to ``weights`` (one array per table, one weight per row); None without weights
    or without rows."""
    if weights is None:
        return None
    w = [np.asarray(a, float).ravel() for a in weights]
    if len(w) != len(tables) or any(
        len(a) != len(np.asarray(t).reshape(-1, 4)) for a, t in zip(w, tables)
    ):
        raise InputError(f"PatchDataset needs one weight per {what} of each volume")
    flat = np.concatenate(w) if w else np.zeros(0)
    if not len(flat):
        return None
    if np.any(flat < 0) or not np.isfinite(flat).all() or flat.sum() <= 0:
        raise InputError(f"{what} weights must be finite, >= 0 and not all 0")
    return (np.cumsum(flat) / flat.sum(),
            np.concatenate([[i] * len(a) for i, a in enumerate(w)]).astype(int),
            np.concatenate([np.arange(len(a)) for a in w]).astype(int))  # fmt: skip


def _draw(pick: tuple[np.ndarray, np.ndarray, np.ndarray], rng) -> tuple[int, int]:
    """One ``(volume, row)`` drawn from a :func:`_weighted_rows` table."""
    cum, vols, rows = pick
    j = min(int(np.searchsorted(cum, rng.random(), side="right")), len(cum) - 1)
    return int(vols[j]), int(rows[j])


class PatchDataset(Dataset):
    """Random training patches with positive oversampling and flip augmentation.

    Each item draws (from the global generators the engine seeds per ``(seed, step, index)``) a
    patch centred on a random nodule with jitter (probability ``pos_fraction``), on a random
    hard negative (``hard_negatives``: per volume, ``[i, j, k, diameter]`` voxel rows of nodule
    look-alikes such as vessel stubs, branch points and pleural plaques; probability
    ``hard_fraction``) or anywhere in the volume, flips it along each axis with probability 1/2
    and scales intensity by up to 5 %. A hard negative is mined simply by being seen more
    often: its targets stay background (no nodule there), so the focal loss pushes it down.
    ``nodule_weights`` (one array per volume, one weight per nodule) makes a positive patch pick
    nodules in proportion to their weights over all volumes (e.g. more patches on the nodule
    types a model misses); without it a volume, then one of its nodules, is drawn uniformly.
    ``hard_weights`` does the same for the hard negatives (e.g. each kind an equal share, so
    that the rare vessel stubs and plaques are not drowned by the many branch points).
    """

    def __init__(
        self,
        volumes: list[Prepared],
        nodules_vox: list[np.ndarray],
        patch: int = 64,
        samples_per_epoch: int = 200,
        pos_fraction: float = 0.5,
        hard_negatives: list[np.ndarray] | None = None,
        hard_fraction: float = 0.0,
        nodule_weights: list[np.ndarray] | None = None,
        hard_weights: list[np.ndarray] | None = None,
    ) -> None:
        if not volumes or len(volumes) != len(nodules_vox):
            raise InputError("PatchDataset needs one nodule table per volume (and >= 1 volume)")
        if hard_negatives is not None and len(hard_negatives) != len(volumes):
            raise InputError("PatchDataset needs one hard-negative table per volume")
        if not 0 <= pos_fraction + hard_fraction <= 1 or hard_fraction < 0:
            raise InputError(f"pos_fraction {pos_fraction} + hard_fraction {hard_fraction} "
                             "must lie in [0, 1]")  # fmt: skip
        self.volumes, self.nodules, self.patch = volumes, nodules_vox, int(patch)
        self.n, self.pos_fraction = int(samples_per_epoch), float(pos_fraction)
        self.with_nodules = [i for i, n in enumerate(nodules_vox) if len(n)]
        self.hard = [np.asarray(h).reshape(-1, 4) for h in hard_negatives or []]
        self.hard_fraction = float(hard_fraction) if self.hard else 0.0
        self.with_hard = [i for i, h in enumerate(self.hard) if len(h)]
        # cumulative weights over (volume, row) pairs, when weighted (None: uniform draws)
        self.pick = _weighted_rows(nodule_weights, nodules_vox, "nodule")
        self.hard_pick = (
            _weighted_rows(hard_weights, self.hard, "hard negative") if self.hard else None
        )

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random  # seeded by the engine for (seed, step, index)
        p = self.patch
        # one draw decides, and none where there is nothing to choose (as before hard negatives)
        u = rng.random() if self.with_nodules or (self.with_hard and self.hard_fraction) else 1.0
        if self.with_nodules and u < self.pos_fraction:
            if self.pick is None:
                v = self.with_nodules[rng.randint(len(self.with_nodules))]
                nod = self.nodules[v][rng.randint(len(self.nodules[v]))]
            else:  # a nodule drawn in proportion to its weight (e.g. more of the hard types)
                v, row = _draw(self.pick, rng)
                nod = self.nodules[v][row]
            centre = nod[:3] + rng.uniform(-0.35 * p, 0.35 * p, 3)
        elif self.with_hard and u < self.pos_fraction + self.hard_fraction:
            if self.hard_pick is None:
                v = self.with_hard[rng.randint(len(self.with_hard))]
                neg = self.hard[v][rng.randint(len(self.hard[v]))]
            else:
                v, row = _draw(self.hard_pick, rng)
                neg = self.hard[v][row]
            centre = neg[:3] + rng.uniform(-0.25 * p, 0.25 * p, 3)
        else:
            v = rng.randint(len(self.volumes))
            centre = rng.uniform(0, 1, 3) * np.asarray(self.volumes[v].x.shape)
        vol = self.volumes[v].x
        start = np.round(centre - p / 2).astype(int)
        src_lo, src_hi = np.maximum(start, 0), np.minimum(start + p, vol.shape)
        patch = np.zeros((p, p, p), np.float32)  # air outside the scan
        dst = tuple(slice(a - s, b - s) for a, b, s in zip(src_lo, src_hi, start))
        patch[dst] = vol[tuple(slice(a, b) for a, b in zip(src_lo, src_hi))]
        nods = self.nodules[v].copy().reshape(-1, 4)
        nods[:, :3] -= start
        for ax in range(3):
            if rng.random() < 0.5:
                patch = np.flip(patch, ax)
                nods[:, ax] = p - 1 - nods[:, ax]
        patch = patch * rng.uniform(0.95, 1.05)
        t = make_targets((p, p, p), nods)
        item = {"image": torch.from_numpy(np.ascontiguousarray(patch)[None].astype(np.float32))}
        item.update({k: torch.from_numpy(a) for k, a in t.items()})
        return item
