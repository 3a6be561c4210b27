"""Sampling-mask statistics: acceleration, ACS lines, seeding, spacing and density."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from medimg.errors import InputError
from medimg.physics.masks import (
    acceleration_of,
    acs_region,
    equispaced_mask,
    poisson_disc_mask,
    radial_mask,
    random_mask,
)

LINE_MASKS = [random_mask, equispaced_mask]
ALL_MASKS = [random_mask, equispaced_mask, poisson_disc_mask, radial_mask]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and OpenMP spin-waits slow them 20x or more when
    the two cores are shared with another process; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("make", LINE_MASKS)
@pytest.mark.parametrize("shape", [(640, 368), (320, 320), (256, 372)])
@pytest.mark.parametrize("acceleration", [4, 8, 6.5])
def test_line_mask_acceleration_within_2_percent(make, shape, acceleration) -> None:
    mask = make(shape, acceleration, center_fraction=0.04 if acceleration == 8 else 0.08)
    assert mask.shape == shape and mask.dtype == torch.float32
    assert acceleration_of(mask) == pytest.approx(acceleration, rel=0.02)
    assert (mask == mask[:1]).all(), "line masks sample whole phase-encode columns"


@pytest.mark.parametrize("make", [poisson_disc_mask, radial_mask])
@pytest.mark.parametrize("acceleration", [4, 8])
def test_2d_mask_acceleration_within_2_percent(make, acceleration) -> None:
    mask = make((96, 80), acceleration, seed=3)
    assert acceleration_of(mask) == pytest.approx(acceleration, rel=0.02)


@pytest.mark.parametrize("make", LINE_MASKS)
@pytest.mark.parametrize("width,fraction", [(368, 0.08), (320, 0.04), (37, 0.2)])
def test_acs_lines_fully_sampled_and_centred(make, width, fraction) -> None:
    mask = make((20, width), 4, center_fraction=fraction, seed=5)
    num_low = round(width * fraction)
    start = (width - num_low + 1) // 2
    assert (mask[:, start : start + num_low] == 1).all()
    rows, cols = acs_region(mask)
    assert rows == slice(0, 20)
    assert cols.stop - cols.start >= num_low and cols.start <= width // 2 < cols.stop


@pytest.mark.parametrize("make", [poisson_disc_mask, radial_mask])
def test_2d_masks_keep_a_calibration_box(make) -> None:
    mask = make((64, 50), 5, center_fraction=0.16)
    rows, cols = acs_region(mask)
    assert rows.stop - rows.start >= 10 and cols.stop - cols.start >= 8
    assert (mask[rows, cols] == 1).all()


@pytest.mark.parametrize("make", ALL_MASKS)
def test_seeded_determinism(make) -> None:
    a = make((48, 64), 4, seed=11)
    b = make((48, 64), 4, seed=11)
    c = make((48, 64), 4, seed=12)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("shape,acceleration", [((10, 368), 4), ((10, 320), 8), ((10, 201), 5)])
def test_equispaced_lines_have_constant_spacing(shape, acceleration) -> None:
    width = shape[1]
    mask = equispaced_mask(shape, acceleration, center_fraction=0.08, seed=2)[0].numpy() > 0
    num_low = round(width * 0.08)
    start = (width - num_low + 1) // 2
    for side in (np.arange(0, start - 1), np.arange(start + num_low + 1, width)):
        lines = side[mask[side]]
        gaps = np.diff(lines)
        assert gaps.size >= 3
        assert gaps.max() - gaps.min() <= 1, f"gaps {gaps} are not equispaced"
    # Adjusted spacing: wider than R because the ACS block already holds part of the lines.
    assert gaps.mean() > acceleration


def test_random_mask_spreads_lines() -> None:
    lines = random_mask((10, 368), 4, seed=0)[0].numpy() > 0
    assert np.diff(np.flatnonzero(lines)).std() > 1  # not equispaced
    assert lines[:150].sum() > 10 and lines[-150:].sum() > 10  # both halves of k-space


def test_poisson_disc_is_variable_density_with_minimum_distance() -> None:
    mask = poisson_disc_mask((96, 96), 5, center_fraction=0.0, density_slope=2.0, seed=0).numpy()
    ky, kx = np.meshgrid(*(np.arange(96) - 48,) * 2, indexing="ij")
    rho = np.hypot(ky, kx) / 48
    assert mask[rho < 0.3].mean() > 3 * mask[rho > 0.8].mean()
    outer = (mask > 0) & (rho > 0.7)  # r(k) > 1 pixel there: no two points may touch
    assert not (outer[1:] & outer[:-1]).any() and not (outer[:, 1:] & outer[:, :-1]).any()


def test_radial_mask_is_made_of_spokes_through_the_centre() -> None:
    mask = radial_mask((64, 64), 8, seed=0).numpy() > 0
    assert mask[32, 32]
    # Sampling density falls off with radius, like a radial trajectory.
    ky, kx = np.meshgrid(*(np.arange(64) - 32,) * 2, indexing="ij")
    rho = np.hypot(ky, kx)
    assert mask[rho < 8].mean() > 2 * mask[(rho > 20) & (rho < 30)].mean()


def test_acs_region_of_a_mask_without_acs_is_narrow_or_empty() -> None:
    no_acs = equispaced_mask((32, 40), 4, center_fraction=0.0, seed=1)
    _, cols = acs_region(no_acs)
    assert cols.stop - cols.start <= 1
    assert acs_region(torch.zeros(8, 8)) == (slice(4, 4), slice(4, 4))


def test_acs_region_accepts_1d_masks_broadcast_to_kspace() -> None:
    lines = equispaced_mask((16, 40), 4, center_fraction=0.2)[0]
    rows, cols = acs_region(lines, (16, 40))
    assert rows == slice(0, 16) and cols.stop - cols.start >= 8


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shape": (32,), "acceleration": 4},
        {"shape": (32, 32), "acceleration": 0.5},
        {"shape": (32, 32), "acceleration": 4, "center_fraction": 1.5},
        {"shape": (32, 32), "acceleration": 8, "center_fraction": 0.5},
    ],
)
@pytest.mark.parametrize("make", ALL_MASKS)
def test_bad_arguments_raise(make, kwargs) -> None:
    with pytest.raises(InputError):
        make(**kwargs)
