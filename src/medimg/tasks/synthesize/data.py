"""Paired MR / CT slices rendered from one deformed head label map.

A sample: an axial slice of a head label map at 1 mm (Colin27's, :func:`~.anatomy.
colin27_head_labels`, or a random toy head, :func:`~.anatomy.toy_head_labels`), padded to
192 x 224 mm, randomly deformed (affine + smooth warp, :mod:`medimg.phantoms.synth_warp`) and
mirrored, then rendered twice (:mod:`~.appearance`): MR (T1-like, or T2-like for a quarter of
the inputs) and CT in HU, both at 2 mm (96 x 112 pixels), aligned by construction.

Held out: Colin27 slices whose index is a multiple of 5 are never trained on (``split="test"``),
and validation / bench samples draw their deformations from seed ranges training never reaches
(:data:`VAL_SEED`, :data:`BENCH_SEED`; training uses the sample index, below 10**6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from medimg.errors import InputError
from medimg.phantoms.synth_warp import Deformation, random_deformation, warp
from medimg.tasks.synthesize.anatomy import toy_head_labels
from medimg.tasks.synthesize.appearance import render_ct, render_mr

__all__ = ["BENCH_SEED", "DIRECTIONS", "VAL_SEED", "HeadSlices", "PairDataset", "Sample"]
__all__ += ["ct_to_net", "make_sample", "net_to_ct"]

DIRECTIONS = ("mr2ct", "ct2mr")
SHAPE_1MM = (192, 224)
PIXEL_MM = 2.0
VAL_SEED = 5_000_000
BENCH_SEED = 9_000_000
HU_SCALE = 1000.0
DEFORM = Deformation(rotate=10.0, scale=0.08, shear=0.03, translate=4.0, warp_std=2.5,
                     warp_grid=6, integrate_steps=5)  # fmt: skip


def ct_to_net(hu: torch.Tensor) -> torch.Tensor:
    """CT in HU -> network units (HU / 1000, clipped to [-1.024, 3])."""
    return (hu / HU_SCALE).clamp(-1.024, 3.0)


def net_to_ct(x: torch.Tensor) -> torch.Tensor:
    """Network units -> HU, inside the int16-safe CT range."""
    return (x * HU_SCALE).clamp(-1024.0, 3071.0)


@dataclass
class Sample:
    """One pair at 2 mm: ``mr`` (normalised units), ``ct`` (HU), ``body`` mask, ``labels``
    (the 2 mm label of the majority class)."""

    mr: torch.Tensor
    ct: torch.Tensor
    body: torch.Tensor
    labels: torch.Tensor


class HeadSlices:
    """Where 1 mm label slices come from: Colin27 (``volume`` ``(X, Y, Z)``, axial last) and/or
    toy heads (probability ``toy_fraction``, or always when ``volume`` is None)."""

    def __init__(self, volume: np.ndarray | None, split: str = "train", toy_fraction: float = 0.2):
        if split not in ("train", "test"):
            raise InputError(f"split must be 'train' or 'test', got {split!r}")
        self.volume, self.split = volume, split
        self.toy_fraction = 1.0 if volume is None else float(toy_fraction)
        self.z: list[int] = []
        if volume is not None:
            brain = np.isin(volume, (1, 2, 3, 4)).sum(axis=(0, 1))
            zs = np.nonzero(brain > 0.15 * brain.max())[0]
            held = zs % 5 == 0
            self.z = [int(z) for z in zs[held if split == "test" else ~held]]

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """A 1 mm label slice padded (or cropped) to :data:`SHAPE_1MM`."""
        if not self.z or rng.random() < self.toy_fraction:
            return toy_head_labels(SHAPE_1MM, seed=int(rng.integers(2**31)))
        sl = self.volume[:, :, self.z[int(rng.integers(len(self.z)))]]
        return _fit(sl, SHAPE_1MM)


def _fit(sl: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, sl.dtype)
    src, dst = [], []
    for n, m in zip(sl.shape, shape):
        if n <= m:
            o = (m - n) // 2
            src.append(slice(0, n))
            dst.append(slice(o, o + n))
        else:
            o = (n - m) // 2
            src.append(slice(o, o + m))
            dst.append(slice(0, m))
    out[tuple(dst)] = sl[tuple(src)]
    return out


def make_sample(slices: HeadSlices, seed: int, contrast: str | None = None,
                deform: bool = True, canonical_mr: bool = False) -> Sample:  # fmt: skip
    """The pair of sample ``seed``: label slice, deformation, mirror, MR and CT draws.
    ``contrast`` None: T1 for three samples in four, else T2. ``canonical_mr``: the MR without
    contrast jitter, bias field or much noise (CT -> MR targets)."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(seed))
    lab = torch.from_numpy(slices.draw(rng).astype(np.int64))
    if deform:
        field = random_deformation(lab.shape, seed=gen, deformation=DEFORM)
        lab = warp(lab, field, labels=True)
    if rng.random() < 0.5:
        lab = lab.flip(0)
    if contrast is None:
        contrast = "t2" if rng.random() < 0.25 else "t1"
    mr = render_mr(lab, gen, contrast, canonical=canonical_mr)
    ct = render_ct(lab, gen)
    onehot = torch.nn.functional.one_hot(lab, 9).permute(2, 0, 1).float()[None]
    major = torch.nn.functional.avg_pool2d(onehot, 2)[0].argmax(0)
    return Sample(mr, ct, major > 0, major)


class PairDataset(Dataset):
    """``{"input", "target", "body"}`` (each ``(1, X, Y)``) for ``direction``; index ``i``
    draws sample ``base_seed + i``. ``unpaired``: the target comes from another head (sample
    ``base_seed + i + 10**8``), as CycleGAN training sees it. CT -> MR targets are canonical
    T1 (template contrast, no bias field)."""

    def __init__(self, slices: HeadSlices, direction: str, length: int, *, base_seed: int = 0,
                 unpaired: bool = False, t2_fraction: float = 0.25):  # fmt: skip
        if direction not in DIRECTIONS:
            raise InputError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        self.slices, self.direction, self.length = slices, direction, length
        self.base_seed, self.unpaired, self.t2_fraction = base_seed, unpaired, t2_fraction

    def __len__(self) -> int:
        return self.length

    def _contrast(self, seed: int) -> str:
        if self.direction == "ct2mr":
            return "t1"
        return "t2" if np.random.default_rng(seed + 7).random() < self.t2_fraction else "t1"

    def __getitem__(self, i: int) -> dict:
        seed = self.base_seed + int(i)
        canon = self.direction == "ct2mr"  # CT -> MR learns the canonical T1 (render_mr)
        s = make_sample(self.slices, seed, self._contrast(seed), canonical_mr=canon)
        t = s
        if self.unpaired:
            t = make_sample(self.slices, seed + 10**8, self._contrast(seed), canonical_mr=canon)
        mr_in, ct_in = s.mr, ct_to_net(s.ct)
        mr_t, ct_t = t.mr, ct_to_net(t.ct)
        x, y = (mr_in, ct_t) if self.direction == "mr2ct" else (ct_in, mr_t)
        return {"input": x[None].float(), "target": y[None].float(),
                "body": t.body[None].float()}  # fmt: skip
