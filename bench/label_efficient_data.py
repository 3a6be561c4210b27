"""Data for the label-efficient learning-curve bench (bench_label_efficient.py).

Written once into a cache folder ``<work>/<dataset>/``:

* ``pool/``: an MSD set: ``imagesTr``+``labelsTr`` (the labelled pool the runs draw their n
  labelled cases from) and ``imagesTs``+``labelsTs`` (the fixed held-out test set);
* ``extra/images/``: unlabelled images of further seeds (labels never written);
* ``subsets/n<N>_s<seed>/``: per run, ``labelled/`` (an MSD set of the n chosen cases, links
  into the pool) and ``unlabelled/`` (links to the pool images not chosen, then the extra
  images, up to the unlabelled count).

Two generators: ``abdomen`` (:func:`medimg.phantoms.segmentation.write_msd_dataset`, the
realistic abdomen) and ``brain`` (the brain label-map generator: the Colin27 tissue map
deformed per case and an image synthesised on it with a jittered T1-like contrast, as the
brain model's training data is made; needs the ``mricron-data`` package in the data cache).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

#: Held-out test cases and unlabelled images use seeds far from the labelled pool's.
TEST_SEED, EXTRA_SEED = 5000, 1000


def _msd_meta(names: dict[int, str], channel: str, n: int, ids: list[str]) -> dict:
    return {
        "name": "LabelEfficient",
        "channel_names": {"0": channel},
        "labels": {name: k for k, name in names.items()},
        "numTraining": n,
        "file_ending": ".nii.gz",
        "training": [
            {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ids
        ],
    }


def _brain_case(seed: int, label_map, spacing: float):  # -> (Image, Image)
    """One generated brain: the label map deformed (random affine + smooth warp) and a T1-like
    image (template means jittered) synthesised on it; head classes count as background."""
    import torch

    from medimg.io.image import Image
    from medimg.phantoms.synth import synthesize_image
    from medimg.phantoms.synth_brain import CONTRAST_TEMPLATES, TRAIN_LABELS
    from medimg.phantoms.synth_warp import random_deformation, warp
    from medimg.tasks.segment.brain import BRAIN_APPEARANCE, BRAIN_DEFORMATION

    gen = torch.Generator().manual_seed(int(seed))
    field = random_deformation(label_map.shape, seed=gen, deformation=BRAIN_DEFORMATION)
    moved = warp(label_map, field, labels=True)
    jitter = (torch.rand(len(CONTRAST_TEMPLATES["t1"]), generator=gen) * 2 - 1) * 0.1
    means = {k: float(min(1.0, max(0.0, m + d)))
             for k, (m, d) in enumerate(zip(CONTRAST_TEMPLATES["t1"], jitter.tolist()))}  # fmt: skip
    image = synthesize_image(moved, seed=gen, appearance=BRAIN_APPEARANCE, means=means)
    lut = np.zeros(max(TRAIN_LABELS) + 1, np.uint8)
    for src, dst in TRAIN_LABELS.items():
        lut[src] = dst
    affine = np.diag([spacing] * 3 + [1.0])
    img = Image(image[None].numpy().astype(np.float32), affine, modality="MR")
    lab = Image(lut[moved.numpy()][None], affine, modality="SEG")
    return img, lab


def write_brain_msd(root: Path, *, n_train: int, n_test: int, seed: int, spacing: float) -> None:
    """An MSD set of generated brains (labels: background, CSF, cortical GM, WM, deep GM)."""
    from medimg.io.api import save
    from medimg.phantoms.synth_brain import colin27_labels, labels_at_spacing
    from medimg.tasks.segment.brain import BRAIN_CLASSES

    label_map = labels_at_spacing(colin27_labels()[1], spacing)
    tmp = root.with_name(root.name + ".partial")
    ids = []
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_train + n_test):
        s = seed + i if i < n_train else TEST_SEED + i - n_train
        cid = f"brain_{s:04d}"
        split = "Tr" if i < n_train else "Ts"
        img, lab = _brain_case(s, label_map, spacing)
        save(img, tmp / f"images{split}" / f"{cid}_0000.nii.gz")
        save(lab, tmp / f"labels{split}" / f"{cid}.nii.gz")
        ids += [cid] if split == "Tr" else []
    names = dict(enumerate(BRAIN_CLASSES))
    (tmp / "dataset.json").write_text(json.dumps(_msd_meta(names, "T1", n_train, ids), indent=2))
    tmp.rename(root)


def write_extra_brains(folder: Path, n: int, spacing: float) -> None:
    """``n`` unlabelled generated brains (seeds from :data:`EXTRA_SEED`) as plain images."""
    from medimg.io.api import save
    from medimg.phantoms.synth_brain import colin27_labels, labels_at_spacing

    label_map = labels_at_spacing(colin27_labels()[1], spacing)
    tmp = folder.with_name(folder.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, _ = _brain_case(EXTRA_SEED + i, label_map, spacing)
        save(img, tmp / f"brain_{EXTRA_SEED + i:04d}_0000.nii.gz")
    tmp.rename(folder)


def prepare(work: Path, dataset: str, *, pool: int, test: int, extra: int, spacing: float) -> Path:
    """Write (once) the labelled pool, the test set and ``extra`` unlabelled images of
    ``dataset`` under ``work/dataset``; returns that folder. Grown sets are not rewritten: a
    larger ``pool``/``test``/``extra`` than the cache holds is refused."""
    from medimg.errors import InputError

    base = work / dataset
    pool_dir, extra_dir = base / "pool", base / "extra" / "images"
    sp = (spacing, spacing, spacing)
    if dataset == "abdomen":
        from medimg.phantoms.segmentation import write_msd_dataset

        if not pool_dir.is_dir():
            write_msd_dataset(pool_dir, "abdomen", n_train=pool, n_test=0, seed=0, spacing=sp)
        if not any((pool_dir / "labelsTs").glob("*.nii.gz")):  # test set: seeds far away
            src = base / "test_src"
            write_msd_dataset(src, "abdomen", n_train=test, n_test=0, seed=TEST_SEED, spacing=sp,
                              overwrite=True)  # fmt: skip
            for sub in ("images", "labels"):
                (pool_dir / f"{sub}Ts").rmdir()  # written empty (n_test=0)
                (src / f"{sub}Tr").rename(pool_dir / f"{sub}Ts")
    elif not pool_dir.is_dir():
        base.mkdir(parents=True, exist_ok=True)
        write_brain_msd(pool_dir, n_train=pool, n_test=test, seed=0, spacing=spacing)
    if not extra_dir.is_dir() and extra > 0:
        extra_dir.parent.mkdir(parents=True, exist_ok=True)
        if dataset == "abdomen":
            src = base / "extra_src"
            write_msd_dataset(src, "abdomen", n_train=extra, n_test=0, seed=EXTRA_SEED, spacing=sp,
                              overwrite=True)  # fmt: skip
            (src / "imagesTr").rename(extra_dir)  # labels stay behind, never read
        else:
            write_extra_brains(extra_dir, extra, spacing)
    have = {"pool": len(pool_ids(base)), "test": len(test_cases(base)),
            "extra": len(list(extra_dir.glob("*.nii.gz"))) if extra_dir.is_dir() else 0}  # fmt: skip
    for name, want in (("pool", pool), ("test", test), ("extra", extra)):
        if want > have[name]:
            raise InputError(f"the cache holds {have[name]} {name} cases, asked for {want}; "
                             "use a new --work folder", base)  # fmt: skip
    return base


def pool_ids(base: Path) -> list[str]:
    """Case ids of the labelled pool, sorted."""
    return sorted(p.name[: -len(".nii.gz")] for p in (base / "pool" / "labelsTr").glob("*.nii.gz"))


def test_cases(base: Path) -> list[tuple[Path, Path]]:
    """(image, labels) files of the held-out test set."""
    pool = base / "pool"
    return [(pool / "imagesTs" / f"{lab.name[: -len('.nii.gz')]}_0000.nii.gz", lab)
            for lab in sorted((pool / "labelsTs").glob("*.nii.gz"))]  # fmt: skip


def choose_labelled(ids: list[str], n: int, seed: int) -> list[str]:
    """``n`` of the pool's cases, drawn by ``seed`` (all of them when n covers the pool)."""
    if n >= len(ids):
        return list(ids)
    rng = np.random.default_rng([seed, n, 27])
    return sorted(ids[i] for i in rng.choice(len(ids), size=n, replace=False))


