"""Patient-level k-fold splits."""

from __future__ import annotations

import pytest

from medimg.datasets.splits import kfold_split, patient_id
from medimg.errors import InputError


def test_folds_partition_cases_and_are_deterministic():
    ids = [f"c{i:02d}" for i in range(11)]
    folds = kfold_split(ids, 5, seed=3)
    vals = [v for _, v in folds]
    assert sorted(c for v in vals for c in v) == ids
    for train, val in folds:
        assert not set(train) & set(val) and sorted(train + val) == ids
    assert folds == kfold_split(ids, 5, seed=3)
    assert folds != kfold_split(ids, 5, seed=4)


def test_patients_never_straddle_folds():
    ids = [f"pat{p}_tp{t}" for p in range(6) for t in range(3)]
    assert patient_id("pat3_tp2") == "pat3" and patient_id("case_007") == "case_007"
    for train, val in kfold_split(ids, 3):
        assert {patient_id(c) for c in train}.isdisjoint({patient_id(c) for c in val})


def test_too_few_patients():
    with pytest.raises(InputError, match="2 patients cannot fill 5 folds"):
        kfold_split(["a", "b"], 5)
