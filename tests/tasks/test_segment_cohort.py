"""``medimg segment predict DIR OUT --workers 1``: one folder per study, the same labels as a
one-process predict, resumable."""

from __future__ import annotations

import numpy as np

from medimg.cli import main
from medimg.io.api import load, save
from medimg.io.image import Image


def _ct(path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    vol = np.full((1, 40, 40, 16), -100.0, np.float32) + rng.normal(0, 15, (1, 40, 40, 16))
    vol[0, 10:25, 12:30, 4:12] = 60.0
    save(Image(vol.astype(np.float32), np.diag([2.0, 2.0, 4.0, 1.0]), modality="CT"), path)


def test_folder_cohort_matches_one_process_predict_and_resumes(tmp_path, capsys):
    src = tmp_path / "scans"
    src.mkdir()
    for i in range(2):
        _ct(src / f"ct{i}.nii.gz", i)
    out = tmp_path / "cohort"
    args = ["segment", "predict", str(src), str(out), "--workers", "1", "--no-mirror", "--quiet"]
    assert main(args) == 0
    assert main(["segment", "predict", str(src / "ct1.nii.gz"), str(tmp_path / "one.nii.gz"),
                 "--no-mirror", "--quiet"]) == 0  # fmt: skip
    cohort = load(out / "cases" / "ct1" / "ct1.nii.gz").array
    assert np.array_equal(cohort, load(tmp_path / "one.nii.gz").array)
    assert (out / "cases" / "ct0" / "ct0.tsv").exists()
    capsys.readouterr()
    assert main(args) == 0
    assert "already done   2" in capsys.readouterr().out


def test_a_multi_channel_case_is_refused_in_one_line(tmp_path, capsys):
    src = tmp_path / "scans"
    src.mkdir()
    for c in range(2):
        _ct(src / f"case_000{c}.nii.gz", c)
    assert main(["segment", "predict", str(src), str(tmp_path / "o"), "--workers", "1"]) == 2
    assert "several channel files" in capsys.readouterr().err
