"""The registration network: symmetric velocity = inverse consistency by construction."""

import pytest
import torch

from medimg.errors import InputError
from medimg.tasks.register.models import ModelConfig, build_model
from medimg.tasks.register.transform import compose


def _net(symmetric: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_model(ModelConfig(spatial_dims=2, channels=(8, 16, 16, 16), final_channels=(16,),
                                  symmetric=symmetric))  # fmt: skip
    last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    torch.nn.init.normal_(last.weight, std=0.05)  # a trained-looking, non-zero velocity
    return net.eval()


def _round_trip_error(net) -> tuple[float, float]:
    torch.manual_seed(1)
    f, m = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        forward, backward = net(f, m), net(m, f)
        residual = compose(forward, backward)
    return float(residual.norm(dim=1).mean()), float(forward.norm(dim=1).mean())


def test_symmetric_network_is_inverse_consistent_and_the_plain_one_is_not():
    err, size = _round_trip_error(_net(symmetric=True))
    assert size > 0.2  # a real deformation, not the identity
    assert err < 0.2 * size  # what remains is interpolation of a rough random-init field
    plain_err, plain_size = _round_trip_error(_net(symmetric=False))
    assert plain_err > 0.8 * plain_size


def test_symmetric_needs_a_velocity_field():
    with pytest.raises(InputError, match="symmetric needs diffeomorphic"):
        ModelConfig(symmetric=True, diffeomorphic=False)


def test_working_grid_follows_the_models_voxel_size():
    import numpy as np

    from medimg.io.image import Image
    from medimg.tasks.register.predict import _resample, working_shape

    fine = Image(np.zeros((1, 96, 90, 40), np.float32), np.diag([2.0, 2.0, 4.2, 1.0]))
    assert working_shape(fine, (4.0, 4.0, 4.0)) == (48, 45, 42)  # all axes, once one differs
    assert working_shape(fine, ()) is None  # old models: the native grid
    same = Image(np.zeros((1, 48, 48, 48), np.float32), np.diag([4.1, 3.9, 4.0, 1.0]))
    assert working_shape(same, (4.0, 4.0, 4.0)) is None
    ramp = torch.arange(8.0).reshape(1, 1, 8, 1).expand(1, 1, 8, 4).contiguous()
    down = _resample(ramp, (4, 2))  # area averaging of pairs: 0.5, 2.5, 4.5, 6.5
    assert torch.allclose(down[0, 0, :, 0], torch.tensor([0.5, 2.5, 4.5, 6.5]))
