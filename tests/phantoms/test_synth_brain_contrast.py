"""What the brain model is trained and validated with: brain label maps on a coarser grid, T2- and
PD-like images made from a real T1's intensities, and the generator's flip/normalise hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.phantoms.synth_brain import contrast_variant, labels_at_spacing
from medimg.phantoms.synth_dataset import SynthSegDataset


def _shells(shape=(32, 32, 24)) -> np.ndarray:
    """Nested shells: WM core (3), GM (2), CSF (1), head (5) and background (0)."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    return np.select([r < 0.35, r < 0.55, r < 0.65, r < 0.9], [3, 2, 1, 5], 0).astype(np.uint8)


def _t1(labels: np.ndarray) -> np.ndarray:
    level = np.array([0, 45, 80, 110, 0, 140], np.float32)
    noise = np.random.default_rng(0).normal(0, 3, labels.shape).astype(np.float32)
    return np.clip(level[labels] + noise, 0, None)


def _median(image: np.ndarray, labels: np.ndarray, k: int) -> float:
    return float(np.median(image[labels == k]))


def test_t2_and_pd_like_reorder_tissues_inside_the_brain_only():
    labels = _shells()
    ref = np.where(labels == 5, 0, labels)  # reference map: brain tissue only
    t1 = _t1(labels)
    t2 = contrast_variant(t1, ref, "t2")
    pd = contrast_variant(t1, ref, "pd")
    assert _median(t2, ref, 1) > _median(t2, ref, 2) > _median(t2, ref, 3)  # CSF bright
    assert _median(pd, ref, 2) > _median(pd, ref, 3)  # GM above WM, little contrast
    assert _median(pd, ref, 1) - _median(pd, ref, 3) < _median(t1, ref, 3) - _median(t1, ref, 1)
    outside = ref == 0
    assert np.array_equal(t2[outside], t1[outside]) and np.array_equal(pd[outside], t1[outside])
    with pytest.raises(InputError, match="contrast must be"):
        contrast_variant(t1, ref, "flair")
    with pytest.raises(InputError, match="not a T1"):
        contrast_variant(t2, ref, "pd")


def test_labels_at_a_coarser_spacing_keep_every_class_on_the_right_grid():
    labels = _shells((40, 40, 30))
    lab = Image(labels[None], np.diag([1.0, 1.0, 1.0, 1.0]), modality="SEG", is_label=True)
    coarse = labels_at_spacing(lab, 2.0)
    assert tuple(coarse.shape) == (20, 20, 15) and coarse.dtype == torch.long
    assert set(coarse.unique().tolist()) == {0, 1, 2, 3, 5}
    # nearly the same volume fractions as the fine map
    for k in (1, 2, 3):
        assert abs(float((coarse == k).float().mean()) - float(np.mean(labels == k))) < 0.02


def test_flips_and_whole_image_normalisation_before_the_crop():
    maps = [torch.from_numpy(_shells((20, 16, 12)).astype(np.int64))]
    data = SynthSegDataset(maps, (12, 12, 8), normalize=lambda x: x * 0 + 7.0, flip_axes=(0,))
    torch.manual_seed(0)
    assert torch.all(data[0]["image"] == 7.0)
    asym = torch.zeros(20, 16, 12, dtype=torch.long)
    asym[:6] = 1  # one side only: flips show up as the class on the other side
    plain = dict(appearance=None, deformation=None)
    flip = SynthSegDataset([asym], (20, 16, 12), flip_axes=(0,), **plain)
    sides = set()
    for s in range(8):
        torch.manual_seed(s)
        lab = flip[0]["label"][0]
        sides.add(int(lab[:10].sum()) > int(lab[10:].sum()))
    assert sides == {True, False}
    with pytest.raises(InputError, match="flip_axes"):
        SynthSegDataset(maps, (12, 12, 8), flip_axes=(3,))


def test_contrast_templates_half_the_time_and_their_means_reach_the_image():
    from medimg.phantoms.synth import Appearance
    from medimg.phantoms.synth_brain import BRAIN_LABELS, brain_contrast_means

    draws = [brain_contrast_means(torch.Generator().manual_seed(s)) for s in range(40)]
    templated = [d for d in draws if d is not None]
    assert 8 < len(templated) < 32  # about half
    assert all(set(d) == set(BRAIN_LABELS) and all(0 <= v <= 1 for v in d.values())
               for d in templated)  # fmt: skip
    maps = [torch.from_numpy(_shells((20, 16, 12)).astype(np.int64))]
    fixed = {0: 0.0, 1: 1.0, 2: 0.5, 3: 0.25, 5: 0.75}
    data = SynthSegDataset(maps, (20, 16, 12), appearance=Appearance.plain(),
                           mean_prior=lambda gen: fixed)  # fmt: skip
    torch.manual_seed(0)
    s = data[0]
    img, lab = s["image"][0], s["label"][0]
    # plain appearance: min-max of the fixed means, so CSF (1.0) is the brightest, WM 0.25
    assert torch.allclose(img[lab == 1], torch.ones(1)) and torch.allclose(
        img[lab == 3], torch.tensor(0.25)
    )