def subset(base: Path, n: int, seed: int, unlabelled: int) -> tuple[Path, Path]:
    """The run's labelled MSD set and unlabelled image folder (links, made once)."""
    root = base / "subsets" / f"n{n}_s{seed}_u{unlabelled}"
    lab, unl = root / "labelled", root / "unlabelled"
    if root.is_dir():
        return lab, unl
    ids = pool_ids(base)
    chosen = choose_labelled(ids, n, seed)
    pool = (base / "pool").resolve()
    meta = json.loads((pool / "dataset.json").read_text())
    tmp = root.with_name(root.name + ".partial")
    for sub in ("labelled/imagesTr", "labelled/labelsTr", "unlabelled"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    for c in chosen:
        os.symlink(pool / "imagesTr" / f"{c}_0000.nii.gz", tmp / "labelled/imagesTr" / f"{c}_0000.nii.gz")  # fmt: skip
        os.symlink(pool / "labelsTr" / f"{c}.nii.gz", tmp / "labelled/labelsTr" / f"{c}.nii.gz")
    meta.update(numTraining=len(chosen), training=[
        {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in chosen])  # fmt: skip
    (tmp / "labelled" / "dataset.json").write_text(json.dumps(meta, indent=2))
    rest = [pool / "imagesTr" / f"{c}_0000.nii.gz" for c in ids if c not in chosen]
    extra_dir = (base / "extra" / "images").resolve()
    rest += sorted(extra_dir.glob("*.nii.gz")) if extra_dir.is_dir() else []
    for p in rest[:unlabelled]:
        os.symlink(p, tmp / "unlabelled" / p.name)
    tmp.rename(root)
    return lab, unl
