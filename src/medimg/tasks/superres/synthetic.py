"""Small generated volumes for tests and the demo: ellipsoids with soft edges.

Sharp structure in every direction is what through-plane super-resolution has to recover, and
random ellipsoids give it in a fraction of a second (the project's MR phantoms take seconds at
48^3). Not anatomy: real-image figures come from ``bench/bench_superres.py``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["ellipsoids"]


def ellipsoids(
    shape: tuple[int, int, int] = (32, 32, 32), n: int = 12, seed: int = 0
) -> np.ndarray:
    """``shape`` float32 volume in [0, ~1]: a head-like ellipsoid holding ``n`` smaller ones of
    random size, orientation-free axes and intensity, edges softened by a 0.6-voxel blur."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    size = np.asarray(shape, np.float32)[:, None, None, None]
    centre = size / 2
    vol = np.where((((grid - centre) / (0.45 * size)) ** 2).sum(0) < 1, 0.3, 0.0)
    for _ in range(n):
        c = rng.uniform(0.25, 0.75, 3)[:, None, None, None] * size
        r = rng.uniform(0.04, 0.18, 3)[:, None, None, None] * size
        inside = (((grid - c) / r) ** 2).sum(0) < 1
        vol = np.where(inside, rng.uniform(0.1, 1.0), vol)
    return ndimage.gaussian_filter(vol, 0.6).astype(np.float32)
