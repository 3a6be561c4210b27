"""A tiny end-to-end training run: beats intensity thresholding by a margin in < 60 s."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medimg.datasets.msd import check_dataset, open_dataset
from medimg.io.api import load
from medimg.phantoms.segmentation import write_msd_dataset
from medimg.tasks.segment.fingerprint import fingerprint_from_cases
from medimg.tasks.segment.models import build_network
from medimg.tasks.segment.plan import make_plan
from medimg.tasks.segment.predict import Segmenter
from medimg.tasks.segment.train import deep_supervision_loss, dice_per_class, train_segmentation

SMALL = {"shape": (40, 40, 12), "spacing": (9.0, 9.0, 12.0)}


def _otsu_dice(image: np.ndarray, gt: np.ndarray) -> list[float]:
    from skimage.filters import threshold_multiotsu

    q = np.digitize(image, threshold_multiotsu(image, classes=4))
    scores = []
    for k in range(1, 4):
        g = gt == k
        scores.append(max(2 * (g & (q == c)).sum() / (g.sum() + (q == c).sum()) for c in range(4)))
    return scores


def test_tiny_training_beats_otsu(tmp_path):
    root = write_msd_dataset(tmp_path / "d", "ct", n_train=3, n_test=1, seed=0, **SMALL)
    ds = open_dataset(root)
    plan = make_plan(fingerprint_from_cases(ds, check_dataset(ds)), memory_budget_mb=64,
                     base_features=8, max_steps=60)  # fmt: skip
    plan.augment = False  # the tiny budget goes to fitting, not to invariances
    plan.train.lr = 1e-2
    res = train_segmentation(root, tmp_path / "run", fold=-1, plan=plan, progress=False,
                             device="cpu", samples_per_epoch=16)  # fmt: skip
    assert res.last_step == 60 and (tmp_path / "run" / "plan.yaml").is_file()
    image = load(root / "imagesTs" / "ct_003_0000.nii.gz", modality="CT")
    gt = load(root / "labelsTs" / "ct_003.nii.gz", is_label=True).array[0]
    pred = Segmenter(tmp_path / "run", device="cpu").segment(image, mirror=False)
    assert pred.spatial_shape == image.spatial_shape and np.allclose(pred.affine, image.affine)
    net, otsu = dice_per_class(pred.array[0], gt, 4), _otsu_dice(image.array[0], gt)
    # 60 steps on 9 mm voxels learn the liver; small organs need the real budget (bench)
    assert net[0] > otsu[0] + 0.3, (net, otsu)
    assert np.mean(net) > np.mean(otsu) + 0.1, (net, otsu)


@pytest.mark.parametrize("network", ["dynunet", "segresnet"])
def test_network_shapes_and_deep_supervision(network):
    fp = {"dataset": "t", "modality": "MR", "channel_names": {"0": "T1", "1": "T2"},
          "labels": {"0": "bg", "1": "a", "2": "b"}, "num_cases": 2,
          "spacings": [[1.0, 1.0, 1.0]] * 2, "shapes": [[32, 32, 16]] * 2,
          "foreground_intensity": [{}, {}]}  # fmt: skip
    plan = make_plan(fp, network=network, base_features=4)
    net = build_network(plan)
    x = torch.zeros(2, 2, *plan.patch_size)
    net.train()
    out = net(x)
    loss = deep_supervision_loss(
        __import__("monai").losses.DiceCELoss(to_onehot_y=True, softmax=True),
        out, torch.zeros(2, 1, *plan.patch_size, dtype=torch.long),
    )  # fmt: skip
    assert torch.isfinite(loss)
    net.eval()
    assert net(x).shape == (2, 3, *plan.patch_size)
