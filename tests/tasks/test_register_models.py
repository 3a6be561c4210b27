"""The registration network: symmetric velocity = inverse consistency by construction."""

import pytest
import torch

from medimg.errors import InputError
from medimg.tasks.register.models import ModelConfig, build_model
from medimg.tasks.register.transform import compose


def _net(symmetric: bool, downsample: str = "avg") -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_model(ModelConfig(spatial_dims=2, channels=(8, 16, 16, 16), final_channels=(16,),
                                  symmetric=symmetric, downsample=downsample))  # fmt: skip
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


@pytest.mark.parametrize("downsample", ["avg", "shuffle"])
def test_symmetric_network_is_inverse_consistent_and_the_plain_one_is_not(downsample):
    err, size = _round_trip_error(_net(symmetric=True, downsample=downsample))
    assert size > 0.2  # a real deformation, not the identity
    assert err < 0.2 * size  # what remains is interpolation of a rough random-init field
    plain_err, plain_size = _round_trip_error(_net(symmetric=False))
    assert plain_err > 0.8 * plain_size


@pytest.mark.parametrize("shape", [(2, 3, 4, 6), (2, 3, 4, 6, 8)])
def test_space_to_depth_keeps_every_voxel_and_its_block_mean_is_average_pooling(shape):
    from medimg.tasks.register.models import _halve

    x = torch.randn(shape)
    y = _halve(x, "shuffle")
    nd = len(shape) - 2
    assert y.shape == (2, 3 * 2**nd, *[s // 2 for s in shape[2:]])
    assert torch.equal(y.flatten().sort().values, x.flatten().sort().values)
    block_mean = y.reshape(2, 3, 2**nd, *y.shape[2:]).mean(2)
    assert torch.allclose(block_mean, _halve(x, "avg"), atol=1e-6)
    last_offset = 1 * 2**nd + 2**nd - 1  # channel 1, offset (1, 1[, 1]) inside each block
    assert y[(0, last_offset, *[1] * nd)] == x[(0, 1, *[3] * nd)]  # block (1, 1[, 1])


def test_shuffled_network_sees_detail_that_average_pooling_removes():
    f = torch.rand(1, 1, 32, 32)
    checker = torch.ones(2, 2)
    checker[0, 1] = checker[1, 0] = -1
    detail = 0.3 * checker.repeat(16, 16)[None, None]  # zero mean over every 2x2 block
    outputs = {}
    for how in ("avg", "shuffle"):
        net = _net(symmetric=False, downsample=how)
        with torch.no_grad():
            outputs[how] = float((net(f, f) - net(f, f + detail)).abs().max())
    assert outputs["avg"] < 1e-5
    assert outputs["shuffle"] > 1e-3


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


def test_fast_precision_runs_the_unet_in_bf16_and_keeps_the_field_close(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)  # as on such a CPU
    net = _net(symmetric=True, downsample="shuffle")
    seen = []
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    first.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    torch.manual_seed(1)
    f, m = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        full = net(f, m)
        net.fast_precision = True
        fast = net(f, m)
    assert seen == [torch.float32, torch.bfloat16]
    assert fast.dtype == torch.float32 and not torch.equal(fast, full)
    assert float((fast - full).norm() / full.norm()) < 0.05
