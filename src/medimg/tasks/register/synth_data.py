"""Registration pairs synthesised on the fly from label maps (the SynthMorph recipe).

SynthMorph (Hoffmann et al., IEEE TMI 2022) trains a registration network on pairs of images
synthesised from label maps with random contrast, each side under its own random deformation,
and with the Dice of the warped label maps as the loss: no image similarity is needed, so one
network learns to register same- and cross-contrast pairs, and it learns anatomy rather than
the intensities of a phantom. :class:`SynthPairDataset` draws such pairs from brain tissue maps
(:func:`brain_label_map`) and from random-shape label maps
(:func:`medimg.phantoms.synth.random_shapes`), with the generator of
:mod:`medimg.phantoms.synth` (random per-label intensities, bias, blur, noise, gamma; random
affine + smooth diffeomorphic warps).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.phantoms.synth import Appearance, Deformation, random_shapes
from medimg.phantoms.synth_dataset import synth_pair
from medimg.tasks.register.data import normalise

__all__ = [
    "BRAIN_PAIR_LABELS",
    "PAIR_APPEARANCE",
    "PAIR_DEFORMATION",
    "SynthPairDataset",
    "brain_label_map",
    "fixed_pairs",
]

#: brain tissue map values (:data:`medimg.phantoms.synth_brain.BRAIN_LABELS`) -> the classes
#: registration aligns: deep grey matter counts as grey matter, non-brain head as background
BRAIN_PAIR_LABELS = {0: 0, 1: 1, 2: 2, 3: 3, 4: 2, 5: 0, 6: 0}
#: appearance of synthesised pair images: the generator's defaults, with a black background
#: (skull-stripped look, as most registration inputs) half of the time
PAIR_APPEARANCE = Appearance(background_zero=0.5)
#: each side of a pair: up to 8 degrees, 8 % scaling, and a smooth diffeomorphic warp of up to
#: 2 voxels (8 mm at 4 mm) velocity standard deviation; the pair's relative motion is about
#: sqrt(2) of that, which covers inter-subject brains after a rough (world-coordinate) alignment
PAIR_DEFORMATION = Deformation(rotate=8.0, scale=0.08, shear=0.03, warp_std=2.0, warp_grid=6)


def brain_label_map(
    labels: Image, spacing_mm: float = 4.0, shape: Sequence[int] = (48, 48, 48)
) -> torch.Tensor:
    """A brain tissue map (values of :data:`BRAIN_PAIR_LABELS`, any axis-aligned grid) as a long
    tensor of ``shape`` at ``spacing_mm``, centred on the brain: each class is resampled as a
    one-hot channel (linear interpolation) and the largest wins, so thin structures survive
    the coarser grid better than by nearest neighbour."""
    arr = np.asarray(labels.array[0] if labels.array.ndim == 4 else labels.array)
    if arr.ndim != 3:
        raise InputError(f"brain_label_map needs a 3D label map, got shape {arr.shape}")
    if arr.max() > max(BRAIN_PAIR_LABELS):
        raise InputError(f"brain label maps hold values 0..{max(BRAIN_PAIR_LABELS)}")
    lut = torch.tensor([BRAIN_PAIR_LABELS[k] for k in range(max(BRAIN_PAIR_LABELS) + 1)])
    lab = lut[torch.from_numpy(arr.astype(np.int64))]
    spacing = np.asarray(labels.spacing[:3], dtype=float)
    size = [max(2, round(n * s / spacing_mm)) for n, s in zip(lab.shape, spacing)]
    onehot = F.one_hot(lab, 4).permute(3, 0, 1, 2)[None].float()
    lab = F.interpolate(onehot, size=size, mode="trilinear", align_corners=False)[0].argmax(0)
    inside = torch.nonzero(lab > 0)
    if inside.numel() == 0:
        raise InputError("the brain label map is empty (no tissue labels)")
    centre = ((inside.min(0).values + inside.max(0).values) // 2).tolist()
    out = torch.zeros([int(n) for n in shape], dtype=torch.long)
    src, dst = [], []
    for c, n, m in zip(centre, lab.shape, out.shape):
        start = c - m // 2  # source index of the output's first voxel
        lo, hi = max(0, start), min(n, start + m)
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = lab[tuple(src)]
    return out


class SynthPairDataset(Dataset):
    """``{"fixed", "moving": (1, *shape) float32 in [0, 1], "fixed_label", "moving_label":
    (1, *shape) int64}`` pairs synthesised per read.

    Item ``i`` draws (from torch's global generator, which the engine reseeds per
    ``(seed, step, index)``, so a resumed run draws the same pairs): with probability
    ``shapes_prob`` (always, without ``brain_maps``) a random-shapes label map of ``shape`` with
    ``shape_labels`` labels, else one of ``brain_maps`` (randomly flipped per axis); then two
    deformations of it with images of one contrast, or with probability ``cross_prob`` of two
    independent contrasts (:func:`~medimg.phantoms.synth_dataset.synth_pair`). Images are
    normalised as :class:`~.predict.Registrator` normalises its inputs.
    """

    def __init__(
        self,
        brain_maps: Sequence[torch.Tensor],
        shape: Sequence[int],
        *,
        shape_labels: int = 12,
        shapes_prob: float = 0.5,
        cross_prob: float = 0.5,
        samples_per_epoch: int = 1000,
        appearance: Appearance | None = None,
        deformation: Deformation | None = None,
    ) -> None:
        self.shape = [int(n) for n in shape]
        self.maps = [m.long() for m in brain_maps]
        if any(list(m.shape) != self.shape for m in self.maps):
            raise InputError(f"brain label maps must have the pair shape {self.shape}")
        if not 0 <= shapes_prob <= 1 or not 0 <= cross_prob <= 1:
            raise InputError("shapes_prob and cross_prob are probabilities (0..1)")
        self.shape_labels, self.n = int(shape_labels), int(samples_per_epoch)
        self.shapes_prob = 1.0 if not self.maps else float(shapes_prob)
        self.cross_prob = float(cross_prob)
        self.appearance = appearance or PAIR_APPEARANCE
        self.deformation = deformation or PAIR_DEFORMATION

    @property
    def num_classes(self) -> int:
        """Label values 0..K-1 the pairs can hold."""
        return max([self.shape_labels, *[int(m.max()) + 1 for m in self.maps]])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        seed = int(torch.randint(2**62, ()))
        return self.draw(seed)

    def draw(self, seed: int, *, source: str | None = None, cross: bool | None = None) -> dict:
        """The pair of ``seed``; ``source`` (``"shapes"``/``"brain"``) and ``cross`` fix what is
        otherwise drawn."""
        gen = torch.Generator().manual_seed(seed)
        u = torch.rand(3, generator=gen).tolist()
        use_shapes = u[0] < self.shapes_prob if source is None else source == "shapes"
        if use_shapes or not self.maps:
            labels = random_shapes(self.shape, self.shape_labels, seed=gen)
        else:
            labels = self.maps[int(u[1] * len(self.maps)) % len(self.maps)]
            flips = [a for a in range(labels.ndim) if bool(torch.rand((), generator=gen) < 0.5)]
            labels = labels.flip(flips) if flips else labels
        same = (u[2] >= self.cross_prob) if cross is None else not cross
        fixed, moving = synth_pair(labels, seed=gen, same_contrast=same,
                                   appearance=self.appearance, deformation=self.deformation)  # fmt: skip
        return {
            "fixed": torch.from_numpy(normalise(fixed.image.numpy()))[None],
            "moving": torch.from_numpy(normalise(moving.image.numpy()))[None],
            "fixed_label": fixed.labels[None],
            "moving_label": moving.labels[None],
        }


def fixed_pairs(data: SynthPairDataset, n: int, seed: int) -> list[dict]:
    """``n`` pairs drawn once (validation): brain pairs when the dataset has brain maps, else
    shapes, alternating same and cross contrast; seeds ``seed, seed + 1, ...``."""
    source = "brain" if data.maps else "shapes"
    return [data.draw(seed + i, source=source, cross=bool(i % 2)) for i in range(n)]
