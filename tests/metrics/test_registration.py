"""Registration metrics on fields whose Jacobian, errors and folding are known in closed form."""

import numpy as np
import pytest

from medimg.errors import InputError
from medimg.metrics.registration import (
    endpoint_error,
    folding_fraction,
    inverse_consistency_error,
    jacobian_determinant,
    label_overlap,
    log_jacobian_std,
    target_registration_error,
)


def _grid(shape):
    return np.indices(shape, dtype=np.float64)


def test_jacobian_identity_translation_and_scaling():
    shape = (9, 8, 7)
    zero = np.zeros((3, *shape))
    assert np.allclose(jacobian_determinant(zero), 1.0)
    shift = np.ones((3, *shape)) * np.array([2.0, -1.0, 0.5]).reshape(3, 1, 1, 1)
    assert np.allclose(jacobian_determinant(shift), 1.0)
    # u = a * x (per axis): det = prod(1 + a_i), in voxel and in mm units alike
    a = np.array([0.1, -0.2, 0.3])
    lin = a.reshape(3, 1, 1, 1) * _grid(shape)
    assert np.allclose(jacobian_determinant(lin), np.prod(1 + a))
    spacing = np.array([2.0, 0.5, 3.0])
    lin_mm = lin * spacing.reshape(3, 1, 1, 1)  # same map, displacements in mm
    assert np.allclose(jacobian_determinant(lin_mm, spacing), np.prod(1 + a))


def test_jacobian_rotated_grid_and_shear():
    rot = np.array([[0.0, -1.0], [1.0, 0.0]]) * 2.0  # rotated, 2 mm pixels
    affine = np.eye(4)
    affine[:2, :2] = rot
    shear = np.zeros((2, 6, 5))
    shear[0] = 0.4 * _grid((6, 5))[1]  # x += 0.4 y: area preserved
    mm = np.einsum("ij,j...->i...", rot, shear)
    assert np.allclose(jacobian_determinant(mm, affine), 1.0)


@pytest.mark.parametrize("nd", [2, 3])
def test_jacobian_of_a_full_linear_map_is_its_determinant(nd):
    """u = (A - I) x with A dense (every off-diagonal term non-zero): det(A) everywhere."""
    a = np.random.default_rng(nd).normal(0, 0.4, (nd, nd)) + np.eye(nd)
    u = np.einsum("ij,j...->i...", a - np.eye(nd), _grid((7,) * nd))
    assert np.allclose(jacobian_determinant(u), np.linalg.det(a))


def test_folding_and_log_jacobian():
    u = np.zeros((2, 10, 10))
    u[0] = -1.5 * _grid((10, 10))[0]  # x -> -0.5 x: orientation flips everywhere
    jac = jacobian_determinant(u)
    assert folding_fraction(jac) == 1.0
    assert folding_fraction(np.ones((4, 4))) == 0.0
    assert log_jacobian_std(np.ones((4, 4))) == 0.0
    assert log_jacobian_std(np.array([[1.0, np.e]])) == pytest.approx(0.5)


def test_endpoint_and_target_registration_error():
    shape = (12, 10, 8)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [-10, 5, 7]
    true = np.zeros((3, *shape), np.float32)
    true[0], true[2] = 4.0, -3.0
    assert endpoint_error(true, true) == 0.0
    assert endpoint_error(np.zeros_like(true), true) == pytest.approx(5.0)
    pf = np.array([[-4.0, 9.0, 10.0], [2.0, 15.0, 16.0]])
    pm = pf + np.array([4.0, 0.0, -3.0])
    assert np.allclose(target_registration_error(pf, pm, true, affine), 0.0, atol=1e-5)
    assert np.allclose(target_registration_error(pf, pm, np.zeros_like(true), affine), 5.0)
    with pytest.raises(InputError, match="landmarks"):
        target_registration_error(pf, pm[:1], true, affine)


def test_inverse_consistency_of_translations():
    fwd = np.zeros((2, 16, 16))
    fwd[0] = 2.0
    assert inverse_consistency_error(fwd, -fwd) == pytest.approx(0.0, abs=1e-9)
    assert inverse_consistency_error(fwd, np.zeros_like(fwd)) == pytest.approx(2.0)


def test_label_overlap_and_bad_fields():
    a = np.zeros((1, 8, 8), np.uint8)
    a[0, 2:6, 2:6] = 1
    scores = label_overlap(a, a, [1], (1.0, 1.0))
    assert scores[1]["dice"] == 1.0 and scores[1]["hd95"] == 0.0
    with pytest.raises(InputError, match="displacement field"):
        jacobian_determinant(np.zeros((3, 4, 4)))
