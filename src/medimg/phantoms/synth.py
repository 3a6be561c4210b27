"""Images from label maps: randomised appearance and shape, as in SynthSeg and SynthMorph.

A network trained on a few phantoms learns their contrasts and shapes; one trained on images
synthesised from label maps with *random* appearance learns the anatomy instead, and then works
on real scans of any contrast (Billot et al., "SynthSeg", Medical Image Analysis 2023; Hoffmann
et al., "SynthMorph", IEEE TMI 2022). This module is that generator, written for our arrays:

* :func:`synthesize_image`: label map -> image. Per label a Gaussian mixture component (random
  mean and spread), optional partial volume at label boundaries, a smooth multiplicative bias
  field, blur and a random lower acquisition resolution per axis, Gaussian noise, min-max
  normalisation to ``[0, 1]`` and a random gamma.
* :func:`random_deformation` / :func:`warp`: a random affine plus a smooth (optionally
  diffeomorphic, by scaling and squaring a stationary velocity field) displacement in voxels;
  label maps are warped by nearest neighbour, images linearly, with the same field.
* :func:`random_shapes`: label maps of random smooth shapes (argmax of smoothed noise images,
  then warped), for training registration without any anatomy.
* :func:`synth_sample`: deform a label map, then synthesise its image (what a training step
  draws).

The pieces live beside this module: :mod:`~medimg.phantoms.synth_warp` (random transforms,
warping), :mod:`~medimg.phantoms.synth_ops` (blur, smooth noise, seeding) and
:mod:`~medimg.phantoms.synth_brain` (brain label maps derived from real T1 images).

Everything runs in torch on the label map's device, for 2D ``(X, Y)`` or 3D ``(X, Y, Z)``
arrays. Each call takes ``seed`` (an int or a :class:`torch.Generator` on that device), so a
training step can draw its sample from ``(seed, step)`` alone. MONAI's random transforms hold
their state in numpy generators and work one spatial transform at a time on the CPU; writing the
few operations here keeps a 128^3 sample well under a second on one CPU core and on the GPU
unchanged (``bench/bench_synth.py`` measures it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from medimg.errors import InputError
from medimg.phantoms.synth_ops import gaussian_blur, make_generator, smooth_noise, uniform
from medimg.phantoms.synth_warp import Deformation, random_deformation, warp

__all__ = [
    "Appearance",
    "Deformation",
    "SynthSample",
    "random_deformation",
    "random_shapes",
    "synth_sample",
    "synthesize_image",
    "warp",
]

Seed = int | torch.Generator


@dataclass
class Appearance:
    """Ranges the image appearance is drawn from (intensities in ``[0, 1]`` units).

    ``mean_range``: per-label mean; ``std_range``: per-label spread (texture within a label);
    ``background_zero``: probability that label 0 is black (skull-stripped look);
    ``partial_volume``: blur of the label-wise mean image (voxels) before texture is added, so
    boundary voxels mix their neighbours' intensities; ``bias_std``: maximum standard deviation
    of the log bias field, drawn on a ``bias_grid``-per-axis lattice; ``blur_max``: maximum extra
    Gaussian blur (voxels); ``lowres_prob`` / ``lowres_max``: probability and maximum factor of
    a lower acquisition resolution per axis (blurred, subsampled, interpolated back);
    ``noise_std``: range of the noise standard deviation; ``gamma_std``: standard deviation of
    the log of the gamma exponent. Set a range to ``(0, 0)`` or a maximum to 0 to switch it off.
    """

    mean_range: tuple[float, float] = (0.0, 1.0)
    std_range: tuple[float, float] = (0.0, 0.08)
    background_zero: float = 0.2
    partial_volume: tuple[float, float] = (0.0, 0.0)
    bias_std: float = 0.3
    bias_grid: int = 4
    blur_max: float = 1.0
    lowres_prob: float = 0.5
    lowres_max: float = 3.0
    noise_std: tuple[float, float] = (0.0, 0.05)
    gamma_std: float = 0.25

    @classmethod
    def plain(cls) -> Appearance:
        """Piecewise-constant images: random means only (no texture, bias, blur, noise, gamma)."""
        return cls(std_range=(0.0, 0.0), background_zero=0.0, bias_std=0.0, blur_max=0.0,
                   lowres_prob=0.0, noise_std=(0.0, 0.0), gamma_std=0.0)  # fmt: skip


@dataclass
class SynthSample:
    """One generated sample: ``image`` float32 in ``[0, 1]``, ``labels`` int64 on its grid,
    ``field`` the displacement (voxels, ``(ndim, *shape)``) that deformed the source labels, and
    ``means`` the drawn mean intensity per label value present (before bias, noise, gamma)."""

    image: torch.Tensor
    labels: torch.Tensor
    field: torch.Tensor | None
    means: dict[int, float]


def _check_labels(labels: torch.Tensor) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        raise InputError("label map must be a torch tensor (X, Y[, Z]); use torch.from_numpy")
    if labels.ndim not in (2, 3):
        raise InputError(f"label map must be 2D or 3D without a channel axis, got {labels.shape}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        if labels.dtype == torch.bool:
            return labels.long()
        raise InputError(f"label map must hold integers, got {labels.dtype}")
    if labels.numel() and int(labels.min()) < 0:
        raise InputError("label map holds negative values; labels are 0 (background) or more")
    return labels.long()


def _dense_ids(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values present, index of each voxel's value)``: a lookup table for small label values
    (atlases use up to a few thousand), a sort otherwise."""
    top = int(labels.max()) if labels.numel() else 0
    if top < 65536:
        present = torch.zeros(top + 1, dtype=torch.bool, device=labels.device)
        present[labels.reshape(-1)] = True
        values = torch.nonzero(present).reshape(-1)
        lut = torch.zeros(top + 1, dtype=torch.long, device=labels.device)
        lut[values] = torch.arange(values.numel(), device=labels.device)
        return values, lut[labels]
    values, inverse = torch.unique(labels, return_inverse=True)
    return values, inverse


