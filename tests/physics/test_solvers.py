"""Generic solvers: CG, FISTA, ADMM, proximal maps and sparsifying transforms."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from medimg.errors import InputError
from medimg.physics.base import LinearOperator
from medimg.physics.solvers import (
    FiniteDifference,
    Wavelet2D,
    admm,
    conjugate_gradient,
    fista,
    group_soft_threshold,
    soft_threshold,
)

C128 = torch.complex128


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and OpenMP spin-waits slow them 20x or more when
    the two cores are shared with another process; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Matrix(LinearOperator):
    """``A x`` for a batch of vectors ``(B, n)`` and one matrix ``(m, n)``."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("matrix", matrix)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.matrix.T

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y @ self.matrix.conj()


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=C128)


def _hpd(n: int, seed: int) -> torch.Tensor:
    a = _randn(n, n, seed=seed)
    return a @ a.conj().T + n * torch.eye(n, dtype=C128)


def test_cg_solves_batched_complex_systems_with_per_item_steps() -> None:
    m = _hpd(12, 0)
    rhs = _randn(3, 12, seed=1)
    rhs[2] *= 1e4  # very different scales in one batch
    x = conjugate_gradient(lambda v: v @ m.T, rhs, max_iter=40, tol=1e-12)
    expected = torch.linalg.solve(m, rhs.T).T
    assert torch.allclose(x, expected, rtol=1e-8, atol=1e-8)


def test_cg_early_stop_and_warm_start() -> None:
    m = _hpd(20, 2)
    rhs = _randn(2, 20, seed=3)
    calls = []

    def normal(v: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return v @ m.T

    exact = torch.linalg.solve(m, rhs.T).T
    conjugate_gradient(normal, rhs, max_iter=200, tol=1e-3)
    assert len(calls) < 20  # stopped long before max_iter
    calls.clear()
    x = conjugate_gradient(normal, rhs, x0=exact, max_iter=5, tol=1e-10)
    assert len(calls) == 1 and torch.allclose(x, exact)  # residual already ~0: no step taken


def test_cg_is_differentiable() -> None:
    m = _hpd(6, 4)
    rhs = _randn(1, 6, seed=5).requires_grad_(True)
    w = _randn(1, 6, seed=6)
    x = conjugate_gradient(lambda v: v @ m.T, rhs, max_iter=30)
    (x.conj() * w).sum().real.backward()
    # d Re<x, w> / d rhs = M^{-1} w for Hermitian M (conjugate Wirtinger convention in torch).
    expected = torch.linalg.solve(m, w.T).T
    assert torch.allclose(rhs.grad, expected, atol=1e-8)


def test_soft_thresholds_shrink_magnitude_and_keep_phase() -> None:
    x = torch.tensor([3 * torch.exp(torch.tensor(0.7j)), 0.5 + 0j, -2.0 + 0j])
    out = soft_threshold(x, 1.0)
    assert torch.allclose(out.abs(), torch.tensor([2.0, 0.0, 1.0]), atol=1e-6)
    assert torch.isclose(out[0].angle(), x[0].angle())
    g = torch.tensor([[[3.0]], [[4.0]]])[None]  # one group of norm 5 along dim 1
    assert torch.allclose(group_soft_threshold(g, 2.5, dim=1), g / 2)
    assert torch.equal(group_soft_threshold(g, 6.0, dim=1), torch.zeros_like(g))


def test_fista_solves_lasso_with_unitary_operator() -> None:
    # With A unitary, argmin |Ax - y|^2/2 + lam |x|_1 = soft(A^H y, lam) exactly.
    q, _ = torch.linalg.qr(_randn(16, 16, seed=7))
    op = Matrix(q)
    y = _randn(2, 16, seed=8)
    lam = 0.4
    x = fista(op, y, lambda v, t: soft_threshold(v, t * lam), max_iter=100)
    assert torch.allclose(x, soft_threshold(op.A_adjoint(y), lam), atol=1e-8)


def test_admm_and_fista_agree_on_a_general_lasso() -> None:
    op = Matrix(_randn(30, 20, seed=9) / 5)
    y = _randn(1, 30, seed=10)
    lam = 0.3
    ref = fista(op, y, lambda v, t: soft_threshold(v, t * lam), max_iter=3000)
    identity = Matrix(torch.eye(20, dtype=C128))
    x = admm(op, y, identity, lambda v, t: soft_threshold(v, t * lam), rho=1.0, max_iter=300)
    assert torch.allclose(x, ref, atol=1e-4)
    assert (ref.abs() < 1e-10).any(), "the L1 term should zero some coefficients"


def test_wavelet_is_orthonormal_and_sparsifies_piecewise_constant_images() -> None:
    wav = Wavelet2D("haar", levels=3)
    x = torch.zeros(1, 32, 40, dtype=C128)
    x[:, 8:24, 16:32] = 1.0
    c = wav.A(x)
    assert torch.allclose(c.norm(), x.norm())
    assert torch.allclose(wav.A_adjoint(c), x)
    assert (c.abs() > 1e-9).float().mean() < 0.1  # few non-zero coefficients
    mask = wav.detail_mask((32, 40))
    assert mask[:4, :5].sum() == 0 and mask.sum() == 32 * 40 - 20


def test_db4_wavelet_kills_linear_ramps_in_details() -> None:
    # db4 has 4 vanishing moments: away from the periodic wrap, ramps leave no detail.
    ramp = torch.arange(64, dtype=torch.float64).repeat(64, 1)[None]
    c = Wavelet2D("db4", levels=1).A(ramp)
    assert c[0, :, 32:40].abs().max() < 1e-9  # first columns of the horizontal details


def test_wavelet_rejects_indivisible_shapes_and_unknown_names() -> None:
    with pytest.raises(InputError, match="divisible"):
        Wavelet2D("db2", levels=3).A(torch.zeros(1, 37, 31))
    with pytest.raises(InputError, match="wavelet"):
        Wavelet2D("sym9")


def test_finite_difference_of_constant_is_zero_and_tv_of_step() -> None:
    d = FiniteDifference(2)
    assert torch.equal(d.A(torch.ones(2, 7, 5)), torch.zeros(2, 2, 7, 5))
    step = torch.zeros(1, 6, 6)
    step[:, :, 3:] = 1
    grad = d.A(step)
    assert grad.shape == (1, 2, 6, 6)
    assert grad[:, 1].abs().sum() == 12  # two jumps per row (one is the periodic wrap)
    assert grad[:, 0].abs().sum() == 0
