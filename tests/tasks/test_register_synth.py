"""Registration pairs synthesised from label maps (SynthMorph recipe) and training on them."""

import numpy as np
import pytest
import torch

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.tasks.register.synth_data import SynthPairDataset, brain_label_map
from medimg.tasks.register.synth_train import present_dice_loss, train_synth


def _brain(shape=(24, 24, 24)) -> torch.Tensor:
    lab = torch.zeros(shape, dtype=torch.long)
    lab[4:-4, 4:-4, 4:-4] = 1  # CSF
    lab[6:-6, 6:-6, 6:-6] = 2  # GM
    lab[9:-9, 9:-9, 9:-9] = 3  # WM
    return lab


def _label_means(image: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    return np.array([float(image[labels == v].mean()) for v in range(4)])


def test_pairs_have_the_stated_shapes_and_share_contrast_only_when_asked():
    ds = SynthPairDataset([_brain()], (24, 24, 24), samples_per_epoch=5)
    assert len(ds) == 5 and ds.num_classes == 12
    torch.manual_seed(0)  # what the engine does before each read
    item = ds[0]
    for key in ("fixed", "moving"):
        assert item[key].shape == (1, 24, 24, 24) and item[key].dtype == torch.float32
        assert 0 <= float(item[key].min()) and float(item[key].max()) <= 1
    for key in ("fixed_label", "moving_label"):
        assert item[key].shape == (1, 24, 24, 24) and item[key].dtype == torch.int64
    torch.manual_seed(0)
    assert torch.equal(ds[0]["moving"], item["moving"])  # a function of the seed
    same = ds.draw(3, source="brain", cross=False)
    assert not torch.equal(same["fixed_label"], same["moving_label"])  # two deformations
    gap = {}
    for cross in (False, True):  # mean |difference| of the per-tissue mean intensities
        gap[cross] = np.mean([np.abs(_label_means(p["fixed"][0], p["fixed_label"][0])
                                     - _label_means(p["moving"][0], p["moving_label"][0])).mean()
                              for p in (ds.draw(s, source="brain", cross=cross) for s in range(8))])  # fmt: skip
    assert gap[False] < 0.5 * gap[True], gap
    shapes = ds.draw(1, source="shapes")
    assert len(shapes["fixed_label"].unique()) > 6


def test_brain_label_map_resamples_centres_and_merges_classes():
    arr = np.zeros((40, 40, 20), np.uint8)
    arr[5:25, 5:25, 2:12] = 3  # WM off centre
    arr[10:14, 10:14, 4:8] = 4  # deep GM -> GM
    arr[0:2, 0:2, 0:2] = 5  # head -> background
    img = Image(arr[None], np.diag([2.0, 2.0, 4.0, 1.0]), is_label=True, modality="SEG")
    out = brain_label_map(img, spacing_mm=4.0, shape=(16, 16, 8))
    assert out.shape == (16, 16, 8) and out.dtype == torch.long
    assert set(out.unique().tolist()) == {0, 2, 3}
    inside = torch.nonzero(out > 0).float().mean(0)
    assert torch.allclose(inside, torch.tensor([7.5, 7.5, 3.5]), atol=1.0)  # centred
    with pytest.raises(InputError, match="values"):
        brain_label_map(img.with_array(arr[None] * 0 + 9), shape=(8, 8, 8))


def test_present_dice_ignores_absent_classes():
    fixed = torch.zeros(1, 5, 4, 4)
    fixed[:, 0], fixed[:, 1, :2], fixed[:, 0, :2] = 1, 1, 0
    assert float(present_dice_loss(fixed, fixed)) == pytest.approx(0.0, abs=1e-6)
    moved = fixed.roll(2, dims=2)
    assert float(present_dice_loss(moved, fixed)) == pytest.approx(1.0, abs=1e-6)


def test_tiny_model_beats_identity_on_held_out_synthetic_pairs(tmp_path):
    from medimg.phantoms.synth import Appearance, Deformation
    from medimg.tasks.register.predict import Registrator
    from medimg.tasks.register.train import _dice_mean
    from medimg.tasks.register.transform import warp

    yy, xx = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
    r = ((yy - 11.5) ** 2 / 1.2 + (xx - 11.5) ** 2) ** 0.5
    brain = (r < 10).long() + (r < 7).long() + (r < 4).long()  # a 2D toy brain: CSF/GM/WM
    app, warps = (
        Appearance.plain(),
        Deformation(rotate=0, scale=0, shear=0, warp_std=2.5, warp_grid=4),
    )
    preset = {"shape": (24, 24), "val_every": 150, "val_pairs": 1, "channels": (8, 16, 16, 16),
              "final_channels": (16,), "lr": 1e-2, "shapes_prob": 0.0, "cross_prob": 0.0,
              "shape_labels": 4}  # fmt: skip
    res = train_synth([brain], tmp_path / "run", preset=preset, max_steps=150, progress=False,
                      appearance=app, deformation=warps)  # fmt: skip
    net = Registrator(res.run_dir).net
    net.fast_precision = False
    data = SynthPairDataset([brain], (24, 24), shape_labels=4, appearance=app, deformation=warps)
    before, after = [], []
    with torch.no_grad():
        for seed in range(777, 785):  # held out: training draws its seeds from the engine
            p = data.draw(seed, source="brain", cross=False)
            field = net(p["fixed"][None], p["moving"][None])
            moved = warp(p["moving_label"][None].float(), field, mode="nearest")
            after.append(_dice_mean(moved.numpy(), p["fixed_label"][None].numpy(), 4))
            before.append(_dice_mean(p["moving_label"].numpy(), p["fixed_label"].numpy(), 4))
    assert np.mean(after) > np.mean(before) + 0.05, (before, after)
