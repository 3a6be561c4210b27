"""Segmentation dataset adapters: MSD / nnU-Net raw layout and plain image+label folders.

Layout contracts (checked on load, one-line errors naming the file and the fix):

* **MSD / nnU-Net raw**: ``ROOT/dataset.json`` with ``labels`` (nnU-Net v2 ``{"liver": 1}``
  or MSD ``{"1": "liver"}``), ``channel_names`` (or MSD ``modality``) and ``file_ending``;
  images ``imagesTr/<case>_0000<ending>``, ``<case>_0001`` ... one file per channel, labels
  ``labelsTr/<case><ending>``. Label 0 is background; label values must be declared.
* **Plain folder**: ``ROOT/images/<case><ending>`` and ``ROOT/labels/<case><ending>`` with the
  same names (one channel). Label names are ``label <v>`` for the values found.

:func:`load_case` checks that every channel and the label map share one geometry (shape and
affine within 1e-3 mm) and that the labels only use declared values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medimg.errors import InputError
from medimg.io.image import Image

__all__ = ["CaseFiles", "SegDataset", "check_dataset", "load_case", "open_dataset"]

IMAGE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


@dataclass(frozen=True)
class CaseFiles:
    """One case: id, one image file per channel, and the label file (``None`` for test data)."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None


@dataclass
class SegDataset:
    """A segmentation dataset on disk (see the module docstring for the layouts)."""

    root: Path
    name: str
    layout: str  # "msd" or "folder"
    channel_names: dict[int, str]
    labels: dict[int, str]
    file_ending: str
    cases: list[CaseFiles] = field(default_factory=list)

    @property
    def modality(self) -> str:
        """``"CT"`` when channel 0 is named CT, else ``"MR"`` (z-score per image)."""
        return "CT" if self.channel_names.get(0, "").upper() == "CT" else "MR"

    @property
    def case_ids(self) -> list[str]:
        return [c.case_id for c in self.cases]

    def files(self) -> list[Path]:
        """Every file the data set is read from (``dataset.json``, images, labels): what no
        output may land on."""
        out = [self.root / "dataset.json"] if self.layout == "msd" else []
        for c in self.cases:
            out += [*c.images, *([c.label] if c.label is not None else [])]
        return out


def _ending(name: str) -> str | None:
    return next((e for e in IMAGE_ENDINGS if name.lower().endswith(e)), None)


def _stem(path: Path) -> str:
    ending = _ending(path.name) or path.suffix
    return path.name[: len(path.name) - len(ending)]


def group_channels(folder: Path, ending: str | None = None) -> dict[str, list[Path]]:
    """``{case: [channel files in order]}`` for ``<case>_0000<ending>`` files in ``folder``."""
    found: dict[str, dict[int, Path]] = {}
    for p in sorted(folder.iterdir()):
        e = _ending(p.name)
        if e is None or (ending and e != ending):
            continue
        m = _CHANNEL.match(_stem(p))
        if m:
            found.setdefault(m["case"], {})[int(m["ch"])] = p
    out = {}
    for case, chans in found.items():
        missing = [c for c in range(max(chans) + 1) if c not in chans]
        if missing:
            raise InputError(
                f"case {case!r} lacks channel file {case}_{missing[0]:04d}; "
                "every case needs _0000.._NNNN without gaps",
                folder,
            )
        out[case] = [chans[c] for c in sorted(chans)]
    return out


def _parse_labels(raw: object, where: Path) -> dict[int, str]:
    if not isinstance(raw, dict) or not raw:
        raise InputError("'labels' must be a non-empty mapping", where)
    out: dict[int, str] = {}
    for k, v in raw.items():
        if isinstance(v, int) or (isinstance(v, str) and v.isdigit() and not k.isdigit()):
            out[int(v)] = str(k)  # nnU-Net v2: name -> value
        elif str(k).isdigit():
            out[int(k)] = str(v)  # MSD: "value" -> name
        else:
            raise InputError(f"label entry {k!r}: {v!r} is neither name->int nor int->name", where)
    if 0 not in out:
        raise InputError("labels must declare 0 (background)", where)
    return dict(sorted(out.items()))


def _open_msd(root: Path) -> SegDataset:
    meta_path = root / "dataset.json"
    try:
        meta = json.loads(meta_path.read_bytes().decode("utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"is not valid UTF-8 JSON ({exc})", meta_path) from None
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror})", meta_path) from None
    if not isinstance(meta, dict):
        raise InputError("must hold a JSON object with 'labels' and 'channel_names'", meta_path)
    labels = _parse_labels(meta.get("labels"), meta_path)
    chans = meta.get("channel_names") or meta.get("modality") or {"0": "unknown"}
    if not isinstance(chans, dict) or not all(str(k).isdigit() for k in chans):
        raise InputError(
            '\'channel_names\' must map channel numbers to names, e.g. {"0": "CT"}', meta_path
        )
    channel_names = {int(k): str(v) for k, v in chans.items()}
    ending = meta.get("file_ending", ".nii.gz")
    if ending not in IMAGE_ENDINGS:
        raise InputError(
            f"'file_ending' {ending!r} is not one medimg reads ({', '.join(IMAGE_ENDINGS)})",
            meta_path,
        )
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise InputError(
                f"folder {d.name}/ is missing; MSD layout needs imagesTr and labelsTr", root
            )
    grouped = group_channels(images_dir, ending)
    cases = []
    for case, files in grouped.items():
        if len(files) < len(channel_names):
            raise InputError(
                f"case {case!r} is missing channel file {case}_{len(files):04d}{ending} "
                f"(dataset.json declares {len(channel_names)} channels); add it",
                images_dir,
            )
        if len(files) > len(channel_names):
            raise InputError(
                f"case {case!r} has {len(files)} channel files but dataset.json declares "
                f"{len(channel_names)}; fix channel_names or remove the extra files",
                images_dir,
            )
        label = labels_dir / f"{case}{ending}"
        if not label.is_file():
            raise InputError(f"label file for case {case!r} is missing; add it", label)
        cases.append(CaseFiles(case, tuple(files), label))
    for p in labels_dir.iterdir():  # a label without images means missing channel files
        if _ending(p.name) == ending and _stem(p) not in grouped:
            raise InputError(
                f"label {p.name} has no image; expected imagesTr/{_stem(p)}_0000{ending}", p
            )
    name = str(meta.get("name", root.name))
    return SegDataset(root, name, "msd", channel_names, labels, ending, cases)


