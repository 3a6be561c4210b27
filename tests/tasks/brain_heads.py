"""A tiny spherical head label map shared by the brain segmentation tests."""

from __future__ import annotations

import numpy as np
import torch


def toy_head(shape=(24, 24, 20)) -> torch.Tensor:
    """Brain label values: WM core (3), deep GM blob (4), GM (2), CSF (1), head (5, 6)."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    lab = np.select([r < 0.4, r < 0.6, r < 0.7, r < 0.8, r < 0.92], [3, 2, 1, 5, 6], 0)
    lab[(np.abs(x) < 0.15) & (np.abs(y) < 0.15) & (np.abs(z) < 0.15)] = 4
    return torch.from_numpy(lab.astype(np.int64))
