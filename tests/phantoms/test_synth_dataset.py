"""Synthesised training samples for the engine (seeded through torch's global generator) and
registration pairs of one label map."""

from __future__ import annotations

import pytest
import torch

from medimg.errors import InputError
from medimg.phantoms.synth import Appearance, synthesize_image
from medimg.phantoms.synth_dataset import SynthSegDataset, synth_pair


def _boxes(shape=(24, 20, 16)) -> torch.Tensor:
    lab = torch.zeros(shape, dtype=torch.long)
    lab[3:-3, 3:-3, 2:-2] = 5  # a "head" class
    lab[6:-6, 5:-5, 4:-4] = 1
    lab[9:-9, 8:-8, 6:-6] = 2
    return lab


def test_samples_are_patches_with_mapped_labels_and_repeat_under_the_same_seed():
    ds = SynthSegDataset([_boxes(), _boxes((20, 20, 20))], (16, 16, 8), train_labels={5: 0},
                         samples_per_epoch=7)  # fmt: skip
    assert len(ds) == 7
    torch.manual_seed(3)  # what the engine does before each read
    a = ds[0]
    assert a["image"].shape == (1, 16, 16, 8) and a["image"].dtype == torch.float32
    assert a["label"].shape == (1, 16, 16, 8) and a["label"].dtype == torch.long
    assert set(a["label"].unique().tolist()) <= {0, 1, 2} and 5 not in a["label"]
    torch.manual_seed(3)
    assert torch.equal(ds[0]["image"], a["image"])
    torch.manual_seed(4)
    assert not torch.equal(ds[0]["image"], a["image"])


def test_a_map_smaller_than_the_patch_is_padded_with_background():
    ds = SynthSegDataset([_boxes((8, 8, 8))], (12, 10, 8))
    torch.manual_seed(0)
    s = ds[0]
    assert s["image"].shape == (1, 12, 10, 8) and int(s["label"][0, 0, 0, 0]) == 0


def test_bad_datasets_are_input_errors():
    with pytest.raises(InputError, match="no label maps"):
        SynthSegDataset([], (8, 8, 8))
    with pytest.raises(InputError, match="dimensions"):
        SynthSegDataset([_boxes()], (8, 8))


def test_pairs_differ_in_shape_and_share_contrast_only_when_asked():
    lab = _boxes((32, 28, 24))
    fixed, moving = synth_pair(lab, seed=1, same_contrast=True)
    assert not torch.equal(fixed.labels, moving.labels)  # two deformations
    for v in (0, 1, 2, 5):
        assert moving.means[v] == pytest.approx(fixed.means[v])
    assert not torch.equal(fixed.image, moving.image)
    f2, m2 = synth_pair(lab, seed=1, same_contrast=False)
    assert any(abs(m2.means[v] - f2.means[v]) > 0.05 for v in (0, 1, 2, 5))
    f3, _ = synth_pair(lab, seed=1, same_contrast=False)
    assert torch.equal(f2.image, f3.image)


def test_given_means_replace_the_drawn_ones():
    lab = _boxes()
    img = synthesize_image(lab, seed=0, appearance=Appearance.plain(),
                           means={1: 0.9, 2: 0.1, 0: 0.0, 5: 0.5})  # fmt: skip
    assert float(img[lab == 1].mean()) > float(img[lab == 5].mean()) > float(img[lab == 2].mean())
