"""Domain type aliases shared across medimg."""

from __future__ import annotations

from os import PathLike
from typing import Union

import numpy as np
import numpy.typing as npt

PathType = Union[str, "PathLike[str]"]
Affine = npt.NDArray[np.float64]  # 4x4, voxel index -> RAS+ world millimetres
Spacing = tuple[float, ...]  # millimetres, one entry per spatial axis
Shape = tuple[int, ...]
