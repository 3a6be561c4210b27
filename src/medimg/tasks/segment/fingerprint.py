"""Dataset fingerprint: the few numbers the planner needs, stored as small seeded JSON.

Per case: spacing and shape. Per channel: statistics of intensities inside the foreground
(label > 0), from at most ``samples_per_case`` voxels drawn with a seeded generator, so the
same dataset always gives the same fingerprint. Like nnU-Net we keep only what cannot be read
cheaply again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medimg.datasets.msd import SegDataset, check_dataset
from medimg.io.image import Image

__all__ = ["compute_fingerprint", "fingerprint_from_cases", "save_fingerprint"]


def fingerprint_from_cases(
    ds: SegDataset,
    cases: dict[str, tuple[Image, Image]],
    *,
    samples_per_case: int = 10000,
    seed: int = 0,
) -> dict[str, Any]:
    """The fingerprint of already loaded ``{case_id: (image, labels)}``."""
    rng = np.random.default_rng(seed)
    spacings, shapes, fg_fraction = [], [], []
    per_channel: list[list[np.ndarray]] = [[] for _ in ds.channel_names]
    for image, labels in cases.values():
        spacings.append(list(image.spacing))
        shapes.append(list(image.spatial_shape))
        fg = labels.array[0] > 0
        fg_fraction.append(float(fg.mean()))
        for c in range(min(image.num_channels, len(per_channel))):
            values = image.array[c][fg]
            if values.size > samples_per_case:
                values = rng.choice(values, samples_per_case, replace=False)
            per_channel[c].append(values.astype(np.float64))
    stats = []
    for c, chunks in enumerate(per_channel):
        v = np.concatenate(chunks) if chunks else np.zeros(1)
        v = v if v.size else np.zeros(1)
        stats.append(
            {
                "channel": ds.channel_names.get(c, str(c)),
                "mean": float(v.mean()),
                "std": float(v.std()),
                "percentile_00_5": float(np.percentile(v, 0.5)),
                "percentile_99_5": float(np.percentile(v, 99.5)),
                "min": float(v.min()),
                "max": float(v.max()),
            }
        )
    return {
        "dataset": ds.name,
        "modality": ds.modality,
        "channel_names": {str(k): v for k, v in ds.channel_names.items()},
        "labels": {str(k): v for k, v in ds.labels.items()},
        "num_cases": len(cases),
        "spatial_ndim": len(shapes[0]),
        "spacings": spacings,
        "shapes": shapes,
        "foreground_fraction": float(np.mean(fg_fraction)),
        "foreground_intensity": stats,
    }


def compute_fingerprint(ds: SegDataset, **kwargs: Any) -> dict[str, Any]:
    """Load and check every case of ``ds``, then fingerprint it."""
    return fingerprint_from_cases(ds, check_dataset(ds), **kwargs)


def save_fingerprint(fp: dict[str, Any], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the fingerprint as JSON (atomically; an existing file only with ``overwrite``)."""
    from medimg.io.output import atomic_path

    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(json.dumps(fp, indent=1))
    return Path(path)
