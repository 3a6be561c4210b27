"""Coherent plane-wave compounding on a small speckle phantom: more angles narrow a point's
lateral FWHM and raise an anechoic cyst's gCNR."""

from __future__ import annotations

import math

import numpy as np

from medimg.metrics.ultrasound import cyst_masks, gcnr, point_fwhm
from medimg.physics.ultrasound_das import beamform, to_baseband
from medimg.tasks.reconstruct.us.data import plane_waves, simulate, speckle_phantom


def test_more_angles_narrow_points_and_raise_cyst_gcnr() -> None:
    cyst, point = (-1.5e-3, 14e-3, 1.5e-3, -math.inf), (2.5e-3, 14e-3)
    ph = speckle_phantom((-4.5e-3, 4.5e-3, 11e-3, 17e-3), 25.0, [cyst], [point], seed=4)
    data = simulate(ph, plane_waves(11), snr_db=None, attenuation=0.0)
    x, z = np.arange(-4e-3, 4e-3, 0.1e-3), np.arange(11.5e-3, 16.5e-3, 0.05e-3)
    iq = to_baseband(data)
    inside, outside = cyst_masks(x, z, cyst[:2], cyst[2])
    res = {}
    for n, idx in ((1, [5]), (11, list(range(11)))):
        env = np.abs(beamform(data, x, z, transmits=idx, iq=iq))
        res[n] = (point_fwhm(env, x, z, point)[0], gcnr(env[inside], env[outside]))
    assert res[11][0] < 0.75 * res[1][0]
    assert res[11][1] > res[1][1] + 0.05
