"""Largest-connected-component post-processing and its validation-driven choice."""

from __future__ import annotations

import numpy as np
import pytest

from medimg.errors import InputError
from medimg.tasks.segment.postprocess import (
    apply_postprocessing,
    choose_postprocessing,
    keep_largest_component,
)


def _organ_with_speck() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((19, 17, 11), np.uint8)
    gt[3:12, 4:13, 2:9] = 1
    gt[14:17, 2:5, 3:6] = 2  # label 2 comes in two real pieces
    gt[14:17, 12:15, 3:6] = 2
    pred = gt.copy()
    pred[17, 15, 9] = 1  # a planted false-positive speck of label 1
    pred[0, 0, 0] = 3  # a label we do not touch
    return pred, gt


def test_removes_a_planted_speck_and_leaves_other_labels() -> None:
    pred, gt = _organ_with_speck()
    out = keep_largest_component(pred, [1])
    assert out[17, 15, 9] == 0 and (out == 1).sum() == (gt == 1).sum()
    assert out[0, 0, 0] == 3 and np.array_equal(out == 2, pred == 2)
    assert pred[17, 15, 9] == 1  # the input is not modified


def test_full_connectivity_keeps_diagonal_neighbours_together() -> None:
    lab = np.zeros((7, 9), np.int64)
    lab[1:3, 1:3] = 1
    lab[3, 3] = 1  # touches the square only at a corner
    lab[5:7, 7:9] = 1  # a separate piece of 4: smaller than square + corner (5) only if joined
    out = keep_largest_component(lab, [1])
    assert out[3, 3] == 1 and (out[5:7, 7:9] == 0).all() and (out == 1).sum() == 5


def test_choice_follows_validation_dice() -> None:
    pred, gt = _organ_with_speck()
    other_pred, other_gt = pred.copy(), gt.copy()
    decisions = choose_postprocessing([pred, other_pred], [gt, other_gt], [1, 2], (1, 1, 2.5))
    # label 1: dropping the speck helps; label 2: the second piece is real, dropping it hurts
    assert decisions == {1: True, 2: False}
    cleaned = apply_postprocessing(pred, decisions)
    assert np.array_equal(cleaned == 1, gt == 1) and np.array_equal(cleaned == 2, gt == 2)
    # with no speck the filter changes nothing: a tie keeps the raw prediction
    assert choose_postprocessing([gt], [gt], [1], (1, 1, 1)) == {1: False}


def test_bad_inputs() -> None:
    pred, gt = _organ_with_speck()
    with pytest.raises(InputError, match="integer"):
        keep_largest_component(pred.astype(np.float32), [1])
    with pytest.raises(InputError, match="same, non-zero number"):
        choose_postprocessing([pred], [], [1], (1, 1, 1))
    with pytest.raises(InputError, match="spacing"):
        choose_postprocessing([pred], [gt], [1], (1, 1))
