"""A tiny review folder written by the tests: one LPS-stored case with a proposal, its label
table, an uncertainty map and a queue, and a second case with an image only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medimg.io.api import save
from medimg.io.image import Image
from medimg.io.label_table import write_label_table

SHAPE = (24, 20, 6)
#: LPS storage (x and y flipped against RAS+), 1.5 x 1 x 3 mm: the page must reorient it
AFFINE = np.diag([-1.5, -1.0, 3.0, 1.0])


def write_review_folder(root: Path, shape: tuple[int, int, int] = SHAPE) -> Path:
    rng = np.random.default_rng(0)
    image = rng.normal(40, 10, shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    x, y = shape[0] // 4, shape[1] // 4
    labels[x : 3 * x, y : 3 * y, 1:-1] = 1
    labels[x : 2 * x, y : 2 * y, 1:-1] = 2
    image[labels > 0] += 60
    (root / "images").mkdir(parents=True)
    save(Image(image[None], AFFINE, modality="CT"), root / "images" / "case_a_0000.nii.gz")
    save(Image(image[None] * 0.5, AFFINE, modality="CT"), root / "images" / "case_b.nii.gz")
    save(Image(labels[None], AFFINE, is_label=True), root / "proposals" / "case_a.nii.gz")
    write_label_table(root / "proposals" / "case_a.tsv", {1: "liver", 2: "spleen"})
    unc = np.linspace(0, 1, labels.size, dtype=np.float32).reshape(shape)
    save(Image(unc[None], AFFINE), root / "uncertainty" / "case_a.nii.gz")
    # case_b leads the queue: the listing must follow the queue, not the names
    queue = [{"rank": 1, "case": "case_b", "score": 0.9, "entropy": 0.5, "disagreement": 0.4},
             {"rank": 2, "case": "case_a", "score": 0.5, "entropy": 0.3, "disagreement": 0.2}]  # fmt: skip
    (root / "queue.json").write_text(json.dumps({"settings": {}, "queue": queue}))
    return root


@pytest.fixture
def review_dir(tmp_path: Path) -> Path:
    return write_review_folder(tmp_path / "review")
