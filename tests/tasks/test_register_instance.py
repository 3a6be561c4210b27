"""Instance optimisation: its start (network or identity, whichever matches better) and the
similarities for cross-contrast pairs (MIND-SSC, local NCC) against MSE, which cannot follow an
inverted contrast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medimg.phantoms.registration import make_pair
from medimg.tasks.register.data import normalise
from medimg.tasks.register.instance import IO_REG_WEIGHT, choose_start, instance_optimise
from medimg.tasks.register.losses import SIMILARITIES, mind_descriptor, regulariser, similarity
from medimg.tasks.register.transform import warp


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    labels = [v for v in np.unique(b) if v]
    return float(np.mean([2 * ((a == v) & (b == v)).sum() / ((a == v).sum() + (b == v).sum())
                          for v in labels]))  # fmt: skip


@pytest.fixture(scope="module")
def inverted_pair():
    """A 2D brain pair whose moving image has the inverted contrast (T2-like against T1)."""
    p = make_pair("mr", 1, shape=(48, 48), spacing=4.0, max_disp_mm=12.0, affine_strength=0)
    fixed = torch.from_numpy(normalise(p.fixed.array))[None]
    moving = torch.from_numpy(1 - normalise(p.moving.array))[None]
    labels = torch.from_numpy(p.moving_labels.array.astype(np.float32))[None]
    return fixed, moving, labels, p.fixed_labels.array[0]


def test_mind_descriptor_ignores_contrast_but_sees_structure():
    img = torch.from_numpy(make_pair("mr", 0, shape=(24, 24, 24), spacing=4.0).fixed.array)[None]
    img = img / img.max()
    d = mind_descriptor(img)
    assert d.shape == (1, 12, 24, 24, 24) and float(d.max()) == pytest.approx(1.0)
    assert torch.allclose(mind_descriptor(1 - img), d, atol=1e-5)  # inverted contrast
    assert torch.allclose(mind_descriptor(3 * img + 2), d, atol=1e-4)  # another scale
    assert float((mind_descriptor(img.roll(3, 2)) - d).abs().mean()) > 0.05  # moved structure
    assert mind_descriptor(img[..., 0]).shape == (1, 4, 24, 24)  # 2D: 4 pairs


@pytest.mark.parametrize("name", ["lncc", "mind"])
def test_local_similarities_register_an_inverted_contrast_pair_and_mse_does_not(
    inverted_pair, name
):
    fixed, moving, labels, fixed_labels = inverted_pair
    before = _dice(labels[0, 0].numpy(), fixed_labels)

    def after(sim_name: str) -> float:
        u, done = instance_optimise(fixed, moving, torch.zeros(1, 2, 48, 48),
                                    similarity(sim_name, 2), regulariser("diffusion"), steps=100,
                                    reg_weight=IO_REG_WEIGHT[sim_name])  # fmt: skip
        assert done == 100
        return _dice(warp(labels, u, mode="nearest")[0, 0].numpy(), fixed_labels)

    assert after(name) > before + 0.1  # measured: about +0.2 for both
    assert after("mse") < before + 0.02  # MSE pulls dark onto bright: worse than not moving


def test_choose_start_keeps_the_better_field(inverted_pair):
    fixed, moving, _, _ = inverted_pair
    wild = 6 * torch.randn(1, 2, 48, 48, generator=torch.Generator().manual_seed(0))
    candidates = {"network": wild, "identity": torch.zeros(1, 2, 48, 48)}
    best, scores = choose_start(fixed, moving, candidates, similarity("mind", 2))
    assert best == "identity" and scores["identity"] < scores["network"]


def test_registrator_starts_from_the_identity_when_the_network_does_worse(monkeypatch):
    from medimg.tasks.register.predict import Registrator

    p = make_pair("mr", 3, shape=(16, 16, 16), spacing=4.0)
    reg = Registrator()
    res = reg.register(p.fixed, p.moving, instance_steps=2, similarity="mind")
    assert res.info["instance_start"] in ("network", "identity")
    assert res.info["instance_similarity"] == "mind" and res.info["instance_steps"] == 2
    assert set(res.info["start_scores"]) == {"network", "identity"}

    def wild(self, f, m, fixed, info=None):  # a network that scrambles the image
        return 4 * torch.randn(1, 3, *f.shape[2:], generator=torch.Generator().manual_seed(0))

    monkeypatch.setattr(Registrator, "network_field", wild)
    res = reg.register(p.fixed, p.moving, instance_steps=2)
    assert res.info["instance_start"] == "identity" and res.info["instance_similarity"] == "lncc"
    scores = res.info["start_scores"]
    assert scores["identity"] < scores["network"]
    res = reg.register(p.fixed, p.moving, instance_steps=1, start="identity")
    assert set(res.info["start_scores"]) == {"identity"}  # the network was not run


def test_cli_similarity_choices_are_the_losses():
    from medimg.tasks.register import cli

    assert set(cli.SIMILARITIES) == set(SIMILARITIES)


def test_mind_loss_reuses_the_fixed_descriptor_only_for_the_same_image():
    from medimg.tasks.register.losses import MINDLoss

    g = torch.Generator().manual_seed(0)
    warped, f1, f2 = (torch.rand(1, 1, 12, 12, 12, generator=g) for _ in range(3))
    loss = MINDLoss()
    first = loss(warped, f1)
    assert float(loss(warped, f1)) == pytest.approx(float(first))
    assert float(loss(warped, f2)) == pytest.approx(float(MINDLoss()(warped, f2)))
    f2.mul_(0).add_(f1)  # changed in place: the descriptor is recomputed
    assert float(loss(warped, f2)) == pytest.approx(float(first))
