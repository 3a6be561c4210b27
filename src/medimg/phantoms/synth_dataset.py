"""Training samples synthesised on the fly from label maps (:mod:`medimg.phantoms.synth`).

:class:`SynthSegDataset` is a map-style dataset for the engine's trainer: item ``i`` picks a
label map, deforms it, synthesises an image of random contrast on it, crops a patch and maps
the labels to the classes the model learns. Its randomness comes from torch's global generator,
which the engine reseeds per ``(seed, step, index)`` before each read, so a sample is a function
of those alone and a resumed run draws the same samples. :func:`synth_pair` draws two images of
one label map (different deformations, the same or different contrast): a registration pair
whose label maps give its Dice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch.utils.data import Dataset

from medimg.errors import InputError
from medimg.phantoms.synth import (
    Appearance,
    Deformation,
    SynthSample,
    synth_sample,
    synthesize_image,
)
from medimg.phantoms.synth_ops import make_generator
from medimg.phantoms.synth_warp import random_deformation, warp

__all__ = ["SynthSegDataset", "SynthSliceDataset", "cat_collate", "synth_pair"]

_SEED_RANGE = 2**62


def _lookup(mapping: Mapping[int, int] | None, top: int, device: torch.device) -> torch.Tensor:
    """A table value -> class for values 0..top (identity where ``mapping`` is silent)."""
    lut = torch.arange(top + 1, device=device)
    for value, cls in (mapping or {}).items():
        if 0 <= value <= top:
            lut[value] = cls
    return lut


class SynthSegDataset(Dataset):
    """Synthesised ``{"image": (1, *patch) float32, "label": (1, *patch) int64}`` samples.

    Parameters
    ----------
    label_maps
        Integer label maps ``(X, Y, Z)`` (torch), e.g. from :mod:`medimg.phantoms.synth_brain`.
    patch_size
        Crop size per axis (a map smaller than the patch is padded with label 0).
    train_labels
        ``{label value: class}`` applied after synthesis (e.g. head tissue -> background);
        values not listed keep their value.
    samples_per_epoch
        The dataset's (virtual) length.
    appearance, deformation, classes
        Passed to :func:`~medimg.phantoms.synth.synth_sample`.
    flip_axes
        Axes along which the label map is flipped with probability 1/2 before deforming (a
        left-right flip of a brain is another plausible brain).
    normalize
        Applied to the whole synthesised image before cropping, so a patch is normalised as the
        model's inference normalises a whole scan (e.g. a per-image z-score).
    mean_prior
        ``mean_prior(generator) -> {label value: mean} or None``: per-label mean intensities to
        use instead of uniformly drawn ones for this sample (e.g. a jittered T1- or T2-like
        template some of the time, :func:`~medimg.phantoms.synth_brain.brain_contrast_means`);
        ``None`` keeps the generator's fully random draw.
    """

    def __init__(
        self,
        label_maps: Sequence[torch.Tensor],
        patch_size: Sequence[int],
        *,
        train_labels: Mapping[int, int] | None = None,
        samples_per_epoch: int = 250,
        appearance: Appearance | None = None,
        deformation: Deformation | None = None,
        classes: dict[int, int] | None = None,
        flip_axes: Sequence[int] = (),
        normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
        mean_prior: Callable[[torch.Generator], dict[int, float] | None] | None = None,
    ) -> None:
        if not label_maps:
            raise InputError("no label maps to synthesise from")
        self.maps = [m.long() for m in label_maps]
        if any(m.ndim != len(patch_size) for m in self.maps):
            raise InputError(f"label maps and patch_size {list(patch_size)} differ in dimensions")
        self.patch = [int(p) for p in patch_size]
        top = max(int(m.max()) for m in self.maps)
        self.lut = _lookup(train_labels, top, self.maps[0].device)
        self.n = int(samples_per_epoch)
        self.appearance, self.deformation, self.classes = appearance, deformation, classes
        self.flip_axes = [int(a) for a in flip_axes]
        if any(not 0 <= a < len(self.patch) for a in self.flip_axes):
            raise InputError(f"flip_axes {list(flip_axes)} must be axes of the label maps")
        self.normalize, self.mean_prior = normalize, mean_prior

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s, gen = self._synthesize()
        image, labels = self._crop(s, gen)
        return {"image": image[None], "label": self.lut[labels][None]}

    def _synthesize(self) -> tuple[SynthSample, torch.Generator]:
        """One whole synthesised (and normalised) volume, and the generator that drew it."""
        # the engine seeds torch's global generator per (seed, step, index) before each read
        seed = int(torch.randint(_SEED_RANGE, ()))
        gen = torch.Generator(device=self.maps[0].device).manual_seed(seed)
        which = int(torch.randint(len(self.maps), (), generator=gen, device=gen.device))
        labels = self.maps[which]
        flips = [
            a
            for a in self.flip_axes
            if float(torch.rand((), generator=gen, device=gen.device)) < 0.5
        ]
        labels = labels.flip(flips) if flips else labels
        means = self.mean_prior(gen) if self.mean_prior is not None else None
        if means is None:
            s = synth_sample(labels, seed=gen, appearance=self.appearance,
                             deformation=self.deformation, classes=self.classes)  # fmt: skip
        else:  # the same steps as synth_sample, with the prior's means
            field = random_deformation(labels.shape, seed=gen, deformation=self.deformation,
                                       device=labels.device)  # fmt: skip
            moved = warp(labels, field, labels=True)
            image = synthesize_image(moved, seed=gen, appearance=self.appearance,
                                     classes=self.classes, means=means)  # fmt: skip
            s = SynthSample(image, moved, field, means)  # type: ignore[arg-type]
        if self.normalize is not None:
            s.image = self.normalize(s.image)
        return s, gen

    def _crop(self, s: SynthSample, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        image, labels = s.image, s.labels
        pad = []
        for n, p in zip(reversed(image.shape), reversed(self.patch)):
            extra = max(0, p - n)
            pad += [extra // 2, extra - extra // 2]
        if any(pad):
            image = torch.nn.functional.pad(image, pad)
            labels = torch.nn.functional.pad(labels, pad)
        starts = [
            int(torch.randint(n - p + 1, (), generator=gen, device=gen.device))
            for n, p in zip(image.shape, self.patch)
        ]
        region = tuple(slice(a, a + p) for a, p in zip(starts, self.patch))
        return image[region], labels[region]


class SynthSliceDataset(SynthSegDataset):
    """Slices of synthesised volumes, for a 2D network that segments a 3D scan slice by slice.

    Item ``i`` synthesises one whole volume as :class:`SynthSegDataset` does (deformation,
    appearance, normalisation of the whole volume, so a slice is normalised as prediction
    normalises a scan) and returns ``slices`` slices across the last axis (axial for RAS+ maps)
    as ``{"image": (slices, 1, *patch), "label": (slices, 1, *patch)}``; batch items with
    :func:`cat_collate`. Slices are drawn among those holding a training class other than
    background, each cropped (or padded) to ``patch_size`` (2 values) at a random position.

    Why: synthesising a volume costs about as much CPU as a 3D network step on a 32^3 patch;
    taking several whole slices from each volume spends most of a step on learning, with the
    in-plane context of the whole head, where a 3D patch sees 64 mm of it.

    ``margin`` pads each slice in-plane (image minimum, background) before the crop, and a
    slice is replaced with probability ``empty_prob`` by an empty one (the image minimum, all
    background): a scan's field of view holds such slices and windows, and a network with
    instance normalisation that never saw them labels them at random (the first 2D model
    painted empty slices white matter).
    """

    def __init__(
        self,
        label_maps: Sequence[torch.Tensor],
        patch_size: Sequence[int],
        *,
        slices: int = 4,
        margin: int = 0,
        empty_prob: float = 0.0,
        **kwargs,
    ) -> None:
        if len(patch_size) != 2:
            raise InputError(f"a slice dataset takes a 2D patch_size, got {list(patch_size)}")
        if slices < 1 or margin < 0 or not 0 <= empty_prob <= 1:
            raise InputError(
                f"need slices >= 1, margin >= 0, 0 <= empty_prob <= 1; got {slices}, {margin}, "
                f"{empty_prob}"
            )
        # the parent checks maps against a patch of their own dimension
        super().__init__(label_maps, [*patch_size, 1], **kwargs)
        self.patch, self.slices = [int(p) for p in patch_size], int(slices)
        self.margin, self.empty_prob = int(margin), float(empty_prob)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s, gen = self._synthesize()
        labels = self.lut[s.labels]
        dev = gen.device
        occupied = torch.nonzero((labels > 0).flatten(0, -2).any(0)).reshape(-1)
        if occupied.numel() == 0:  # nothing but background: any slice
            occupied = torch.arange(labels.shape[-1], device=dev)
        pick = occupied[torch.randint(occupied.numel(), (self.slices,), generator=gen, device=dev)]
        empty = torch.rand(self.slices, generator=gen, device=dev) < self.empty_prob
        floor = float(s.image.min())  # a scan's zero padding, once normalised
        images, targets = [], []
        for z, blank in zip(pick.tolist(), empty.tolist()):
            image, label = s.image[..., z], labels[..., z]
            if blank:  # a slice beyond the head, as a scan's field of view has
                image, label = torch.full_like(image, floor), torch.zeros_like(label)
            if self.margin:  # heads off-centre or cut by the window, as sliding windows see
                pad = [self.margin] * 4
                image = torch.nn.functional.pad(image, pad, value=floor)
                label = torch.nn.functional.pad(label, pad)
            image, label = self._crop(SynthSample(image, label, None, s.means), gen)
            images.append(image[None])
            targets.append(label[None])
        return {"image": torch.stack(images), "label": torch.stack(targets)}


def cat_collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Batches :class:`SynthSliceDataset` items: their slices joined along the batch axis."""
    return {k: torch.cat([it[k] for it in items]) for k in items[0]}


