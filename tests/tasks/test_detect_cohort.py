"""``medimg detect predict`` over a cohort: a manifest in, one folder per case, one merged table."""

from __future__ import annotations

import csv

import numpy as np

from medimg.cli import main
from medimg.io.api import save
from medimg.io.image import Image


def _ct(path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    vol = np.full((1, 48, 48, 24), -850.0, np.float32) + rng.normal(0, 20, (1, 48, 48, 24))
    vol[0, 20:27, 20:27, 9:14] = 40.0  # a small dense blob the detector may or may not report
    save(Image(vol.astype(np.float32), np.diag([0.8, 0.8, 2.0, 1.0]), modality="CT"), path)


def test_manifest_cohort_writes_each_case_and_a_merged_table_and_resumes(tmp_path, capsys):
    for i in range(2):
        _ct(tmp_path / f"ct{i}.nii.gz", i)
    (tmp_path / "broken.nii.gz").write_bytes(b"not a volume")
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("case_id,path\nA,ct0.nii.gz\nB,ct1.nii.gz\nC,broken.nii.gz\n")
    out = tmp_path / "out"
    rc = main(["detect", "predict", str(manifest), str(out), "--no-figures", "--quiet"])
    assert rc == 1  # one case failed; the others finished
    text = capsys.readouterr().out
    assert "failed         1" in text
    for cid in "AB":
        assert (out / "cases" / cid / "candidates.csv").exists()
    with open(out / "summary.csv", newline="") as f:
        status = {r["case_id"]: r["status"] for r in csv.DictReader(f)}
    assert status == {"A": "ok", "B": "ok", "C": "failed"}
    with open(out / "candidates.csv", newline="") as f:
        merged = list(csv.DictReader(f))
    per_case = sum(
        len(list(csv.DictReader(open(out / "cases" / c / "candidates.csv")))) for c in "AB"
    )
    assert len(merged) == per_case and {r["seriesuid"] for r in merged} <= {"ct0", "ct1"}
    (tmp_path / "broken.nii.gz").unlink()
    _ct(tmp_path / "broken.nii.gz", 2)  # fixed: the same command now runs only that case
    assert main(["detect", "predict", str(manifest), str(out), "--no-figures", "--quiet"]) == 0
    assert "already done   2" in capsys.readouterr().out
