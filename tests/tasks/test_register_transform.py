"""The spatial transformer: identity, known translations, composition, velocity integration,
mm <-> voxel on oblique grids, and the written field reproduced by SimpleITK's resampling."""

import numpy as np
import pytest
import torch

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.phantoms.registration import integrate_velocity, random_velocity, warp_array
from medimg.tasks.register.fields import field_image, load_field, save_field, save_transform
from medimg.tasks.register.transform import (
    affine_field,
    compose,
    integrate,
    residual_field,
    resize_field,
    to_mm,
    to_voxels,
    warp,
)


def _smooth_image(shape, seed=0):
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    return ndimage.gaussian_filter(rng.standard_normal(shape), 2.0).astype(np.float32)


@pytest.mark.parametrize("shape", [(13, 11), (9, 10, 7)])
def test_identity_field_returns_the_image(shape):
    img = torch.from_numpy(_smooth_image(shape))[None, None]
    zero = torch.zeros(1, len(shape), *shape)
    assert torch.allclose(warp(img, zero), img, atol=1e-6)


def test_integer_translation_shifts_voxels():
    img = torch.arange(10 * 12, dtype=torch.float32).reshape(1, 1, 10, 12)
    u = torch.zeros(1, 2, 10, 12)
    u[:, 0], u[:, 1] = 2.0, -1.0  # warped(i, j) = img(i + 2, j - 1)
    out = warp(img, u)
    assert torch.allclose(out[0, 0, :8, 1:], img[0, 0, 2:, :-1], atol=1e-4)


def test_translation_in_mm_on_an_anisotropic_oblique_grid():
    angle = np.deg2rad(30)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                               [0, 0, 1]]) @ np.diag([2.0, 0.5, 3.0])  # fmt: skip
    shift_mm = np.array([1.2, -0.7, 6.0])
    field_mm = np.broadcast_to(shift_mm.reshape(3, 1, 1, 1), (3, 5, 6, 4))
    vox = to_voxels(field_mm, affine)
    expected = np.linalg.inv(affine[:3, :3]) @ shift_mm
    assert np.allclose(vox[0, :, 0, 0, 0].numpy(), expected, atol=1e-5)
    assert np.allclose(to_mm(vox, affine), field_mm, atol=1e-5)


def test_composition_of_translations_and_of_general_fields():
    a = torch.zeros(1, 2, 16, 16)
    b = torch.zeros(1, 2, 16, 16)
    a[:, 0], b[:, 1] = 1.5, -2.0
    c = compose(a, b)
    assert torch.allclose(c[:, 0], torch.full((1, 16, 16), 1.5))
    assert torch.allclose(c[:, 1], torch.full((1, 16, 16), -2.0))
    rng = np.random.default_rng(1)
    f1 = torch.from_numpy(random_velocity((24, 24), rng, 2.0, control=3)[None].astype(np.float32))
    f2 = torch.from_numpy(random_velocity((24, 24), rng, 2.0, control=3)[None].astype(np.float32))
    img = torch.from_numpy(_smooth_image((24, 24)))[None, None]
    two_steps = warp(warp(img, f1), f2)
    one_step = warp(img, compose(f1, f2))
    inner = (..., slice(4, -4), slice(4, -4))
    assert torch.allclose(two_steps[inner], one_step[inner], atol=0.02 * float(img.abs().max()))


def test_residual_field_undoes_composition():
    rng = np.random.default_rng(3)
    first = torch.from_numpy(
        random_velocity((28, 28), rng, 3.0, control=3)[None].astype(np.float32)
    )
    rest = torch.from_numpy(random_velocity((28, 28), rng, 3.0, control=4)[None].astype(np.float32))
    total = compose(first, rest)
    inner = (..., slice(3, -3), slice(3, -3))
    found = residual_field(total, first)
    error = float((found - rest)[inner].abs().max())
    assert error < 0.02
    assert float((total - first - rest)[inner].abs().max()) > 10 * error  # subtraction is wrong
    assert torch.allclose(compose(first, found), total, atol=0.02)


