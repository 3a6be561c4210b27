"""Explanations: maps land on the finding, change when weights are randomised (Adebayo et al.),
and are written on the input's grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medimg.errors import InputError
from medimg.explain import (
    heatmap_image,
    randomisation_check,
    saliency_map,
    save_overlay_png,
)
from medimg.io import Image
from medimg.io.api import load, save


def _blobs(n: int, rng: np.random.Generator, size: int = 24):
    """Noise images; positives hold a bright 4x4 square somewhere."""
    x = rng.normal(0, 0.3, (n, 1, size, size)).astype(np.float32)
    y = (np.arange(n) % 2).astype(np.float32)
    where = rng.integers(2, size - 6, (n, 2))
    for i in np.nonzero(y)[0]:
        a, b = where[i]
        x[i, 0, a : a + 4, b : b + 4] += 1.5
    return torch.from_numpy(x), torch.from_numpy(y), where


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())  # fmt: skip
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).amax(dim=(2, 3)))


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x, y, _ = _blobs(64, rng)
    net = _Net()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(60):
        loss = nn.functional.binary_cross_entropy_with_logits(net(x)[:, 0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


@pytest.mark.parametrize(
    ("method", "layer"), [("gradcam", "features.3"), ("layercam", "features.1")]
)
def test_cam_peaks_on_the_finding_and_fails_randomisation(trained, method, layer):
    x, y, where = _blobs(16, np.random.default_rng(1))
    pos = y.numpy() == 1
    maps = saliency_map(trained, x[pos], method=method, target_layer=layer)
    assert maps.shape == (pos.sum(), 24, 24) and maps.min() >= 0 and maps.max() <= 1
    peaks = [np.unravel_index(np.argmax(m), m.shape) for m in maps]
    hits = [
        a - 1 <= p[0] <= a + 4 and b - 1 <= p[1] <= b + 4 for p, (a, b) in zip(peaks, where[pos])
    ]
    assert np.mean(hits) >= 0.75
    check = randomisation_check(trained, x[pos], method=method, target_layer=layer)
    assert check["mean_spearman"] < 0.5  # the map depends on the learned weights


def test_occlusion_and_gradcampp_shapes(trained):
    x, _, _ = _blobs(2, np.random.default_rng(2))
    occ = saliency_map(trained, x, method="occlusion")
    pp = saliency_map(trained, x, method="gradcam++", target_layer="features.3")
    assert occ.shape == pp.shape == (2, 24, 24)
    with pytest.raises(InputError, match="no layer 'nope'"):
        saliency_map(trained, x, method="gradcam", target_layer="nope")


def test_heatmap_is_written_on_the_input_grid(tmp_path):
    affine = np.array([[-0.7, 0, 0, 10], [0, 0, 1, 0], [0, -0.7, 0, 5], [0, 0, 0, 1.0]])
    image = Image(np.random.default_rng(0).normal(size=(1, 40, 30)).astype(np.float32), affine)
    heat = np.zeros((20, 15), np.float32)
    heat[10, 5] = 1.0
    hm = heatmap_image(heat, image)
    assert hm.spatial_shape == image.spatial_shape and np.allclose(hm.affine, image.affine)
    out = save(hm, tmp_path / "cam.nii.gz")
    back = load(out)
    assert np.allclose(back.affine, image.affine, atol=1e-4)
    i, j = np.unravel_index(np.argmax(back.array[0]), back.spatial_shape)
    assert abs(i - 21) <= 1 and abs(j - 11) <= 1  # the same place, in input voxels
    png = save_overlay_png(image, hm, tmp_path / "cam.png", boxes=[(18, 9, 24, 14)])
    assert png.stat().st_size > 1000
