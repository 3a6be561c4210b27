"""Real-brain pairs under known warps (full supervision) and training on them."""

import numpy as np
import pytest
import torch

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.tasks.register.brain_pairs import (
    BrainWarpDataset,
    WarpRanges,
    brain_source,
    fixed_brain_pairs,
)
from medimg.tasks.register.brain_train import field_error, train_real_brains
from medimg.tasks.register.transform import warp

#: geometry only: no bias, noise or gamma, so a warped moving image can match the fixed one
CLEAN = WarpRanges(bias=0.0, noise=(0.0, 0.0), gamma_std=0.0, cross_prob=0.0)


def _toy_brain(n: int = 28) -> tuple[Image, Image]:
    """A T1-like ellipsoid brain (CSF shell, GM, WM core, a few bright blobs for texture) on a
    LPS-like 2 mm grid (the x axis flipped), zero outside."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) - n / 2 + 0.5] * 3, indexing="ij")
    r = np.sqrt(x**2 / 1.0 + y**2 / 0.8 + z**2 / 0.7)
    lab = (r < 11).astype(np.uint8) + (r < 9) + (r < 5)
    t1 = np.choose(lab, [0.0, 0.3, 0.6, 0.9]).astype(np.float32)
    t1 += 0.3 * ((np.sin(x / 1.5) * np.cos(y / 2.0) * np.sin(z / 1.7)) > 0.5) * (lab > 0)
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    return (Image(t1[None], affine, modality="MR"),
            Image(lab.astype(np.uint8)[None], affine, modality="SEG", is_label=True))  # fmt: skip


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean Dice over the foreground labels of the most likely label of ``(K, *S)`` maps."""
    x, y = a.argmax(0), b.argmax(0)
    return float(np.mean([2 * ((x == k) & (y == k)).sum() / ((x == k).sum() + (y == k).sum())
                          for k in range(1, a.shape[0])]))  # fmt: skip


def test_brain_source_is_ras_cropped_even_and_normalised():
    t1, lab = _toy_brain()
    src = brain_source(t1, lab, spacing_mm=2.0, margin=2)
    assert src.image.ndim == 3 and src.image.shape == src.labels.shape
    assert all(n % 2 == 0 and n < 28 for n in src.image.shape)  # cropped, even
    assert float(src.image.min()) == 0 and float(src.image.max()) == pytest.approx(1.0, abs=1e-5)
    assert float(src.image[src.labels == 0].abs().max()) == 0  # zero outside the brain
    assert set(src.labels.unique().tolist()) == {0, 1, 2, 3}
    # RAS+: a marker at a low index of the flipped x axis (the right side) ends up high
    marked = t1.array.copy()
    marked[0, 6, 12:16, 12:16] = 5.0
    img = brain_source(t1.with_array(marked), lab, spacing_mm=2.0, margin=2).image
    assert int(torch.nonzero(img == img.max())[:, 0].float().mean()) > img.shape[0] // 2
    with pytest.raises(InputError, match="same grid"):
        brain_source(t1, Image(lab.array[:, :-1], lab.affine, is_label=True))


def test_pairs_are_reproducible_and_their_field_aligns_them():
    t1, lab = _toy_brain()
    data = BrainWarpDataset([brain_source(t1, lab)], CLEAN, samples=3)
    assert len(data) == 3
    a, b = data.draw(5, cross=False), data.draw(5, cross=False)
    assert all(torch.equal(a[k], b[k]) for k in a)
    shape = a["fixed"].shape[1:]
    assert a["moving"].shape == (1, *shape) and a["field"].shape == (3, *shape)
    assert a["fixed_label"].shape == (4, *shape) and a["mask"].shape == (1, *shape)
    gains, ratios = [], []
    for seed in range(4):
        p = data.draw(seed, cross=False)
        before = _dice(p["moving_label"], p["fixed_label"])
        after = _dice(warp(p["moving_label"][None], p["field"][None])[0], p["fixed_label"])
        gains.append(after - before)
        # the true field undoes the warp (up to interpolation): the images match again
        moved = warp(p["moving"][None], p["field"][None])[0]
        mse = [float(((x - p["fixed"]) ** 2).mean()) for x in (p["moving"], moved)]
        ratios.append(mse[1] / mse[0])
    assert np.mean(gains) > 0.02, gains
    assert np.mean(ratios) < 0.6 and max(ratios) < 1, ratios


