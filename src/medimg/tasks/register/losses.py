"""Training losses of the three supervision modes, from MONAI's building blocks.

* similarity: ``mse``, ``lncc`` (windowed local normalised cross-correlation, MONAI
  ``LocalNormalizedCrossCorrelationLoss``), ``mi`` (global mutual information, MONAI
  ``GlobalMutualInformationLoss``; for multi-modal pairs such as MR-CT), ``mind`` (MIND-SSC
  self-similarity descriptors, :class:`MINDLoss`; local and contrast-independent, for
  cross-contrast pairs);
* regulariser on the displacement (voxels): ``diffusion`` (first derivatives, MONAI
  ``DiffusionLoss``) or ``bending`` (second derivatives, MONAI ``BendingEnergyLoss``);
* weak supervision: soft Dice (MONAI ``DiceLoss``, background excluded) of the moving one-hot
  labels warped bilinearly against the fixed labels;
* full supervision: mean squared end-point error against the true field (voxels).

Modes: ``unsupervised`` = similarity + reg; ``weak`` = Dice + ``sim_weight`` x similarity + reg;
``supervised`` = field error + reg; ``aux_field_weight`` adds the field error to the other two
(hybrid supervision).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from medimg.errors import InputError
from medimg.tasks.register.transform import warp

__all__ = ["SIMILARITIES", "LossConfig", "MINDLoss", "RegistrationLoss", "mind_descriptor",
           "one_hot", "regulariser", "similarity"]  # fmt: skip

MODES = ("unsupervised", "weak", "supervised")
#: image dissimilarities :func:`similarity` builds
SIMILARITIES = ("lncc", "mse", "mi", "mind")

# MONAI's deformation losses index with a list of slices, which torch >= 2.9 warns about on every
# call (the result is right); silenced for that module only, so training logs stay readable.
warnings.filterwarnings(
    "ignore", message="Using a non-tuple sequence for multidimensional indexing",
    category=UserWarning, module="monai.losses.deform",
)  # fmt: skip


@dataclasses.dataclass
class LossConfig:
    """Which terms and weights (recorded in ``reg.yaml``)."""

    mode: Literal["unsupervised", "weak", "supervised"] = "unsupervised"
    similarity: Literal["lncc", "mse", "mi", "mind"] = "lncc"
    lncc_kernel: int = 7
    regulariser: Literal["diffusion", "bending"] = "diffusion"
    reg_weight: float = 1.0
    sim_weight: float = 1.0
    dice_weight: float = 1.0
    field_weight: float = 1.0
    #: unsupervised/weak modes: weight of the true-field error added on top (hybrid supervision,
    #: for pairs whose true field is known, e.g. synthetic ones); 0 leaves it out
    aux_field_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.similarity not in SIMILARITIES:
            raise InputError(
                f"similarity must be one of {', '.join(SIMILARITIES)}, got {self.similarity!r}"
            )
        if self.regulariser not in ("diffusion", "bending"):
            raise InputError(f"regulariser must be diffusion or bending, got {self.regulariser!r}")
        if self.lncc_kernel < 3 or self.lncc_kernel % 2 == 0:
            raise InputError(f"lncc_kernel must be odd and >= 3, got {self.lncc_kernel}")


def similarity(name: str, spatial_dims: int, kernel: int = 7) -> nn.Module:
    """Image dissimilarity ``loss(warped, fixed)`` (lower is better)."""
    from monai.losses import GlobalMutualInformationLoss, LocalNormalizedCrossCorrelationLoss

    if name == "lncc":
        return LocalNormalizedCrossCorrelationLoss(spatial_dims=spatial_dims, kernel_size=kernel)
    if name == "mi":
        return GlobalMutualInformationLoss(num_bins=32)
    if name == "mse":
        return nn.MSELoss()
    if name == "mind":
        return MINDLoss()
    raise InputError(f"similarity must be one of {', '.join(SIMILARITIES)}, got {name!r}")


def _shift(image: torch.Tensor, offset: tuple[int, ...]) -> torch.Tensor:
    """``image(x + offset)`` on the same grid, edges repeated (``offset`` in voxels per axis)."""
    nd, r = len(offset), max(abs(o) for o in offset)
    padded = F.pad(image, [r] * 2 * nd, mode="replicate")
    index = tuple(slice(r + o, r + o + n) for o, n in zip(offset, image.shape[2:]))
    return padded[(slice(None), slice(None), *index)]


def mind_descriptor(image: torch.Tensor, dilation: int = 2, patch: int = 3) -> torch.Tensor:
    """MIND-SSC (Heinrich et al., MICCAI 2013) of a ``(B, 1, *S)`` image: for every pair of
    neighbours ``dilation`` voxels away along two different axes (12 pairs in 3D, 4 in 2D), the
    patch distance (``patch``-wide box mean of the squared difference of the two shifted images),
    less the smallest of them at that voxel, mapped to ``exp(-d / v)`` with ``v`` their mean
    there (so each voxel's largest entry is 1).

    Written here because neither MONAI nor SimpleITK provides MIND; it describes local structure
    independently of the contrast, so it compares T1 with T2, inverted or CT images."""
    nd = image.ndim - 2
    steps = [(axis, sign * dilation) for axis in range(nd) for sign in (1, -1)]
    pairs = [(a, b) for k, a in enumerate(steps) for b in steps[k + 1 :] if a[0] != b[0]]

    def offset(step: tuple[int, int]) -> tuple[int, ...]:
        return tuple(step[1] if i == step[0] else 0 for i in range(nd))

    pool = F.avg_pool2d if nd == 2 else F.avg_pool3d
    half = patch // 2
    dist = (
        torch.cat([_shift(image, offset(a)) - _shift(image, offset(b)) for a, b in pairs], 1) ** 2
    )
    dist = pool(F.pad(dist, [half] * 2 * nd, mode="replicate"), patch, stride=1)
    dist = dist - dist.amin(1, keepdim=True)
    var = dist.mean(1, keepdim=True)
    # flat regions (var ~ 0) would amplify noise: keep v within a range around its image mean
    mean = var.mean().clamp_min(1e-6)
    return torch.exp(-dist / var.clamp(0.001 * mean, 1000 * mean))


class MINDLoss(nn.Module):
    """Mean squared difference of the MIND-SSC descriptors of ``warped`` and ``fixed``. The
    fixed image's descriptor is kept while the same unchanged tensor comes back (instance
    optimisation passes one fixed image at every step), which halves the cost of a step."""

    def __init__(self, dilation: int = 2, patch: int = 3) -> None:
        super().__init__()
        self.dilation, self.patch = dilation, patch
        self._fixed: tuple | None = None

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """The descriptor image ``(B, 12, *S)`` (3D) that this loss compares."""
        return mind_descriptor(image, self.dilation, self.patch)

    def forward(self, warped: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        key = (id(fixed), fixed._version, tuple(fixed.shape))
        if self._fixed is None or self._fixed[0] != key or fixed.requires_grad:
            b = mind_descriptor(fixed, self.dilation, self.patch)
            self._fixed = (key, fixed, b.detach())  # the tensor is held so its id stays unique
        else:
            b = self._fixed[2]
        return ((mind_descriptor(warped, self.dilation, self.patch) - b) ** 2).mean()


def regulariser(name: str) -> nn.Module:
    """Smoothness penalty of a ``(B, nd, *S)`` displacement."""
    from monai.losses import BendingEnergyLoss, DiffusionLoss

    if name == "diffusion":
        return DiffusionLoss()
    if name == "bending":
        return BendingEnergyLoss()
    raise InputError(f"regulariser must be diffusion or bending, got {name!r}")


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, 1, *S)`` integer labels -> ``(B, K, *S)`` float one-hot."""
    oh = F.one_hot(labels[:, 0].long().clamp(0, num_classes - 1), num_classes)
    return oh.movedim(-1, 1).float()


