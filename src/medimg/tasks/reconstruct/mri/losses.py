"""Training losses for MRI reconstruction, on magnitude images ``(B, H, W)``.

SSIM as fastMRI computes it (7x7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance
``n / (n - 1)``), with the data range taken per item from the target's maximum::

    SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),
    C1 = (K1 L)^2, C2 = (K2 L)^2.

The training loss is ``(1 - SSIM) + w |x - y|_1 / L`` (L1 relative to the data range ``L``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ssim_l1_loss", "ssim_map"]


def ssim_map(
    x: torch.Tensor, y: torch.Tensor, data_range: torch.Tensor, win: int = 7, k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:  # fmt: skip
    """Local SSIM ``(B, H - win + 1, W - win + 1)`` of ``x`` against ``y`` (both ``(B, H, W)``);
    ``data_range`` is ``(B,)``."""
    x, y = x[:, None], y[:, None]
    n = win * win
    mean = lambda t: F.avg_pool2d(t, win, stride=1)  # noqa: E731 - uniform window
    mx, my = mean(x), mean(y)
    cov = n / (n - 1)  # unbiased local (co)variances, as scikit-image and fastMRI
    vx = cov * (mean(x * x) - mx * mx)
    vy = cov * (mean(y * y) - my * my)
    vxy = cov * (mean(x * y) - mx * my)
    rng = data_range.view(-1, 1, 1, 1)
    c1, c2 = (k1 * rng) ** 2, (k2 * rng) ** 2
    s = (2 * mx * my + c1) * (2 * vxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s[:, 0]


def ssim_l1_loss(pred: torch.Tensor, target: torch.Tensor, l1_weight: float = 1.0) -> torch.Tensor:
    """``(1 - mean SSIM) + l1_weight * mean |pred - target| / L``, ``L`` = per-item max."""
    rng = target.flatten(1).amax(1).clamp_min(1e-12)
    ssim = ssim_map(pred, target, rng).flatten(1).mean(1)
    l1 = (pred - target).abs().flatten(1).mean(1) / rng
    return (1 - ssim + l1_weight * l1).mean()
