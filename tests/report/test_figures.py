"""Figure layout: axial slices in radiological view whatever the file's axis order."""

from __future__ import annotations

import numpy as np
import pytest

from medimg.io.image import Image
from medimg.report.figures import axial_slice, label_colormap


def _marked_volume(flip_x: bool, flip_y: bool, swap_xy: bool) -> Image:
    """A 20x16x6 volume (RAS+ world) with a block at the patient's right-anterior corner, stored
    with axes flipped or swapped as scanners and DICOM (LPS) store them."""
    vol = np.zeros((20, 16, 6), np.float32)
    vol[15:19, 11:15, 3] = 1.0  # +x = patient right, +y = anterior in RAS+
    affine = np.eye(4)
    if flip_x:
        vol, affine = (
            vol[::-1],
            affine @ np.array([[-1, 0, 0, 19], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
        )
    if flip_y:
        vol, affine = (
            vol[:, ::-1],
            affine @ np.array([[1, 0, 0, 0], [0, -1, 0, 15], [0, 0, 1, 0], [0, 0, 0, 1]]),
        )
    if swap_xy:
        vol, affine = vol.transpose(1, 0, 2), affine[:, [1, 0, 2, 3]]
    return Image(np.ascontiguousarray(vol)[None], affine)


@pytest.mark.parametrize("flip_x", [False, True])
@pytest.mark.parametrize("flip_y", [False, True])
@pytest.mark.parametrize("swap_xy", [False, True])
def test_patient_right_is_on_the_left_and_anterior_on_top(flip_x, flip_y, swap_xy) -> None:
    view = axial_slice(_marked_volume(flip_x, flip_y, swap_xy), z=3)
    assert view.shape == (16, 20)  # rows anterior -> posterior, columns right -> left
    rows, cols = np.nonzero(view)
    assert cols.max() < 10 and rows.max() < 8  # the right-anterior block: left and top


def test_label_colours_follow_the_structure_names() -> None:
    a = label_colormap({1: "liver", 2: "spleen"})
    b = label_colormap({1: "spleen", 2: "liver"})
    assert a.colors[1] == b.colors[2] and a.colors[2] == b.colors[1]
    assert a.colors[0] == (0.0, 0.0, 0.0)
