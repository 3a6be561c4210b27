"""Brain- and knee-like MRI phantoms: tissues, contrasts, fine structure, phase, seeding, sizes."""

from __future__ import annotations

import doctest
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from scipy import ndimage

import medimg.phantoms.mri
from medimg.errors import InputError
from medimg.phantoms.mri import TISSUES, MRIPhantom, brain_phantom, knee_phantom


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and OpenMP spin-waits slow them 20x or more when
    the two cores are shared with another process; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _means(p: MRIPhantom) -> dict[str, float]:
    mag, lab = p.magnitude.numpy(), p.labels.numpy()
    return {t: float(mag[lab == i].mean()) for i, t in enumerate(p.tissues) if (lab == i).any()}


def _edges(mask: np.ndarray) -> int:
    return int((mask[1:] != mask[:-1]).sum() + (mask[:, 1:] != mask[:, :-1]).sum())


@pytest.mark.parametrize("make", [brain_phantom, knee_phantom])
@pytest.mark.parametrize("shape", [(37, 31), (64, 64), (12, 20, 18)])
def test_shapes_dtypes_and_partial_volume_fractions(make, shape) -> None:
    p = make(shape, seed=1)
    assert p.image.shape == shape and p.image.dtype == torch.complex64
    assert p.labels.shape == shape and p.labels.dtype == torch.int64
    assert p.fractions.shape == (len(p.tissues), *shape)
    assert torch.allclose(p.fractions.sum(0), torch.ones(shape))
    assert p.magnitude.max() == pytest.approx(1.0)
    assert torch.equal(p.labels, p.fractions.argmax(0))
    mixed = (p.fractions.max(0).values < 0.99).float().mean()
    assert 0.02 < mixed < 0.6  # boundaries are mixed, interiors pure
    assert p.tissues[0] == "background" and set(p.tissues) <= set(TISSUES)


def test_brain_has_all_tissue_classes() -> None:
    p = brain_phantom((128, 128), "t2", seed=0, lesions=4)
    present = {p.tissues[i] for i in torch.unique(p.labels).tolist()}
    assert present == set(p.tissues)


def test_brain_contrasts_follow_relaxation_physics() -> None:
    t1 = _means(brain_phantom((96, 96), "t1", seed=0))
    t2 = _means(brain_phantom((96, 96), "t2", seed=0))
    assert t1["wm"] > t1["gm"] > t1["csf"]  # T1-weighted: short T1 is bright
    assert t2["csf"] > t2["gm"] > t2["wm"]  # T2-weighted: long T2 is bright
    assert t1["fat"] > t1["wm"] and t1["bone"] < 0.1


def test_knee_contrast_and_dark_ligaments() -> None:
    pd = _means(knee_phantom((96, 96), "pd", seed=0))
    t2 = _means(knee_phantom((96, 96), "t2", seed=0))
    assert pd["marrow"] > pd["muscle"] and pd["fat"] > pd["cartilage"]
    assert pd["ligament"] < 0.2 * pd["muscle"]
    assert t2["fluid"] > t2["fat"] > t2["muscle"]


def test_cortex_is_folded_not_an_ellipse() -> None:
    p = brain_phantom((128, 128), "t1", seed=0)
    lab = p.labels.numpy()
    inner = np.isin(lab, [p.tissues.index(t) for t in ("wm", "deep_gm", "lesion")])
    brain = inner | (lab == p.tissues.index("gm"))
    outline = ndimage.binary_fill_holes(ndimage.binary_closing(brain, iterations=6))
    # The grey/white interface is far longer than the brain's smooth outline (gyri, sulci).
    assert _edges(inner) > 1.6 * _edges(outline)
    # Sulci bring CSF inside the brain outline.
    assert (outline & (lab == p.tissues.index("csf"))).sum() > 0.02 * outline.sum()


def test_knee_marrow_has_trabecular_texture() -> None:
    p = knee_phantom((160, 160), "pd", seed=0)
    lab = p.labels.numpy()
    bone = lab == p.tissues.index("bone")
    _, pieces = ndimage.label(bone)
    assert pieces > 50  # many small struts, not three bone outlines
    frac = p.fractions[p.tissues.index("bone")].numpy()
    marrowish = (lab == p.tissues.index("marrow")) | bone
    assert frac[marrowish].std() > 0.15  # struts vary at the pixel scale


def test_background_phase_is_smooth_and_not_constant() -> None:
    p = brain_phantom((96, 96), "pd", seed=5)
    phase = p.image.angle().numpy()
    support = p.support.numpy()
    assert phase[support].std() > 0.1
    step = np.angle(np.exp(1j * (phase[:, 1:] - phase[:, :-1])))
    assert np.abs(step[support[:, 1:] & support[:, :-1]]).max() < 0.3


@pytest.mark.parametrize("make", [brain_phantom, knee_phantom])
def test_seeded_and_deterministic(make) -> None:
    a, b, c = make((48, 40), seed=3), make((48, 40), seed=3), make((48, 40), seed=4)
    assert torch.equal(a.image, b.image) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.image, c.image)


def test_same_anatomy_at_every_matrix_size() -> None:
    coarse = brain_phantom((64, 64), "t1", seed=0, oversample=4).magnitude
    fine = brain_phantom((128, 128), "t1", seed=0, oversample=2).magnitude
    pooled = torch.nn.functional.avg_pool2d(fine[None, None], 2)[0, 0]
    assert np.corrcoef(coarse.flatten(), pooled.flatten())[0, 1] > 0.99


def test_3d_volume_has_anatomy_that_changes_along_depth() -> None:
    p = brain_phantom((16, 48, 40), "t2", seed=0, oversample=1)
    ventricles = p.labels == p.tissues.index("csf")
    centre, top = p.labels[8], p.labels[1]
    assert (centre == p.tissues.index("wm")).sum() > 3 * (top == p.tissues.index("wm")).sum()
    assert not torch.equal(ventricles[6], ventricles[10])


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="contrast"):
        brain_phantom((32, 32), "flair")
    with pytest.raises(InputError, match="shape"):
        knee_phantom((32,))
    with pytest.raises(InputError, match="oversample"):
        knee_phantom((32, 32), oversample=0)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(medimg.phantoms.mri)
    assert result.attempted > 0 and result.failed == 0
