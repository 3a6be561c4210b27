"""Property tests shared by every linear operator (one registry), plus MRI-specific checks."""

from __future__ import annotations

import doctest
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch

import medimg.physics.coils
import medimg.physics.masks
import medimg.physics.mri
import medimg.physics.noise
import medimg.physics.solvers
from medimg.errors import InputError
from medimg.physics.base import LinearOperator
from medimg.physics.coils import birdcage_maps
from medimg.physics.masks import equispaced_mask, poisson_disc_mask
from medimg.physics.mri import (
    MultiCoilMRI,
    SingleCoilMRI,
    fft2c,
    fft3c,
    ifft2c,
    ifft3c,
    rss,
)
from medimg.physics.noise import ComplexGaussianNoise
from medimg.physics.solvers import FiniteDifference, Wavelet2D

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
C128 = torch.complex128


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and OpenMP spin-waits slow them 20x or more when
    the two cores are shared with another process; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rand(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=C128)


def _line_mask(h: int, w: int) -> torch.Tensor:
    return equispaced_mask((h, w), 3, 0.2)[0]  # fastMRI-style (W,)


# name -> factory returning (operator, image shape, norm bound). Odd sizes on purpose.
Factory = Callable[[], tuple[LinearOperator, tuple[int, ...], float]]
OPERATORS: dict[str, Factory] = {
    "single_2d": lambda: (SingleCoilMRI(equispaced_mask((37, 31), 3, 0.2)), (2, 37, 31), 1.0),
    "single_2d_line_mask": lambda: (SingleCoilMRI(_line_mask(37, 31)), (2, 37, 31), 1.0),
    "single_2d_per_sample_mask": lambda: (
        SingleCoilMRI(torch.stack([poisson_disc_mask((37, 31), 3, seed=s) for s in (0, 1)])),
        (2, 37, 31),
        1.0,
    ),
    "single_3d": lambda: (
        SingleCoilMRI(poisson_disc_mask((13, 11), 2)[None], ndim=3),
        (2, 9, 13, 11),
        1.0,
    ),
    "multi_2d": lambda: (
        MultiCoilMRI(birdcage_maps(5, (37, 31)), _line_mask(37, 31)),
        (2, 37, 31),
        1.0,
    ),
    "multi_2d_per_sample_maps": lambda: (
        MultiCoilMRI(_rand((2, 3, 37, 31), 5), poisson_disc_mask((37, 31), 4)),
        (2, 37, 31),
        float("inf"),
    ),
    "multi_2d_even_per_sample_mask": lambda: (
        MultiCoilMRI(
            birdcage_maps(4, (32, 30)),
            torch.stack([poisson_disc_mask((32, 30), 3, seed=s) for s in (0, 1)]),
        ),
        (2, 32, 30),
        1.0,
    ),
    "multi_3d": lambda: (
        MultiCoilMRI(birdcage_maps(4, (9, 13, 11), rings=2), torch.ones(13, 11), ndim=3),
        (2, 9, 13, 11),
        1.0,
    ),
    "finite_difference": lambda: (FiniteDifference(2), (2, 37, 31), 8**0.5),
    "wavelet_db4": lambda: (Wavelet2D("db4", 2), (2, 36, 28), 1.0),
    "wavelet_haar": lambda: (Wavelet2D("haar", 3), (1, 40, 24), 1.0),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(OPERATORS))
def test_adjointness(name: str, device: str) -> None:
    op, shape, _ = OPERATORS[name]()
    op = op.to(device)
    error = op.adjointness_error(_rand(shape).to(device))
    assert error < 1e-5, f"{name}: <Ax, y> != <x, A^H y> (relative error {error:.2e})"


@pytest.mark.parametrize("name", list(OPERATORS))
def test_normal_is_adjoint_of_forward(name: str) -> None:
    op, shape, _ = OPERATORS[name]()
    x = _rand(shape, seed=3)
    assert torch.allclose(op.normal(x), op.A_adjoint(op.A(x)))


@pytest.mark.parametrize("name", list(OPERATORS))
def test_operator_norm_bound(name: str) -> None:
    op, shape, bound = OPERATORS[name]()
    norm = op.operator_norm(_rand(shape), iterations=60)
    assert 0 < norm <= bound * (1 + 1e-6)


@pytest.mark.parametrize("name", list(OPERATORS))
def test_output_keeps_float32_precision(name: str) -> None:
    op, shape, _ = OPERATORS[name]()
    x = _rand(shape).to(torch.complex64)
    assert op.A(x).dtype == torch.complex64
    assert op.A_adjoint(op.A(x)).dtype == torch.complex64


def test_unitary_operators_preserve_norm() -> None:
    x = _rand((2, 37, 31))
    assert torch.allclose(fft2c(x).norm(), x.norm())
    assert torch.allclose(ifft2c(fft2c(x)), x)
    op, shape, _ = OPERATORS["wavelet_db4"]()
    w = _rand(shape)
    assert torch.allclose(op.A(w).norm(), w.norm())


