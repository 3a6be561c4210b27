"""The nodule detector network and its losses: a 3D centre-point (CenterNet-style) detector.

Why centre points and not MONAI's RetinaNet (``monai.apps.detection``, which does import here
without torchvision): lung nodules are near-spherical, so a box is fully described by a centre
and one diameter, and the LUNA16 score only asks for centres. A dense heatmap head on a MONAI
``UNet`` trains from few synthetic scans in minutes on a CPU, whereas MONAI's LUNA16 RetinaNet
recipe (ResNet-FPN backbone, anchor matching, hard-negative sampling) trains for hundreds of GPU
epochs. The box utilities (IoU, NMS) are shared with the evaluation in
:mod:`medimg.metrics.detection`.

Output channels: 0 heatmap logit, 1 log diameter (voxels), 2-4 centre offset (voxels).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OUT_CHANNELS", "build_detector", "centernet_loss", "focal_heatmap_loss"]

OUT_CHANNELS = 5


def build_detector(
    channels: tuple[int, ...] = (12, 24, 48, 96), prior: float = 0.01, features: int = 16
) -> nn.Module:
    """MONAI ``UNet`` (residual units, instance norm) giving ``features`` channels, then a
    1x1x1 convolution to the 5 outputs whose heatmap bias starts at ``logit(prior)`` (RetinaNet's
    prior-probability initialisation, so early training is not swamped by background).

    Why the separate head: the UNet's top block ends in an instance-normalised, PReLU'd
    transposed convolution plus an identity residual, so its own output channels are
    zero-mean per volume (bad for a log diameter) and a bias cannot set the heatmap prior."""
    from monai.networks.nets import UNet

    net = UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=features,
        channels=tuple(channels),
        strides=(2,) * (len(channels) - 1),
        num_res_units=1,
        norm="instance",
    )
    head = nn.Conv3d(features, OUT_CHANNELS, kernel_size=1)
    with torch.no_grad():
        head.bias.zero_()
        head.bias[0] = math.log(prior / (1 - prior))
    return nn.Sequential(net, head)


def focal_heatmap_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4), normalised by the number of
    peaks (voxels where the target is 1), at least 1."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = -torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = -torch.log(1 - p) * p**2 * (1 - target) ** 4 * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)


def centernet_loss(
    out: torch.Tensor, batch: dict[str, torch.Tensor], size_weight: float = 0.2
) -> dict[str, torch.Tensor]:
    """``loss`` = focal heatmap + L1 offset + ``size_weight`` x L1 log diameter (the last two
    only where ``reg_mask``), with the parts for the log."""
    heat = focal_heatmap_loss(out[:, :1].float(), batch["heatmap"])
    m = batch["reg_mask"]
    n = m.sum().clamp(min=1.0)
    size = (F.l1_loss(out[:, 1:2].float(), batch["size"], reduction="none") * m).sum() / n
    off = (F.l1_loss(out[:, 2:5].float(), batch["offset"], reduction="none") * m).sum() / n
    return {"loss": heat + off + size_weight * size, "heat": heat.detach(),
            "size": size.detach(), "offset": off.detach()}  # fmt: skip
