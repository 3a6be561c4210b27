"""The label-map generator: seeded, random contrast that is uniform within a label, labels that
stay on their image through deformations, and random-shape label maps with smooth boundaries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medimg.errors import InputError
from medimg.phantoms.synth import (
    Appearance,
    Deformation,
    random_deformation,
    random_shapes,
    synth_sample,
    synthesize_image,
    warp,
)
from medimg.phantoms.synth_ops import gaussian_blur


def _blocks(scale: int = 1) -> torch.Tensor:
    """Four labels in nested boxes (values 0, 3, 7, 12: not consecutive on purpose)."""
    lab = torch.zeros((24 * scale, 20 * scale, 16 * scale), dtype=torch.long)
    for value, (x, y, z) in [(3, (3, 3, 2)), (7, (6, 5, 4)), (12, (9, 8, 6))]:
        lab[x * scale : -x * scale, y * scale : -y * scale, z * scale : -z * scale] = value
    return lab


def _eroded(mask: torch.Tensor) -> torch.Tensor:
    """Voxels whose 3x3x3 neighbourhood lies inside ``mask``."""
    m = mask.float()[None, None]
    return (-torch.nn.functional.max_pool3d(-m, 3, stride=1, padding=1))[0, 0] > 0.5


def _label_means(image: torch.Tensor, labels: torch.Tensor) -> dict[int, float]:
    return {int(v): float(image[labels == v].mean()) for v in labels.unique()}


def test_same_seed_same_sample_and_generator_equals_seed():
    lab = _blocks()
    a, b = synth_sample(lab, seed=5), synth_sample(lab, seed=5)
    assert torch.equal(a.image, b.image) and torch.equal(a.labels, b.labels)
    c = synth_sample(lab, seed=torch.Generator().manual_seed(5))
    assert torch.equal(a.image, c.image)
    assert not torch.equal(a.image, synth_sample(lab, seed=6).image)


def test_plain_contrast_is_constant_within_each_label_and_random_across_seeds():
    lab = _blocks()
    orders = set()
    for seed in range(6):
        img, means = synthesize_image(lab, seed=seed, appearance=Appearance.plain(),
                                      return_means=True)  # fmt: skip
        assert set(means) == {0, 3, 7, 12}
        for v in means:
            vals = img[lab == v]
            assert float(vals.max() - vals.min()) < 1e-5  # one intensity per label
        m = _label_means(img, lab)
        orders.add(tuple(sorted(m, key=m.get)))
        assert img.min() == 0 and abs(float(img.max()) - 1) < 1e-6
    assert len(orders) >= 3  # the contrast (order of label intensities) is randomised


def test_classes_share_intensity():
    lab = _blocks()
    img = synthesize_image(lab, seed=1, appearance=Appearance.plain(), classes={3: 0, 12: 0})
    assert float(img[lab == 3].mean()) == pytest.approx(float(img[lab == 12].mean()), abs=1e-6)
    assert float(img[lab == 3].mean()) != pytest.approx(float(img[lab == 7].mean()), abs=1e-3)


def test_degradations_change_the_image_and_keep_it_in_unit_range():
    lab = _blocks()
    plain = synthesize_image(lab, seed=2, appearance=Appearance.plain())
    full = synthesize_image(lab, seed=2, appearance=Appearance(lowres_prob=1.0))
    assert full.shape == lab.shape and full.dtype == torch.float32
    assert 0 <= float(full.min()) and float(full.max()) <= 1
    inside = full[lab == 7]
    assert float(inside.std()) > 0.01  # texture, bias and noise within a label
    assert not torch.allclose(plain, full)


def test_partial_volume_mixes_intensities_only_at_boundaries():
    lab = _blocks()
    app = Appearance.plain()
    app.partial_volume = (1.0, 1.0)
    img, means = synthesize_image(lab, seed=3, appearance=app, return_means=True)
    lo, hi = min(means.values()), max(means.values())
    levels = torch.tensor([(m - lo) / (hi - lo) for m in means.values()])
    off = (img[..., None] - levels).abs().min(-1).values  # distance to the nearest pure level
    assert off.max() > 0.05  # boundary voxels hold mixtures
    assert float(off[0, 0, 0]) < 0.01  # 3 voxels from any boundary: still the pure level


def test_deformed_labels_stay_on_their_image():
    lab = _blocks(2)
    img = synthesize_image(lab, seed=4, appearance=Appearance.plain())
    field = random_deformation(lab.shape, seed=9,
                               deformation=Deformation(rotate=20, scale=0.2, warp_std=3.0))  # fmt: skip
    assert field.shape == (3, *lab.shape) and float(field.abs().max()) > 1
    wl, wi = warp(lab, field, labels=True), warp(img, field)
    assert wl.dtype == lab.dtype and set(wl.unique().tolist()) <= {0, 3, 7, 12}
    assert not torch.equal(wl, lab)
    before = _label_means(img, lab)
    for v, mean in before.items():  # away from boundaries the warped image keeps each level
        inside = _eroded(wl == v)
        assert inside.sum() > 10
        assert float(wi[inside].min()) == pytest.approx(mean, abs=0.02)
        assert float(wi[inside].max()) == pytest.approx(mean, abs=0.02)


def test_synth_sample_deforms_labels_and_draws_image_on_them():
    lab = _blocks()
    s = synth_sample(lab, seed=11, appearance=Appearance.plain())
    assert s.field is not None and not torch.equal(s.labels, lab)
    m = _label_means(s.image, s.labels)
    drawn = {v: s.means[v] for v in m}
    assert sorted(m, key=m.get) == sorted(drawn, key=drawn.get)


def test_diffeomorphic_warp_does_not_fold():
    field = random_deformation((32, 32, 32), seed=0,
                               deformation=Deformation(warp_std=6.0, integrate_steps=6))  # fmt: skip
    grads = torch.stack([torch.stack(torch.gradient(field[i]), 0) for i in range(3)])
    jac = torch.linalg.det((grads + torch.eye(3)[:, :, None, None, None]).permute(2, 3, 4, 0, 1))
    assert float((jac <= 0).float().mean()) < 0.005


def _edge_fraction(lab: torch.Tensor) -> float:
    """Share of voxels with a face-neighbour of another label."""
    edge = torch.zeros(lab.shape, dtype=torch.bool)
    for axis in range(lab.ndim):
        d = lab.diff(dim=axis) != 0
        pad = [0, 0] * (lab.ndim - 1 - axis) + [0, 1]  # F.pad lists the last axis first
        edge |= torch.nn.functional.pad(d, pad)
    return float(edge.float().mean())


@pytest.mark.parametrize("shape", [(40, 36, 32), (64, 48)])
def test_random_shapes_have_every_label_and_smooth_boundaries(shape):
    n = 12
    lab = random_shapes(shape, n, seed=1, smoothness=(2, 4))
    assert lab.shape == shape and lab.dtype == torch.long
    assert sorted(lab.unique().tolist()) == list(range(n))
    # smooth blobs have few boundary voxels; labels drawn voxel by voxel have nearly all
    assert 0 < _edge_fraction(lab) < 0.3
    assert _edge_fraction(torch.randint(0, n, shape)) > 0.8
    finer = random_shapes(shape, n, seed=1, smoothness=(8, 10))
    assert _edge_fraction(lab) < _edge_fraction(finer)  # the lattice sets the feature size
    assert torch.equal(lab, random_shapes(shape, n, seed=1, smoothness=(2, 4)))
    assert not torch.equal(lab, random_shapes(shape, n, seed=2, smoothness=(2, 4)))


def test_random_shapes_with_more_labels_than_blobs_fit_still_have_all():
    lab = random_shapes((16, 16, 16), 40, seed=0, smoothness=(2, 3))
    assert sorted(lab.unique().tolist()) == list(range(40))


def test_blur_keeps_constants_and_spreads_an_impulse():
    x = torch.zeros(9, 9, 9)
    x[4, 4, 4] = 1
    y = gaussian_blur(x, [1.0, 1.0, 0.0])
    assert float(y.sum()) == pytest.approx(1.0, abs=1e-5) and float(y[4, 4, 4]) < 0.2
    assert torch.equal(y[:, :, 3], torch.zeros(9, 9))  # no blur along the last axis
    assert torch.allclose(gaussian_blur(torch.full((5, 6, 7), 2.0), [2, 2, 2]), torch.tensor(2.0))


@pytest.mark.parametrize("shape", [(11, 9, 7), (3, 12, 2)])
def test_blur_equals_scipy_with_replicated_borders(shape):
    from scipy import ndimage

    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    sigma = [1.3, 0.8, 2.0]
    ref = x.numpy().astype(np.float64)
    for axis, s in enumerate(sigma):
        r = min(int(np.ceil(3 * s)), shape[axis] - 1)
        ref = ndimage.gaussian_filter1d(ref, s, axis=axis, mode="nearest", radius=r)
    assert np.allclose(gaussian_blur(x, sigma).numpy(), ref, atol=1e-5)


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: synthesize_image(torch.rand(4, 4, 4)), "integers"),
        (lambda: synthesize_image(torch.zeros(4, dtype=torch.long)), "2D or 3D"),
        (lambda: synthesize_image(-torch.ones(4, 4, dtype=torch.long)), "negative"),
        (lambda: synthesize_image(torch.zeros(4, 4, dtype=torch.long), seed=1.5), "seed"),
        (lambda: random_shapes((8, 8), 0), "n_labels"),
        (lambda: warp(torch.zeros(4, 4), torch.zeros(2, 5, 5)), "differ"),
    ],
)
def test_bad_arguments_are_input_errors(call, words):
    with pytest.raises(InputError, match=words):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_runs_on_the_gpu_with_a_gpu_generator():
    lab = _blocks().cuda()
    s = synth_sample(lab, seed=torch.Generator(device="cuda").manual_seed(0))
    assert s.image.is_cuda and s.labels.is_cuda
    assert torch.equal(s.image, synth_sample(lab, seed=0).image)


def test_two_dimensional_label_maps_work_alike():
    lab = random_shapes((48, 40), 6, seed=0, smoothness=(2, 4))
    s = synth_sample(lab, seed=1, appearance=Appearance(lowres_prob=1.0, partial_volume=(0.5, 1)))
    assert s.image.shape == (48, 40) and s.field is not None and s.field.shape == (2, 48, 40)
    assert 0 <= float(s.image.min()) and float(s.image.max()) <= 1
    assert set(s.labels.unique().tolist()) <= set(range(6))
