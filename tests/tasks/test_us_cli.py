"""``medimg recon us`` end to end on a tiny phantom: simulate -> predict (NIfTI + US DICOM + PNG,
never overwriting) -> evaluate, the channel-data file's checks, and the demo stage."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from medimg.cli import main
from medimg.errors import InputError, MedimgError
from medimg.io.api import load
from medimg.tasks.reconstruct.us.data import load_channel_data, make_phantom, save_channel_data

TINY = ["--scale", "0.25", "--density", "10", "--angles", "3"]


@pytest.fixture(scope="module")
def channel(tmp_path_factory):
    out = tmp_path_factory.mktemp("us") / "ch.npz"
    assert main(["recon", "us", "simulate", str(out), *TINY]) == 0
    return out


@pytest.mark.parametrize("verb", ["simulate", "predict", "evaluate", "despeckle"])
def test_every_verb_has_help_with_example(verb, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["recon", "us", verb, "--help"])
    assert exc.value.code == 0
    assert "example:\n  medimg recon us " + verb in capsys.readouterr().out


def test_predict_writes_nifti_and_us_dicom_without_overwriting(channel, tmp_path, capsys) -> None:
    out = tmp_path / "bmode"
    assert main(["recon", "us", "predict", str(channel), str(out)]) == 0
    nifti = load(out / "bmode.nii.gz")
    assert nifti.spacing[:2] == pytest.approx((0.1, 0.05))
    assert nifti.array.max() == pytest.approx(0.0) and nifti.array.min() >= -60
    ds = pydicom.dcmread(out / "dicom" / "bmode.dcm")
    assert ds.SOPClassUID == pydicom.uid.UltrasoundImageStorage and ds.Modality == "US"
    assert ds.Rows == nifti.spatial_shape[1] and ds.Columns == nifti.spatial_shape[0]
    region = ds.SequenceOfUltrasoundRegions[0]
    assert (region.PhysicalDeltaX, region.PhysicalDeltaY) == pytest.approx((0.01, 0.005))
    assert (out / "bmode.png").stat().st_size > 1000
    assert load(out / "dicom").spacing[:2] == pytest.approx((0.1, 0.05))
    before = (out / "bmode.nii.gz").read_bytes()
    capsys.readouterr()
    assert main(["recon", "us", "predict", str(channel), str(out), "--transmits", "1"]) == 2
    assert "error:" in capsys.readouterr().err
    assert (out / "bmode.nii.gz").read_bytes() == before  # untouched
    assert main(["recon", "us", "predict", str(channel), str(out), "--transmits", "1",
                 "--overwrite"]) == 0  # fmt: skip
    assert (out / "bmode.nii.gz").read_bytes() != before


def test_evaluate_reports_picmus_metrics(channel, tmp_path, capsys) -> None:
    out = tmp_path / "report"
    assert main(["recon", "us", "evaluate", str(channel), "--out", str(out),
                 "--transmits", "1", "0"]) == 0  # fmt: skip
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("method,transmits,lateral_fwhm_mm") and len(lines) == 3
    assert {"panel.png", "summary.md", "bmode_1.png", "bmode_3.png"} <= {
        p.name for p in out.iterdir()
    }


def test_channel_file_round_trip_and_refusals(channel, tmp_path, capsys) -> None:
    data = load_channel_data(channel)
    assert data.rf.shape[:2] == (3, 128) and data.transmits.kind == "plane"
    assert data.meta["truth"]["cysts"][0][3] is None  # anechoic
    copy = save_channel_data(data, tmp_path / "copy.npz")
    back = load_channel_data(copy)
    assert np.abs(back.rf - data.rf).max() <= np.abs(data.rf).max() / 32000
    with pytest.raises(MedimgError, match="already exists"):
        save_channel_data(data, copy)
    bad = tmp_path / "bad.npz"
    np.savez(bad, rf=np.zeros((2, 3)))
    with pytest.raises(InputError, match="missing"):
        load_channel_data(bad)
    (tmp_path / "junk.npz").write_text("not a zip")
    assert main(["recon", "us", "predict", str(tmp_path / "junk.npz"), str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error:")
    assert main(["recon", "us", "simulate", str(tmp_path / "x.h5")]) == 2
    with pytest.raises(InputError, match="unknown phantom"):
        make_phantom("heart")


def test_demo_stage_rows(tmp_path) -> None:
    from medimg.tasks.reconstruct.us.demo import stage

    rows = stage(tmp_path)
    assert [r["status"] for r in rows] == ["ok"] * 5
    assert rows[0]["item"] == "DAS 1 plane waves" and "gCNR" in rows[2]
    assert rows[4]["item"] == "despeckle (simulated B-mode)"
    assert (tmp_path / "despeckle" / "before_after.png").is_file()
