"""Registration losses: zero/low where they should be, and pointing the right way."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from medimg.errors import InputError
from medimg.tasks.register.losses import (
    LossConfig,
    RegistrationLoss,
    one_hot,
    regulariser,
    similarity,
)
from medimg.tasks.register.transform import warp


def _blob(shift=0.0):
    i, j = np.indices((32, 32), dtype=np.float32)
    img = np.exp(-((i - 16 - shift) ** 2 + (j - 15) ** 2) / 40.0)
    return torch.from_numpy(img)[None, None]


@pytest.mark.parametrize("name", ["lncc", "mse", "mi", "mind"])
def test_similarity_prefers_the_aligned_pair(name):
    sim = similarity(name, 2, 5)
    fixed, moving = _blob(), _blob(3.0)
    u = torch.zeros(1, 2, 32, 32)
    u[:, 0] = 3.0  # warped(x) = moving(x + 3) = fixed(x)
    assert float(sim(warp(moving, u), fixed)) < float(sim(moving, fixed)) - 1e-3


@pytest.mark.parametrize("name", ["diffusion", "bending"])
def test_regularisers_vanish_on_translations_and_grow_with_roughness(name):
    reg = regulariser(name)
    shift = torch.ones(1, 3, 10, 10, 10) * 2.0
    rough = torch.from_numpy(
        np.random.default_rng(0).standard_normal((1, 3, 10, 10, 10)).astype(np.float32)
    )
    smooth = torch.from_numpy(ndimage.gaussian_filter(rough.numpy(), (0, 0, 3, 3, 3)))
    assert float(reg(shift)) == pytest.approx(0.0, abs=1e-7)
    assert float(reg(rough)) > float(reg(smooth)) > 0


def test_mode_losses_are_lowest_at_the_true_field():
    fixed, moving = _blob(), _blob(3.0)
    labels_f, labels_m = (fixed > 0.5).long(), (moving > 0.5).long()
    true = torch.zeros(1, 2, 32, 32)
    true[:, 0] = 3.0
    batch = {"fixed": fixed, "moving": moving, "fixed_label": labels_f, "moving_label": labels_m,
             "field": true}  # fmt: skip
    for mode in ("unsupervised", "weak", "supervised"):
        loss = RegistrationLoss(LossConfig(mode=mode, similarity="mse"), 2, num_classes=2)
        at_truth, terms = loss(true, batch)
        at_zero, _ = loss(torch.zeros_like(true), batch)
        assert float(at_truth) < float(at_zero), mode
    assert float(terms["field"]) == 0.0
    assert one_hot(labels_f, 2).shape == (1, 2, 32, 32)


def test_hybrid_field_term_adds_the_true_field_error_to_weak_supervision():
    fixed, moving = _blob(), _blob(3.0)
    true = torch.zeros(1, 2, 32, 32)
    true[:, 0] = 3.0
    batch = {"fixed": fixed, "moving": moving, "fixed_label": (fixed > 0.5).long(),
             "moving_label": (moving > 0.5).long(), "field": true}  # fmt: skip
    plain = RegistrationLoss(LossConfig(mode="weak"), 2, num_classes=2)
    hybrid = RegistrationLoss(LossConfig(mode="weak", aux_field_weight=2.0), 2, num_classes=2)
    off = true + 0.5
    (p_total, p_terms), (h_total, h_terms) = plain(off, batch), hybrid(off, batch)
    assert "field" not in p_terms
    assert float(h_terms["field"]) == pytest.approx(2 * 0.5**2)
    assert float(h_total - p_total) == pytest.approx(2.0 * float(h_terms["field"]), rel=1e-5)
    assert float(hybrid(true, batch)[1]["field"]) == 0.0
    del batch["field"]
    with pytest.raises(InputError, match="aux_field_weight"):
        hybrid(true, batch)


def test_bad_loss_settings():
    with pytest.raises(InputError, match="mode must be one of"):
        LossConfig(mode="semi")
    with pytest.raises(InputError, match="weak supervision needs label maps"):
        RegistrationLoss(LossConfig(mode="weak"), 2, num_classes=0)
