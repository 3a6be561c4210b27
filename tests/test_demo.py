"""`medimg demo` runs every stage, writes its outputs, and reports success only when all pass."""

from __future__ import annotations

import numpy as np

from medimg import demo
from medimg.io.api import load


def test_demo_io_stage_round_trips(tmp_path, capsys) -> None:
    assert demo.run_demo(tmp_path) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out and "CT -> DICOM" in out
    assert "[demo] io: 4 checks, ok" in out  # one small table per stage
    report = (tmp_path / "report.html").read_text()
    assert all(f'<section id="{name}">' in report for name, _ in demo.STAGES)
    assert 'src="io/overview.png"' in report
    io_dir = tmp_path / "io"
    assert (io_dir / "overview.png").stat().st_size > 1000
    ct = load(io_dir / "ct_dicom")
    assert ct.modality == "CT" and ct.array.min() < -500  # HU survived the DICOM rescale
    assert np.allclose(ct.affine, load(io_dir / "ct.nii.gz").affine, atol=1e-4)


def test_demo_reports_failure(tmp_path, monkeypatch, capsys) -> None:
    def broken(out):
        return [{"stage": "x", "status": "FAIL"}]

    monkeypatch.setattr(demo, "STAGES", [("x", broken)])
    assert demo.run_demo(tmp_path) == 1
    out = capsys.readouterr().out
    assert "1 failed" in out and "x: 1 checks, 1 FAILED" in out
    assert '<tr class="fail">' in (tmp_path / "report.html").read_text()
