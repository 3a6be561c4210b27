"""Registration networks: MONAI's VoxelMorph U-Net predicting a (velocity) field, optionally at
half resolution and as a cascade.

:class:`RegistrationNet` takes ``fixed`` and ``moving`` ``(B, 1, *S)`` (intensities normalised to
about [0, 1]) and returns the displacement ``(B, nd, *S)`` in voxels of the input grid:

* the pair is padded (edge values) to a multiple of the U-Net's total stride (at least two of
  it, so that a small image keeps a bottleneck of more than one voxel) and, with
  ``scale=0.5``, brought to half resolution: the field of a smooth deformation needs no
  full-resolution decoder, and this cuts the CPU cost about eightfold in 3D. ``downsample``:
  ``avg`` average-pools by 2 (the detail finer than two voxels is lost); ``shuffle`` moves each
  2x2(x2) block into channels (space-to-depth, 8 channels per image in 3D), so the U-Net still
  sees every voxel at nearly the cost of ``avg`` (only its first convolution is wider);
* the backbone is ``monai.networks.nets.VoxelMorphUNet`` with instance normalisation (``norm``;
  not on the output convolution) and Kaiming initialisation for its leaky ReLUs; its last
  convolution starts near zero so training starts from the identity (as in VoxelMorph). With
  PyTorch's default initialisation and no normalisation the features shrink about 8x through the
  U-Net and the network stayed at the identity for hundreds of steps (the first default model);
* ``diffeomorphic``: the output is a stationary velocity integrated by scaling and squaring
  (:func:`.transform.integrate`), so the transform is invertible (``integrate(-v)``);
* ``symmetric`` (with ``diffeomorphic``): the U-Net also sees the pair swapped, in the same
  batch, and the velocity is ``(v(moving, fixed) - v(fixed, moving)) / 2``; swapping the inputs
  then negates it exactly, so the forward and backward transforms are each other's inverses by
  construction (inverse consistency), and errors that do not flip with the pair average out.
  On CPU the batch of two is also cheaper than one sample: PyTorch sends small batch-1 3D
  convolutions to its slow reference kernel rather than oneDNN;
* ``cascades > 1``: each further network sees the moving image warped by the field so far and
  adds a correction by composition (a recursive cascade);
* ``fast_precision`` (set by :class:`~.predict.Registrator`, off in training): the U-Nets run
  under :func:`medimg.engine.fast_precision` (bfloat16 on CPUs that have it, about 1.5x faster
  registration at 96^3 for a mean Dice change of 0.0004); integration and warps stay float32.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from medimg.engine import fast_precision
from medimg.errors import InputError
from medimg.tasks.register.transform import compose, integrate, resize_field, warp

__all__ = ["ModelConfig", "RegistrationNet", "build_model", "count_parameters"]


@dataclasses.dataclass
class ModelConfig:
    """Network hyper-parameters (recorded in ``reg.yaml``)."""

    spatial_dims: int = 3
    channels: tuple[int, ...] = (8, 16, 16, 16, 16, 16)
    final_channels: tuple[int, ...] = (16, 16)
    scale: float = 0.5  # resolution the network works at (1.0 or 0.5)
    diffeomorphic: bool = True
    integration_steps: int = 7
    cascades: int = 1
    norm: str | None = "instance"  # MONAI norm of the U-Net's convolutions (None: none)
    symmetric: bool = False  # velocity antisymmetric in the pair (needs diffeomorphic)
    downsample: str = "avg"  # how scale=0.5 halves the input: avg (pooling) or shuffle

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise InputError(f"ModelConfig.spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if len(self.channels) < 2 or len(self.channels) % 2:
            raise InputError(
                f"ModelConfig.channels needs an even number (>= 2) of widths, got {self.channels}"
            )
        if self.scale not in (0.5, 1.0):
            raise InputError(f"ModelConfig.scale must be 0.5 or 1.0, got {self.scale}")
        if self.symmetric and not self.diffeomorphic:
            raise InputError("ModelConfig.symmetric needs diffeomorphic: true (a velocity field)")
        if self.downsample not in ("avg", "shuffle"):
            raise InputError(
                f"ModelConfig.downsample must be avg or shuffle, got {self.downsample!r}"
            )
        if self.cascades < 1:
            raise InputError(f"ModelConfig.cascades must be >= 1, got {self.cascades}")


def _backbone(cfg: ModelConfig) -> nn.Module:
    from monai.networks.nets import VoxelMorphUNet

    shuffled = cfg.scale < 1 and cfg.downsample == "shuffle"
    net = VoxelMorphUNet(
        cfg.spatial_dims, 2 * 2**cfg.spatial_dims if shuffled else 2, cfg.channels[-1], channels=cfg.channels,
        final_conv_channels=cfg.final_channels, norm=cfg.norm,
    )  # fmt: skip
    out_conv = net.net[1].final_conv_out
    out_conv.adn = nn.Identity()  # the field itself is not normalised
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    for conv in convs[:-1]:
        nn.init.kaiming_normal_(conv.weight, a=0.2, nonlinearity="leaky_relu")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
    last = convs[-1]
    nn.init.normal_(last.weight, std=1e-5)
    if last.bias is not None:
        nn.init.zeros_(last.bias)
    return net


def _halve(x: torch.Tensor, how: str) -> torch.Tensor:
    """``(B, C, *S)`` -> half resolution: average pooling, or space-to-depth (``(B, C 2^nd,
    *S/2)``; PyTorch's ``pixel_unshuffle`` is 2D only)."""
    nd = x.ndim - 2
    if how == "avg":
        return (F.avg_pool2d if nd == 2 else F.avg_pool3d)(x, 2)
    b, c, *size = x.shape
    blocks = x.reshape(b, c, *[v for s in size for v in (s // 2, 2)])
    order = [0, 1, *range(3, 3 + 2 * nd, 2), *range(2, 2 + 2 * nd, 2)]
    return blocks.permute(order).reshape(b, c * 2**nd, *[s // 2 for s in size])


class RegistrationNet(nn.Module):
    """See the module docstring; ``forward(fixed, moving) -> displacement (voxels)``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.nets = nn.ModuleList([_backbone(config) for _ in range(config.cascades)])
        levels = len(config.channels) // 2
        self.multiple = 2**levels * (2 if config.scale < 1 else 1)
        #: run the U-Nets in the hardware's faster precision (inference only; see the docstring)
        self.fast_precision = False

    def _field(self, net: nn.Module, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        x = torch.cat([moving, fixed], dim=1)
        shape = tuple(x.shape[2:])
        # a multiple of the total stride, and at least two of it: the U-Net's bottleneck must
        # keep more than one voxel, or its instance normalisation has nothing to normalise
        m = self.multiple
        pad = [max(2 * m, -(-s // m) * m) - s for s in shape]
        if any(pad):  # F.pad lists pads from the last axis backwards
            x = F.pad(x, [p for q in reversed(pad) for p in (0, q)], mode="replicate")
        padded, b = tuple(x.shape[2:]), x.shape[0]
        if self.config.symmetric:  # (moving, fixed) and (fixed, moving) in one batch
            x = torch.cat([x, x.flip(1)], dim=0)
        if self.config.scale < 1:
            x = _halve(x, self.config.downsample)
        with fast_precision(x.device) if self.fast_precision else contextlib.nullcontext():
            out = net(x).float()
        if self.config.symmetric:
            out = 0.5 * (out[:b] - out[b:])
        if self.config.diffeomorphic:
            out = integrate(out, self.config.integration_steps)
        if self.config.scale < 1:
            out = resize_field(out, padded)
        return out[(slice(None), slice(None), *[slice(0, s) for s in shape])]

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        if fixed.shape != moving.shape or fixed.ndim != self.config.spatial_dims + 2:
            raise InputError(
                f"the network expects fixed and moving of shape (B, 1, *{self.config.spatial_dims}D"
                f" spatial), got {tuple(fixed.shape)} and {tuple(moving.shape)}"
            )
        field = self._field(self.nets[0], fixed, moving)
        for net in self.nets[1:]:
            correction = self._field(net, fixed, warp(moving, field))
            field = compose(field, correction)
        return field


def build_model(config: ModelConfig) -> RegistrationNet:
    """The network of ``config`` (weights initialised; seed first for reproducibility)."""
    return RegistrationNet(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
