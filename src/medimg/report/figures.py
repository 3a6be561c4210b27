"""One style for medimg's figures: radiological view, orientation letters, label colours and
legends, colour bars, and saving without clipped titles.

Radiological convention (what a radiologist's viewer shows): an axial slice seen from the feet,
patient's right on the screen's left, anterior at the top. :func:`axial_slice` returns a slice
already laid out that way, so every figure calls ``imshow(..., origin="upper")`` and adds
:func:`orientation_letters`; nothing else needs to know the file's axis order.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medimg.io.image import Image

if TYPE_CHECKING:  # matplotlib is imported lazily: the CLI starts without it
    from matplotlib.axes import Axes
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

__all__ = [
    "add_colorbar",
    "axial_slice",
    "label_colormap",
    "label_legend",
    "new_figure",
    "orientation_letters",
    "save_figure",
]

TITLE_SIZE = 9
TEXT_SIZE = 8


def new_figure(n_panels: int, panel_inches: float = 3.2, rows: int = 1) -> tuple[Figure, Any]:
    """A figure of ``rows x ceil(n/rows)`` square panels (an ``ndarray`` of axes, never a bare
    one), headless (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = -(-n_panels // rows)
    fig, axes = plt.subplots(rows, cols, figsize=(panel_inches * cols, panel_inches * rows + 0.4),
                             squeeze=False)  # fmt: skip
    return fig, axes


def axial_slice(image: Image | np.ndarray, z: int | None = None, affine: Any = None) -> np.ndarray:
    """The axial slice ``z`` (the middle one if ``None``) of a 3D image in radiological layout:
    rows run anterior -> posterior, columns patient right -> left. An :class:`Image` (or an
    array with its ``affine``) is first reoriented to RAS+ axes (flips and permutations only);
    a 2D array is taken as ``(x, y)`` in RAS+ already."""
    if isinstance(image, Image):
        arr = image.canonical().array[0] if image.spatial_ndim == 3 else image.array[0]
    elif affine is not None:
        arr = Image(np.asarray(image)[None], np.asarray(affine)).canonical().array[0]
    else:
        arr = np.asarray(image)
    if arr.ndim == 3:
        arr = arr[:, :, arr.shape[2] // 2 if z is None else z]
    # arr[x, y] in RAS+: x grows towards the patient's right, which goes on the screen's left
    # (columns: x reversed); y grows towards anterior, which goes at the top (rows: y reversed)
    return np.ascontiguousarray(arr.T[::-1, ::-1])


def orientation_letters(ax: Axes, view: str = "axial") -> None:
    """Small R/L/A/P (axial) or R/L/S/I (coronal) letters at the panel's edges."""
    left, right = "R", "L"
    top, bottom = ("A", "P") if view == "axial" else ("S", "I")
    style = {"color": "yellow", "fontsize": TEXT_SIZE, "fontweight": "bold",
             "transform": ax.transAxes}  # fmt: skip
    ax.text(0.02, 0.5, left, ha="left", va="center", **style)
    ax.text(0.98, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.98, top, ha="center", va="top", **style)
    ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)


def label_colormap(names: Mapping[int, str]) -> ListedColormap:
    """A colour map indexed by label value with the colours of the DICOM-SEG and the label table
    (:func:`medimg.io.dicom.codes.structure_code`); use with ``vmin=0, vmax=len(cmap.colors)-1``
    and ``interpolation="nearest"``."""
    from matplotlib.colors import ListedColormap

    from medimg.io.dicom.codes import structure_code

    top = max([0, *names])
    colours = [(0.0, 0.0, 0.0)] + [
        tuple(c / 255 for c in structure_code(names.get(v, f"label {v}"), v).rgb)
        for v in range(1, top + 1)
    ]
    return ListedColormap(colours)


def label_legend(fig: Figure, names: Mapping[int, str], extra: Mapping[str, str] = {}) -> None:
    """A legend under the panels: one patch per named label, plus ``extra`` line entries
    (label -> colour, e.g. the reference contour)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    cmap = label_colormap(names)
    handles = [Patch(color=cmap.colors[v], label=n) for v, n in sorted(names.items()) if v]
    handles += [Line2D([], [], color=c, label=lab) for lab, c in extra.items()]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), frameon=False,
               fontsize=TEXT_SIZE)  # fmt: skip


def add_colorbar(fig: Figure, ax: Axes | Any, mappable: Any, label: str) -> None:
    """A slim colour bar with a readable label: beside a whole row when ``ax`` is a sequence of
    axes, else inset at the right edge of the one panel; either way every panel keeps its size.
    """
    if hasattr(ax, "imshow"):
        bar = fig.colorbar(mappable, cax=ax.inset_axes((1.03, 0.0, 0.05, 1.0)))
    else:
        axes = list(np.ravel(ax))
        bar = fig.colorbar(mappable, ax=axes, fraction=0.046 / len(axes), pad=0.02)
    bar.set_label(label, fontsize=TEXT_SIZE)
    bar.ax.tick_params(labelsize=TEXT_SIZE - 1)


def save_figure(fig: Figure, path: str | Path, title: str | None = None, dpi: int = 100) -> Path:
    """Save with the suptitle and legends inside the picture (tight bounding box), then close."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=TITLE_SIZE)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return Path(path)