def _open_folder(root: Path) -> SegDataset:
    images_dir, labels_dir = root / "images", root / "labels"
    cases, found_ending = [], ".nii.gz"
    for p in sorted(images_dir.iterdir()):
        ending = _ending(p.name)
        if ending is None:
            continue
        found_ending = ending
        label = labels_dir / p.name
        if not label.is_file():
            raise InputError(f"no label for image {p.name}; add labels/{p.name}", images_dir)
        cases.append(CaseFiles(_stem(p), (p,), label))
    return SegDataset(
        root, root.name, "folder", {0: "unknown"}, {0: "background"}, found_ending, cases
    )


def open_dataset(root: str | Path, *, modality: str | None = None) -> SegDataset:
    """Open an MSD/nnU-Net raw dataset (has ``dataset.json``) or a plain ``images/``+``labels/``
    folder. ``modality`` (``CT``/``MR``) names channel 0 of a plain folder."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("dataset folder not found", root)
    if (root / "dataset.json").is_file():
        ds = _open_msd(root)
    elif (root / "images").is_dir() and (root / "labels").is_dir():
        ds = _open_folder(root)
        if modality:
            ds.channel_names = {0: modality.upper()}
    else:
        raise InputError(
            "not a segmentation dataset: expected dataset.json (MSD layout) or images/ and "
            "labels/ folders",
            root,
        )
    if not ds.cases:
        raise InputError("the training set is empty; add image/label pairs", root)
    return ds


def _same_grid(a: Image, b: Image) -> bool:
    return a.spatial_shape == b.spatial_shape and np.allclose(a.affine, b.affine, atol=1e-3)


def load_case(ds: SegDataset, case: CaseFiles) -> tuple[Image, Image | None]:
    """Read a case: a multi-channel image and its label map, checked against each other."""
    from medimg.io.api import load
    from medimg.io.inputs import check_real

    channels = [load(p, modality=ds.modality) for p in case.images]
    for p, ch in zip(case.images, channels):
        check_real(ch.array, p, what="segmentation")
    first = channels[0]
    for p, ch in zip(case.images[1:], channels[1:]):
        if not _same_grid(first, ch):
            raise InputError(
                f"channel geometry differs from {case.images[0].name} "
                f"({ch.spatial_shape} vs {first.spatial_shape}); resample it onto channel 0",
                p,
            )
    arr = np.concatenate([c.array.astype(np.float32) for c in channels], axis=0)
    image = Image(arr, first.affine, modality=ds.modality, meta={"case_id": case.case_id})
    if case.label is None:
        return image, None
    labels = load(case.label, is_label=True)
    if not _same_grid(first, labels):
        raise InputError(
            f"label geometry {labels.spatial_shape}/spacing {_fmt(labels.spacing)} does not match "
            f"the image {first.spatial_shape}/spacing {_fmt(first.spacing)}; "
            "resample the label onto the image grid",
            case.label,
        )
    values = np.unique(labels.array)
    if ds.layout == "msd":
        bad = [int(v) for v in values if int(v) not in ds.labels]
        if bad:
            raise InputError(
                f"label value {bad[0]} is not declared in dataset.json "
                f"(declared: {sorted(ds.labels)}); declare it or fix the file",
                case.label,
            )
    elif values.min() < 0:
        raise InputError(
            "negative label values; labels must be 0 (background) or positive", case.label
        )
    return image, labels


def _fmt(sp: tuple[float, ...]) -> str:
    return "x".join(f"{s:.3g}" for s in sp)


def check_dataset(ds: SegDataset) -> dict[str, tuple[Image, Image]]:
    """Load every case (raising on the first inconsistency); a plain folder's labels are set
    to the values found. Returns ``{case_id: (image, labels)}``."""
    out = {}
    found: set[int] = set()
    for case in ds.cases:
        image, labels = load_case(ds, case)
        assert labels is not None  # training cases always have labels
        found.update(int(v) for v in np.unique(labels.array))
        out[case.case_id] = (image, labels)
    if ds.layout == "folder":
        ds.labels = {v: ds.labels.get(v, f"label {v}") for v in sorted(found | {0})}
    if len(ds.labels) < 2:
        raise InputError("no foreground label in any case; nothing to segment", ds.root)
    return out