def synthesize_image(
    labels: torch.Tensor,
    *,
    seed: Seed = 0,
    appearance: Appearance | None = None,
    classes: dict[int, int] | None = None,
    means: dict[int, float] | None = None,
    return_means: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[int, float]]:
    """An image of random contrast for a label map.

    Parameters
    ----------
    labels
        Integer label map ``(X, Y)`` or ``(X, Y, Z)`` (any non-negative values).
    seed
        An int, or a :class:`torch.Generator` on ``labels.device`` (advanced by the call).
    appearance
        Ranges to draw from (default :class:`Appearance`).
    classes
        Optional ``{label value: class}``: labels of one class (left and right caudate, say)
        share their intensity parameters; unlisted labels are their own class.
    means
        Optional ``{label value: mean}`` used instead of drawn means (e.g. another sample's
        ``means``, for two images of one contrast); everything else is still drawn.
    return_means
        Also return ``{label value: mean intensity}`` drawn for the labels present.

    Returns
    -------
    torch.Tensor
        float32 image in ``[0, 1]`` on the labels' grid and device.
    """
    app = appearance or Appearance()
    labels = _check_labels(labels)
    gen = make_generator(seed, labels.device)
    dev, nd = labels.device, labels.ndim
    values, index = _dense_ids(labels)
    k = values.numel()
    # intensity parameters per class, then gathered per label value
    cls_of = torch.arange(k, device=dev)
    if classes:
        names = [classes.get(int(v), ("own", int(v))) for v in values.tolist()]
        first = {n: i for i, n in reversed(list(enumerate(names)))}
        cls_of = torch.tensor([first[n] for n in names], device=dev)
    mu = uniform(gen, (k,), *app.mean_range, dev)[cls_of]
    stds = uniform(gen, (k,), *app.std_range, dev)[cls_of]
    if values[0] == 0 and float(torch.rand((), generator=gen, device=dev)) < app.background_zero:
        mu[0], stds[0] = 0.0, 0.0
    for i, v in enumerate(values.tolist()):
        if means and v in means:
            mu[i] = float(means[v])
    image = mu[index]
    if app.partial_volume[1] > 0:  # boundary voxels mix the means of the labels they touch
        sigma = float(uniform(gen, (), *app.partial_volume, dev))
        image = gaussian_blur(image, [sigma] * nd)
    if app.std_range[1] > 0:
        image = image + stds[index] * torch.randn(labels.shape, generator=gen, device=dev)
    if app.bias_std > 0:
        s = float(uniform(gen, (), 0.0, app.bias_std, dev))
        image = image * torch.exp(smooth_noise(labels.shape, [app.bias_grid] * nd, gen, s))
    image = _resolution(image, app, gen)
    if app.noise_std[1] > 0:
        s = float(uniform(gen, (), *app.noise_std, dev))
        image = image + s * torch.randn(labels.shape, generator=gen, device=dev)
    image = image.clamp_min(0)
    lo, hi = image.min(), image.max()
    image = (image - lo) / (hi - lo).clamp_min(1e-6)
    if app.gamma_std > 0:
        gamma = math.exp(float(torch.randn((), generator=gen, device=dev)) * app.gamma_std)
        image = image.pow(gamma)
    image = image.float()
    if return_means:
        return image, dict(zip(values.tolist(), mu.tolist()))
    return image