@pytest.mark.parametrize("shape", [(37, 31), (32, 30)])
def test_fft2c_is_centered_and_matches_numpy(shape: tuple[int, int]) -> None:
    x = _rand((1, *shape))
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"))
    assert np.allclose(fft2c(x).numpy(), ref)
    # A constant image puts all its energy at the centre index (n // 2) of k-space.
    k = fft2c(torch.ones(1, *shape, dtype=C128))
    assert k.abs().argmax().item() == (shape[0] // 2) * shape[1] + shape[1] // 2
    assert torch.isclose(k.abs().max(), torch.tensor(float(np.sqrt(shape[0] * shape[1]))).double())


def test_fft3c_roundtrip_and_centre() -> None:
    x = _rand((2, 5, 7, 6))
    assert torch.allclose(ifft3c(fft3c(x)), x)
    k = fft3c(torch.ones(1, 5, 7, 6, dtype=C128))[0]
    assert k.abs().argmax().item() == np.ravel_multi_index((2, 3, 3), (5, 7, 6))


def test_rss_combines_coils() -> None:
    x = torch.tensor([[3.0 + 0j, 4.0j]]).reshape(1, 2, 1, 1)
    assert rss(x).item() == pytest.approx(5.0)
    assert rss(torch.tensor([[3.0], [4.0]]), 0).item() == pytest.approx(5.0)


@pytest.mark.parametrize("shape", [(12, 10), (14, 10), (11, 10), (9, 7)])
def test_multicoil_matches_definition_on_both_fft_paths(shape: tuple[int, int]) -> None:
    maps = birdcage_maps(3, shape).to(C128)
    mask = equispaced_mask(shape, 2, 0.2).double()
    x = _rand((1, *shape))
    op = MultiCoilMRI(maps, mask)
    assert op.modulated == (shape[0] % 2 == 0 and shape[1] % 2 == 0)
    y = op.A(x)
    for c in range(3):
        assert torch.allclose(y[0, c], mask * fft2c(maps[c] * x[0]))
    ref = sum(maps[c].conj() * ifft2c(mask * y[0, c]) for c in range(3))
    assert torch.allclose(op.A_adjoint(y)[0], ref)
    assert torch.allclose(op.normal(x), op.A_adjoint(op.A(x)))


def test_real_image_is_promoted_and_gradients_flow() -> None:
    op = MultiCoilMRI(birdcage_maps(4, (16, 12)), equispaced_mask((16, 12), 2, 0.25))
    x = torch.rand(2, 16, 12, requires_grad=True)
    loss = op.A_adjoint(op.A(x)).abs().sum()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_noise_is_added_only_where_sampled() -> None:
    mask = equispaced_mask((16, 20), 4, 0.1)
    op = MultiCoilMRI(birdcage_maps(3, (16, 20)), mask, noise=ComplexGaussianNoise(sigma=0.1))
    y = op(torch.zeros(2, 16, 20))
    assert (y[..., mask == 0] == 0).all()
    assert (y[..., mask == 1] != 0).all()
    x = torch.rand(2, 16, 20)
    for shape in ((16, 20), (15, 20)):  # both FFT paths: even sizes fold the shifts away
        mask = equispaced_mask(shape, 4, 0.1)
        silent = MultiCoilMRI(birdcage_maps(3, shape), mask, noise=ComplexGaussianNoise(sigma=0))
        x = torch.rand(2, *shape)
        assert torch.allclose(silent(x), silent.A(x))


def _one_line_error(fn: Callable[[], object], *words: str) -> None:
    with pytest.raises(InputError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_bad_inputs_raise_one_line_errors() -> None:
    maps = birdcage_maps(4, (16, 12))
    op = MultiCoilMRI(maps, equispaced_mask((16, 12), 2, 0.25))
    y = op.A(torch.rand(1, 16, 12))
    _one_line_error(lambda: op.A_adjoint(y.real), "complex")
    nan = y.clone()
    nan[0, 0, 0, 0] = float("nan")
    _one_line_error(lambda: op.A_adjoint(nan), "NaN")
    _one_line_error(lambda: MultiCoilMRI(maps, torch.ones(16, 11)), "mask shape", "match")
    _one_line_error(lambda: SingleCoilMRI(torch.ones(16, 11)).A_adjoint(y[:, 0]), "mask shape")
    _one_line_error(lambda: SingleCoilMRI(torch.ones(5)).A(torch.rand(1, 16, 12)), "mask shape")
    _one_line_error(lambda: op.A(torch.rand(1, 16, 10)), "coil_maps")
    _one_line_error(lambda: op.A_adjoint(y[:, :3]), "(B, 4")
    _one_line_error(lambda: MultiCoilMRI(maps[0, 0], torch.ones(16, 12)), "coil_maps")
    _one_line_error(lambda: SingleCoilMRI(torch.ones(4, 4), ndim=4), "ndim")


@pytest.mark.parametrize(
    "module",
    [
        medimg.physics.mri,
        medimg.physics.masks,
        medimg.physics.coils,
        medimg.physics.noise,
        medimg.physics.solvers,
    ],
)
def test_docstring_examples_run(module: object) -> None:
    flags = doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0
