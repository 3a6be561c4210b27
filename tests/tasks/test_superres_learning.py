"""Super-resolution learning: a tiny supervised network beats cubic; SMORE trains on the volume
itself; the shipped model restores 4x."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from medimg.errors import InputError
from medimg.metrics.image_quality import psnr
from medimg.tasks.superres.baselines import cubic_upsample
from medimg.tasks.superres.degrade import degrade
from medimg.tasks.superres.predict import DEFAULT_MODEL, load_model, restore
from medimg.tasks.superres.synthetic import ellipsoids
from medimg.tasks.superres.train import SRConfig, make_pair, train_network


def _tiny_config(steps: int) -> SRConfig:
    cfg = SRConfig(factor=4, width=16, dilations=(1, 2, 2, 1), patch=24)
    cfg.train = replace(cfg.train, max_steps=steps, batch_size=8, lr=3e-3, warmup_steps=0,
                        val_every=steps, checkpoint_every=steps, progress=False)  # fmt: skip
    return cfg


def test_tiny_supervised_network_beats_cubic_on_an_unseen_volume(tmp_path) -> None:
    train_volume = ellipsoids((32, 32, 32), n=16, seed=0)
    pairs = [make_pair(train_volume, axis, 4, "gaussian") for axis in range(3)]
    res = train_network(_tiny_config(80), pairs, tmp_path / "run")
    assert res.best_metric > 0  # validation: better than cubic on its patches
    net = load_model(tmp_path / "run")
    ref = ellipsoids((32, 32, 32), n=16, seed=9)
    thick = degrade(ref, 2, 4)
    cubic = psnr(ref, cubic_upsample(thick, 2, 4), data_range=1.0)
    learned = psnr(ref, restore(thick, 2, 4, "supervised", model=net), data_range=1.0)
    assert learned > cubic + 0.2


def test_smore_trains_a_few_steps_on_the_thick_volume_alone() -> None:
    thick = degrade(ellipsoids((24, 24, 24), seed=4), 1, 3)  # slice axis 1, 3x
    out = restore(thick, 1, 3, "smore", smore_steps=3)
    assert out.shape == (24, 24, 24) and np.isfinite(out).all()
    # three steps from an identity start stay close to the cubic interpolation it refines
    assert np.abs(out - cubic_upsample(thick, 1, 3)).max() < 0.2


def test_supervised_refuses_a_factor_it_was_not_trained_for() -> None:
    net = load_model(DEFAULT_MODEL) if (DEFAULT_MODEL / "config.yaml").is_file() else None
    if net is None:
        pytest.skip("no shipped model")
    assert net.config.factor == 4
    with pytest.raises(InputError, match="restores 4x, not 3x"):
        restore(np.zeros((8, 8, 4), np.float32), 2, 3, "supervised", model=net)


def test_smore_from_a_given_network_leaves_that_network_unchanged() -> None:
    import torch

    from medimg.tasks.superres.models import SRNet

    net = SRNet(8, (1, 2))
    net.config = SRConfig(width=8, dilations=(1, 2))
    before = [p.detach().clone() for p in net.parameters()]
    thick = degrade(ellipsoids((16, 16, 16), seed=5), 2, 2)
    out = restore(thick, 2, 2, "smore", smore_steps=2, smore_init=net)
    assert out.shape == (16, 16, 16)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_smore_patches_fit_a_volume_smaller_than_the_patch_size() -> None:
    thick = degrade(ellipsoids((20, 28, 24), seed=6), 2, 4)  # in-plane 20 x 28 < 64
    out = restore(thick, 2, 4, "smore", smore_steps=2)
    assert out.shape == (20, 28, 24) and np.isfinite(out).all()
