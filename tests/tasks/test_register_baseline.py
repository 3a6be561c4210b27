"""Classical baselines through the same interface: ANTsPy SyN (when installed) and its error."""

import sys

import pytest

from medimg.errors import InputError
from medimg.phantoms.registration import make_pair
from medimg.tasks.register.baseline import baseline_register
from medimg.tasks.register.data import Pair
from medimg.tasks.register.evaluate import pair_metrics, run_method


def _pair():
    p = make_pair("mr", seed=7, shape=(32, 32, 32), spacing=6.0, max_disp_mm=12.0)
    return Pair("p", p.fixed, p.moving, p.fixed_labels, p.moving_labels, p.fixed_landmarks,
                p.moving_landmarks, p.field.array)  # fmt: skip


def test_ants_syn_beats_the_identity_and_returns_our_field_convention():
    pytest.importorskip("ants")
    pair = _pair()
    res = baseline_register(pair.fixed, pair.moving, "ants-syn", moving_labels=pair.moving_label)
    got, before = pair_metrics(pair, res), pair_metrics(pair, run_method("identity", pair))
    assert got["dice"] > before["dice"] + 0.05
    assert got["tre_mm"] < 0.8 * before["tre_mm"]  # the field maps fixed points to moving ones


def test_ants_syn_without_antspy_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ants", None)  # import ants -> ImportError
    pair = _pair()
    with pytest.raises(InputError, match=r"pip install 'medimg\[ants\]'"):
        baseline_register(pair.fixed, pair.moving, "ants-syn")
