"""``predict``: CT files, folders or DICOM series -> nodule candidates in world coordinates.

Writes into an output folder:

* ``candidates.csv``: LUNA16's submission format
  ``seriesuid,coordX,coordY,coordZ,probability`` plus ``diameter_mm``; coordinates are **LPS** mm
  (the frame of ``.mhd`` files and of LUNA16's CSVs), so the file feeds LUNA16's own evaluation;
* ``candidates.json``: per series, the findings with ``center_lps_mm``, ``center_ras_mm``,
  ``diameter_mm``, ``score`` and the box ``[x0, y0, z0, x1, y1, z1]`` (RAS+ mm);
* ``figures/<seriesuid>.png``: the top findings on axial, coronal and sagittal slices;
* with ``seg_threshold`` and a DICOM series as input, ``<seriesuid>_seg.dcm``: a DICOM SEG
  referencing that series, one segment per finding scoring at least the threshold (a sphere of
  the finding's diameter), so a viewer shows the findings over the scan.

The series uid is the file name without extension (LUNA16 names volumes by uid) or, for a DICOM
folder, its SeriesInstanceUID (the folder name if the header has none); where two inputs share it (``a/scan.mhd``, ``b/scan.mhd``), their
paths relative to the input folder (``a__scan``), so no output replaces another.

Every output is checked before detection starts (``--seg`` needs DICOM series inputs, the
output folder must be new, or an earlier medimg output with ``overwrite``); the folder is
written beside its target and swapped in complete (:mod:`.outputs`), so a refusal, an error or
Ctrl-C leaves nothing, or the earlier output as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.io.inputs import case_ids
from medimg.io.output import atomic_dir, atomic_path, check_output_dir
from medimg.tasks.detect.data import check_ct_volume
from medimg.tasks.detect.infer import Candidate, InferenceConfig, detect_volume, load_model_folder
from medimg.typing import PathType

__all__ = [
    "DEFAULT_MODEL",
    "Detector",
    "find_inputs",
    "findings_label_map",
    "predict_path",
    "write_candidates",
]

DEFAULT_MODEL = Path(__file__).parent / "default"
_IMAGE_SUFFIXES = (".mhd", ".mha", ".nrrd", ".nii", ".nii.gz")


class Detector:
    """A loaded detection model: ``Detector().detect(image)`` -> candidates, best first."""

    def __init__(self, model: PathType | None = None, device: str = "cpu", flips: bool = False,
                 backend: str = "torch"):  # fmt: skip
        from medimg.engine import resolve_device
        from medimg.engine.provenance import model_tag

        self.device = resolve_device(device)
        if backend != "torch" or str(model).lower().endswith(".onnx"):
            from medimg.tasks.detect.infer import load_onnx

            self.model, cfg, self.tag = load_onnx(model, backend, str(self.device))
            self.device = torch.device("cpu")  # ONNX Runtime takes and returns host arrays
        else:
            self.model, cfg = load_model_folder(model or DEFAULT_MODEL)
            #: which model found the candidates (candidates.json, DICOM-SEG series description)
            self.tag = model_tag("detect", Path(model).name if model else "default", [self.model])
        self.model.to(self.device)
        self.spacing = float(cfg["model"]["spacing"])
        inf = dict(cfg.get("inference", {}))
        inf["flips"] = bool(flips or inf.get("flips", False))
        self.inference = InferenceConfig(**inf)

    def detect(self, image: Image) -> list[Candidate]:
        return detect_volume(self.model, image, self.spacing, self.inference, self.device)


def _suffix(p: Path) -> str:
    return ".nii.gz" if p.name.lower().endswith(".nii.gz") else p.suffix.lower()


def find_inputs(path: PathType) -> list[tuple[str, Path]]:
    """``[(seriesuid, path)]``: one image file, the image files under a folder (recursively,
    e.g. a LUNA16 root), or a DICOM series folder; uids unique (module doc)."""
    p = Path(path)
    if not p.exists():
        raise InputError("no such file or folder", p)
    if p.is_file():
        if _suffix(p) not in _IMAGE_SUFFIXES and _suffix(p) not in (".dcm", ""):
            raise InputError(f"not a CT volume; give one of {', '.join(_IMAGE_SUFFIXES)}", p)
        return [(p.name[: -len(_suffix(p))] if _suffix(p) else p.name, p)]
    files = sorted(f for f in p.rglob("*") if f.is_file() and _suffix(f) in _IMAGE_SUFFIXES)
    if files:
        return list(zip(case_ids(files, root=p), files))
    return [(p.name, p)]  # a DICOM series folder (medimg.io.load says if it is not)


def _holds_dicom(folder: Path) -> bool:
    """Whether ``folder`` holds a DICOM file among its first 50 files (headers only)."""
    from itertools import islice

    import pydicom

    for f in islice((f for f in sorted(folder.rglob("*")) if f.is_file()), 50):
        try:
            pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPClassUID"])
            return True
        except (pydicom.errors.InvalidDicomError, OSError, ValueError):
            continue
    return False


def _unique(uid: str, taken: dict) -> str:
    """``uid``, or ``uid__2``, ``uid__3``... where an earlier input already has it."""
    n, out = 1, uid
    while out in taken:
        n += 1
        out = f"{uid}__{n}"
    return out


def write_candidates(
    rows: dict[str, list[Candidate]], out_dir: Path, overwrite: bool = False, model: str = ""
) -> None:
    """``candidates.csv`` and ``candidates.json`` (module doc) into ``out_dir``; ``model``: the
    tag of the model that found them, kept in the JSON (the CSV keeps LUNA16's columns)."""
    from medimg.metrics.detection import centers_to_boxes

    with atomic_path(out_dir / "candidates.csv", overwrite) as tmp:
        lines = ["seriesuid,coordX,coordY,coordZ,probability,diameter_mm"]
        for uid, cands in rows.items():
            for c in cands:
                x, y, z = c.center_lps
                lines.append(f"{uid},{x:.3f},{y:.3f},{z:.3f},{c.score:.6f},{c.diameter_mm:.2f}")
        tmp.write_text("\n".join(lines) + "\n")
    doc = {
        uid: [
            {"center_lps_mm": [round(v, 3) for v in c.center_lps],
             "center_ras_mm": [round(v, 3) for v in c.center_ras],
             "diameter_mm": round(c.diameter_mm, 2), "score": round(c.score, 6),
             "box_ras_mm": [round(v, 3) for v in centers_to_boxes([c.center_ras], [c.diameter_mm])[0]]}
            for c in cands
        ]
        for uid, cands in rows.items()
    }  # fmt: skip
    with atomic_path(out_dir / "candidates.json", overwrite) as tmp:
        head = {"model": model} if model else {}
        tmp.write_text(json.dumps({**head, "coordinate_note": "LPS and RAS+ world mm",
                                   "series": doc}, indent=1))  # fmt: skip


def figure(
    image: Image, cands: list[Candidate], path: Path, top: int = 3, overwrite: bool = False
) -> Path:
    """Axial, coronal and sagittal slices through each of the ``top`` findings (lung window,
    radiological view: patient's right on the left), circles of the predicted diameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    img = image.canonical()
    arr, sp = img.array[0], img.spacing
    middle = tuple(img.voxel_to_world(np.asarray(arr.shape) / 2))
    shown = cands[:top] or [Candidate(middle, 0.0, 0.0)]  # type: ignore[arg-type]
    fig, axes = plt.subplots(len(shown), 3, figsize=(9, 3 * len(shown)), squeeze=False)
    for row, c in zip(axes, shown):
        v = np.clip(
            np.round(img.world_to_voxel(c.center_ras)).astype(int), 0, np.subtract(arr.shape, 1)
        )
        views = [(arr[:, :, v[2]], (v[0], v[1]), (sp[0], sp[1]), "axial"),
                 (arr[:, v[1], :], (v[0], v[2]), (sp[0], sp[2]), "coronal"),
                 (arr[v[0], :, :], (v[1], v[2]), (sp[1], sp[2]), "sagittal")]  # fmt: skip
        for ax, (sl, (a, b), (sa, sb), name) in zip(row, views):
            ax.imshow(sl.T, cmap="gray", vmin=-1350, vmax=150, origin="lower",
                      extent=(-0.5 * sa, (sl.shape[0] - 0.5) * sa, -0.5 * sb, (sl.shape[1] - 0.5) * sb))  # fmt: skip
            if c.diameter_mm > 0:
                ax.add_patch(
                    Circle((a * sa, b * sb), c.diameter_mm / 2 + 3, fill=False, ec="yellow")
                )
            if name != "sagittal":
                ax.invert_xaxis()  # radiological: patient's right (+x) on the left
            ax.set_title(f"{name}  score {c.score:.2f}  {c.diameter_mm:.0f} mm", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return path


def findings_label_map(
    image: Image, cands: list[Candidate], threshold: float, limit: int = 20
) -> tuple[Image, dict[int, str]]:
    """Label ``n`` = the ``n``-th best finding with score >= ``threshold`` (a sphere of its
    diameter) on ``image``'s grid, and the segment names."""
    grid = np.zeros(image.spatial_shape, np.uint8)
    inv = np.linalg.inv(image.affine)
    sp = np.asarray(image.spacing, dtype=np.float64)
    names: dict[int, str] = {}
    chosen = [c for c in sorted(cands, key=lambda c: -c.score) if c.score >= threshold][:limit]
    for n, c in enumerate(chosen, start=1):
        centre = inv[:3, :3] @ np.asarray(c.center_ras) + inv[:3, 3]
        half = np.ceil(c.diameter_mm / 2 / sp).astype(int) + 1
        lo = np.maximum(np.floor(centre).astype(int) - half, 0)
        hi = np.minimum(np.ceil(centre).astype(int) + half + 1, grid.shape)
        if np.any(hi <= lo):
            continue
        idx = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1)
        world = idx @ image.affine[:3, :3].T + image.affine[:3, 3]
        inside = np.linalg.norm(world - np.asarray(c.center_ras), axis=-1) <= c.diameter_mm / 2
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        grid[box][inside & (grid[box] == 0)] = n
        names[n] = f"finding {n}: score {c.score:.2f}, {c.diameter_mm:.1f} mm"
    return Image(grid[None], image.affine, is_label=True), names


