"""Noise modules: level, SNR, coil correlation, their own seeded generators."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from medimg.errors import InputError
from medimg.physics.noise import ComplexGaussianNoise, GaussianNoise, coil_covariance

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and OpenMP spin-waits slow them 20x or more when
    the two cores are shared with another process; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _signal(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.complex128) * 3.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_empirical_snr_matches_request(snr_db: float, device: str) -> None:
    y = _signal((2, 4, 96, 96)).to(device)
    y[1] *= 10  # each batch item gets its own level
    noisy = ComplexGaussianNoise(snr_db=snr_db, seed=1)(y)
    for b in range(2):
        noise_power = (noisy[b] - y[b]).abs().pow(2).mean()
        measured = 10 * math.log10(float(y[b].abs().pow(2).mean() / noise_power))
        assert measured == pytest.approx(snr_db, abs=0.1)


def test_snr_is_measured_on_acquired_samples_only() -> None:
    y = _signal((1, 2, 64, 64))
    y[..., ::2] = 0  # half of k-space not acquired
    level = ComplexGaussianNoise(snr_db=20.0).noise_level(y)
    expected = math.sqrt(float(y[..., 1::2].abs().pow(2).mean()) / 100)
    assert float(level.flatten()[0]) == pytest.approx(expected, rel=1e-6)


def test_fixed_sigma_gives_total_variance_sigma_squared() -> None:
    noisy = ComplexGaussianNoise(sigma=0.5, seed=0)(
        torch.zeros(4, 8, 64, 64, dtype=torch.complex64)
    )
    assert float(noisy.abs().pow(2).mean()) == pytest.approx(0.25, rel=0.02)
    assert float(noisy.real.var()) == pytest.approx(0.125, rel=0.03)
    assert float(noisy.imag.var()) == pytest.approx(0.125, rel=0.03)
    assert abs(float((noisy.real * noisy.imag).mean())) < 0.003  # circular


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.7])
def test_coil_covariance_matches_requested_correlation(rho: float) -> None:
    n = ComplexGaussianNoise(sigma=1.0, coil_covariance=rho, seed=3)(
        torch.zeros(8, 6, 64, 64, dtype=torch.complex128)
    )
    z = n.movedim(1, 0).reshape(6, -1)
    cov = (z @ z.conj().T) / z.shape[1]
    target = coil_covariance(6, rho)
    assert torch.allclose(cov, target, atol=0.02)


def test_full_covariance_matrix_is_reproduced_up_to_normalisation() -> None:
    a = torch.tensor([[2.0, 0.5 + 0.5j, 0.0], [0.5 - 0.5j, 1.0, 0.2j], [0.0, -0.2j, 0.5]])
    a = a.to(torch.complex128)
    n = ComplexGaussianNoise(sigma=1.0, coil_covariance=a, seed=0)(
        torch.zeros(16, 3, 64, 64, dtype=torch.complex128)
    )
    z = n.movedim(1, 0).reshape(3, -1)
    cov = (z @ z.conj().T) / z.shape[1]
    expected = a * (3 / a.diagonal().real.sum())  # unit mean variance keeps sigma's meaning
    assert torch.allclose(cov, expected, atol=0.02)


def test_own_generator_is_seeded_and_leaves_global_rng_alone() -> None:
    y = torch.zeros(2, 3, 8, 8, dtype=torch.complex64)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = ComplexGaussianNoise(sigma=1.0, seed=7)(y)
    after = torch.rand(1)
    assert torch.equal(before, after)
    assert torch.equal(a, ComplexGaussianNoise(sigma=1.0, seed=7)(y))
    assert not torch.equal(a, ComplexGaussianNoise(sigma=1.0, seed=8)(y))
    module = ComplexGaussianNoise(sigma=1.0, seed=7)
    first, second = module(y), module(y)
    assert not torch.equal(first, second)  # a stream, not a fixed pattern
    module.manual_seed(7)
    assert torch.equal(module(y), first)


def test_real_gaussian_noise() -> None:
    noise = GaussianNoise(sigma=0.2, seed=0)
    out = noise(torch.ones(100_000, dtype=torch.float64))
    assert out.dtype == torch.float64
    assert float(out.std()) == pytest.approx(0.2, rel=0.02)
    assert float(out.mean()) == pytest.approx(1.0, abs=0.005)
    assert "sigma" in dict(noise.named_buffers())


def test_bad_noise_arguments() -> None:
    with pytest.raises(InputError):
        ComplexGaussianNoise()
    with pytest.raises(InputError):
        ComplexGaussianNoise(sigma=1.0, snr_db=10.0)
    with pytest.raises(InputError):
        ComplexGaussianNoise(sigma=-1.0)
    with pytest.raises(InputError):
        ComplexGaussianNoise(sigma=1.0)(torch.zeros(2, 2))
    with pytest.raises(InputError):
        GaussianNoise(0.1)(torch.zeros(2, dtype=torch.complex64))
    with pytest.raises(InputError, match="coil_covariance"):
        ComplexGaussianNoise(sigma=1.0, coil_covariance=torch.eye(3))(
            torch.zeros(1, 4, 2, 2, dtype=torch.complex64)
        )
    with pytest.raises(InputError, match="positive definite"):
        ComplexGaussianNoise(sigma=1.0, coil_covariance=-torch.eye(2))(
            torch.zeros(1, 2, 2, 2, dtype=torch.complex64)
        )
    with pytest.raises(InputError, match="Hermitian"):
        ComplexGaussianNoise(sigma=1.0, coil_covariance=torch.tensor([[1.0, 0.5], [0.0, 1.0]]))(
            torch.zeros(1, 2, 2, 2, dtype=torch.complex64)
        )
    with pytest.raises(InputError):
        coil_covariance(4, 1.0)