def _resolution(image: torch.Tensor, app: Appearance, gen: torch.Generator) -> torch.Tensor:
    """Random blur, and with probability ``lowres_prob`` a lower resolution per axis."""
    nd, dev = image.ndim, image.device
    sigma = [0.0] * nd
    if app.blur_max > 0:
        sigma = uniform(gen, (nd,), 0.0, app.blur_max, dev).tolist()
    lowres = (
        app.lowres_max > 1 and float(torch.rand((), generator=gen, device=dev)) < app.lowres_prob
    )
    if not lowres:
        return gaussian_blur(image, sigma) if any(s > 0 for s in sigma) else image
    factors = uniform(gen, (nd,), 1.0, app.lowres_max, dev).tolist()
    # anti-aliasing blur of the acquisition's voxel size (sigma ~ 0.4 x the factor)
    sigma = [math.hypot(s, 0.4 * f) if f > 1.01 else s for s, f in zip(sigma, factors)]
    image = gaussian_blur(image, sigma)
    small = [max(2, round(n / f)) for n, f in zip(image.shape, factors)]
    mode = "bilinear" if nd == 2 else "trilinear"
    low = F.interpolate(image[None, None], size=small, mode=mode, align_corners=True)
    return F.interpolate(low, size=list(image.shape), mode=mode, align_corners=True)[0, 0]


def random_shapes(
    shape: Sequence[int],
    n_labels: int = 16,
    *,
    seed: Seed = 0,
    smoothness: tuple[int, int] = (4, 12),
    deformation: Deformation | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A label map ``0 .. n_labels-1`` of random smooth shapes (SynthMorph's "shapes").

    Each label owns a smooth noise image drawn on a lattice of ``smoothness[0]`` to
    ``smoothness[1]`` points per axis (fewer points, larger blobs); a voxel takes the label whose
    image is largest there, so boundaries are level sets of smooth functions. The map is then
    warped by a random smooth deformation, which bends the boundaries further. Every label is
    present: one lost (never the largest, or squeezed out by the warp) takes the voxels where
    its image comes closest to winning (a level set again, so still smooth).
    """
    shape = [int(n) for n in shape]
    if len(shape) not in (2, 3) or min(shape) < 2:
        raise InputError(f"random shapes need a 2D or 3D shape of at least 2 voxels, got {shape}")
    if not 1 <= n_labels <= 255 or n_labels > math.prod(shape):
        raise InputError(f"n_labels must be 1..255 and at most the voxel count, got {n_labels}")
    dev = torch.device(device)
    gen = make_generator(seed, dev)
    nd, lo, hi = len(shape), *smoothness
    grids = torch.randint(lo, hi + 1, (n_labels,), generator=gen, device=dev).tolist()
    states = []
    best = torch.full(shape, -torch.inf, device=dev)
    labels = torch.zeros(shape, dtype=torch.long, device=dev)
    for k, g in enumerate(grids):
        states.append(gen.get_state())  # to redraw the image of a label that got lost
        img = smooth_noise(shape, [g] * nd, gen, 1.0)
        labels.masked_fill_(img > best, k)
        best = torch.maximum(best, img)
    d = deformation or Deformation(rotate=0.0, scale=0.0, shear=0.0)
    field = random_deformation(shape, seed=gen, deformation=d, device=dev)
    labels = warp(labels, field, labels=True)

    def margin(k: int) -> torch.Tensor:  # > 0 where label k's (warped) image wins
        redo = torch.Generator(device=dev)
        redo.set_state(states[k])
        return warp(smooth_noise(shape, [grids[k]] * nd, redo, 1.0) - best, field)

    _restore_missing(labels, n_labels, margin)
    return labels


def _restore_missing(labels: torch.Tensor, n_labels: int, margin) -> None:
    """Give each absent label the voxels where its image comes closest to winning, taken only
    from labels with voxels to spare (in place)."""
    share = max(1, labels.numel() // (4 * n_labels))
    for _ in range(4):
        counts = torch.bincount(labels.reshape(-1), minlength=n_labels)
        missing = torch.nonzero(counts == 0).reshape(-1).tolist()
        if not missing:
            return
        for k in missing:
            m = margin(k).masked_fill(counts[labels] <= 2 * share, -torch.inf)
            top = torch.topk(m.reshape(-1), share).indices
            labels.view(-1)[top] = k
            counts = torch.bincount(labels.reshape(-1), minlength=n_labels)


def synth_sample(
    labels: torch.Tensor,
    *,
    seed: Seed = 0,
    appearance: Appearance | None = None,
    deformation: Deformation | None = None,
    deform: bool = True,
    classes: dict[int, int] | None = None,
) -> SynthSample:
    """A training sample from a label map: a random deformation of the labels (nearest
    neighbour, so values stay valid) and an image synthesised on the deformed labels, so image
    and labels are aligned by construction."""
    labels = _check_labels(labels)
    gen = make_generator(seed, labels.device)
    field = None
    if deform:
        field = random_deformation(labels.shape, seed=gen, deformation=deformation,
                                   device=labels.device)  # fmt: skip
        labels = warp(labels, field, labels=True)
    image, means = synthesize_image(labels, seed=gen, appearance=appearance, classes=classes,
                                    return_means=True)  # fmt: skip
    return SynthSample(image, labels, field, means)  # type: ignore[arg-type]
