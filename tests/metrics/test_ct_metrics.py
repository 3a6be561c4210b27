"""CT metrics on hand-computed cases: RMSE, windowed PSNR/SSIM, ROI noise, 10-90 % edge width."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.special import ndtri

from medimg.errors import InputError
from medimg.metrics.ct import (
    WINDOWS,
    Window,
    ct_metrics,
    disk_edge_width,
    edge_width_10_90,
    noise_std,
    rmse_hu,
    windowed_psnr,
    windowed_ssim,
)


def test_rmse_hu_by_hand() -> None:
    gt = np.array([[0.0, 40.0], [-1000.0, 1000.0]])
    pred = gt + np.array([[3.0, -4.0], [0.0, 12.0]])
    assert rmse_hu(gt, pred) == pytest.approx(math.sqrt((9 + 16 + 0 + 144) / 4))
    assert rmse_hu(gt, pred, mask=np.array([[1, 1], [0, 0]], bool)) == pytest.approx(3.5355339)


def test_windowed_psnr_by_hand() -> None:
    gt = np.full((16, 16), 40.0)
    score = windowed_psnr(gt, gt + 10, window="soft_tissue")
    assert score.value == pytest.approx(10 * math.log10(400**2 / 100))
    assert score.window == Window(40.0, 400.0, "soft_tissue")
    assert str(score) == "PSNR 32.04 dB (soft_tissue window C=40 W=400 HU)"
    # values beyond the window are clipped before the error is taken: 1000 HU counts as 240
    assert windowed_psnr(gt, gt + 960, window=(40, 400)).value == pytest.approx(
        10 * math.log10(400**2 / 200**2)
    )
    wide = windowed_psnr(gt, gt + 10, window="lung").value
    assert wide == pytest.approx(10 * math.log10(1500**2 / 100))  # same error, other window
    assert windowed_psnr(gt, gt).value == math.inf


def test_windowed_ssim() -> None:
    rng = np.random.default_rng(0)
    gt = np.where(np.hypot(*np.mgrid[-32:32, -32:32]) < 20, 60.0, -100.0)
    assert windowed_ssim(gt, gt).value == pytest.approx(1.0)
    noisy = windowed_ssim(gt, gt + rng.normal(0, 30, gt.shape), window="soft_tissue")
    assert 0.2 < noisy.value < 0.95 and noisy.metric == "ssim" and "W=400" in str(noisy)
    bone = gt.copy()
    bone[:4] = 1000.0
    assert windowed_ssim(bone, np.where(bone > 500, 1500.0, bone)).value == pytest.approx(1.0)


def test_noise_std_by_hand() -> None:
    img = np.array([[10.0, 20.0, 30.0], [0.0, 0.0, 500.0]])
    roi = np.array([[1, 1, 1], [0, 0, 0]], bool)
    assert noise_std(img, roi) == pytest.approx(10.0)
    assert noise_std(img, roi, reference=img - np.array([[1.0, -1, 1], [0, 0, 0]])) == (
        pytest.approx(np.std([1.0, -1, 1], ddof=1))
    )


def test_edge_width_ramp_and_falling() -> None:
    ramp = [0, 0, 0, 0, 0.25, 0.5, 0.75, 1, 1, 1, 1, 1]  # 10 % at 3.4, 90 % at 6.6 samples
    assert edge_width_10_90(ramp, 2.0) == pytest.approx(6.4)
    assert edge_width_10_90(100 - 50 * np.array(ramp), 2.0) == pytest.approx(6.4)


def test_edge_width_of_gaussian_blur() -> None:
    sigma, dx = 1.5, 0.05  # mm
    x = np.arange(-10, 10, dx)
    esf = 0.5 * (1 + np.vectorize(math.erf)(x / (sigma * math.sqrt(2))))
    expected = 2 * ndtri(0.9) * sigma  # 2.563 sigma
    assert edge_width_10_90(-500 + 1000 * esf, dx) == pytest.approx(expected, rel=1e-3)


def test_disk_edge_width_and_noise_robustness() -> None:
    n, spacing, sigma_px = 96, 0.5, 1.5
    yy, xx = np.mgrid[:n, :n]
    disk = np.where(np.hypot(yy - 47.3, xx - 48.1) < 20, 40.0, -900.0)
    blurred = ndimage.gaussian_filter(disk, sigma_px)
    expected = 2 * ndtri(0.9) * sigma_px * spacing
    assert disk_edge_width(blurred, (47.3, 48.1), 20, spacing) == pytest.approx(expected, rel=0.05)
    noisy = blurred + np.random.default_rng(1).normal(0, 20, blurred.shape)
    assert disk_edge_width(noisy, (47.3, 48.1), 20, spacing) == pytest.approx(expected, rel=0.1)
    sharper = ndimage.gaussian_filter(disk, 0.7)
    assert disk_edge_width(sharper, (47.3, 48.1), 20, spacing) < 0.6 * expected


def test_ct_metrics_row_states_the_window() -> None:
    gt = np.full((16, 16), 40.0)
    row = ct_metrics(gt, gt + 10, window="liver")
    assert row["window"] == "liver window C=60 W=160 HU" and row["rmse_hu"] == pytest.approx(10)
    assert row["psnr_db"] == pytest.approx(10 * math.log10(160**2 / 100))
    assert set(WINDOWS) >= {"soft_tissue", "lung", "bone"}


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: rmse_hu(np.zeros((4, 4)) + 40, np.zeros((4, 5)) + 40), "same shape"),
        (lambda: windowed_psnr(np.linspace(0, 1, 16), np.linspace(0, 1, 16)), "Hounsfield"),
        (lambda: rmse_hu(np.array([40.0, np.nan]), np.array([40.0, 0.0])), "NaN"),
        (lambda: windowed_psnr(np.zeros(4) + 40, np.zeros(4) + 40, window="mri"), "window"),
        (lambda: windowed_ssim(np.zeros((8, 8)), np.zeros((8, 8)), window=(40, 0)), "width"),
        (lambda: edge_width_10_90(np.ones(20), 1.0), "edge"),
        (lambda: noise_std(np.zeros((3, 3)) + 40, np.zeros((3, 3), bool)), "roi"),
    ],
)
def test_bad_input_is_a_one_line_error(call, match: str) -> None:
    with pytest.raises(InputError, match=match) as err:
        call()
    assert "\n" not in str(err.value)