def test_field_error_weights_the_brain_over_the_background():
    true = torch.zeros(1, 3, 4, 4, 4)
    mask = torch.zeros(1, 1, 4, 4, 4)
    mask[..., :2] = 1
    off_brain = true.clone()
    off_brain[:, 0, ..., 2:] = 1.0  # 1 voxel wrong outside the brain only
    in_brain = true.clone()
    in_brain[:, 0, ..., :2] = 1.0
    assert float(field_error(true, true, mask)) == pytest.approx(0.0, abs=1e-2)
    assert float(field_error(off_brain, true, mask)) == pytest.approx(0.1 / 1.1, abs=1e-2)
    assert float(field_error(in_brain, true, mask)) == pytest.approx(1 / 1.1, abs=1e-2)


@pytest.mark.slow  # about 3.5 CPU s: 30 training steps of a 3D network
def test_tiny_model_learns_to_recover_known_shifts(tmp_path):
    from medimg.tasks.register.predict import Registrator

    t1, lab = _toy_brain(20)
    src = brain_source(t1, lab)
    # shifts of up to 6 mm (1.5 voxels of the network's grid): learnable in a few steps
    ranges = WarpRanges(max_mm=(0.0, 0.01), linear_prob=1.0, rotate=0.0, scale=0.0,
                        shift_mm=6.0, subject_scale=0.0, subject_rotate=0.0, subject_warp_mm=0.0,
                        bias=0.0, noise=(0, 0), gamma_std=0.0, cross_prob=0.0)  # fmt: skip
    preset = {"max_steps": 30, "val_every": 30, "val_pairs": 1, "lr": 1e-2, "dice_weight": 0.0,
              "channels": (8, 8, 8, 8), "final_channels": (8,)}  # fmt: skip
    res = train_real_brains([src], tmp_path / "run", preset=preset, ranges=ranges,
                            progress=False)  # fmt: skip
    assert (res.run_dir / "reg.yaml").is_file()
    net = Registrator(res.run_dir).net
    net.fast_precision = False
    data = BrainWarpDataset([src], ranges)
    zero, learned = [], []
    with torch.no_grad():
        for p in fixed_brain_pairs(data, 4, seed=4242):  # held out
            field = net(p["fixed"][None], p["moving"][None])
            true, mask = p["field"][None], p["mask"][None]
            zero.append(float(field_error(torch.zeros_like(field), true, mask)))
            learned.append(float(field_error(field, true, mask)))
    assert np.mean(learned) < 0.85 * np.mean(zero), (zero, learned)


def test_chain_stages_applies_one_network_two_times(tmp_path):
    from safetensors.torch import save_model

    from medimg.engine import to_yaml
    from medimg.tasks.register.brain_train import chain_stages
    from medimg.tasks.register.models import ModelConfig, build_model
    from medimg.tasks.register.predict import Registrator
    from medimg.tasks.register.train import RegConfig
    from medimg.tasks.register.transform import compose

    torch.manual_seed(0)
    cfg = RegConfig(num_classes=4, working_spacing_mm=(4.0, 4.0, 4.0))
    cfg.model = ModelConfig(spatial_dims=3, channels=(4, 8, 8, 8), final_channels=(4,))
    net = build_model(cfg.model)
    (tmp_path / "one").mkdir()
    to_yaml(cfg, tmp_path / "one" / "reg.yaml")
    save_model(net, str(tmp_path / "one" / "model.safetensors"))
    twice = Registrator(chain_stages(tmp_path / "one", tmp_path / "one", tmp_path / "twice"))
    assert twice.coarse is not None and twice.coarse.coarse is None
    img = Image(
        np.random.default_rng(0).random((1, 16, 16, 16), np.float32), np.diag([4.0] * 3 + [1])
    )
    f, m = torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)
    one = Registrator(tmp_path / "one")
    with torch.no_grad():
        first = one.network_field(f, m, img)
        expected = compose(first, one.network_field(f, warp(m, first), img))
        assert torch.allclose(twice.network_field(f, m, img), expected, atol=1e-5)
    with pytest.raises(InputError, match="single-stage"):
        chain_stages(tmp_path / "twice", tmp_path / "one", tmp_path / "thrice")