class RegistrationLoss(nn.Module):
    """``loss(field, batch) -> (total, {term: value})`` for one mode (see the module docstring).

    ``batch`` holds ``fixed``/``moving`` ``(B, 1, *S)``; ``fixed_label``/``moving_label``
    ``(B, 1, *S)`` for weak supervision; ``field`` ``(B, nd, *S)`` voxels for full supervision.
    """

    def __init__(self, config: LossConfig, spatial_dims: int, num_classes: int = 0) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.cfg, self.num_classes = config, num_classes
        self.sim = similarity(config.similarity, spatial_dims, config.lncc_kernel)
        self.reg = regulariser(config.regulariser)
        self.dice = DiceLoss(include_background=False, smooth_nr=1e-5, smooth_dr=1e-5)
        if config.mode == "weak" and num_classes < 2:
            raise InputError("weak supervision needs label maps with at least one foreground label")

    def forward(
        self, field: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg, terms = self.cfg, {}
        terms["reg"] = self.reg(field)
        total = cfg.reg_weight * terms["reg"]
        if cfg.mode == "supervised" or cfg.aux_field_weight > 0:
            if "field" not in batch:
                raise InputError(
                    "full supervision and aux_field_weight > 0 need the true field of every pair"
                )
            terms["field"] = ((field - batch["field"]) ** 2).sum(1).mean()
        if cfg.mode == "supervised":
            return total + cfg.field_weight * terms["field"], terms
        if cfg.aux_field_weight > 0:
            total = total + cfg.aux_field_weight * terms["field"]
        warped = warp(batch["moving"], field)
        if cfg.mode == "unsupervised" or cfg.sim_weight > 0:
            terms["sim"] = self.sim(warped, batch["fixed"])
            total = total + (cfg.sim_weight if cfg.mode == "weak" else 1.0) * terms["sim"]
        if cfg.mode == "weak":
            moved = warp(one_hot(batch["moving_label"], self.num_classes), field)
            terms["dice"] = self.dice(moved, one_hot(batch["fixed_label"], self.num_classes))
            total = total + cfg.dice_weight * terms["dice"]
        return total, terms
