"""The files of a registered pair: which ones (``--outputs``), written whole into one folder.

``field.nii.gz`` and ``transform.h5`` are what ITK/ANTs read (see :mod:`.fields`);
``summary.json`` (times, stages, folding, Dice/HD95 with fixed labels) is always written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.tasks.register.data import to_grid
from medimg.tasks.register.predict import RegResult

__all__ = ["DEFAULT_OUTPUTS", "OUTPUTS", "OUTPUT_NAMES", "parse_outputs", "write_outputs"]

#: What :func:`write_outputs` can write (``--outputs``), each name with its file;
#: ``summary.json`` (times, folding, Dice) is always written.
OUTPUTS = {"warped": "warped.nii.gz", "labels": "warped_labels.nii.gz", "field": "field.nii.gz",
           "transform": "transform.h5", "jacobian": "jacobian.nii.gz", "png": "overview.png"}  # fmt: skip
#: Written when none are chosen: the warped image (and labels), the field for other tools, the
#: PNG to check by eye; ``transform`` repeats ``field`` as an ITK .h5 file and ``jacobian`` is a
#: diagnostic (its folding % is in summary.json), both as large as the field.
DEFAULT_OUTPUTS = ("warped", "labels", "field", "png")
#: Every file :func:`write_outputs` may write (an earlier output folder holds only these).
OUTPUT_NAMES = (*OUTPUTS.values(), "summary.json")


def parse_outputs(text: str) -> tuple[str, ...]:
    """``"warped,field"`` -> ``("warped", "field")``; ``"all"`` -> every output; one-line error
    for an unknown name."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if names == ("all",):
        return tuple(OUTPUTS)
    bad = [n for n in names if n not in OUTPUTS]
    if bad or not names:
        raise InputError(
            f"--outputs {text!r}: choose from {', '.join(OUTPUTS)} (comma-separated) or all"
        )
    return names


def write_outputs(
    result: RegResult,
    fixed: Image,
    moving: Image,
    out_dir: str | Path,
    *,
    fixed_labels: Image | None = None,
    overwrite: bool = False,
    inputs: list = (),
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS,
) -> list[Path]:
    """Write the ``outputs`` (names of :data:`OUTPUTS`; ``labels`` only when the result has warped
    labels) and ``summary.json`` into ``out_dir``; returns the paths. ``field.nii.gz`` is an
    ITK/ANTs LPS displacement, ``transform.h5`` the same as an ITK transform file.

    The folder appears whole once every file is written (an earlier output folder is replaced
    only with ``overwrite``: one with the mark or only :data:`OUTPUT_NAMES`); ``inputs`` are the
    files read, which the folder must not be, lie in, or hold."""
    from medimg.io.output import atomic_dir, is_owned

    bad = [n for n in outputs if n not in OUTPUTS]
    if bad:
        raise InputError(f"unknown output {bad[0]!r}; choose from {', '.join(OUTPUTS)}")
    with atomic_dir(
        out_dir, overwrite, inputs=inputs, owned=is_owned(out_dir, OUTPUT_NAMES)
    ) as tmp:
        names = _write_all(result, fixed, moving, tmp, fixed_labels, set(outputs))
    return [Path(out_dir) / n for n in names]


def _write_all(
    result: RegResult,
    fixed: Image,
    moving: Image,
    out: Path,
    fixed_labels: Image | None,
    outputs: set[str],
) -> list[str]:
    from medimg.io.api import save
    from medimg.metrics.registration import folding_fraction, jacobian_determinant, label_overlap
    from medimg.tasks.register.fields import save_field, save_transform
    from medimg.tasks.register.figures import overview_png

    jac = jacobian_determinant(result.field.array, fixed.affine)
    writers = {
        "warped": lambda p: save(result.warped, p),
        "field": lambda p: save_field(result.field, p),
        "transform": lambda p: save_transform(result.field, p),
        "jacobian": lambda p: save(Image(jac[None].astype(np.float32), fixed.affine), p),
        "labels": lambda p: save(result.warped_labels, p),
        "png": lambda p: overview_png(
            fixed, to_grid(moving, fixed), result.warped, result.field, jac, p
        ),
    }
    if result.warped_labels is None:
        outputs = outputs - {"labels"}
    names = [OUTPUTS[k] for k in OUTPUTS if k in outputs]
    for key in (k for k in OUTPUTS if k in outputs):
        writers[key](out / OUTPUTS[key])
    summary = {"seconds": round(result.seconds, 3), "cpu_seconds": round(result.cpu_seconds, 3),
               "folding_pct": 100 * folding_fraction(jac), **result.info}  # fmt: skip
    if result.warped_labels is not None and fixed_labels is not None:
        fl = to_grid(fixed_labels, fixed, label=True)
        labels = [int(v) for v in np.unique(fl.array) if v]
        scores = label_overlap(result.warped_labels.array, fl.array, labels, fixed.spacing)
        summary["dice"] = {str(k): round(v["dice"], 4) for k, v in scores.items()}
        summary["hd95_mm"] = {str(k): round(v["hd95"], 2) if np.isfinite(v["hd95"]) else None
                              for k, v in scores.items()}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return [*names, "summary.json"]
