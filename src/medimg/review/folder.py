"""A review folder: its cases, their volumes as display slices, and saving a correction.

Layout (what ``medimg segment suggest --out DIR`` writes; any folder shaped like it works)::

    DIR/images/<case>_0000.nii.gz   (or <case>.nii.gz; NRRD/MHA too)   the image
    DIR/proposals/<case>.nii.gz     (or labels/<case>.nii.gz)          the model's labels
    DIR/proposals/<case>.tsv                                           their label table
    DIR/uncertainty/<case>.nii.gz                                      entropy map, 0..1
    DIR/queue.json                                                     the suggest queue
    DIR/reviewed/<case>.nii.gz + <case>.json                           written here on Save

Every volume is shown reoriented to the closest RAS+ (flips and permutations only), and a slice
is sent as the 2D array the page draws, with one rule for all three views (:func:`to_display`):
rows run from superior (or anterior, axial) at the top, columns from the patient's right on the
left (radiological convention; sagittal: anterior on the left). A correction is written back in
the image's own axis order and affine, never over the proposal.
"""

from __future__ import annotations

import glob
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import InputError
from medimg.io.image import Image

__all__ = ["ReviewFolder", "from_display", "to_display"]

LAYERS = ("image", "labels", "proposal", "uncertainty")
STATUSES = ("pending", "accepted", "rejected")
_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def to_display(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """Slice ``index`` across ``axis`` of an RAS+ ``(X, Y, Z)`` volume as drawn on screen:
    ``display[r, c] = slice[U-1-c, V-1-r]`` where ``(U, V)`` are the two remaining axes."""
    s = volume[(slice(None),) * axis + (index,)]  # a view; np.take would copy the volume
    return np.ascontiguousarray(s[::-1, ::-1].T)


def from_display(display: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_display`: a drawn 2D array back to the volume's slice."""
    return np.asarray(display).T[::-1, ::-1]


def _strip(name: str) -> str | None:
    low = name.lower()
    for e in _ENDINGS:
        if low.endswith(e):
            return name[: -len(e)]
    return None


@dataclass
class _Volume:
    array: np.ndarray  # (X, Y, Z) in RAS+
    spacing: tuple[float, ...]
    source: Image  # the file as read (its own axis order and affine)


@dataclass
class Case:
    """One case of the folder: its files (absolute, all inside the folder)."""

    name: str
    image: Path
    proposal: Path | None = None
    uncertainty: Path | None = None
    queue: dict[str, Any] = field(default_factory=dict)


class ReviewFolder:
    """The cases of ``root`` and their volumes (at most ``cache_volumes`` and ``cache_bytes``
    kept in memory, least recently used dropped first)."""

    def __init__(
        self, root: str | Path, *, cache_volumes: int = 6, cache_bytes: int = 2 << 30
    ) -> None:
        self.root = Path(root).resolve()
        if not (self.root / "images").is_dir():
            raise InputError(
                "not a review folder (no images/); write one with medimg segment suggest "
                "DATA --out DIR, or put the images under DIR/images",
                root,
            )
        self._cache: OrderedDict[tuple[str, str], _Volume] = OrderedDict()
        self._cache_size = cache_volumes
        self._cache_bytes = cache_bytes
        self._lock = threading.RLock()  # guards the cache; held only briefly
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self._save_lock = threading.Lock()  # one save at a time
        self.cases = self._scan()

    # ------------------------------------------------------------------ files
    def _inside(self, path: Path) -> Path:
        """``path`` resolved, refused unless it lies under the folder (a link out, ``..``)."""
        real = path.resolve()
        if not real.is_relative_to(self.root):
            raise InputError("lies outside the review folder; it is not served", path)
        return real

    def _scan(self) -> dict[str, Case]:
        cases: dict[str, Case] = {}
        for p in sorted((self.root / "images").iterdir()):
            stem = _strip(p.name)
            if stem is None or p.name.startswith("."):
                continue
            if stem[-5:-4] == "_" and stem[-4:].isdigit():
                if stem[-4:] != "0000":
                    continue  # further channels: the first one is shown
                stem = stem[:-5]
            cases[stem] = Case(stem, self._inside(p))
        for name, case in cases.items():
            for sub in ("proposals", "labels"):
                f = self.root / sub / f"{name}.nii.gz"
                if case.proposal is None and f.is_file():
                    case.proposal = self._inside(f)
            f = self.root / "uncertainty" / f"{name}.nii.gz"
            case.uncertainty = self._inside(f) if f.is_file() else None
        queue = self.root / "queue.json"
        if queue.is_file():
            try:
                rows = json.loads(queue.read_text())["queue"]
            except (ValueError, KeyError, TypeError):
                raise InputError("is not a suggest queue (queue.json)", queue) from None
            for row in rows:
                if isinstance(row, dict) and row.get("case") in cases:
                    cases[row["case"]].queue = {
                        k: row.get(k) for k in ("rank", "score", "entropy", "disagreement")
                    }
        # queue order first (the cases to review), then the rest by name
        ranked = sorted(cases.values(), key=lambda c: (c.queue.get("rank") or 1e9, c.name))
        return {c.name: c for c in ranked}

    def case(self, name: str) -> Case:
        """The case called ``name`` (only names found by the scan: nothing else is reachable)."""
        case = self.cases.get(name)
        if case is None:
            raise KeyError(name)
        return case

    def corrected_path(self, name: str) -> Path:
        return self.root / "reviewed" / f"{self.case(name).name}.nii.gz"

    def record_path(self, name: str) -> Path:
        return self.root / "reviewed" / f"{self.case(name).name}.json"

    def record(self, name: str) -> dict[str, Any] | None:
        p = self.record_path(name)
        return json.loads(p.read_text()) if p.is_file() else None

    def accepted(self) -> list[tuple[str, list[Path], Path]]:
        """``(case, image channel files, corrected labels)`` of every case whose latest review
        is *accepted*: the training pairs a fine-tuning run (``segment train --reviewed``)
        takes. Rejected and pending cases are left out."""
        out = []
        for name, case in self.cases.items():
            rec, labels = self.record(name), self.corrected_path(name)
            if rec and rec.get("status") == "accepted" and labels.is_file():
                pattern = f"{glob.escape(name)}_[0-9][0-9][0-9][0-9].*"
                channels = sorted(self._inside(p) for p in case.image.parent.glob(pattern))
                out.append((name, channels or [case.image], self._inside(labels)))
        return out

    # ------------------------------------------------------------------ volumes
    def _read(self, path: Path, is_label: bool) -> _Volume:
        from medimg.io.api import load

        img = load(self._inside(path), is_label=is_label)
        if img.spatial_ndim == 2:  # a 2D image is one axial slice
            img = Image(img.array[..., None], img.affine, modality=img.modality,
                        is_label=img.is_label)  # fmt: skip
        canon = img.canonical()
        arr = canon.array[0]
        arr = arr.astype(np.uint8 if is_label else np.float32, copy=False)
        return _Volume(np.asarray(arr), tuple(float(s) for s in canon.spacing), img)

    def volume(self, name: str, layer: str) -> _Volume:
        """One layer of a case (``labels``: the saved correction, else the proposal, else
        empty), cached; concurrent requests for the same volume wait for one read."""
        if layer not in LAYERS:
            raise InputError(f"unknown layer {layer!r}; one of {', '.join(LAYERS)}")
        self.case(name)
        key = (name, layer)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if key in self._cache:
                    return self._cache[key]
            vol = self._load(name, layer)
            with self._lock:
                self._cache[key] = vol
                self._loading.pop(key, None)
                while len(self._cache) > 1 and (
                    len(self._cache) > self._cache_size
                    or sum(v.array.nbytes for v in self._cache.values()) > self._cache_bytes
                ):
                    self._cache.popitem(last=False)
        return vol

    def _load(self, name: str, layer: str) -> _Volume:
        case = self.case(name)
        if layer == "image":
            return self._read(case.image, False)
        if layer == "labels" and self.corrected_path(name).is_file():
            vol = self._read(self.corrected_path(name), True)
        elif layer in ("labels", "proposal") and case.proposal is not None:
            vol = self._read(case.proposal, True)
        elif layer == "uncertainty" and case.uncertainty is not None:
            vol = self._read(case.uncertainty, False)
        else:
            image = self.volume(name, "image")
            dtype = np.float32 if layer == "uncertainty" else np.uint8
            return _Volume(np.zeros(image.array.shape, dtype), image.spacing, image.source)
        image = self.volume(name, "image")
        if vol.array.shape != image.array.shape:
            raise InputError(
                f"{layer} has shape {vol.array.shape} but the image {image.array.shape}; "
                "they must share the image's grid",
                case.proposal if layer != "uncertainty" else case.uncertainty,
            )
        return vol

    def prefetch(self, names: list[str], layers: tuple[str, ...] = ("image", "labels")) -> None:
        """Read these cases' volumes now (a background thread calls this so that the page
        opens on a case already in memory); errors are left for the page's own request."""
        for name in names:
            for layer in layers:
                try:
                    self.volume(name, layer)
                except (InputError, OSError, KeyError):
                    break

    def prefetch_in_background(self, names: list[str]) -> threading.Thread:
        thread = threading.Thread(target=self.prefetch, args=(names,), daemon=True)
        thread.start()
        return thread

    def forget(self, name: str) -> None:
        with self._lock:
            for key in [k for k in self._cache if k[0] == name and k[1] != "image"]:
                del self._cache[key]

    def slice(self, name: str, layer: str, axis: int, index: int) -> np.ndarray:
        vol = self.volume(name, layer)
        if axis not in (0, 1, 2):
            raise InputError(f"axis must be 0, 1 or 2, got {axis}")
        if not 0 <= index < vol.array.shape[axis]:
            raise InputError(f"slice {index} is outside 0..{vol.array.shape[axis] - 1}")
        return to_display(vol.array, axis, index)

    def label_names(self, name: str) -> dict[int, str]:
        from medimg.io.label_table import label_table_path, read_label_table

        case = self.case(name)
        for p in (case.proposal, self.corrected_path(name)):
            if p is not None and label_table_path(p).is_file():
                return read_label_table(self._inside(label_table_path(p)))
        return {0: "background", 1: "label 1"}

    def info(self, name: str) -> dict[str, Any]:
        """What the page needs to draw a case: grid, spacing, intensity range, labels."""
        from medimg.io.dicom.codes import structure_code

        vol = self.volume(name, "image")
        case = self.case(name)
        sample = vol.array[:: max(1, vol.array.shape[0] // 64), :: max(1, vol.array.shape[1] // 64)]
        lo, hi = (float(v) for v in np.percentile(sample, [1, 99]))
        labels = {int(k): {"name": n, "color": "#{:02x}{:02x}{:02x}".format(*structure_code(n, k).rgb)}
                  for k, n in self.label_names(name).items()}  # fmt: skip
        return {
            "case": name, "shape": list(vol.array.shape), "spacing": list(vol.spacing),
            "modality": vol.source.modality, "range": [lo, hi], "labels": labels,
            "has_proposal": case.proposal is not None,
            "has_uncertainty": case.uncertainty is not None,
            "queue": case.queue, "record": self.record(name),
        }  # fmt: skip

    # ------------------------------------------------------------------ saving
    def save(
        self,
        name: str,
        edits: list[tuple[int, int, np.ndarray]],
        *,
        status: str = "pending",
        note: str = "",
        reviewer: str = "",
    ) -> dict[str, Any]:
        """Apply ``edits`` (``(axis, index, display slice)``) to the case's current labels and
        write ``reviewed/<case>.nii.gz`` and its record ``reviewed/<case>.json`` (whole files,
        replacing an earlier review of the case, never the proposal). Returns the record."""
        from medimg.io.label_table import label_table_path, write_label_table
        from medimg.io.output import atomic_path
        from medimg.metrics.segmentation import dice

        if status not in STATUSES:
            raise InputError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        with self._save_lock:
            current = self.volume(name, "labels")
            proposal = self.volume(name, "proposal").array
            labels = current.array.copy()
            slices = []
            for axis, index, disp in edits:
                expect = to_display(labels, axis, index).shape
                if not 0 <= index < labels.shape[axis] or disp.shape != expect:
                    raise InputError(f"edit of slice {index} across axis {axis}: shape "
                                     f"{disp.shape}, expected {expect}")  # fmt: skip
                idx = [slice(None)] * 3
                idx[axis] = index
                labels[tuple(idx)] = from_display(disp)
                slices.append({"axis": axis, "index": index})
            out = self._write_labels(name, labels, current.source)
            names = self.label_names(name)
            write_label_table(label_table_path(out), {k: v for k, v in names.items() if k},
                              overwrite=True)  # fmt: skip
            values = sorted({int(v) for v in np.unique(proposal)} | {int(v) for v in np.unique(labels)})  # fmt: skip
            changes = {}
            for v in values:
                if v == 0:
                    continue
                a, b = proposal == v, labels == v
                changes[names.get(v, str(v))] = {
                    "label": v, "added_voxels": int((b & ~a).sum()),
                    "removed_voxels": int((a & ~b).sum()), "dice": round(dice(b, a), 6),
                }  # fmt: skip
            case = self.case(name)
            previous = self.record(name) or {}
            record = {
                "case": name,
                "reviewer": reviewer or _user(),
                "time": datetime.now(UTC).isoformat(timespec="seconds"),
                "status": status,
                "note": note,
                "image": case.image.relative_to(self.root).as_posix(),
                "proposal": case.proposal.relative_to(self.root).as_posix() if case.proposal else None,
                "correction": out.relative_to(self.root).as_posix(),
                "edited_slices": slices,
                "changed_voxels": int((proposal != labels).sum()),
                "dice_foreground": round(dice(labels > 0, proposal > 0), 6),
                "labels": changes,
                "history": [*previous.get("history", []),
                            {k: v for k, v in previous.items() if k != "history"}]
                if previous else [],
            }  # fmt: skip
            with atomic_path(self.record_path(name), overwrite=True) as tmp:
                tmp.write_text(json.dumps(record, indent=2))
            self.forget(name)
        return record

    def _write_labels(self, name: str, labels: np.ndarray, like: Image) -> Path:
        """Labels (RAS+) written on ``like``'s own grid and axis order, as uint8 NIfTI."""
        import nibabel as nib

        from medimg.io.output import atomic_path

        ornt = nib.orientations.io_orientation(like.affine)
        back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), ornt)
        arr = np.asarray(nib.orientations.apply_orientation(labels, back), dtype=np.uint8)
        if like.spatial_ndim == 2:
            arr = arr[..., 0]
        nii = Image(arr[None], like.affine, modality="SEG", is_label=True).to_nibabel()
        nii.header["descrip"] = b"medimg review: corrected labels"
        out = self.corrected_path(name)
        out.parent.mkdir(exist_ok=True)
        self._inside(out.parent)  # reviewed/ may not be a link out of the folder
        with atomic_path(out, overwrite=True) as tmp:
            nib.save(nii, tmp)
        return out


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
