"""Synthetic registration pairs with a known deformation, labels and landmarks (2D and 3D).

A pair is one subject's anatomy seen twice. The *moving* image is the anatomy as drawn by a
modality phantom; the *fixed* image is the same anatomy resampled through a random smooth
diffeomorphism ``psi`` (a small affine after the exponential of a stationary velocity field), so
the ground-truth displacement needs no inversion::

    fixed(x) = anatomy(psi(x)),   u(x) = psi(x) - x,   moving(x + u(x)) = fixed(x).

``u`` lives on the fixed grid, in RAS+ millimetres, which is exactly what a registration method
returns and what ITK's ``DisplacementFieldTransform`` means (a point of the fixed image to its
point in the moving image). Then each image gets its own intensity changes: independent noise, a
smooth multiplicative bias field and a gamma contrast change on the moving image, so the pair is
never identical up to warping.

Kinds: ``"mr"`` (T1-like brain, labels WM/GM/CSF, from :func:`medimg.phantoms.mri.brain_phantom`,
2D or 3D), ``"mr-ct"`` (multi-modal: the fixed image is T1-like MR, the moving image the *same*
anatomy rendered CT-like in HU from the phantom's partial-volume tissue fractions), and ``"ct"``
(abdominal CT in HU with liver/spleen/kidney, from
:func:`medimg.phantoms.segmentation.ct_organ_case`, 3D only).

The warping here is scipy's ``map_coordinates`` (scaling and squaring for the exponential),
written independently of the torch spatial transformer in ``medimg.tasks.register`` on purpose:
phantoms sit below the tasks, and the tests check one implementation against the other.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.io.inputs import check_allocation
from medimg.io.output import atomic_dir
from medimg.phantoms.segmentation import (
    CT_LABELS,
    MR_LABELS,
    _bias_field,
    _check_counts,
    made_by_medimg,
)

__all__ = [
    "KINDS",
    "RegPair",
    "integrate_velocity",
    "make_pair",
    "random_velocity",
    "warp_array",
    "write_landmarks",
    "write_pair_dataset",
]

KINDS = ("mr", "mr-ct", "ct")
#: CT numbers of the brain phantom's tissues for the CT-like rendering of ``"mr-ct"`` pairs.
_BRAIN_HU = {"background": -1000.0, "fat": -100.0, "bone": 900.0, "csf": 8.0, "gm": 40.0,
             "wm": 28.0, "deep_gm": 36.0, "lesion": 30.0}  # fmt: skip


@dataclass
class RegPair:
    """``fixed``/``moving`` images and label maps on one grid; ``field``: the true displacement
    (channels = RAS+ mm components, ``nd`` of them) on the fixed grid; landmarks ``(N, 3)`` RAS+
    mm with ``moving_landmarks = fixed_landmarks + u(fixed_landmarks)``; ``names``: label ids."""

    fixed: Image
    moving: Image
    fixed_labels: Image
    moving_labels: Image
    field: Image
    fixed_landmarks: np.ndarray
    moving_landmarks: np.ndarray
    names: dict[int, str]


def warp_array(array: np.ndarray, disp_vox: np.ndarray, order: int = 1) -> np.ndarray:
    """``array(x + disp(x))`` for a spatial array and a voxel displacement ``(nd, *shape)``;
    outside the grid the nearest edge value is used."""
    grid = np.indices(array.shape, dtype=np.float64) + disp_vox
    return ndimage.map_coordinates(array, grid, order=order, mode="nearest")


def integrate_velocity(velocity_vox: np.ndarray, steps: int = 7) -> np.ndarray:
    """Displacement of ``exp(v)`` by scaling and squaring: ``u <- u + u(x + u)``, ``steps`` times."""
    disp = velocity_vox / 2.0**steps
    for _ in range(steps):
        disp = disp + np.stack([warp_array(c, disp) for c in disp])
    return disp


def random_velocity(
    shape: tuple[int, ...], rng: np.random.Generator, max_vox: float, control: int = 5
) -> np.ndarray:
    """A smooth random velocity ``(nd, *shape)`` in voxels: Gaussian noise on a ``control``-point
    lattice per axis, cubic-spline upsampled, scaled so its largest vector is ``max_vox``."""
    nd = len(shape)
    coarse = rng.standard_normal((nd, *[control] * nd))
    fine = np.stack([ndimage.zoom(c, [s / control for s in shape], order=3) for c in coarse])
    fine = fine[(slice(None), *[slice(0, s) for s in shape])]
    peak = np.sqrt((fine**2).sum(0)).max()
    return fine * (max_vox / (peak + 1e-12))


def _small_affine(
    nd: int, rng: np.random.Generator, degrees: float, shift_vox: float, scale: float
):
    """A voxel-space affine ``(nd+1, nd+1)`` about the grid centre: rotation, scaling, shift."""
    angles = np.deg2rad(rng.uniform(-degrees, degrees, 1 if nd == 2 else 3))
    rot = np.eye(nd)
    pairs = [(0, 1)] if nd == 2 else [(0, 1), (0, 2), (1, 2)]
    for (i, j), t in zip(pairs, angles):
        r = np.eye(nd)
        r[i, i], r[i, j], r[j, i], r[j, j] = np.cos(t), -np.sin(t), np.sin(t), np.cos(t)
        rot = rot @ r
    m = np.eye(nd + 1)
    m[:nd, :nd] = rot * rng.uniform(1 - scale, 1 + scale)
    m[:nd, nd] = rng.uniform(-shift_vox, shift_vox, nd)
    return m


def _deformation(shape, rng, max_disp_vox, affine_strength) -> np.ndarray:
    """Voxel displacement of ``psi = A o exp(v)`` (``A`` about the grid centre)."""
    nd = len(shape)
    disp = integrate_velocity(random_velocity(shape, rng, max_disp_vox))
    if affine_strength <= 0:
        return disp
    m = _small_affine(nd, rng, 4.0 * affine_strength, 2.0 * affine_strength, 0.03 * affine_strength)
    centre = (np.array(shape, dtype=np.float64) - 1) / 2
    pts = np.indices(shape, dtype=np.float64) + disp - centre.reshape(-1, *[1] * nd)
    mapped = np.einsum("ij,j...->i...", m[:nd, :nd], pts) + m[:nd, nd].reshape(-1, *[1] * nd)
    return mapped + centre.reshape(-1, *[1] * nd) - np.indices(shape, dtype=np.float64)


def _brain_anatomy(shape: tuple[int, ...], seed: int):
    """Clean T1 magnitude, CT-like HU (same anatomy) and WM/GM/CSF labels, axes ``(X, Y[, Z])``."""
    import torch

    from medimg.phantoms.mri import brain_phantom

    with torch.no_grad():
        ph = brain_phantom(tuple(reversed(shape)), contrast="t1", seed=seed, lesions=0)
    order = tuple(range(len(shape) - 1, -1, -1))  # (D, H, W) -> (X, Y, Z)
    t1 = 1000.0 * ph.image.abs().numpy().transpose(order)
    frac = ph.fractions.numpy().transpose((0, *[o + 1 for o in order]))
    hu = sum(frac[i] * _BRAIN_HU[t] for i, t in enumerate(ph.tissues))
    tissues = list(ph.tissues)
    lut = np.zeros(len(tissues), np.uint8)
    lut[tissues.index("wm")] = 1
    lut[tissues.index("gm")] = lut[tissues.index("deep_gm")] = 2
    lut[tissues.index("csf")] = 3
    labels = lut[ph.labels.numpy().transpose(order)]
    return t1.astype(np.float32), np.asarray(hu, np.float32), labels, dict(MR_LABELS)


def _ct_anatomy(shape: tuple[int, ...], spacing: float, seed: int):
    from medimg.phantoms.segmentation import ct_organ_case

    if len(shape) != 3:
        raise InputError("kind 'ct' pairs are 3D only; use kind 'mr' or 'mr-ct' for 2D")
    case = ct_organ_case(seed, shape=shape, spacing=(spacing,) * 3, noise_hu=0.0)
    return case.image.array[0], case.labels.array[0], case.image.affine


def _landmarks(labels: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` voxel positions inside the foreground, away from the grid edge."""
    inner = ndimage.binary_erosion(labels > 0, iterations=2)
    idx = np.argwhere(inner if inner.any() else labels > 0)
    if len(idx) == 0:
        return np.zeros((0, labels.ndim))
    pick = idx[rng.choice(len(idx), size=min(n, len(idx)), replace=False)]
    return pick + rng.uniform(-0.4, 0.4, pick.shape)


