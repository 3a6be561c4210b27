"""Synthetic 3D segmentation sets: CT-like abdominal organs and MR-like brain tissues.

Both are built on the modality phantoms (:func:`medimg.phantoms.ct.body_phantom`,
:func:`medimg.phantoms.mri.brain_phantom`) and made harder than thresholding on purpose:

* **CT-like** (``kind="ct"``): liver, spleen and kidneys in HU (60, 50, 33 HU against 50 HU
  muscle: one intensity band), partial-volume edges from the body phantom, extra quantum noise,
  anisotropic voxels (slices thicker than the in-plane pixels).
* **Realistic abdomen** (``kind="abdomen"``): :func:`medimg.phantoms.abdomen.abdomen_ct_case`,
  chest to pelvis with fat, bowel, vessels, skeleton and arms, organs from deformable templates,
  three contrast phases and a random field of view (same labels as ``"ct"``); what the default
  abdominal model is trained on.
* **MR-like** (``kind="mr"``): white matter, grey matter and CSF of a T1 brain, with a smooth
  multiplicative bias field (intensity inhomogeneity, up to about +-25 %), Rician noise, arbitrary
  units, and thick slices (anisotropic spacing).

:func:`write_msd_dataset` writes either set in the Medical Segmentation Decathlon / nnU-Net raw
layout (``dataset.json``, ``imagesTr/<case>_0000.nii.gz``, ``labelsTr/<case>.nii.gz``, plus a
held-out ``imagesTs``/``labelsTs``); :func:`write_folder_dataset` writes the plain
``images/`` + ``labels/`` layout. Same seed, same files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.io.inputs import check_allocation
from medimg.io.output import atomic_dir, is_owned

__all__ = [
    "CT_LABELS",
    "KINDS",
    "MR_LABELS",
    "SegCase",
    "ct_organ_case",
    "made_by_medimg",
    "make_case",
    "mr_tissue_case",
    "write_folder_dataset",
    "write_msd_dataset",
]

#: Label ids of the CT-like set (body-phantom organ -> our id).
CT_LABELS = {0: "background", 1: "liver", 2: "spleen", 3: "kidney"}
#: Label ids of the MR-like set.
MR_LABELS = {0: "background", 1: "white_matter", 2: "grey_matter", 3: "csf"}


@dataclass
class SegCase:
    """One synthetic subject: ``image`` (1, X, Y, Z) float32 and ``labels`` (1, X, Y, Z) uint8,
    both RAS+ on the same grid; ``names`` maps label ids to names."""

    image: Image
    labels: Image
    names: dict[int, str]


def ct_organ_case(
    seed: int,
    shape: tuple[int, int, int] = (96, 96, 32),
    spacing: tuple[float, float, float] = (4.0, 4.0, 5.0),
    noise_hu: float = 20.0,
) -> SegCase:
    """An abdominal CT volume ``(X, Y, Z)`` in HU with liver/spleen/kidney labels.

    The body, organ sizes and the slab's height (z centre 290-330 mm below the lung apex) vary
    with ``seed``; ``spacing`` is (in-plane, in-plane, slice) mm.
    """
    from medimg.phantoms.ct import LABELS, body_phantom

    if len(shape) != 3 or len(spacing) != 3 or spacing[0] != spacing[1]:
        raise InputError(f"need a 3D shape and (d, d, dz) spacing, got {shape}, {spacing}")
    rng = np.random.default_rng([seed, 11])
    ph = body_phantom(
        (shape[2], shape[1], shape[0]),
        (spacing[2], spacing[0], spacing[1]),
        z_center=float(rng.uniform(290, 330)),
        n_nodules=0,
        seed=seed,
    )
    ids = {v: k for k, v in LABELS.items()}
    lut = np.zeros(256, np.uint8)
    for ours, name in CT_LABELS.items():
        if ours:
            lut[ids[name]] = ours
    hu = ph.hu + noise_hu * rng.standard_normal(ph.hu.shape).astype(np.float32)
    image = Image(hu[None].astype(np.float32), ph.affine, modality="CT").canonical()
    labels = Image(lut[ph.labels][None], ph.affine, modality="SEG", is_label=True).canonical()
    return SegCase(image, labels, dict(CT_LABELS))


def _bias_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float) -> np.ndarray:
    """exp(smooth random field): low-order inhomogeneity like a receive-coil profile."""
    coarse = rng.standard_normal((4, 4, 4))
    field = ndimage.zoom(coarse, [s / 4 for s in shape], order=3, mode="nearest")
    field = field[tuple(slice(0, s) for s in shape)]
    field = field / (np.abs(field).max() + 1e-9)
    return np.exp(strength * field).astype(np.float32)


def mr_tissue_case(
    seed: int,
    shape: tuple[int, int, int] = (80, 96, 24),
    spacing: tuple[float, float, float] = (2.0, 2.0, 6.0),
    noise: float = 0.03,
    bias: float = 0.25,
) -> SegCase:
    """A T1-like brain ``(X, Y, Z)`` with WM/GM/CSF labels, bias field and Rician noise."""
    import torch

    from medimg.phantoms.mri import brain_phantom

    if len(shape) != 3 or len(spacing) != 3:
        raise InputError(f"need a 3D shape and spacing, got {shape}, {spacing}")
    rng = np.random.default_rng([seed, 13])
    with torch.no_grad():
        ph = brain_phantom((shape[2], shape[1], shape[0]), contrast="t1", seed=seed, lesions=0)
    mag = ph.magnitude.numpy().transpose(2, 1, 0)  # (D, H, W) -> (X, Y, Z)
    tissues = list(ph.tissues)
    lab = ph.labels.numpy().transpose(2, 1, 0)
    lut = np.zeros(len(tissues), np.uint8)
    lut[tissues.index("wm")] = 1
    lut[tissues.index("gm")] = lut[tissues.index("deep_gm")] = 2
    lut[tissues.index("csf")] = 3
    biased = mag * _bias_field(mag.shape, rng, bias)
    re = biased + noise * rng.standard_normal(mag.shape)
    im = noise * rng.standard_normal(mag.shape)
    signal = (1000.0 * np.hypot(re, im)).astype(np.float32)  # Rician magnitude, arbitrary units
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -0.5 * np.array(spacing) * (np.array(shape) - 1)
    image = Image(signal[None], affine, modality="MR")
    labels = Image(lut[lab][None], affine, modality="SEG", is_label=True)
    return SegCase(image, labels, dict(MR_LABELS))


KINDS = ("ct", "abdomen", "mr")


def make_case(kind: str, seed: int, **kwargs: object) -> SegCase:
    """``ct_organ_case``, ``abdomen_ct_case`` or ``mr_tissue_case`` by name (``"ct"`` /
    ``"abdomen"`` / ``"mr"``)."""
    if kind == "abdomen":
        from medimg.phantoms.abdomen import abdomen_ct_case

        return abdomen_ct_case(seed, **kwargs)  # type: ignore[arg-type]
    if kind == "ct":
        return ct_organ_case(seed, **kwargs)  # type: ignore[arg-type]
    if kind == "mr":
        return mr_tissue_case(seed, **kwargs)  # type: ignore[arg-type]
    raise InputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")


def _check_counts(**counts: int) -> None:
    for name, n in counts.items():
        if int(n) < 0:
            raise InputError(f"{name} must be 0 or more, got {n}")
    if sum(int(n) for n in counts.values()) < 1:
        raise InputError(f"nothing to write: {' and '.join(counts)} are all 0; ask for a case")


def _check_case_shape(case_kwargs: dict) -> None:
    """Refuse a grid too large for memory before any phantom is drawn (the body phantom keeps a
    few float32 copies of the volume)."""
    if "shape" in case_kwargs:
        shape = tuple(int(s) for s in case_kwargs["shape"])  # type: ignore[attr-defined]
        check_allocation(shape, np.float32, what="the phantom grid", copies=8)


def made_by_medimg(root: str | Path) -> bool:
    """Whether ``root`` is a synthetic data set medimg wrote (the output mark, or a
    ``dataset.json`` whose description says so: sets written before the mark existed)."""
    root = Path(root)
    if is_owned(root):
        return True
    try:
        meta = json.loads((root / "dataset.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and str(meta.get("description", "")).startswith(
        "medimg synthetic"
    )


def write_msd_dataset(
    root: str | Path,
    kind: str = "ct",
    *,
    n_train: int = 12,
    n_test: int = 4,
    seed: int = 0,
    overwrite: bool = False,
    **case_kwargs: object,
) -> Path:
    """Write a synthetic set in MSD / nnU-Net raw layout under ``root``; returns ``root``.

    Training cases use seeds ``seed .. seed+n_train-1``, held-out cases (``imagesTs`` and
    ``labelsTs``) the next ``n_test``, so the test anatomy is never seen in training.

    The set is written into a private folder and swapped in whole; an existing non-empty
    ``root`` is replaced only with ``overwrite`` and only if medimg wrote it.
    """
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    _check_counts(n_train=n_train, n_test=n_test)
    _check_case_shape(case_kwargs)
    with atomic_dir(root, overwrite, owned=made_by_medimg(root)) as tmp:
        _write_msd(tmp, kind, n_train, n_test, seed, case_kwargs)
    return Path(root)


def _write_msd(
    root: Path, kind: str, n_train: int, n_test: int, seed: int, case_kwargs: dict
) -> None:
    from medimg.io.api import save

    names = MR_LABELS if kind == "mr" else CT_LABELS
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    training = []
    for i in range(n_train + n_test):
        case = make_case(kind, seed + i, **case_kwargs)
        cid = f"{kind}_{seed + i:03d}"
        split = "Tr" if i < n_train else "Ts"
        save(case.image, root / f"images{split}" / f"{cid}_0000.nii.gz")
        save(case.labels, root / f"labels{split}" / f"{cid}.nii.gz")
        if split == "Tr":
            training.append(
                {"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"}
            )
    meta = {
        "name": "AbdomenCT" if kind == "abdomen" else f"Synthetic{kind.upper()}",
        "description": f"medimg synthetic {kind.upper()} segmentation set (seed {seed})",
        "channel_names": {"0": "T1" if kind == "mr" else "CT"},
        "labels": {name: k for k, name in names.items()},
        "numTraining": n_train,
        "file_ending": ".nii.gz",
        "training": training,
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))


def write_folder_dataset(
    root: str | Path,
    kind: str = "ct",
    *,
    n: int = 6,
    seed: int = 0,
    overwrite: bool = False,
    **case_kwargs: object,
) -> Path:
    """Write ``root/images/<case>.nii.gz`` and ``root/labels/<case>.nii.gz`` pairs (swapped in
    whole, like :func:`write_msd_dataset`)."""
    from medimg.io.api import save

    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    _check_counts(n=n)
    _check_case_shape(case_kwargs)
    with atomic_dir(root, overwrite, owned=made_by_medimg(root)) as tmp:
        for i in range(n):
            case = make_case(kind, seed + i, **case_kwargs)
            cid = f"{kind}_{seed + i:03d}"
            save(case.image, tmp / "images" / f"{cid}.nii.gz")
            save(case.labels, tmp / "labels" / f"{cid}.nii.gz")
    return Path(root)
