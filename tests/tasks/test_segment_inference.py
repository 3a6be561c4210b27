"""Sliding-window segmentation: equal to MONAI's Gaussian blending, mirroring, padding, labels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medimg.errors import InputError
from medimg.tasks.segment.inference import (
    gaussian_importance_map,
    sliding_window_logits,
    sliding_window_segment,
)


def _net(spatial: int, in_ch: int = 2, classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    conv = nn.Conv3d if spatial == 3 else nn.Conv2d
    return nn.Sequential(
        conv(in_ch, 4, 3, padding=1), nn.ReLU(), conv(4, classes, 3, padding=1)
    ).eval()


def _monai(image: torch.Tensor, net: nn.Module, patch, overlap: float, bs: int) -> torch.Tensor:
    from monai.inferers import sliding_window_inference

    with torch.no_grad():
        out = sliding_window_inference(
            image[None], patch, bs, net, overlap=overlap, mode="gaussian", sigma_scale=0.125
        )
    return out[0]


@pytest.mark.parametrize(
    ("shape", "patch", "overlap"),
    [
        ((2, 29, 23, 19), (12, 10, 8), 0.5),
        ((2, 21, 17, 13), (8, 8, 8), 0.25),
        ((2, 5, 30, 7), (8, 12, 10), 0.5),  # two axes smaller than the patch: padded
        ((2, 37, 31), (16, 12), 0.6),
    ],
)
def test_equals_monai_sliding_window(shape, patch, overlap) -> None:
    net = _net(len(patch))
    image = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    ours = sliding_window_logits(image, net, patch_size=patch, overlap=overlap, batch_size=3)
    ref = _monai(image, net, patch, overlap, 3)
    assert ours.shape == ref.shape == (3, *shape[1:])
    assert float((ours - ref).abs().max()) <= 1e-5


def test_importance_map_is_gaussian_with_sigma_an_eighth_of_the_patch() -> None:
    w = gaussian_importance_map((17, 9))
    assert w.shape == (17, 9) and float(w.max()) == pytest.approx(1.0)
    # one voxel off-centre along axis 0: exp(-1 / (2 (17/8)^2))
    assert float(w[9, 4]) == pytest.approx(float(torch.exp(torch.tensor(-1 / (2 * (17 / 8) ** 2)))))
    assert float(w.min()) >= 1e-3 - 1e-9


def test_labels_are_the_argmax_of_the_probabilities() -> None:
    net = _net(3)
    image = torch.randn((2, 19, 22, 17), generator=torch.Generator().manual_seed(2))
    kw = {"patch_size": (8, 10, 8), "num_classes": 3, "overlap": 0.5, "batch_size": 4}
    probs = sliding_window_segment(image, net, return_probabilities=True, **kw)
    labels = sliding_window_segment(image, net, **kw)
    assert probs.dtype.name == "float32" and probs.shape == (3, 19, 22, 17)
    assert labels.dtype.name == "uint8" and labels.shape == (19, 22, 17)
    assert torch.allclose(torch.from_numpy(probs).sum(0), torch.ones(19, 22, 17), atol=1e-5)
    assert (probs.argmax(0) == labels).all()
    assert len(set(labels.ravel().tolist())) == 3  # the net does not predict one class only


def test_logit_blending_labels_equal_monai_argmax() -> None:
    net = _net(3, classes=4, seed=3)
    image = torch.randn((2, 23, 19, 15), generator=torch.Generator().manual_seed(4))
    kw = {"patch_size": (10, 8, 8), "overlap": 0.5, "batch_size": 2}
    ref = _monai(image, net, kw["patch_size"], 0.5, 2)
    logits = sliding_window_segment(image, net, num_classes=4, softmax=False,
                                     return_probabilities=True, **kw)  # fmt: skip
    labels = sliding_window_segment(image, net, num_classes=4, softmax=False, **kw)
    assert float((torch.from_numpy(logits) - ref).abs().max()) <= 1e-5
    top2 = ref.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 1e-4  # ties within float rounding may flip either way
    assert (torch.from_numpy(labels).long() == ref.argmax(0))[clear].all()


def test_constant_logits_give_their_softmax_everywhere_including_padding_and_edges() -> None:
    logits = torch.tensor([0.3, -1.0, 2.0, 0.0])

    def predictor(x: torch.Tensor) -> torch.Tensor:
        return logits.view(1, 4, 1, 1, 1).expand(x.shape[0], 4, *x.shape[2:])

    probs = sliding_window_segment(
        torch.zeros(1, 5, 13, 11), predictor, patch_size=(8, 8, 8), num_classes=4,
        overlap=0.5, return_probabilities=True,
    )  # fmt: skip
    expected = torch.softmax(logits, 0).view(4, 1, 1, 1).numpy()
    assert probs.shape == (4, 5, 13, 11)
    assert abs(probs - expected).max() < 1e-6


def _symmetric_net() -> nn.Module:
    """Convolutions with kernels symmetric under every flip: the net commutes with flips."""
    net = _net(3, in_ch=1, classes=3, seed=4)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv3d):
                w = m.weight
                for d in (2, 3, 4):
                    w = w + w.flip(d)
                m.weight.copy_(w / 8)
    return net


def test_mirroring_is_invariant_for_a_flip_equivariant_predictor() -> None:
    net = _symmetric_net()
    x = torch.randn((1, 13, 11, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():  # the premise: the net is flip-equivariant
        assert torch.allclose(net(x[None].flip(2, 4)).flip(2, 4), net(x[None]), atol=1e-5)
    kw = {"patch_size": (8, 8, 8), "num_classes": 3, "return_probabilities": True}
    plain = sliding_window_segment(x, net, **kw)
    mirrored = sliding_window_segment(x, net, mirror_axes=(0, 1, 2), **kw)
    assert abs(plain - mirrored).max() < 1e-5


def test_mirroring_averages_the_flipped_predictions() -> None:
    net = _net(3, in_ch=1, seed=6)  # not equivariant
    x = torch.randn((1, 14, 10, 9), generator=torch.Generator().manual_seed(7))

    def averaged(batch: torch.Tensor) -> torch.Tensor:
        flips = [(), (2,), (4,), (2, 4)]
        return sum(net(batch.flip(d)).flip(d) if d else net(batch) for d in flips) / 4

    kw = {"patch_size": (8, 8, 8), "overlap": 0.5}
    mirrored = sliding_window_logits(x, net, mirror_axes=(0, 2), **kw)
    manual = sliding_window_logits(x, averaged, **kw)
    plain = sliding_window_logits(x, net, **kw)
    assert float((mirrored - manual).abs().max()) < 1e-5
    assert float((mirrored - plain).abs().max()) > 1e-3  # mirroring changed something


def test_bad_arguments_raise_input_errors() -> None:
    net = _net(3)
    x = torch.zeros(2, 9, 9, 9)
    with pytest.raises(InputError, match=r"predictor must map .* \(B, 5, "):
        sliding_window_segment(x, net, patch_size=(8, 8, 8), num_classes=5)
    with pytest.raises(InputError, match="channel-first"):
        sliding_window_segment(x[0], net, patch_size=(8, 8, 8), num_classes=3)
    with pytest.raises(InputError, match="overlap"):
        sliding_window_logits(x, net, patch_size=(8, 8, 8), overlap=1.0)
    with pytest.raises(InputError, match="mirror_axes"):
        sliding_window_logits(x, net, patch_size=(8, 8, 8), mirror_axes=(3,))
