"""The brain model's slice-by-slice (2D) recipe on tiny shapes: axial slices of synthesised
heads, a 2D plan that labels a whole volume, the preset's batching of slices, and a fixed batch
that a tiny 2D network overfits (the check that tells a bug from too little training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from brain_heads import toy_head
from monai.losses import DiceCELoss

from medimg.errors import InputError
from medimg.phantoms.synth_dataset import SynthSliceDataset, cat_collate
from medimg.tasks.segment.brain import brain_dataset, brain_plan, train_brain_preset
from medimg.tasks.segment.brain_eval import brain_dice
from medimg.tasks.segment.models import build_network
from medimg.tasks.segment.predict import sliding_labels
from medimg.tasks.segment.train import deep_supervision_loss

_head = toy_head


def _plan_2d(**kw):
    return brain_plan(configuration="2d", patch=16, base_features=4, levels=3, val_every=1000,
                      **kw)  # fmt: skip


def test_slices_of_one_volume_hold_brain_and_batch_along_the_first_axis():
    plan = _plan_2d()
    data = brain_dataset([_head()], plan, slices=3, margin=0, empty_prob=0.0)
    assert isinstance(data, SynthSliceDataset)
    torch.manual_seed(5)
    s = data[0]
    assert s["image"].shape == (3, 1, 16, 16) and s["label"].shape == (3, 1, 16, 16)
    assert set(s["label"].unique().tolist()) <= {0, 1, 2, 3, 4}  # head classes are background
    assert all(bool((lab > 0).any()) for lab in s["label"])  # no empty slice drawn
    torch.manual_seed(5)
    assert torch.equal(data[0]["image"], s["image"])  # a function of the engine's seed
    batch = cat_collate([s, s])
    assert batch["image"].shape == (6, 1, 16, 16) and batch["label"].dtype == torch.long
    with pytest.raises(InputError, match="2D patch_size"):
        SynthSliceDataset([_head()], (16, 16, 16))


def _slices(seed: int, **kw) -> dict[str, torch.Tensor]:
    data = brain_dataset([_head((16, 16, 12))], _plan_2d(), slices=16, **kw)
    torch.manual_seed(seed)
    return data[0]


def test_empty_slices_and_off_centre_heads_are_drawn_when_asked():
    for seed in (1, 2):
        s = _slices(seed, margin=6, empty_prob=0.25)
        blank = [bool((lab == 0).all() and (img == img.min()).all())
                 for img, lab in zip(s["image"], s["label"])]  # fmt: skip
        assert 0 < sum(blank) < 16  # slices beyond the head: constant, all background
        assert not any(_slices(seed, margin=6, empty_prob=0.0)["label"].amax((1, 2, 3)) == 0)

        def spread(sample: dict[str, torch.Tensor]) -> int:  # where the brain starts
            starts = [int(torch.nonzero(lab[0].any(1))[0]) for lab in sample["label"] if lab.any()]
            return max(starts) - min(starts)

        # padded before the crop, the head lands anywhere in the window
        assert spread(s) > spread(_slices(seed, margin=0, empty_prob=0.25)) + 4
    with pytest.raises(InputError, match="empty_prob"):
        SynthSliceDataset([_head()], (16, 16), empty_prob=2.0)


def test_a_2d_plan_labels_a_whole_volume_on_its_grid():
    plan = _plan_2d()
    assert plan.configuration == "2d" and plan.patch_size == [16, 16]
    assert plan.filters == [4, 8, 16] and plan.pool_strides == [[2, 2], [2, 2]]
    net = build_network(plan).eval()
    x = np.random.default_rng(0).normal(size=(1, 20, 18, 7)).astype(np.float32)
    labels = sliding_labels(x, [net], plan, mirror=True)
    assert labels.shape == (20, 18, 7) and labels.max() < 5
    with pytest.raises(InputError, match="divisible"):
        brain_plan(configuration="2d", patch=(18, 16), levels=3)
    with pytest.raises(InputError, match="configuration"):
        brain_plan(configuration="2.5d")


def test_the_preset_trains_a_2d_plan_on_batched_slices(tmp_path):
    plan = _plan_2d(max_steps=2)
    plan.train.device = "cpu"
    res = train_brain_preset(tmp_path / "run", label_maps=[_head()], plan=plan, progress=False,
                             validate=False)  # fmt: skip
    assert res.last_step == 2 and (tmp_path / "run" / "model" / "last").is_dir()
    assert "configuration: 2d" in (tmp_path / "run" / "model" / "plan.yaml").read_text()


def test_a_tiny_2d_network_overfits_one_fixed_batch():
    """If this fails, the labels, loss or network are broken (the brain model's earlier
    underfitting was a matter of training length, not of such a bug)."""
    plan = brain_plan(configuration="2d", patch=16, base_features=8, levels=3)
    plan.deep_supervision_heads = 0
    data = brain_dataset([_head((16, 16, 12))], plan, slices=4, margin=0, empty_prob=0.0)
    torch.manual_seed(1)
    batch = data[0]
    x, y = batch["image"], batch["label"]
    torch.manual_seed(0)
    net = build_network(plan)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(100):
        loss = deep_supervision_loss(loss_fn, net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        pred = net(x).argmax(1).numpy()
    present = [k for k, ref in {"csf": 1, "gm": 2, "wm": 3}.items() if (y == ref).any()]
    scores = brain_dice(pred, y[:, 0].numpy())
    assert present and min(scores[k] for k in present) > 0.8, scores
