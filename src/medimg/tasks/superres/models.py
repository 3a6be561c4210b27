"""The super-resolution network: a small residual 2D CNN on planes that contain the slice axis.

Input: a plane of the cubic-interpolated volume (intensities divided by the volume's 99.5th
percentile); output: that plane plus a learnt correction. Dilated 3x3 convolutions reach about
+-15 voxels along the slice axis (almost four 4 mm slices either side) at the cost of a plain
eight-layer network, which is what one CPU thread can train in minutes. Written here because
MONAI's networks are U-Nets and ResNets an order of magnitude larger than this task needs.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SRNet"]


class SRNet(nn.Module):
    """``(B, 1, H, W) -> (B, 1, H, W)``: input + correction; ``H`` or ``W`` is the slice axis."""

    def __init__(self, width: int = 32, dilations: tuple[int, ...] = (1, 1, 2, 4, 4, 2, 1)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for d in dilations:
            layers += [nn.Conv2d(c_in, width, 3, padding=d, dilation=d), nn.ReLU(inplace=True)]
            c_in = width
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)
        nn.init.zeros_(self.body[-1].weight)  # start as the identity: cubic interpolation
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
