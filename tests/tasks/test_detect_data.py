"""Detection data: world <-> voxel conversions through resampling, centre-point targets, decode."""

import numpy as np
import pytest

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.tasks.detect.data import make_targets, prepare, to_voxels
from medimg.tasks.detect.infer import InferenceConfig, decode


def _ct(affine):
    hu = np.full((1, 40, 36, 24), -850.0, np.float32)
    hu[0, 10:30, 8:28, 4:20] = 40.0  # a "body" so the crop has something to keep
    hu[0, 21, 17, 11] = 1000.0
    return Image(hu, affine, modality="CT")


@pytest.mark.parametrize("flip", [False, True])
def test_prepare_keeps_world_positions(flip):
    aff = np.diag([1.5, 1.5, 3.0, 1.0])
    aff[:3, 3] = (-30, 20, 100)
    if flip:  # an LPS-like, x- and y-reversed grid
        aff = aff @ np.diag([-1, -1, 1, 1.0])
    img = _ct(aff)
    prep = prepare(img, spacing=2.0)
    assert np.allclose(np.abs(np.diag(prep.affine)[:3]), 2.0)
    world = img.voxel_to_world([21, 17, 11])
    hot = np.unravel_index(np.argmax(prep.x), prep.x.shape)
    got = prep.affine[:3, :3] @ np.asarray(hot) + prep.affine[:3, 3]
    assert np.linalg.norm(got - world) <= np.sqrt(3) * 1.0 + 1e-6  # within half a new voxel
    v = to_voxels(prep, np.r_[world, 6.0][None])
    assert np.linalg.norm(v[0, :3] - hot) <= np.sqrt(3) / 2 + 1e-6 and v[0, 3] == 3.0


def test_prepare_rejects_non_hu():
    img = _ct(np.eye(4))
    with pytest.raises(InputError, match="Hounsfield"):
        prepare(img.with_array(img.array / 4000.0 + 0.5))
    with pytest.raises(InputError, match="one 3D CT"):
        prepare(Image(np.zeros((2, 4, 4, 4), np.float32), np.eye(4)))


def test_targets_decode_back_to_the_centre():
    nod = np.array([[10.3, 12.6, 8.2, 6.0], [25.0, 20.0, 15.0, 2.0]])
    t = make_targets((32, 32, 24), nod)
    assert t["heatmap"][0][10, 13, 8] == 1.0 and t["heatmap"][0][25, 20, 15] == 1.0
    maps = np.concatenate([t["heatmap"], t["size"], t["offset"]])
    from medimg.tasks.detect.data import Prepared

    prep = Prepared(np.zeros((32, 32, 24), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]), 2.0)
    cands = decode(maps, prep, InferenceConfig(min_score=0.5))
    got = sorted((c.center_ras, c.diameter_mm) for c in cands)
    np.testing.assert_allclose(
        [g[0] for g in got], 2 * nod[:, :3][np.argsort(nod[:, 0])], atol=1e-5
    )
    np.testing.assert_allclose(sorted(g[1] for g in got), [4.0, 12.0], rtol=1e-5)