def predict_path(
    input_path: PathType,
    output_dir: PathType,
    *,
    model: PathType | None = None,
    device: str = "cpu",
    flips: bool = False,
    figures: bool = True,
    overwrite: bool = False,
    seg_threshold: float | None = None,
    detector: Detector | None = None,
    progress: bool = True,
    backend: str = "torch",
) -> list[Path]:
    """Detect nodules in every volume of ``input_path``; write the outputs of the module doc
    into ``output_dir`` (a DICOM SEG per DICOM series when ``seg_threshold`` is set). Returns
    the written paths. ``detector``: one already loaded (a cohort worker reuses its own).
    ``backend="onnxruntime"``: the network runs in ONNX Runtime (``model``: an exported
    ``.onnx``, or a model folder exported now); the rest is unchanged."""
    from tqdm import tqdm

    from medimg.io.api import load

    inputs = find_inputs(input_path)
    out = Path(output_dir)
    if seg_threshold is not None:  # known from the paths: refuse before any detection
        if not 0.0 <= seg_threshold <= 1.0:
            raise InputError(f"--seg {seg_threshold} is not a score; give one in [0, 1]")
        for _, path in inputs:
            if not (path.is_dir() and _holds_dicom(path)):
                raise InputError("a DICOM SEG needs a DICOM series folder as input (it references "
                                 "the series); drop --seg or give the series folder", path)  # fmt: skip
    # the model folder too: replacing an output that holds it would delete the model
    sources = [input_path, model or DEFAULT_MODEL]
    check_output_dir(out, overwrite, inputs=sources)
    det = detector or Detector(model, device, flips, backend=backend)
    rows: dict[str, list[Candidate]] = {}
    written = []
    with atomic_dir(out, overwrite, inputs=sources) as tmp:
        for uid, path in tqdm(inputs, desc="detect", disable=not progress or len(inputs) < 2):
            image = load(path, modality="CT")
            check_ct_volume(image, path)
            if path.is_dir() and image.meta.get("series_uid"):  # a DICOM series: its own uid
                uid = _unique(str(image.meta["series_uid"]), rows)
            with torch.inference_mode():
                rows[uid] = det.detect(image)
            if figures:
                figure(image, rows[uid], tmp / "figures" / f"{uid}.png")
                written.append(out / "figures" / f"{uid}.png")
            if seg_threshold is not None:
                labels, names = findings_label_map(image, rows[uid], seg_threshold)
                if names:
                    from medimg.io.dicom.seg import write_dicom_seg

                    write_dicom_seg(labels, path, tmp / f"{uid}_seg.dcm", segment_names=names,
                                    series_description=det.tag[:64])  # fmt: skip
                    written.append(out / f"{uid}_seg.dcm")
        write_candidates(rows, tmp, model=det.tag)
    return [out / "candidates.csv", out / "candidates.json", *written]
