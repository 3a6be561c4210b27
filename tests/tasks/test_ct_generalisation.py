"""Denoising that generalises: scans of any HU image over pixel size, views, filter and flux;
the seeded training bank; the HU-preserving loss; what the shipped model keeps (uniform HU,
a 3-pixel insert); ``recon ct simulate --from`` on a user's own image."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage

from medimg.cli import main
from medimg.io.api import load, save
from medimg.io.image import Image
from medimg.metrics.ct import windowed_psnr
from medimg.tasks.reconstruct.ct import data as D
from medimg.tasks.reconstruct.ct.losses import local_mean_loss
from medimg.tasks.reconstruct.ct.predict import denoise_slices, load_model
from medimg.tasks.reconstruct.ct.train import _val_bank, preset_config, train_ct


def _cylinder(n: int = 96, insert_hu: float = 0.0) -> np.ndarray:
    """Water cylinder (0 HU) in air with a 40 HU soft-tissue disk and, if asked, a 3-pixel
    wide insert at the centre."""
    r, c = np.mgrid[:n, :n] - n // 2
    d = np.hypot(r, c)
    hu = np.where(d < 0.42 * n, 0.0, -1000.0)
    hu[np.hypot(r, c - 0.2 * n) < 0.08 * n] = 40.0
    if insert_hu:
        hu[d <= 1.5] = insert_hu  # 3 x 3 pixels on the centre pixel
    return hu.astype(np.float32)


def test_scan_image_calibrates_noise_and_filters_order_it() -> None:
    hu = _cylinder()
    o = D.scan_image(hu, 0.8, n_views=120, filter_name="ram-lak", full_noise_hu=50.0,
                     doses=(1.0, 0.25), seed=1)  # fmt: skip
    assert D.noise_hu(o[1.0], o["clean"]) == pytest.approx(50.0, rel=0.2)
    assert D.noise_hu(o[0.25], o["clean"]) == pytest.approx(100.0, rel=0.2)  # ~ 1 / sqrt(dose)
    hann = D.scan_image(hu, 0.8, n_views=120, filter_name="hann", i0=o["i0"], seed=1)
    assert D.noise_hu(hann[1.0], hann["clean"]) < 0.7 * D.noise_hu(o[1.0], o["clean"])
    # the noiseless scan does not depend on the pixel size (HU), only the noise does
    other = D.scan_image(hu, 1.6, n_views=120, filter_name="ram-lak", i0=o["i0"], seed=1)
    assert np.abs(other["clean"] - o["clean"]).max() < 0.1
    assert D.noise_hu(other[1.0], other["clean"]) < D.noise_hu(o[1.0], o["clean"])
    assert abs(float(o["clean"][30:60, 30:40].mean())) < 3  # water stays 0 HU


def test_bank_is_seeded_and_spans_its_ranges() -> None:
    cfg = D.BankConfig(size=48, views_per_side=(0.5,), filters=("ram-lak", "hann"),
                       slices_per_group=1, levels=2, real_fraction=0.0, noise_hu=(10, 150),
                       phantom_pixel_mm=(6.0, 8.0))  # fmt: skip
    a, b = D.build_bank(cfg, cache=False), D.build_bank(cfg, cache=False)
    assert all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)
    assert a["low"].shape == (4, 48, 48) and a["clean"].shape == (2, 48, 48)
    assert set(a["views"]) == {24} and set(a["filter"]) == {0, 3}
    other = D.build_bank(dataclasses.replace(cfg, seed=1), cache=False)
    assert not np.array_equal(a["low"], other["low"])
    ds = D.PatchDataset.from_bank(a, 16, 8)
    np.random.seed(0)  # noqa: NPY002  (the dataset reads the global RNG, as the engine seeds it)
    item = ds[0]
    assert item["input"].shape == item["target"].shape == (1, 16, 16)


def test_local_mean_loss_sees_a_shift_that_noise_hides() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.zeros(4, 1, 48, 48)
    noisy = target + 0.03 * torch.randn(target.shape, generator=g)  # 30 HU of zero-mean noise
    shifted = target + 0.005  # a uniform 5 HU shift
    # pixel MSE ranks the noise 36x worse than the shift; the local-mean term ranks the shift worse
    assert torch.mean(noisy**2) > 30 * torch.mean(shifted**2)
    assert local_mean_loss(shifted, target) > 1.5 * local_mean_loss(noisy, target)
    assert float(local_mean_loss(target, target)) == 0.0


def test_tiny_model_trained_on_a_bank_beats_its_input(tmp_path, monkeypatch) -> None:
    cfg = preset_config("redcnn", "tiny")
    cfg = dataclasses.replace(cfg, data="bank", lambda_mean=10.0, window_weight=10.0,
                              n_val=1, bank=D.BankConfig(size=64, views_per_side=(1.0,),
                                                filters=("ram-lak",), slices_per_group=2,
                                                levels=2, real_fraction=0.0,
                                                noise_hu=(40, 80), phantom_pixel_mm=(5.0, 6.0)))  # fmt: skip
    monkeypatch.setenv("MEDIMG_CACHE", str(tmp_path / "cache"))
    train_ct(cfg, tmp_path / "run")
    net, _ = load_model(tmp_path / "run")
    held = D.build_bank(_val_bank(cfg.bank))  # other anatomies and noise; cached by training
    gains = []
    for low, k in zip(held["low"], held["clean_index"]):
        clean = held["clean"][k].astype(np.float32)
        out = denoise_slices(net, low[None].astype(np.float32))[0]
        gains.append(windowed_psnr(clean, out).value - windowed_psnr(clean, low).value)
    assert min(gains) > 1.0, gains


@pytest.fixture(scope="module")
def shipped():
    return load_model("redcnn")[0]


@pytest.mark.parametrize("name", ["redcnn", "wgan"])
def test_shipped_models_keep_uniform_hu_within_3(name: str) -> None:
    shipped = load_model(name)[0]
    hu = _cylinder(128)
    means = []
    for seed in range(2):
        o = D.scan_image(hu, 0.6, n_views=192, filter_name="ram-lak", full_noise_hu=40,
                         doses=(0.25,), seed=seed)  # fmt: skip
        out = denoise_slices(shipped, o[0.25][None])[0]
        roi = np.hypot(*(np.mgrid[:128, :128] - 63.5)) < 0.3 * 128  # water and soft-tissue disk
        water = roi & (np.abs(o["clean"]) < 5)
        means.append(float((out - o["clean"])[water].mean()))
    assert max(abs(m) for m in means) < 3.0, means


def _insert_contrast_kept(net) -> float:
    """Fraction of a 3 x 3 pixel, 100 HU insert's contrast (against a ring 4-8 pixels out)
    that ``net`` keeps, relative to the noiseless scan; 25 % dose of i0 = 2e6 at 0.6 mm, ramp
    filter (14 HU noise); averaged over 4 noise draws (one is too noisy to read)."""
    dot = _cylinder(128, insert_hu=100.0)
    d = np.hypot(*(np.mgrid[:128, :128] - 64))
    centre, ring = d <= 1.5, (d > 4) & (d < 8)
    kept = []
    for seed in range(4):
        o = D.scan_image(dot, 0.6, n_views=192, filter_name="ram-lak", i0=2e6,
                         doses=(0.25,), seed=seed)  # fmt: skip
        out, ref = denoise_slices(net, o[0.25][None])[0], o["clean"]
        kept.append(
            (out[centre].mean() - out[ring].mean()) / (ref[centre].mean() - ref[ring].mean())
        )
    return float(np.mean(kept))


_INSERT: dict[str, float] = {}


def _insert(shipped) -> float:
    if "kept" not in _INSERT:
        _INSERT["kept"] = _insert_contrast_kept(shipped)
    return _INSERT["kept"]


def test_shipped_model_keeps_most_of_a_3_pixel_100_hu_insert(shipped) -> None:
    # the shipped model keeps ~59 % (the phantom-trained one before it: 27 %); a regression
    # below 55 % fails here
    assert _insert(shipped) >= 0.55


@pytest.mark.xfail(strict=True, reason="target not met: the shipped model keeps ~59 % of a "
                   "3-pixel 100 HU insert's contrast, not 90 % (see the model card)")  # fmt: skip
def test_shipped_model_keeps_90_percent_of_a_3_pixel_100_hu_insert(shipped) -> None:
    assert _insert(shipped) >= 0.9


def test_simulate_from_a_users_image(tmp_path, capsys) -> None:
    hu = np.stack([_cylinder(64), _cylinder(64, 200.0)], axis=-1)  # two axial slices
    src = tmp_path / "mine.nii.gz"
    save(Image(hu[None], np.diag([0.7, 0.7, 2.0, 1.0]), modality="CT"), src)
    out = tmp_path / "sim"
    argv = ["recon", "ct", "simulate", str(out), "--from", str(src), "--slices", "1",
            "--views", "96", "--filter", "ram-lak", "--doses", "0.25", "--noise-hu", "30"]  # fmt: skip
    assert main(argv) == 0
    case = out / "case_00001"
    full, low, truth = (load(case / f"{n}.nii.gz") for n in ("full", "low_025", "phantom"))
    assert full.array.shape == (1, 64, 64, 1) and np.allclose(full.spacing[:2], 0.7)
    assert np.allclose(truth.array[0, ..., 0], hu[..., 1])  # the user's slice itself
    water = ndimage.binary_erosion(np.abs(hu[..., 1]) < 1, iterations=4)  # away from edges
    noise_full = float((full.array[0, ..., 0] - hu[..., 1])[water].std())
    noise_low = float((low.array[0, ..., 0] - hu[..., 1])[water].std())
    assert 1.6 < noise_low / noise_full < 2.4  # quarter dose: twice the noise
    assert (case / "sino_low_025.npy").is_file()
    assert main(["recon", "ct", "evaluate", str(out), "--no-iterative", "--models", "redcnn",
                 "--out", str(tmp_path / "report")]) == 0  # fmt: skip
    assert main([*argv[:3], str(tmp_path / "x"), "--from", str(src), "--slices", "5"]) == 2
    assert "slices must be" in capsys.readouterr().err


def test_mean_restore_undoes_a_uniform_shift_in_eval_mode_only() -> None:
    from medimg.tasks.reconstruct.ct.models import REDCNN

    net = REDCNN(features=4, kernel=3, mean_restore_px=4.0)
    for m in (*net.enc, *net.dec):  # a net that outputs its input shifted by -7 HU
        torch.nn.init.zeros_(m.weight)
        torch.nn.init.zeros_(m.bias)
    torch.nn.init.constant_(net.dec[-1].bias, -0.007)
    x = torch.from_numpy(D.to_net(_cylinder(64)).numpy())[None, None]
    inside = x[0, 0].abs() < 0.05  # water and soft tissue
    net.train()
    assert float((net(x) - x)[0, 0][inside].mean()) == pytest.approx(-0.007, abs=1e-4)
    net.eval()
    with torch.no_grad():
        kept = net(x) - x
    assert float(kept[0, 0][inside].abs().max()) < 1e-4  # the shift is gone, HU kept
    bone = torch.full((1, 1, 64, 64), 1.0)  # outside the soft-tissue window: left as it is
    with torch.no_grad():
        assert float((net(bone) - bone).mean()) == pytest.approx(-0.007, abs=1e-4)
