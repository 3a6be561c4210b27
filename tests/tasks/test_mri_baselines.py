"""Classical MRI baselines on phantoms (4x equispaced, 8 coils) and fastMRI-style metrics."""

from __future__ import annotations

import doctest
from collections.abc import Iterator

import numpy as np
import pytest
import torch

import medimg.tasks.reconstruct.mri.baselines as baselines
from medimg.errors import InputError
from medimg.metrics.image_quality import (
    nmse,
    nmse_slicewise,
    psnr,
    psnr_slicewise,
    ssim,
    ssim_slicewise,
    volume_max,
)
from medimg.phantoms.mri import brain_phantom, knee_phantom
from medimg.physics.coils import birdcage_maps
from medimg.physics.masks import equispaced_mask
from medimg.physics.mri import MultiCoilMRI, SingleCoilMRI
from medimg.physics.noise import ComplexGaussianNoise
from medimg.tasks.reconstruct.mri.baselines import cg_sense, cs_tv, cs_wavelet, zero_filled

SHAPE = (80, 80)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and OpenMP spin-waits slow them 20x or more when
    the two cores are shared with another process; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def problem() -> dict[str, torch.Tensor]:
    """A brain and a knee slice in one batch, 8 coils, 4x equispaced, 30 dB k-space SNR."""
    x = torch.stack(
        [brain_phantom(SHAPE, "t1", seed=1).image, knee_phantom(SHAPE, "pd", seed=1).image]
    )
    maps = birdcage_maps(8, SHAPE)
    mask = equispaced_mask(SHAPE, 4, center_fraction=0.08, seed=0)
    op = MultiCoilMRI(maps, mask, noise=ComplexGaussianNoise(snr_db=30.0, seed=0))
    return {"x": x, "maps": maps, "mask": mask, "kspace": op(x)}


def _psnr(gt: torch.Tensor, img: torch.Tensor) -> np.ndarray:
    g, p = gt.abs().numpy(), img.abs().numpy()
    return np.array([psnr(a, b, data_range=a.max()) for a, b in zip(g, p)])


@pytest.fixture(scope="module")
def scores(problem) -> dict[str, np.ndarray]:
    y, mask, maps = problem["kspace"], problem["mask"], problem["maps"]
    recons = {
        "zero_filled": zero_filled(y),
        "cg_sense": cg_sense(y, mask, maps),
        "cs_wavelet": cs_wavelet(y, mask, maps),
        "cs_tv": cs_tv(y, mask, maps),
    }
    for name, img in recons.items():
        assert img.shape == (2, *SHAPE), name
        assert img.is_complex() == (name != "zero_filled"), name
    return {name: _psnr(problem["x"], img) for name, img in recons.items()}


def test_cg_sense_beats_zero_filled(scores) -> None:
    assert (scores["cg_sense"] > scores["zero_filled"] + 4).all()


@pytest.mark.parametrize("method", ["cs_wavelet", "cs_tv"])
def test_compressed_sensing_beats_zero_filled_and_sense(scores, method) -> None:
    assert (scores[method] > scores["zero_filled"] + 5).all()
    assert (scores[method] > scores["cg_sense"] + 1).all()


def test_cg_sense_recovers_noiseless_data_exactly() -> None:
    maps = birdcage_maps(8, (32, 28))
    mask = equispaced_mask((32, 28), 2, center_fraction=0.25)
    x = brain_phantom((32, 28), seed=0).image[None]
    y = MultiCoilMRI(maps, mask).A(x)
    assert (cg_sense(y, mask, maps, max_iter=100, tol=1e-7) - x).abs().max() < 1e-3


def test_single_coil_baselines() -> None:
    x = knee_phantom((64, 64), "pd", seed=2).image[None]
    mask = equispaced_mask((64, 64), 2, center_fraction=0.16)
    y = SingleCoilMRI(mask).A(x)
    zf = _psnr(x, zero_filled(y))
    assert (_psnr(x, cs_tv(y, mask, lam=3e-3)) > zf + 1).all()
    # A^H A is a projection here, so CG stops at A^H y after one step.
    assert torch.allclose(cg_sense(y, mask, max_iter=5), SingleCoilMRI(mask).A_adjoint(y))


def test_bad_inputs_raise_one_line_errors(problem) -> None:
    y, mask, maps = problem["kspace"], problem["mask"], problem["maps"]
    cases = [
        (lambda: cg_sense(y, torch.ones(SHAPE[0], SHAPE[1] - 1), maps), "mask shape"),
        (lambda: cs_tv(y.abs(), mask, maps), "complex"),
        (lambda: zero_filled(y.real), "complex"),
        (lambda: cs_wavelet(y * float("nan"), mask, maps), "NaN"),
        (lambda: cg_sense(y, equispaced_mask(SHAPE, 4, 0.0), None), "ACS"),
        (lambda: cg_sense(y, mask, maps[:, :-2]), "coil_maps"),
        (lambda: zero_filled(y[0, 0, 0]), "(B, N, H, W)"),
    ]
    for fn, word in cases:
        with pytest.raises(InputError) as info:
            fn()
        assert word in str(info.value) and "\n" not in str(info.value)


def test_slicewise_metrics_agree_with_volume_metrics() -> None:
    rng = np.random.default_rng(0)
    gt = rng.random((3, 24, 20))
    pred = gt + 0.05 * rng.standard_normal(gt.shape)
    drange = volume_max(gt)
    per_slice = ssim_slicewise(gt, pred, data_range=drange)
    assert per_slice.shape == (3,)
    assert ssim(gt, pred, data_range=drange) == pytest.approx(per_slice.mean())
    mse = ((gt - pred) ** 2).mean(axis=(1, 2))
    assert np.allclose(psnr_slicewise(gt, pred, data_range=drange), 10 * np.log10(drange**2 / mse))
    per_max = gt.max(axis=(1, 2))
    assert np.allclose(
        psnr_slicewise(gt, pred, data_range=per_max), 10 * np.log10(per_max**2 / mse)
    )
    expected = ((gt - pred) ** 2).sum(axis=(1, 2)) / (gt**2).sum(axis=(1, 2))
    assert np.allclose(nmse_slicewise(gt, pred), expected)
    assert nmse(gt, pred) == pytest.approx(((gt - pred) ** 2).sum() / (gt**2).sum())
    with pytest.raises(ValueError, match="data_range"):
        psnr_slicewise(gt, pred, data_range=np.array([1.0, 0.0, 1.0]))


def test_docstring_examples_run() -> None:
    result = doctest.testmod(baselines)
    assert result.attempted > 0 and result.failed == 0