def _world(points_vox: np.ndarray, affine: np.ndarray) -> np.ndarray:
    nd = points_vox.shape[1]
    return points_vox @ affine[:3, :nd].T + affine[:3, 3]


def _check_grid(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A 2D/3D grid of at least 8 voxels per axis that fits in memory (the deformation keeps a
    few float64 fields of ``nd`` components each)."""
    if len(shape) not in (2, 3) or min(shape) < 8:
        raise InputError(f"shape must be 2D or 3D with at least 8 voxels per axis, got {shape}")
    check_allocation(shape, np.float64, what="the pair grid", copies=6 * len(shape) + 6)
    return shape


def make_pair(
    kind: str = "mr",
    seed: int = 0,
    shape: tuple[int, ...] = (64, 64, 64),
    spacing: float = 3.0,
    *,
    max_disp_mm: float = 6.0,
    affine_strength: float = 0.5,
    noise: float = 0.02,
    bias: float = 0.2,
    n_landmarks: int = 20,
) -> RegPair:
    """One synthetic pair (see the module docstring); the same arguments give the same pair.

    ``shape`` is ``(X, Y)`` or ``(X, Y, Z)`` on an isotropic grid of ``spacing`` mm;
    ``max_disp_mm`` bounds the velocity field (the displacement is of that order);
    ``affine_strength`` scales the affine part (1: up to 4 degrees, 2 voxels, 3 % scaling; 0: none);
    ``noise`` is relative to the image's intensity range.

    >>> p = make_pair("mr", seed=1, shape=(40, 36), spacing=4.0)
    >>> p.fixed.spatial_shape, p.field.num_channels, p.fixed_landmarks.shape[1]
    ((40, 36), 2, 3)
    """
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    shape = _check_grid(tuple(int(s) for s in shape))
    if not spacing > 0:
        raise InputError(f"spacing must be > 0 mm, got {spacing}")
    rng = np.random.default_rng([seed, 61])
    nd = len(shape)
    affine = np.diag([spacing] * nd + [1.0] * (4 - nd))
    affine[:nd, 3] = -0.5 * spacing * (np.array(shape) - 1)
    if kind == "ct":
        hu, labels, affine = _ct_anatomy(shape, spacing, seed)
        fixed_clean = moving_clean = hu
        modalities = ("CT", "CT")
    else:
        t1, hu, labels, _ = _brain_anatomy(shape, seed)
        fixed_clean, moving_clean = t1, (hu if kind == "mr-ct" else t1)
        modalities = ("MR", "CT" if kind == "mr-ct" else "MR")
    names = dict(CT_LABELS if kind == "ct" else MR_LABELS)
    disp = _deformation(shape, rng, max_disp_mm / spacing, affine_strength)
    fixed_arr = warp_array(fixed_clean, disp, order=1)
    fixed_lab = warp_array(labels, disp, order=0).astype(np.uint8)

    def degrade(arr: np.ndarray, modality: str, bias_strength: float, gamma: float) -> np.ndarray:
        if modality == "CT":  # HU are absolute: noise only (``noise`` 0.02 -> 20 HU)
            return (arr + 1000.0 * noise * rng.standard_normal(arr.shape)).astype(np.float32)
        top = float(arr.max()) + 1e-6
        out = top * (np.clip(arr, 0, None) / top) ** gamma
        if bias_strength > 0:
            padded = arr.shape + (1,) * (3 - arr.ndim)  # the shared helper is 3D
            out = out * _bias_field(padded, rng, bias_strength).reshape(arr.shape)
        re = out + noise * top * rng.standard_normal(arr.shape)
        im = noise * top * rng.standard_normal(arr.shape)
        return np.hypot(re, im).astype(np.float32)  # Rician magnitude

    fixed_img = degrade(fixed_arr, modalities[0], 0.0, 1.0)
    moving_img = degrade(moving_clean, modalities[1], bias, float(rng.uniform(0.8, 1.25)))
    u_mm = np.einsum("ij,j...->i...", affine[:nd, :nd], disp).astype(np.float32)
    pts = _landmarks(fixed_lab, rng, n_landmarks)
    moved = pts + np.stack([ndimage.map_coordinates(d, pts.T, order=1) for d in disp], 1)
    return RegPair(
        fixed=Image(fixed_img[None], affine, modality=modalities[0]),
        moving=Image(moving_img[None], affine, modality=modalities[1]),
        fixed_labels=Image(fixed_lab[None], affine, modality="SEG", is_label=True),
        moving_labels=Image(labels[None].astype(np.uint8), affine, modality="SEG", is_label=True),
        field=Image(u_mm, affine, modality="OT", meta={"units": "mm", "frame": "RAS"}),
        fixed_landmarks=_world(pts, affine),
        moving_landmarks=_world(moved, affine),
        names=names,
    )


def write_landmarks(points_mm: np.ndarray, path: Path) -> Path:
    """Landmarks as CSV with a header ``x,y,z`` (RAS+ mm, one point per row)."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["x", "y", "z"])
        w.writerows([[f"{v:.4f}" for v in p] for p in points_mm])
    return path


def write_pair_dataset(
    root: str | Path,
    kind: str = "mr",
    *,
    n_train: int = 12,
    n_test: int = 4,
    seed: int = 0,
    overwrite: bool = False,
    **pair_kwargs: object,
) -> Path:
    """Write pairs in a Learn2Reg-style layout under ``root``; returns ``root``.

    ``imagesTr/pair_NNN_0000.nii.gz`` (fixed) and ``_0001`` (moving), the same names under
    ``labelsTr``, ``landmarksTr/pair_NNN_000{0,1}.csv`` (RAS+ mm) and ``fieldsTr/pair_NNN.nii.gz``
    (true displacement, RAS+ mm channels), likewise ``*Ts`` for the held-out pairs;
    ``dataset.json`` lists them as ``training_paired_images`` / ``registration_test`` entries
    (``fixed``, ``moving``, plus medimg's ``fixed_label``, ``moving_label``, ``fixed_landmarks``,
    ``moving_landmarks``, ``field``). Pair ``i`` uses subject seed ``seed + i``.

    The set is written into a private folder and swapped in whole; an existing non-empty
    ``root`` is replaced only with ``overwrite`` and only if medimg wrote it.
    """
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    _check_counts(n_train=n_train, n_test=n_test)
    if "shape" in pair_kwargs:
        _check_grid(tuple(int(s) for s in pair_kwargs["shape"]))  # type: ignore[attr-defined]
    with atomic_dir(root, overwrite, owned=made_by_medimg(root)) as tmp:
        _write_pairs(tmp, kind, n_train, n_test, seed, pair_kwargs)
    return Path(root)


def _write_pairs(
    root: Path, kind: str, n_train: int, n_test: int, seed: int, pair_kwargs: dict
) -> None:
    from medimg.io.api import save

    entries: dict[str, list[dict[str, str]]] = {"Tr": [], "Ts": []}
    first: RegPair | None = None
    for i in range(n_train + n_test):
        split = "Tr" if i < n_train else "Ts"
        for sub in ("images", "labels", "landmarks", "fields"):
            (root / f"{sub}{split}").mkdir(parents=True, exist_ok=True)
        pair = make_pair(kind, seed + i, **pair_kwargs)  # type: ignore[arg-type]
        pid = f"pair_{seed + i:03d}"
        rel = {
            "fixed": f"./images{split}/{pid}_0000.nii.gz",
            "moving": f"./images{split}/{pid}_0001.nii.gz",
            "fixed_label": f"./labels{split}/{pid}_0000.nii.gz",
            "moving_label": f"./labels{split}/{pid}_0001.nii.gz",
            "fixed_landmarks": f"./landmarks{split}/{pid}_0000.csv",
            "moving_landmarks": f"./landmarks{split}/{pid}_0001.csv",
            "field": f"./fields{split}/{pid}.nii.gz",
        }
        for key, image in (("fixed", pair.fixed), ("moving", pair.moving),
                           ("fixed_label", pair.fixed_labels), ("moving_label", pair.moving_labels),
                           ("field", pair.field)):  # fmt: skip
            save(image, root / rel[key])
        write_landmarks(pair.fixed_landmarks, root / rel["fixed_landmarks"])
        write_landmarks(pair.moving_landmarks, root / rel["moving_landmarks"])
        entries[split].append(rel)
        first = first or pair
    meta = {
        "name": f"SyntheticReg-{kind}",
        "description": f"medimg synthetic {kind} registration pairs (seed {seed}); fields are "
        "RAS+ mm displacements on the fixed grid: moving(x + u(x)) = fixed(x)",
        "tensorImageSize": {"0": f"{first.fixed.spatial_ndim}D" if first else "3D"},
        "modality": {"0": first.fixed.modality, "1": first.moving.modality} if first else {},
        "labels": {"0": {str(k): v for k, v in (first.names if first else {}).items()}},
        "pairings": "paired",
        "numPairedTraining": n_train,
        "numPairedTest": n_test,
        "training_paired_images": entries["Tr"],
        "registration_test": entries["Ts"],
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
