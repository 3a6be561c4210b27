"""``medimg recon ct`` verbs end to end on a tiny simulated set, and their one-line errors."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from medimg.cli import main
from medimg.io.api import load, save
from medimg.io.image import Image

SCAN = ["--size", "48", "--pixel-mm", "8", "--views", "64", "--i0", "5e3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("ldct") / "data"
    assert main(["recon", "ct", "simulate", str(out), "--cases", "2", *SCAN]) == 0
    return out


@pytest.mark.parametrize("verb", ["simulate", "reconstruct", "train", "predict", "evaluate"])
def test_every_verb_has_help_with_example(verb, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["recon", "ct", verb, "--help"])
    assert exc.value.code == 0
    assert "example:\n  medimg recon ct " + verb in capsys.readouterr().out


def test_simulate_writes_pairs_in_hu_with_geometry(data) -> None:
    case = data / "case_10000"
    names = sorted(p.name for p in case.iterdir())
    assert names == ["full.nii.gz", "labels.nii.gz", "low_025.nii.gz", "phantom.nii.gz",
                     "sino_full.npy", "sino_low_025.npy"]  # fmt: skip
    full, low = load(case / "full.nii.gz"), load(case / "low_025.nii.gz")
    assert full.spatial_shape[:2] == (48, 48) and np.allclose(full.affine, low.affine)
    assert np.allclose(full.spacing[:2], 8.0)
    assert full.array.min() < -900 and -200 < np.median(full.array[full.array > -500]) < 150
    assert np.std(low.array - full.array) > 10  # the quarter-dose scan is noisier


def test_reconstruct_matches_the_simulated_fbp(data, tmp_path) -> None:
    case = data / "case_10000"
    out = tmp_path / "fbp.nii.gz"
    assert (
        main(["recon", "ct", "reconstruct", str(case / "sino_low_025.npy"), str(out), *SCAN]) == 0
    )
    rec, ref = load(out), load(case / "low_025.nii.gz")
    assert np.allclose(rec.affine[:2], ref.affine[:2])  # in-plane grid (the file has no z)
    assert np.abs(rec.array - ref.array).max() < 0.1


def test_predict_dicom_in_dicom_out_keeps_geometry_and_hu(data, tmp_path) -> None:
    low = load(data / "case_10000" / "low_025.nii.gz")
    save(low, tmp_path / "in_dicom")
    assert main(["recon", "ct", "predict", str(tmp_path / "in_dicom"), str(tmp_path / "out")]) == 0
    out = load(tmp_path / "out")
    src = load(tmp_path / "in_dicom")
    assert out.modality == "CT" and np.allclose(out.affine, src.affine, atol=1e-4)
    ds = pydicom.dcmread(sorted((tmp_path / "out").iterdir())[0])
    ds_in = pydicom.dcmread(sorted((tmp_path / "in_dicom").iterdir())[0])
    assert "RescaleSlope" in ds and ds.RescaleType == "HU"
    assert (
        ds.StudyInstanceUID == ds_in.StudyInstanceUID
        and ds.SeriesInstanceUID != ds_in.SeriesInstanceUID
    )
    assert out.array.min() < -800  # still HU: air stays air
    assert ds.SeriesDescription.startswith("medimg ") and " recon-ct redcnn sha1:" in str(
        ds.SeriesDescription
    )  # which model denoised it
    assert main(["recon", "ct", "predict", str(tmp_path / "in_dicom"), str(tmp_path / "out")]) == 2


def test_evaluate_writes_table_with_cis_and_panel(data, tmp_path, capsys) -> None:
    out = tmp_path / "eval"
    argv = ["recon", "ct", "evaluate", str(data), "--out", str(out), "--models", "redcnn"]
    assert main(argv) == 0
    text = (out / "summary.md").read_text()
    assert "C=40 W=400 HU" in text and "| redcnn |" in text and "| PWLS-TV |" in text
    assert "[" in text.split("| low-dose FBP (25%) |")[1].splitlines()[0]  # a CI
    assert (out / "panel.png").stat().st_size > 10_000 and (out / "metrics.csv").is_file()


def _run_error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_bad_inputs_give_one_line_errors(data, tmp_path, capsys) -> None:
    sino = data / "case_10000" / "sino_low_025.npy"
    err = _run_error(["recon", "ct", "reconstruct", str(sino), str(tmp_path / "a.nii.gz"),
                      "--size", "64", "--views", "64"], capsys)  # fmt: skip
    assert "does not match the geometry" in err
    neg = tmp_path / "counts.npy"
    np.save(neg, np.full((64, 9), -3.0))
    err = _run_error(
        ["recon", "ct", "reconstruct", str(neg), str(tmp_path / "b.nii.gz"), "--counts"], capsys
    )
    assert "counts must be >= 0" in err
    # a DICOM series without RescaleSlope/Intercept: stored values, not HU
    low = load(data / "case_10000" / "low_025.nii.gz")
    save(low, tmp_path / "raw")
    for f in (tmp_path / "raw").iterdir():
        ds = pydicom.dcmread(f)
        del ds.RescaleSlope, ds.RescaleIntercept
        ds.save_as(f)
    err = _run_error(["recon", "ct", "predict", str(tmp_path / "raw"), str(tmp_path / "o")], capsys)
    assert "RescaleSlope" in err
    norm = tmp_path / "norm.nii.gz"
    save(Image((low.array + 1000) / 4000, low.affine), norm)
    err = _run_error(["recon", "ct", "predict", str(norm), str(tmp_path / "o.nii.gz")], capsys)
    assert "Hounsfield" in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.nii.gz").exists()


def test_train_tiny_preset_resumes_and_exports(tmp_path, capsys) -> None:
    run, model = tmp_path / "run", tmp_path / "model"
    argv = ["recon", "ct", "train", "--preset", "tiny", "--max-steps", "4", "--out", str(run),
            "--quiet", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert main([*argv, "--resume", "--export", str(model)]) == 0  # finished: nothing to redo
    out = capsys.readouterr().out
    assert "to step 4" in out and "exported" in out
    assert sorted(p.name for p in model.iterdir()) == [
        "config.yaml", "model.safetensors", "train_cpu_s.txt", "train_time_s.txt"]  # fmt: skip
    assert float((model / "train_cpu_s.txt").read_text()) > 0
    assert main(argv) == 2  # an existing run is neither resumed nor replaced silently
