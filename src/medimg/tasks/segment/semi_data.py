"""Where semi-supervised training finds its images: labelled cases and unlabelled ones.

Labelled cases come from the MSD layout as for supervised training. Unlabelled images come from
``--unlabelled DIR`` (a folder of NIfTI / NRRD / MHA images: ``<case>_0000<ending>`` channel
files, or one file per image for single-channel data), else from the dataset itself: its
``imagesUnlabelled/`` folder and the ``imagesTr`` cases that have no ``labelsTr`` file.

:func:`medimg.datasets.msd.open_dataset` refuses an ``imagesTr`` case without a label (right for
supervised training), so a partly labelled MSD folder is opened here with its labelled cases
only; the dataset adapter is not this module's to change.
"""

from __future__ import annotations

import json
from pathlib import Path

from medimg.datasets.msd import (
    IMAGE_ENDINGS,
    CaseFiles,
    SegDataset,
    group_channels,
    open_dataset,
)
from medimg.errors import InputError, MedimgError
from medimg.io.image import Image

__all__ = ["load_unlabelled", "open_partly_labelled", "unlabelled_files"]


def _ending(name: str) -> str | None:
    return next((e for e in IMAGE_ENDINGS if name.lower().endswith(e)), None)


def _unlabelled_tr(root: Path) -> tuple[str, list[str]]:
    """The file ending and the ``imagesTr`` case ids that have no label file."""
    meta_path = root / "dataset.json"
    try:
        ending = json.loads(meta_path.read_bytes().decode("utf-8-sig")).get("file_ending",
                                                                            ".nii.gz")  # fmt: skip
    except (OSError, ValueError, AttributeError):
        return ".nii.gz", []  # open_dataset says what is wrong with it
    if not (root / "imagesTr").is_dir() or not (root / "labelsTr").is_dir():
        return ending, []
    grouped = group_channels(root / "imagesTr", ending)
    return ending, sorted(c for c in grouped if not (root / "labelsTr" / f"{c}{ending}").is_file())


def open_partly_labelled(root: str | Path) -> tuple[SegDataset, list[list[Path]]]:
    """The dataset with its labelled cases, and the channel files of ``imagesTr`` cases that
    have no label (MSD layout; a plain folder has none)."""
    root = Path(root)
    if not (root / "dataset.json").is_file():
        return open_dataset(root), []
    ending, missing = _unlabelled_tr(root)
    if not missing:
        return open_dataset(root), []
    # open a view without the unlabelled cases: the adapter's checks apply to the rest
    grouped = group_channels(root / "imagesTr", ending)
    ds = _open_without(root, set(missing))
    return ds, [grouped[c] for c in missing]


def _open_without(root: Path, skip: set[str]) -> SegDataset:
    """``open_dataset(root)`` as if the ``skip`` cases were not in ``imagesTr``: the labelled
    cases pass the adapter's own checks in a dataset of their own."""
    from medimg.datasets.msd import _parse_labels

    meta = json.loads((root / "dataset.json").read_bytes().decode("utf-8-sig"))
    labels = _parse_labels(meta.get("labels"), root / "dataset.json")
    chans = meta.get("channel_names") or meta.get("modality") or {"0": "unknown"}
    ending = meta.get("file_ending", ".nii.gz")
    grouped = group_channels(root / "imagesTr", ending)
    cases = []
    for case, files in grouped.items():
        if case in skip:
            continue
        if len(files) != len(chans):
            raise InputError(f"case {case!r} has {len(files)} channel file(s) but dataset.json "
                             f"declares {len(chans)}", root / "imagesTr")  # fmt: skip
        cases.append(CaseFiles(case, tuple(files), root / "labelsTr" / f"{case}{ending}"))
    if not cases:
        raise InputError("no imagesTr case has a label in labelsTr; label at least one", root)
    return SegDataset(root, str(meta.get("name", root.name)), "msd",
                      {int(k): str(v) for k, v in chans.items()}, labels, ending, cases)  # fmt: skip


def _images_in(folder: Path) -> list[list[Path]]:
    """Images of a folder: ``<case>_NNNN`` channel groups when some file ends in ``_0000``
    (the nnU-Net naming), else one file per image (``scan_0001.nii.gz`` is then a scan)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and _ending(p.name))
    stems = [p.name[: len(p.name) - len(_ending(p.name) or "")] for p in files]
    if not any(s.endswith("_0000") for s in stems):
        return [[p] for p in files]
    grouped = group_channels(folder)
    in_group = {p for fs in grouped.values() for p in fs}
    return [grouped[c] for c in sorted(grouped)] + [[p] for p in files if p not in in_group]


def unlabelled_files(
    dataset_root: str | Path, unlabelled: str | Path | None, extra: list[list[Path]]
) -> list[list[Path]]:
    """The unlabelled images to use (each a list of channel files); one-line errors when
    there are none."""
    if unlabelled is not None:
        folder = Path(unlabelled)
        if not folder.is_dir():
            raise InputError("--unlabelled: folder not found", folder)
        found = _images_in(folder)
        if not found:
            raise InputError(f"--unlabelled: no readable image ({', '.join(IMAGE_ENDINGS)}) in "
                             "the folder", folder)  # fmt: skip
        return found
    own = Path(dataset_root) / "imagesUnlabelled"
    found = (_images_in(own) if own.is_dir() else []) + extra
    if not found:
        raise InputError("--semi needs unlabelled images: give --unlabelled DIR, or put them in "
                         "DATASET/imagesUnlabelled or as imagesTr cases without a label",
                         dataset_root)  # fmt: skip
    return found


def load_unlabelled(groups: list[list[Path]], modality: str) -> list[Image]:
    """Read each unlabelled image (channels stacked); a file that cannot be read is a one-line
    error naming it."""
    import numpy as np

    from medimg.io.api import load

    out = []
    for files in groups:
        try:
            channels = [load(p, modality=modality) for p in files]
        except MedimgError as exc:
            raise InputError(f"--unlabelled image cannot be read: {exc}", files[0]) from None
        first = channels[0]
        for p, ch in zip(files[1:], channels[1:]):
            if ch.spatial_shape != first.spatial_shape:
                raise InputError(f"channel grid {ch.spatial_shape} differs from "
                                 f"{first.spatial_shape} of {files[0].name}", p)  # fmt: skip
        arr = np.concatenate([c.array.astype(np.float32) for c in channels], axis=0)
        name = files[0].name[: len(files[0].name) - len(_ending(files[0].name) or "")]
        out.append(Image(arr, first.affine, modality=modality,
                         meta={"case_id": f"unlabelled image {name}"}))  # fmt: skip
    return out
