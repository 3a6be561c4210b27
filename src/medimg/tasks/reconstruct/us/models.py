"""The learned beamformer: a small 2D U-Net (MONAI's BasicUNet) that maps the delay-and-sum image
of 3 plane waves to the look of 75-angle coherent compounding.

Inputs (per pixel, from the 3 single-angle DAS images ``iq_k``):

- the compounded envelope in dB relative to its median (speckle level), divided by 40;
- the coherence factor ``|sum iq_k|^2 / (3 sum |iq_k|^2)`` (0..1): high on real echoes, low on
  the grating-lobe clutter that 3 widely spaced angles leave in cysts.

Output: a correction in the same dB/40 unit added to the first input (residual learning); the
target is the 75-angle compound's dB relative to its own median. Working relative to the speckle
median keeps the network blind to the absolute gain of a scanner or a simulation.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["DB_SCALE", "FLOOR_DB", "LearnedBeamformer", "features", "relative_db"]

DB_SCALE = 40.0
#: dB (relative to the speckle median) below which pixels are noise: clipped in and out
FLOOR_DB = -40.0


def relative_db(envelope: np.ndarray) -> np.ndarray:
    """``20 log10(env / median(env))`` clipped to [FLOOR_DB, 60], float32."""
    env = np.abs(np.asarray(envelope)).astype(np.float64)  # complex IQ: its modulus
    med = float(np.median(env)) or float(env.mean()) or 1.0
    db = 20 * np.log10(np.maximum(env / med, 10 ** (FLOOR_DB / 20)))
    return np.minimum(db, 60.0).astype(np.float32)


def features(iqs: np.ndarray) -> np.ndarray:
    """``(2, n_x, n_z)`` network input from the single-angle complex images ``(3, n_x, n_z)``."""
    iqs = np.asarray(iqs)
    comp = iqs.sum(0)
    power = (np.abs(iqs) ** 2).sum(0)
    cf = np.abs(comp) ** 2 / (len(iqs) * np.maximum(power, 1e-30))
    return np.stack([relative_db(comp) / DB_SCALE, cf.astype(np.float32)])


class LearnedBeamformer(nn.Module):
    """Residual U-Net: ``out = x[:, :1] + unet(x)`` in dB/40."""

    def __init__(self, features: tuple[int, ...] = (16, 16, 32, 64, 64, 16)) -> None:
        super().__init__()
        from monai.networks.nets.basic_unet import BasicUNet

        self.unet = BasicUNet(spatial_dims=2, in_channels=2, out_channels=1,
                              features=tuple(features), act="leakyrelu", norm="instance")  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 16, (-w) % 16  # four poolings
        xp = nn.functional.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
        return x[:, :1] + self.unet(xp)[..., :h, :w]
