"""Brain label maps by a classical method (multi-Otsu tissue classes, atlas deep grey, head
classes), tested on a synthetic head: no download."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medimg.errors import InputError
from medimg.phantoms.synth_brain import (
    TRAIN_LABELS,
    add_deep_grey,
    tissue_labels,
    to_training_labels,
)


def _head(shape=(40, 40, 32), seed=0):
    """Nested shells: WM core (110), GM (80), CSF (45), then skull (20) and scalp (140) outside
    the brain; a T1 with noise, its skull-stripped copy and the true classes."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    truth = np.select([r < 0.35, r < 0.55, r < 0.65, r < 0.75, r < 0.9], [3, 2, 1, 5, 6], 0)
    level = {0: 0.0, 1: 45.0, 2: 80.0, 3: 110.0, 5: 20.0, 6: 140.0}
    t1 = np.vectorize(level.get)(truth).astype(np.float32)
    t1 += np.random.default_rng(seed).normal(0, 4, shape).astype(np.float32)
    t1 = np.clip(t1, 0, None) * (truth > 0)
    stripped = np.where(np.isin(truth, (1, 2, 3)), np.maximum(t1, 1), 0).astype(np.float32)
    return t1, stripped, truth


def test_tissue_classes_follow_t1_contrast():
    _, stripped, truth = _head()
    labels = tissue_labels(stripped)
    brain = np.isin(truth, (1, 2, 3))
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2, 3}
    assert np.array_equal(labels > 0, brain)
    assert np.mean(labels[brain] == truth[brain]) > 0.97
    # the split depends on contrast order, not on the intensity scale
    assert np.array_equal(tissue_labels(stripped * 7.5 + 3 * (stripped > 0)), labels)


def test_head_classes_outside_the_brain_only():
    t1, stripped, truth = _head()
    labels = tissue_labels(stripped, head_t1=t1)
    assert np.array_equal(np.isin(labels, (1, 2, 3)), np.isin(truth, (1, 2, 3)))
    skull, scalp = truth == 5, truth == 6
    assert np.mean(labels[skull] == 5) > 0.9 and np.mean(labels[scalp] == 6) > 0.9
    train = to_training_labels(torch.from_numpy(labels))
    assert set(train.unique().tolist()) == {0, 1, 2, 3}
    assert torch.equal(
        train[torch.from_numpy(labels) == 6],
        torch.zeros(int((labels == 6).sum()), dtype=torch.long),
    )
    assert TRAIN_LABELS[5] == TRAIN_LABELS[6] == 0


def test_deep_grey_from_an_atlas_spares_csf():
    _, stripped, _ = _head()
    labels = tissue_labels(stripped)
    atlas = np.zeros_like(labels)
    atlas[16:24, 16:24, 12:20] = 73  # a "putamen" inside the WM core
    atlas[:, :, :2] = 71  # an atlas label over background: stays background
    out = add_deep_grey(labels, atlas)
    assert np.all(out[16:24, 16:24, 12:20] == 4)
    assert np.array_equal(out[:, :, :2], labels[:, :, :2])
    assert np.array_equal(out[atlas == 0], labels[atlas == 0])


def test_stray_voxels_outside_the_brain_are_not_tissue():
    _, stripped, _ = _head()
    stripped[0, 0, 0] = 200.0  # a skull-stripping leftover far from the brain
    assert tissue_labels(stripped)[0, 0, 0] == 0


@pytest.mark.parametrize(
    ("volume", "words"),
    [(np.zeros((8, 8, 8)), "skull-stripped"), (np.ones((8, 8)), "3D"),
     (np.ones((8, 8, 8)), "fewer than 3")],
)  # fmt: skip
def test_bad_volumes_are_input_errors(volume, words):
    with pytest.raises(InputError, match=words):
        tissue_labels(volume)
