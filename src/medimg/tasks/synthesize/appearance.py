"""MR-like and CT-like images of one head label map (:data:`~.anatomy.HEAD_LABELS`).

CT (:func:`render_ct`) is in calibrated Hounsfield units: each class draws a mean within
:data:`CT_HU` (air -1000, fat about -100, CSF 0-15, GM 35-45, WM 20-30, soft tissue 20-60,
cortical bone 1100-1400 and trabecular diploe 350-650, inside the textbook ranges of 700-1500
and 200-800), adds within-class texture, averages 1 mm pixels to 2 mm (partial volume) and adds
slightly correlated quantum-like noise of 5-15 HU.

MR (:func:`render_mr`) is in arbitrary units: a T1-like or T2-like contrast
(:data:`MR_MEANS`, white matter 1 on T1; bone dark on both, diploe marrow bright from its fat),
class means jittered by +-15%, texture, partial volume, a smooth multiplicative bias field and
Rician noise, then scaled by :func:`normalize_mr` (the scaling ``predict`` applies to real MR).

Our own numbers, not :mod:`medimg.phantoms.synth`'s random-contrast generator: synthesis needs
the *same* fixed physics per modality (HU must come out calibrated), not contrast invariance.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medimg.phantoms.synth_ops import smooth_noise, uniform

__all__ = ["CT_HU", "MR_MEANS", "normalize_mr", "render_ct", "render_mr"]

#: CT class mean ranges (HU) and within-class texture std (HU), by label value.
CT_HU: dict[int, tuple[float, float, float]] = {
    0: (-1000.0, -1000.0, 0.0),  # air
    1: (2.0, 12.0, 3.0),  # CSF
    2: (36.0, 44.0, 3.0),  # grey matter
    3: (22.0, 29.0, 3.0),  # white matter
    4: (34.0, 42.0, 3.0),  # deep grey
    5: (25.0, 55.0, 6.0),  # soft tissue (scalp, muscle, skin)
    6: (-110.0, -90.0, 8.0),  # fat
    7: (1100.0, 1400.0, 60.0),  # cortical bone
    8: (350.0, 650.0, 60.0),  # diploe (trabecular bone)
}
#: MR class means (white matter = 1 on T1), by contrast and label value.
MR_MEANS: dict[str, dict[int, float]] = {
    "t1": {0: 0.0, 1: 0.3, 2: 0.62, 3: 1.0, 4: 0.78, 5: 0.55, 6: 1.35, 7: 0.06, 8: 0.85},
    "t2": {0: 0.0, 1: 1.6, 2: 0.95, 3: 0.7, 4: 0.85, 5: 0.55, 6: 1.1, 7: 0.05, 8: 0.75},
}
N_LABELS = 9
CT_MIN_HU, CT_MAX_HU = -1024.0, 3071.0  # int16-safe CT range (12-bit scanners)


def _gen(seed: int | torch.Generator) -> torch.Generator:
    return seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))


def _pool2(x: torch.Tensor) -> torch.Tensor:
    """Mean of 2x2 pixels: 1 mm -> 2 mm, partial volume at boundaries."""
    return F.avg_pool2d(x[None, None], 2)[0, 0]


def _class_image(
    labels: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, gen
) -> torch.Tensor:
    lab = labels.long()
    img = means[lab]
    return img + stds[lab] * torch.randn(lab.shape, generator=gen)


def render_ct(labels: torch.Tensor, seed: int | torch.Generator = 0) -> torch.Tensor:
    """CT in HU at half the resolution of the 1 mm ``labels`` ``(X, Y)`` (even sizes)."""
    gen = _gen(seed)
    dev = torch.device("cpu")
    lo = torch.tensor([CT_HU[k][0] for k in range(N_LABELS)])
    hi = torch.tensor([CT_HU[k][1] for k in range(N_LABELS)])
    means = lo + (hi - lo) * torch.rand(N_LABELS, generator=gen)
    stds = torch.tensor([CT_HU[k][2] for k in range(N_LABELS)])
    img = _pool2(_class_image(labels, means, stds, gen))
    sigma = float(uniform(gen, (), 5.0, 15.0, dev))
    noise = torch.randn(img.shape, generator=gen)
    # neighbouring CT pixels share noise (reconstruction kernel): a light blur, renormalised
    k = torch.tensor([0.25, 0.5, 0.25])
    noise = F.conv2d(noise[None, None], (k[:, None] * k[None, :])[None, None], padding=1)[0, 0]
    noise = noise / 0.375  # std of the 3x3 binomial filter's output is 0.375
    return (img + sigma * noise).clamp(CT_MIN_HU, CT_MAX_HU)


def render_mr(
    labels: torch.Tensor, seed: int | torch.Generator = 0, contrast: str = "t1",
    canonical: bool = False,
) -> torch.Tensor:  # fmt: skip
    """MR (arbitrary units, :func:`normalize_mr`-scaled) at half the resolution of the 1 mm
    ``labels``: ``contrast`` "t1" or "t2". ``canonical``: the template means, no bias field and
    little noise: the one well-defined answer a CT -> MR model can learn (a bias field or a
    contrast jitter cannot be inferred from a CT)."""
    gen = _gen(seed)
    dev = torch.device("cpu")
    base = torch.tensor([MR_MEANS[contrast][k] for k in range(N_LABELS)])
    if canonical:
        stds = 0.01 * torch.ones(N_LABELS)
        stds[0] = 0.0
        img = _pool2(_class_image(labels, base, stds, gen))
        return normalize_mr(img + 0.005 * torch.randn(img.shape, generator=gen).abs())
    means = base * (0.85 + 0.3 * torch.rand(N_LABELS, generator=gen))
    stds = 0.03 * torch.ones(N_LABELS)
    stds[0] = 0.0
    img = _pool2(_class_image(labels, means, stds, gen))
    bias = float(uniform(gen, (), 0.0, 0.25, dev))
    img = img * torch.exp(smooth_noise(img.shape, (4, 4), gen, bias))
    sigma = float(uniform(gen, (), 0.005, 0.04, dev))
    real = img + sigma * torch.randn(img.shape, generator=gen)
    imag = sigma * torch.randn(img.shape, generator=gen)
    return normalize_mr(torch.sqrt(real**2 + imag**2))  # magnitude: Rician noise


def normalize_mr(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    """MR scaled so that the 99th percentile of the head (voxels above a tenth of the 99.9th
    percentile) is 1: the same rule for training images and for real scans at ``predict``."""
    x = torch.as_tensor(image, dtype=torch.float32)
    flat = x.reshape(-1)
    if flat.numel() > 2_000_000:  # quantile's size limit; a strided subsample is plenty
        flat = flat[:: flat.numel() // 1_000_000 + 1]
    top = torch.quantile(flat, 0.999)
    head = flat[flat > 0.1 * top]
    scale = torch.quantile(head, 0.99) if head.numel() else top
    return x / scale.clamp_min(1e-6)
