"""Coil sensitivities: simulated birdcage-like maps and ESPIRiT estimation from ACS data."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from medimg.errors import InputError
from medimg.metrics.image_quality import psnr
from medimg.phantoms.mri import brain_phantom
from medimg.physics.coils import birdcage_maps, espirit_maps
from medimg.physics.masks import equispaced_mask, poisson_disc_mask
from medimg.physics.mri import MultiCoilMRI, rss
from medimg.physics.noise import ComplexGaussianNoise
from medimg.tasks.reconstruct.mri.baselines import cg_sense, zero_filled

SHAPE = (80, 72)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and OpenMP spin-waits slow them 20x or more when
    the two cores are shared with another process; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def acquisition() -> dict[str, torch.Tensor]:
    phantom = brain_phantom(SHAPE, "t1", seed=2)
    maps = birdcage_maps(8, SHAPE)
    mask = equispaced_mask(SHAPE, 4, center_fraction=0.16, seed=0)
    op = MultiCoilMRI(maps, mask, noise=ComplexGaussianNoise(snr_db=30.0, seed=0))
    return {
        "x": phantom.image[None],
        "support": phantom.support,
        "maps": maps,
        "mask": mask,
        "kspace": op(phantom.image[None]),
    }


def _pixel_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|<a(x), b(x)>| / (|a(x)| |b(x)|) over coils: 1 when equal up to a per-pixel phase."""
    return (a * b.conj()).sum(0).abs() / (rss(a, 0) * rss(b, 0)).clamp_min(1e-12)


def test_birdcage_maps_shapes_and_normalisation() -> None:
    maps = birdcage_maps(8, (37, 31))
    assert maps.shape == (8, 37, 31) and maps.dtype == torch.complex64
    assert torch.allclose(rss(maps, 0), torch.ones(37, 31), atol=1e-5)
    raw = birdcage_maps(8, (37, 31), normalize=False)
    assert rss(raw, 0).max() == pytest.approx(1.0, abs=1e-5)
    # Each coil is brightest on its own side of the field of view.
    peaks = {int(m.abs().argmax()) for m in raw}
    assert len(peaks) == 8
    # Coils differ: no two maps are parallel, or SENSE could not separate aliases.
    flat = raw.reshape(8, -1)
    gram = (flat @ flat.conj().T).abs() / (flat.norm(dim=1)[:, None] * flat.norm(dim=1)[None])
    assert (gram - torch.eye(8)).max() < 0.95


def test_birdcage_maps_3d() -> None:
    maps = birdcage_maps(12, (10, 24, 20), rings=2)
    assert maps.shape == (12, 10, 24, 20)
    assert torch.allclose(rss(maps, 0), torch.ones(10, 24, 20), atol=1e-5)
    # The two rings see opposite ends of the volume.
    assert maps[0, 0].abs().mean() > maps[0, -1].abs().mean()
    assert maps[-1, -1].abs().mean() > maps[-1, 0].abs().mean()


def test_espirit_reproduces_true_maps_up_to_pixel_phase(acquisition) -> None:
    est = espirit_maps(acquisition["kspace"], acquisition["mask"])
    assert est.shape == acquisition["kspace"].shape and est.dtype == torch.complex64
    corr = _pixel_correlation(est[0], acquisition["maps"])[acquisition["support"]]
    assert corr.mean() > 0.99
    assert torch.quantile(corr, 0.05) > 0.95
    # ESPIRiT maps are unit-norm over coils inside the object.
    inside = rss(est[0], 0)[acquisition["support"]]
    assert (inside - 1).abs().quantile(0.95) < 1e-3


def test_espirit_maps_are_spatially_smooth_in_phase(acquisition) -> None:
    est = espirit_maps(acquisition["kspace"], acquisition["mask"])[0]
    support = acquisition["support"]
    both = support[:, 1:] & support[:, :-1]
    step = (est[:, :, 1:] * est[:, :, :-1].conj()).sum(0).angle().abs()
    assert step[both].quantile(0.99) < 0.3  # the phase reference leaves no jumps


def test_sense_with_estimated_maps_beats_zero_filled(acquisition) -> None:
    gt = acquisition["x"].abs()[0].numpy()
    zf = zero_filled(acquisition["kspace"])[0].numpy()
    sense = cg_sense(acquisition["kspace"], acquisition["mask"], coil_maps=None, max_iter=15)
    psnr_zf = psnr(gt, zf, data_range=gt.max())
    psnr_sense = psnr(gt, sense.abs()[0].numpy(), data_range=gt.max())
    assert psnr_sense > psnr_zf + 4


def test_espirit_works_with_a_2d_calibration_box() -> None:
    phantom = brain_phantom((64, 64), "pd", seed=4)
    maps = birdcage_maps(6, (64, 64))
    mask = poisson_disc_mask((64, 64), 3, center_fraction=0.25, seed=0)
    y = MultiCoilMRI(maps, mask).A(phantom.image[None])
    est = espirit_maps(y[0])  # mask inferred from the non-zero samples
    assert _pixel_correlation(est, maps)[phantom.support].mean() > 0.99


def test_espirit_without_acs_raises_one_line_error(acquisition) -> None:
    no_acs = equispaced_mask(SHAPE, 4, center_fraction=0.0, seed=0)
    y = MultiCoilMRI(acquisition["maps"], no_acs).A(acquisition["x"])
    with pytest.raises(InputError, match="ACS") as info:
        espirit_maps(y, no_acs)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="ACS"):
        cg_sense(y, no_acs, coil_maps=None)


def test_espirit_rejects_bad_kspace(acquisition) -> None:
    with pytest.raises(InputError, match="complex"):
        espirit_maps(acquisition["kspace"].abs(), acquisition["mask"])
    bad = acquisition["kspace"].clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        espirit_maps(bad, acquisition["mask"])
    with pytest.raises(InputError):
        birdcage_maps(0, (8, 8))
