"""The realistic MRI training-data generator: every randomised factor varies and stays in range,
the same seed gives the same sample, masks are as asked. Offline: synthetic stand-ins for the
real slices (the real sources are used by bench/ and training, never by tests)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medimg.physics.masks import acceleration_of, acs_region
from medimg.tasks.reconstruct.mri.data import (
    RealisticConfig,
    RealisticSlices,
    realistic_mask,
    remap_contrast,
    smooth_phase,
    strip_scalp,
)

SMALL = RealisticConfig(size_range=(32, 64), coil_range=(4, 12), phantom_prob=0.5)


def _fake_head(seed: int, shape: tuple[int, int] = (60, 50)) -> np.ndarray:
    """A bright scalp ring around a darker brain with a bright core: scalp, WM, GM."""
    y, x = np.mgrid[-1 : 1 : shape[0] * 1j, -1 : 1 : shape[1] * 1j]
    r = np.hypot(y / 0.9, x / 0.8)
    img = np.where(r < 0.95, 1.0, 0.0) * np.where(r > 0.8, 1.0, 0.4)
    img[r < 0.4] = 0.7
    return (img * (1 + 0.05 * np.random.default_rng(seed).random(shape))).astype(np.float32)


@pytest.fixture(scope="module")
def draws():
    real = {"fake": np.stack([_fake_head(s) for s in range(3)])}
    ds = RealisticSlices(SMALL, n=10, real=real)
    return [ds.draw(i, 11) for i in range(40)]


def test_each_factor_varies_over_seeds_and_stays_in_range(draws) -> None:
    infos = [info for _, info in draws]
    shapes = [info["shape"] for info in infos]
    assert all(32 <= s <= 64 and s % 8 == 0 for hw in shapes for s in hw)
    assert (
        len(set(shapes)) > 5 and any(h != w for h, w in shapes) and any(h == w for h, w in shapes)
    )
    assert {i["contrast"] for i in infos} == {"t1", "t2", "pd"}
    assert {i["mask"] for i in infos} == {"equispaced", "random", "poisson"}
    assert {i["array"] for i in infos} == {"surface", "surround"}
    assert {i["stripped"] for i in infos} == {True, False}
    assert {i["source"].split(":")[0] for i in infos} == {"real", "phantom"}
    coils = [i["coils"] for i in infos]
    assert min(coils) >= 4 and max(coils) <= 12 and len(set(coils)) > 4
    snrs = [i["snr_db"] for i in infos]
    assert None in snrs and all(20 <= s <= 40 for s in snrs if s is not None)
    assert np.ptp([s for s in snrs if s is not None]) > 10
    accels, acs = [i["acceleration"] for i in infos], [i["acs"] for i in infos]
    assert min(accels) >= 4 and max(accels) <= 8 and np.ptp(accels) > 2
    assert min(acs) >= 0.04 and max(acs) <= 0.10 and np.ptp(acs) > 0.03


def test_samples_match_their_factors(draws) -> None:
    for sample, info in draws:
        h, w = info["shape"]
        n = info["coils"]
        assert sample["kspace"].shape == (n, h, w) and sample["kspace"].dtype == torch.complex64
        assert sample["maps"].shape == (n, h, w) and sample["target"].shape == (h, w)
        torch.testing.assert_close((sample["maps"].abs() ** 2).sum(0), torch.ones(h, w))
        assert float(sample["target"].max()) == pytest.approx(1.0, abs=1e-4)
        assert acceleration_of(sample["mask"]) == pytest.approx(info["acceleration"], rel=0.3)
        outside = sample["kspace"][:, sample["mask"] == 0]
        assert outside.abs().max() == 0  # unsampled k-space is exactly zero
        # the image carries a phase that is not constant (a smooth synthetic one)
        coil_img = torch.fft.ifft2(sample["kspace"])  # any phase variation survives
        assert coil_img.abs().sum() > 0


def test_the_same_seed_gives_the_same_sample_and_another_seed_another() -> None:
    ds = RealisticSlices(SMALL, n=4)
    a, ia = ds.draw(2, 5)
    b, ib = ds.draw(2, 5)
    c, ic = ds.draw(2, 6)
    assert ia == ib and all(torch.equal(a[k], b[k]) for k in a)
    assert ia != ic or not torch.equal(a["kspace"], c["kspace"])
    torch.manual_seed(3)  # the Dataset interface: a pure function of the global seed
    x = ds[1]
    torch.manual_seed(3)
    assert torch.equal(ds[1]["kspace"], x["kspace"])


@pytest.mark.parametrize("accel,acs", [(4.0, 0.04), (6.0, 0.08), (8.0, 0.10)])
def test_poisson_disc_mask_has_the_asked_acceleration_and_acs(accel, acs) -> None:
    shape = (96, 80)
    mask = realistic_mask("poisson", shape, accel, acs, seed=1)
    assert acceleration_of(mask) == pytest.approx(accel, rel=0.01)
    rows, cols = acs_region(mask)
    assert rows.stop - rows.start >= int(acs * shape[0]) and cols.stop - cols.start >= int(
        acs * shape[1]
    )
    assert not mask.all(dim=0).any()  # 2D: no full column, unlike a line mask


def test_contrast_remaps_and_scalp_stripping_change_the_anatomy() -> None:
    rng = np.random.default_rng(0)
    head = _fake_head(0, (80, 80))
    ring, brain = head[40, 11], head[40, 20]  # scalp ring vs grey matter
    assert ring > brain
    t2 = remap_contrast(head, "t2", rng)
    assert t2[40, 20] > t2[40, 11]  # inverted: the dark tissue is now the brighter one
    pd = remap_contrast(head, "pd", rng)
    assert pd[40, 20] / pd[40, 11] > brain / ring  # flattened contrast
    stripped = strip_scalp(head, rng)
    assert stripped[40, 11] == 0 and stripped[40, 40] > 0
    phi = smooth_phase((64, 48), rng).numpy()
    assert np.ptp(phi) > 0.1 and np.abs(np.diff(phi, axis=0)).max() < 0.5  # smooth, not flat


def test_simulate_realistic_writes_varied_fastmri_files(tmp_path) -> None:
    from medimg.cli import main
    from medimg.datasets.fastmri import read_fastmri

    out = tmp_path / "rs"
    argv = ["recon", "mri", "simulate", str(out), "--realistic", "--volumes", "3", "--quiet"]
    assert main(argv) == 0
    vols = [read_fastmri(f) for f in sorted(out.glob("realistic_*.h5"))]
    assert len(vols) == 3
    shapes = {v.kspace.shape for v in vols}
    assert len(shapes) == 3  # matrix and coil count drawn per file
    for v in vols:
        s, n, h, w = v.kspace.shape
        assert s == 1 and 4 <= n <= 32 and 128 <= min(h, w) and max(h, w) <= 384
        assert v.reconstruction.shape == (1, h, w) and v.mask is not None
        assert v.attrs["medimg_mask"] in ("equispaced", "random", "poisson")
        assert 4 <= float(v.attrs["medimg_acceleration"]) <= 8
    again = tmp_path / "again"
    assert main(["recon", "mri", "simulate", str(again), "--realistic", "--volumes", "1",
                 "--quiet"]) == 0  # fmt: skip
    first = read_fastmri(again / "realistic_200000.h5")
    np.testing.assert_array_equal(first.kspace, vols[0].kspace)  # seeded per sample


def test_training_sources_exclude_the_real_validation_subjects() -> None:
    """bench/bench_mri_real.py validates on the ITK KmeansTest head and nibabel's anatomical
    crop; neither may feed training (whole subjects kept apart)."""
    from medimg.tasks.reconstruct.mri.data import REAL_TRAIN

    names = " ".join(f"{src}/{rel}" for src, rel in REAL_TRAIN).lower()
    assert "kmeans" not in names and "anatomical" not in names and "nibabel" not in names
    assert {src for src, _ in REAL_TRAIN} <= {"mricron-data", "pydeface", "dipy"}  # BSD/MIT