def test_scaling_and_squaring_matches_scipy_and_inverts_with_negated_velocity():
    rng = np.random.default_rng(2)
    v = random_velocity((20, 18, 14), rng, 3.0, control=3)
    ours = integrate(torch.from_numpy(v[None].astype(np.float32)))
    assert np.allclose(ours[0].numpy(), integrate_velocity(v), atol=1e-4)
    const = torch.zeros(1, 3, 8, 8, 8)
    const[:, 1] = 1.25  # a constant velocity integrates to the same translation
    assert torch.allclose(integrate(const), const, atol=1e-5)
    back = integrate(torch.from_numpy(-v[None].astype(np.float32)))
    roundtrip = compose(ours, back)[(..., slice(3, -3), slice(3, -3), slice(3, -3))]
    assert float(roundtrip.norm(dim=1).mean()) < 0.1 * float(ours.norm(dim=1).mean())


def test_torch_warp_matches_scipy_and_affine_field():
    rng = np.random.default_rng(3)
    img = _smooth_image((15, 13, 11))
    u = random_velocity(img.shape, rng, 2.0)
    ours = warp(torch.from_numpy(img)[None, None], torch.from_numpy(u[None].astype(np.float32)))
    assert np.allclose(ours[0, 0].numpy(), warp_array(img, u), atol=1e-4)
    m = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]]])  # pure shift as an affine
    field = affine_field(m, (5, 6))
    assert torch.allclose(field[0, 0], torch.full((5, 6), 2.0))
    assert torch.allclose(field[0, 1], torch.full((5, 6), -1.0))


def test_resize_field_keeps_the_mapping():
    u = torch.ones(1, 2, 8, 8)
    up = resize_field(u, (16, 16))
    assert up.shape == (1, 2, 16, 16) and torch.allclose(up, torch.full_like(up, 2.0))


def test_bad_field_shapes_are_one_line_errors():
    with pytest.raises(InputError, match="same batch layout"):
        warp(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 5, 4))
    with pytest.raises(InputError, match="nd = 2 or 3"):
        warp(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 4, 4))


def test_written_field_reproduces_our_warp_in_simpleitk(tmp_path):
    import SimpleITK as sitk

    rng = np.random.default_rng(4)
    angle = np.deg2rad(15)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)],
                               [0, np.sin(angle), np.cos(angle)]]) @ np.diag([2.0, 1.5, 3.0])  # fmt: skip
    affine[:3, 3] = [-20, 10, 5]
    image = Image(_smooth_image((18, 16, 12))[None] * 100, affine, modality="MR")
    u_vox = integrate(
        torch.from_numpy(random_velocity((18, 16, 12), rng, 2.0)[None].astype(np.float32))
    )
    ours = warp(torch.from_numpy(image.array)[None], u_vox)[0, 0].numpy()
    field = field_image(to_mm(u_vox, affine), image)
    nii = save_field(field, tmp_path / "field.nii.gz")
    h5 = save_transform(field, tmp_path / "transform.h5")
    inner = (slice(3, -3),) * 3
    for tx in (sitk.DisplacementFieldTransform(sitk.ReadImage(str(nii), sitk.sitkVectorFloat64)),
               sitk.ReadTransform(str(h5))):  # fmt: skip
        src = image.to_sitk()
        theirs = Image.from_sitk(sitk.Resample(src, src, tx, sitk.sitkLinear, 0.0)).array[0]
        assert np.abs(theirs - ours)[inner].max() < 1e-3
    back = load_field(nii)
    assert np.allclose(back.array, field.array, atol=1e-5) and np.allclose(back.affine, affine)
    with pytest.raises(Exception, match="already exists"):
        save_field(field, nii)


def test_warp_and_integration_follow_monais_conventions():
    import warnings

    from monai.networks.blocks import DVF2DDF, Warp

    torch.manual_seed(0)
    img, field = torch.rand(2, 3, 12, 9, 7), 3 * torch.randn(2, 3, 12, 9, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mode, padding in (("bilinear", "border"), ("nearest", "zeros")):
            expected = Warp(mode=mode, padding_mode=padding)(img, field)
            assert torch.allclose(warp(img, field, mode, padding), expected, atol=1e-5)
        expected = DVF2DDF(num_steps=7, mode="bilinear", padding_mode="border")(
            field[:, :, :, :, :]
        )
    assert torch.allclose(integrate(field, 7), expected, atol=1e-4)
    with pytest.raises(InputError, match="warp mode/padding"):
        warp(img, field, mode="bicubic")
