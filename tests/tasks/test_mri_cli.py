"""``medimg recon mri`` verbs end to end on tiny phantoms, and their one-line errors."""

from __future__ import annotations

import csv

import h5py
import numpy as np
import pytest
import torch

from medimg.cli import main
from medimg.datasets.fastmri import read_fastmri
from medimg.engine import save_checkpoint, to_yaml
from medimg.io.api import load, save
from medimg.io.image import Image
from medimg.physics.masks import acceleration_of
from medimg.tasks.reconstruct.mri.infer import reconstruct
from medimg.tasks.reconstruct.mri.models import build_model
from medimg.tasks.reconstruct.mri.train import preset

SIM = ["--size", "32", "--coils", "4", "--slices", "2", "--center-fraction", "0.25", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("mri") / "data"
    assert main(["recon", "mri", "simulate", str(out), "--volumes", "2", *SIM]) == 0
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """An untrained tiny VarNet written as a model folder (config.yaml + model.safetensors)."""
    folder = tmp_path_factory.mktemp("model")
    cfg = preset("tiny")
    torch.manual_seed(0)
    save_checkpoint(folder, build_model(cfg.model))
    to_yaml(cfg, folder / "config.yaml")
    return folder


def test_simulate_writes_the_fastmri_test_layout_with_ground_truth(data) -> None:
    files = sorted(data.glob("*.h5"))
    assert [f.name for f in files] == ["phantom_200000.h5", "phantom_200001.h5"]
    vol = read_fastmri(files[0])
    assert vol.kspace.shape == (2, 4, 32, 32) and vol.kspace.dtype == np.complex64
    assert vol.mask.shape == (32,) and vol.reconstruction.shape == (2, 32, 32)
    assert vol.header.recon_size == (32, 32, 1) and vol.header.recon_fov_mm == (220.0, 220.0, 4.0)
    assert abs(vol.attrs["acceleration"] - 4) / 4 <= 0.02
    assert acceleration_of(torch.from_numpy(vol.mask.astype(np.float32))) == pytest.approx(
        4, rel=0.02
    )
    sampled = np.abs(vol.kspace).sum(axis=(0, 1, 2)) > 0
    np.testing.assert_array_equal(sampled, vol.mask)  # unsampled columns are exactly zero


def test_predict_h5_writes_nifti_and_dicom_with_header_geometry(data, tmp_path) -> None:
    src = data / "phantom_200000.h5"
    out = tmp_path / "out"
    argv = ["recon", "mri", "predict", str(src), str(out), "--method", "zero_filled", "--quiet"]
    assert main(argv) == 0
    nii, dcm = load(out / "phantom_200000.nii.gz"), load(out / "phantom_200000_dicom")
    expected = reconstruct(read_fastmri(src).kspace, method="zero_filled")  # (S, H, W)
    assert nii.array.shape == (1, 32, 32, 2) and dcm.modality == "MR"
    np.testing.assert_allclose(nii.array[0].transpose(2, 1, 0), expected, rtol=1e-5, atol=1e-7)
    assert nii.spacing == pytest.approx((220 / 32, 220 / 32, 4.0))
    np.testing.assert_allclose(dcm.affine, nii.affine, atol=1e-4)
    assert np.abs(dcm.array - nii.array).max() < 1e-3 * nii.array.max()
    assert main(argv) == 2  # refuses to overwrite its own output without --overwrite


def test_predict_dicom_series_keeps_the_input_geometry(tmp_path, model_dir) -> None:
    from medimg.phantoms.mri import brain_phantom

    mag = 1000 * brain_phantom((4, 32, 32), "t1", seed=3).magnitude.numpy().transpose(2, 1, 0)
    affine = np.array([[0, 0, 3.0, -20], [-0.9, 0, 0, 40], [0, -0.9, 0, 10], [0, 0, 0, 1]])
    series = save(Image(mag[None].astype(np.float32), affine, modality="MR"), tmp_path / "t1_dcm")
    out = tmp_path / "out"
    argv = ["recon", "mri", "predict", str(series), str(out), "--model", str(model_dir),
            "--acceleration", "4", "--center-fraction", "0.25", "--coils", "4", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    src, rec = load(series), load(out / "t1_dcm.nii.gz")
    np.testing.assert_allclose(rec.affine, src.affine, atol=1e-4)
    assert rec.array.shape == src.array.shape
    corr = np.corrcoef(rec.array.ravel(), src.array.ravel())[0, 1]
    assert corr > 0.8  # same anatomy in the same voxels, in the input's intensity units
    assert (out / "t1_dcm_dicom").is_dir()
    import pydicom

    first = lambda d: pydicom.dcmread(sorted(d.glob("*.dcm"))[0])  # noqa: E731
    ds_in, ds_out = first(series), first(out / "t1_dcm_dicom")
    # a derived series of the input's study and patient, naming the network that made it
    assert ds_out.StudyInstanceUID == ds_in.StudyInstanceUID
    assert ds_out.PatientID == ds_in.PatientID
    assert ds_out.SeriesInstanceUID != ds_in.SeriesInstanceUID
    assert f"recon-mri {model_dir.name} sha1:" in ds_out.SeriesDescription


def test_evaluate_writes_ci_table_csv_and_panel(data, model_dir, tmp_path) -> None:
    out = tmp_path / "eval"
    argv = ["recon", "mri", "evaluate", str(data), "--methods", "zero_filled", "cs_wavelet",
            "--no-default", "--model", f"tiny={model_dir}", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 2 * 3 and {r["method"] for r in rows} == {
        "zero_filled",
        "cs_wavelet",
        "tiny",
    }
    for r in rows:
        assert 0 < float(r["nmse"]) < 1 and 5 < float(r["psnr"]) < 60 and 0 < float(r["ssim"]) <= 1
    zf = [float(r["psnr"]) for r in rows if r["method"] == "zero_filled"]
    cs = [float(r["psnr"]) for r in rows if r["method"] == "cs_wavelet"]
    assert np.mean(cs) > np.mean(zf)
    text = (out / "summary.md").read_text()
    assert "| cs_wavelet |" in text and "[" in text
    assert (out / "panel.png").stat().st_size > 10_000


def _h5(path, kspace, mask=None):
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace)
        if mask is not None:
            f.create_dataset("mask", data=mask)
    return path


def test_bad_inputs_end_in_one_line_errors(tmp_path, capsys, data) -> None:
    k = read_fastmri(data / "phantom_200000.h5").kspace
    no_acs = np.ones(32, bool)
    no_acs[12:20] = False
    bad = {
        "NaN": _h5(
            tmp_path / "nan.h5", np.where(np.arange(32) == 5, np.nan, k).astype(np.complex64)
        ),
        "complex": _h5(tmp_path / "real.h5", np.abs(k)),
        "does not match": _h5(tmp_path / "shape.h5", k, np.ones(30, bool)),
        "ACS": _h5(tmp_path / "acs.h5", k * no_acs, no_acs),
    }
    for words, path in bad.items():
        argv = ["recon", "mri", "predict", str(path), str(tmp_path / f"o_{path.stem}"),
                "--method", "cs_wavelet", "--quiet"]  # fmt: skip
        assert main(argv) == 2, words
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and words in err, err


@pytest.mark.parametrize("verb", ["simulate", "train", "predict", "evaluate"])
def test_every_verb_has_help_with_an_example(verb, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["recon", "mri", verb, "--help"])
    assert exit_.value.code == 0
    assert "example:" in capsys.readouterr().out


def test_evaluate_defaults_to_cs_tv_and_keeps_accelerations_apart(data, tmp_path) -> None:
    """4x and 8x volumes in one folder: one table and one CI per acceleration, cs_tv included."""
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in data.glob("*.h5"):
        (mixed / f.name).write_bytes(f.read_bytes())
    eight = tmp_path / "eight"
    argv = ["recon", "mri", "simulate", str(eight), "--volumes", "2", "--seed", "200010",
            *SIM, "--acceleration", "8", "--size", "96", "--center-fraction", "0.09"]  # fmt: skip
    assert main(argv) == 0
    for f in eight.glob("*.h5"):
        (mixed / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "eval"
    argv = ["recon", "mri", "evaluate", str(mixed), "--no-default", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert {r["method"] for r in rows} == {"zero_filled", "cs_wavelet", "cs_tv"}
    assert {r["acceleration"] for r in rows} == {"4x", "8x"}
    assert sum(r["acceleration"] == "8x" for r in rows) == 2 * 3
    text = (out / "summary.md").read_text()
    assert "at 4x on 2 volume(s)" in text and "at 8x on 2 volume(s)" in text
    for accel in ("4x", "8x"):  # each table's mean is over that acceleration's volumes only
        zf = np.mean([float(r["psnr"]) for r in rows
                      if r["method"] == "zero_filled" and r["acceleration"] == accel])  # fmt: skip
        section = text.split(f"at {accel} on")[1].split("MRI reconstruction")[0]
        line = next(ln for ln in section.splitlines() if ln.startswith("| zero_filled |"))
        assert f"{zf:.2f}"[:-1] in line.split("|")[3], (accel, zf, line)
    zf4 = [
        float(r["psnr"]) for r in rows if r["method"] == "zero_filled" and r["acceleration"] == "4x"
    ]
    zf8 = [
        float(r["psnr"]) for r in rows if r["method"] == "zero_filled" and r["acceleration"] == "8x"
    ]
    assert np.mean(zf4) > np.mean(zf8)


def test_evaluate_takes_references_from_a_targets_folder(data, tmp_path, capsys) -> None:
    bare, refs = tmp_path / "bare", tmp_path / "refs"
    bare.mkdir()
    refs.mkdir()
    for f in sorted(data.glob("*.h5")):
        (bare / f.name).write_bytes(f.read_bytes())
        with h5py.File(bare / f.name, "a") as h:
            np.save(refs / f"{f.stem}.npy", h["reconstruction_rss"][()])
            del h["reconstruction_rss"]
    base = ["--methods", "zero_filled", "--no-default", "--quiet"]
    assert main(["recon", "mri", "evaluate", str(bare), "--out", str(tmp_path / "e0"), *base]) == 2
    assert "--targets" in capsys.readouterr().err
    argv = ["recon", "mri", "evaluate", str(bare), "--targets", str(refs),
            "--out", str(tmp_path / "e1"), *base]  # fmt: skip
    assert main(argv) == 0
    argv = ["recon", "mri", "evaluate", str(data), "--out", str(tmp_path / "e2"), *base]
    assert main(argv) == 0
    with_refs = list(csv.DictReader((tmp_path / "e1" / "metrics.csv").open()))
    stored = list(csv.DictReader((tmp_path / "e2" / "metrics.csv").open()))
    assert [r["psnr"] for r in with_refs] == [r["psnr"] for r in stored]  # the same references
    np.save(refs / "phantom_200000.npy", np.zeros((2, 30, 32), np.float32))  # wrong shape
    argv = ["recon", "mri", "evaluate", str(bare), "--targets", str(refs),
            "--out", str(tmp_path / "e3"), *base]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "does not match" in err and "\n" not in err