def synth_pair(
    labels: torch.Tensor,
    *,
    seed: int | torch.Generator = 0,
    same_contrast: bool = False,
    appearance: Appearance | None = None,
    deformation: Deformation | None = None,
) -> tuple[SynthSample, SynthSample]:
    """(fixed, moving): two deformations of one label map with images synthesised on them; with
    ``same_contrast`` both images share their per-label intensities (a same-modality pair),
    otherwise each draws its own (a cross-contrast pair)."""
    gen = make_generator(seed, labels.device)
    seeds = torch.randint(_SEED_RANGE, (2,), generator=gen, device=gen.device).tolist()
    fixed = synth_sample(labels, seed=seeds[0], appearance=appearance, deformation=deformation)
    if not same_contrast:
        moving = synth_sample(labels, seed=seeds[1], appearance=appearance,
                              deformation=deformation)  # fmt: skip
        return fixed, moving
    # same contrast: the moving image takes the fixed image's per-label means; its bias, noise,
    # blur and gamma are its own (identical noise would be a false match at zero displacement)
    field = random_deformation(labels.shape, seed=seeds[1], deformation=deformation,
                               device=labels.device)  # fmt: skip
    moved = warp(labels.long(), field, labels=True)
    image, means = synthesize_image(moved, seed=seeds[1] + 1, appearance=appearance,
                                    means=fixed.means, return_means=True)  # fmt: skip
    return fixed, SynthSample(image, moved, field, means)  # type: ignore[arg-type]
