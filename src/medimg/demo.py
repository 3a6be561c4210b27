"""``medimg demo``: one command that exercises the pipeline end to end on synthetic data.

Each stage is a function ``(out_dir) -> list[row]``; a row is a dict printed as one line of the
final table, and ``row["status"] == "ok"`` marks success. The io stage lives here; each task
provides ``stage`` in its own ``demo`` module, listed in :data:`TASK_STAGES`. Stages write only
inside their own sub-folder of the demo folder, which belongs to the demo and is rewritten on
every run.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medimg.errors import InputError
from medimg.io import Image
from medimg.io.output import atomic_dir, is_owned
from medimg.typing import PathType

Row = dict[str, object]
Stage = Callable[[Path], list[Row]]


def _rotation(axis: int, degrees: float) -> np.ndarray:
    """3x3 rotation about a world axis, to give demo volumes an oblique orientation."""
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _oblique_affine(spacing: tuple[float, float, float], axis: int, degrees: float) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = _rotation(axis, degrees) @ np.diag(spacing)
    a[:3, 3] = [-60.0, -80.0, -40.0]
    return a


def demo_volumes(seed: int = 0) -> dict[str, Image]:
    """A small CT-like (HU) and MR-like volume from our phantoms, oblique and anisotropic."""
    from medimg.phantoms.ct import body_phantom
    from medimg.phantoms.mri import brain_phantom

    ct = body_phantom((16, 96, 96), (2.5, 3.6, 3.6), n_nodules=2, seed=seed)
    ct_image = ct.to_images()[0]
    ct_image.affine = _oblique_affine(ct_image.spacing, axis=2, degrees=12.0)
    mr = brain_phantom((12, 96, 80), contrast="t1", seed=seed).magnitude.numpy()
    mr_image = Image(
        (1000.0 * mr.transpose(2, 1, 0))[None].astype(np.float32),
        _oblique_affine((1.1, 1.0, 3.0), axis=0, degrees=15.0),
        modality="MR",
    )
    return {"CT": ct_image, "MR": mr_image}


def stage_io(out: Path) -> list[Row]:
    """Write each volume as NIfTI and as a DICOM series, read both back, compare geometry."""
    from medimg.io.api import load, save

    rows: list[Row] = []
    for name, image in demo_volumes().items():
        nifti = save(image, out / f"{name.lower()}.nii.gz", overwrite=True)
        dicom = save(image, out / f"{name.lower()}_dicom", overwrite=True)
        for label, path in (("NIfTI", nifti), ("DICOM", dicom)):
            back = load(path)
            dv = float(np.max(np.abs(back.array.astype(np.float64) - image.array)))
            da = float(np.max(np.abs(back.affine - image.affine)))
            ok = da < 1e-4 and back.array.shape == image.array.shape
            rows.append(
                {
                    "stage": "io",
                    "item": f"{name} -> {label}",
                    "shape": "x".join(map(str, image.spatial_shape)),
                    "spacing mm": "x".join(f"{s:.2f}" for s in image.spacing),
                    "max |dvalue|": f"{dv:.3g}",
                    "max |daffine| mm": f"{da:.1e}",
                    "status": "ok" if ok else "FAIL",
                }
            )
    _save_overview(demo_volumes(), out / "overview.png")
    return rows


def _save_overview(images: dict[str, Image], path: Path) -> None:
    """Middle axial slice of each volume in radiological view (patient right on the left)."""
    from medimg.report.figures import axial_slice, new_figure, orientation_letters, save_figure

    fig, axes = new_figure(len(images), panel_inches=3.6)
    for ax, (name, image) in zip(axes[0], images.items()):
        window = (-400, 600) if image.modality == "CT" else (None, None)
        ax.imshow(axial_slice(image), cmap="gray", vmin=window[0], vmax=window[1])
        ax.set_title(f"{name}  {'x'.join(map(str, image.spatial_shape))}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        orientation_letters(ax)
    save_figure(fig, path, "demo volumes, middle axial slice, radiological view")


#: Task stages in order: (name, module with ``stage(out_dir) -> rows``). A module that is not
#: part of this version yet is left out of the run.
TASK_STAGES: list[tuple[str, str]] = [
    ("recon-mri", "medimg.tasks.reconstruct.mri.demo"),
    ("recon-ct", "medimg.tasks.reconstruct.ct.demo"),
    ("recon-us", "medimg.tasks.reconstruct.us.demo"),
    ("synthesize", "medimg.tasks.synthesize.demo"),
    ("superres", "medimg.tasks.superres.demo"),
    ("segment", "medimg.tasks.segment.demo"),
    ("register", "medimg.tasks.register.demo"),
    ("detect", "medimg.tasks.detect.demo"),
    ("diagnose", "medimg.tasks.diagnose.demo"),
]


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _task_stages() -> list[tuple[str, Stage]]:
    return [
        (name, importlib.import_module(module).stage)
        for name, module in TASK_STAGES
        if _module_exists(module)
    ]


#: The demo's stages in order (set at import: io, then every task stage that exists).
STAGES: list[tuple[str, Stage]] = [("io", stage_io), *_task_stages()]


def _print_table(rows: list[Row]) -> None:
    """One stage's rows as a small aligned table (the stage's name is in the heading above)."""
    if not rows:
        return
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k != "stage"]
    widths = {k: max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys}
    print("  " + "  ".join(k.ljust(widths[k]) for k in keys))
    print("  " + "  ".join("-" * widths[k] for k in keys))
    for r in rows:
        print("  " + "  ".join(str(r.get(k, "")).ljust(widths[k]) for k in keys))


def _checked(stage: Stage) -> str:
    """What a stage checks: the first paragraph of its docstring, on one line."""
    doc = (stage.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split())


def run_demo(out_dir: PathType = "runs/demo") -> int:
    """Run every stage into ``out_dir/<stage>/``, print one table per stage, write
    ``out_dir/report.html``; return 0 if every row is ok, else 1."""
    from medimg.report.html import Section, stage_figures, write_report

    out = Path(out_dir)
    for name, _ in STAGES:  # refuse before any work: only the demo's own folders are replaced
        stage_dir = out / name
        if stage_dir.is_dir() and any(stage_dir.iterdir()) and not is_owned(stage_dir):
            raise InputError(
                f"holds a folder '{name}' the demo did not write; choose another --out",
                out,
            )
    sections: list[Section] = []
    for name, stage in STAGES:
        t0 = time.perf_counter()
        with atomic_dir(out / name, overwrite=True) as stage_dir:
            stage_rows = stage(stage_dir)
        seconds = time.perf_counter() - t0
        section = Section(name, _checked(stage), stage_rows, stage_figures(out / name), seconds)
        sections.append(section)
        verdict = "ok" if not section.failed else f"{section.failed} FAILED"
        print(f"\n[demo] {name}: {len(stage_rows)} checks, {verdict}, {seconds:.1f} s")
        _print_table(stage_rows)
    report = write_report(sections, out / "report.html", title="medimg demo")
    total = sum(len(s.rows) for s in sections)
    failed = sum(s.failed for s in sections)
    print(
        f"\n[demo] {total - failed} ok, {failed} failed; open {report} for the tables and figures"
    )
    return 1 if failed else 0
