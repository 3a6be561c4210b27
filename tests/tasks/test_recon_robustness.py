"""Hostile inputs to the ``medimg recon ct|mri`` verbs: one-line errors (exit 2), nothing written
on refusal, nothing of an input or an earlier output lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from medimg.cli import main
from medimg.datasets.fastmri import read_fastmri
from medimg.engine import save_checkpoint, to_yaml
from medimg.io.api import load, save
from medimg.io.image import Image
from medimg.io.output import OWNER_MARK
from medimg.tasks.reconstruct.mri.models import build_model
from medimg.tasks.reconstruct.mri.train import preset

CT_SCAN = ["--size", "48", "--pixel-mm", "8", "--views", "64", "--i0", "5e3"]
MRI_SIM = ["--size", "32", "--coils", "4", "--slices", "1", "--center-fraction", "0.25", "--quiet"]


@pytest.fixture(scope="module")
def ct_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ct") / "data"
    assert main(["recon", "ct", "simulate", str(out), "--cases", "1", *CT_SCAN]) == 0
    return out


@pytest.fixture(scope="module")
def mri_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mri") / "data"
    assert main(["recon", "mri", "simulate", str(out), "--volumes", "2", *MRI_SIM]) == 0
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "internal error" not in err, err
    return err


# simulate: an existing data set is kept unless --overwrite, and only a medimg set is replaced


@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_simulate_keeps_an_existing_data_set_without_overwrite(modality, tmp_path, capsys):
    args = [*CT_SCAN, "--cases", "1"] if modality == "ct" else [*MRI_SIM, "--volumes", "1"]
    out = tmp_path / "set"
    assert main(["recon", modality, "simulate", str(out), *args]) == 0
    (out / "notes.txt").write_text("mine")
    before = _snapshot(out)
    seed = ["--seed", "7"]
    err = _error(["recon", modality, "simulate", str(out), *args, *seed], capsys)
    assert "already exists" in err and _snapshot(out) == before
    assert main(["recon", modality, "simulate", str(out), *args, *seed, "--overwrite"]) == 0
    assert not (out / "notes.txt").exists() and (out / OWNER_MARK).is_file()  # replaced whole
    assert "7" in " ".join(p.name for p in out.iterdir())


def test_simulate_overwrite_never_replaces_a_folder_medimg_did_not_write(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    argv = ["recon", "mri", "simulate", str(out), "--volumes", "1", *MRI_SIM, "--overwrite"]
    assert "did not write" in _error(argv, capsys)
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


# training: an earlier run folder is refused unless resumed or overwritten


def test_train_refuses_a_run_folder_with_best_but_no_last(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "best" / "model.safetensors").write_bytes(b"old weights")
    (run / "config.yaml").write_text("old: config\n")
    before = _snapshot(run)
    argv = ["recon", "mri", "train", "--preset", "tiny", "--max-steps", "1", "--out", str(run),
            "--quiet", "--device", "cpu"]  # fmt: skip
    assert "earlier run" in _error(argv, capsys)
    assert "nothing to resume" in _error([*argv, "--resume"], capsys)
    ct = ["recon", "ct", "train", "--preset", "tiny", "--max-steps", "1", "--out", str(run),
          "--quiet", "--device", "cpu"]  # fmt: skip
    assert "earlier run" in _error(ct, capsys)
    assert _snapshot(run) == before


def test_train_resume_needs_a_checkpoint(tmp_path, capsys):
    argv = ["recon", "ct", "train", "--preset", "tiny", "--out", str(tmp_path / "new"),
            "--resume", "--quiet"]  # fmt: skip
    assert "nothing to resume" in _error(argv, capsys)
    assert not (tmp_path / "new").exists()


# outputs are checked against the inputs and each other before any work


def test_predict_and_reconstruct_never_write_over_their_input(ct_data, mri_data, tmp_path, capsys):
    low = ct_data / "case_10000" / "low_025.nii.gz"
    save(load(low), tmp_path / "series")
    before = _snapshot(tmp_path)
    ser = str(tmp_path / "series")
    assert "is the input" in _error(["recon", "ct", "predict", ser, ser, "--overwrite"], capsys)
    sino = str(ct_data / "case_10000" / "sino_low_025.npy")
    argv = ["recon", "ct", "reconstruct", sino, sino, "--overwrite", *CT_SCAN]
    assert "is the input" in _error(argv, capsys)
    assert _snapshot(tmp_path) == before
    inside = str(mri_data / "recon")
    argv = ["recon", "mri", "predict", str(mri_data), inside, "--method", "zero_filled", "--quiet"]
    assert "inside the input" in _error(argv, capsys)
    assert not Path(inside).exists()


def test_mri_predict_checks_every_output_before_reconstructing(mri_data, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "phantom_200001.nii.gz").write_bytes(b"earlier result")
    argv = [
        "recon",
        "mri",
        "predict",
        str(mri_data),
        str(out),
        "--method",
        "zero_filled",
        "--quiet",
    ]
    assert "phantom_200001.nii.gz" in _error(argv, capsys)
    assert sorted(p.name for p in out.iterdir()) == ["phantom_200001.nii.gz"]  # nothing new
    assert main([*argv, "--overwrite"]) == 0
    assert load(out / "phantom_200001.nii.gz").array.shape == (1, 32, 32, 1)


def test_ct_outputs_with_unwritable_names_are_refused_before_the_work(ct_data, tmp_path, capsys):
    low = str(ct_data / "case_10000" / "low_025.nii.gz")
    err = _error(["recon", "ct", "predict", low, str(tmp_path / "den.png")], capsys)
    assert "cannot write an image named 'den.png'" in err
    assert list(tmp_path.iterdir()) == []


def test_a_new_mri_output_folder_appears_only_complete(mri_data, tmp_path, capsys, monkeypatch):
    from medimg.tasks.reconstruct.mri import predict as P

    calls = {"n": 0}
    real = P.to_image

    def second_fails(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(P, "to_image", second_fails)
    argv = ["recon", "mri", "predict", str(mri_data), str(tmp_path / "out"), "--method",
            "zero_filled", "--quiet"]  # fmt: skip
    assert main(argv) == 130
    assert list(tmp_path.iterdir()) == []  # neither the folder nor half of it


# fastMRI files that hold nothing usable


def _h5(path: Path, kspace=None, mask=None, **create) -> Path:
    with h5py.File(path, "w") as f:
        if kspace is not None:
            f.create_dataset("kspace", data=kspace)
        if create:
            f.create_dataset("kspace", **create)
        if mask is not None:
            f.create_dataset("mask", data=mask)
    return path


def test_fastmri_files_that_sample_nothing_are_refused(mri_data, tmp_path, capsys):
    k = read_fastmri(mri_data / "phantom_200000.h5").kspace
    mask = read_fastmri(mri_data / "phantom_200000.h5").mask
    cases = {
        "samples no k-space line": _h5(tmp_path / "nomask.h5", k, np.zeros(32, bool)),
        "all zero": _h5(tmp_path / "zero.h5", np.zeros_like(k), mask),
        "no slices": _h5(tmp_path / "empty.h5", np.zeros((0, 4, 32, 32), np.complex64)),
        "PiB": _h5(
            tmp_path / "huge.h5",
            shape=(2**20, 2**10, 2**14, 2**14),
            dtype=np.complex64,
            chunks=(1, 1, 64, 64),
        ),
        "not a dataset": tmp_path / "group.h5",
        "no 'kspace'": _h5(tmp_path / "other.h5", mask=np.ones(3)),
    }
    with h5py.File(cases["not a dataset"], "w") as f:
        f.create_group("kspace")
    for words, path in cases.items():
        out = tmp_path / f"o_{path.stem}"
        for method in ("zero_filled", "net"):
            argv = ["recon", "mri", "predict", str(path), str(out), "--method", method, "--quiet"]
            err = _error(argv, capsys)
            assert words in err and str(path) in err, err
        assert not out.exists()


# images the CT verbs cannot take


def test_ct_verbs_refuse_complex_tiny_nan_and_misshapen_inputs(ct_data, tmp_path, capsys):
    low = load(ct_data / "case_10000" / "low_025.nii.gz")
    cplx = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(low.array[0].astype(np.complex64) * (1 + 1j), low.affine), cplx)
    one = tmp_path / "one.nii.gz"
    save(Image(np.full((1, 1, 1, 1), -1000.0, np.float32), np.eye(4)), one)
    nan = tmp_path / "nan.nii.gz"
    arr = low.array[0].copy()
    arr[3, 3] = np.nan
    nib.save(nib.Nifti1Image(arr, low.affine), nan)
    expect = {cplx: "complex", one: "too small", nan: "NaN"}
    for src, words in expect.items():
        assert words in _error(["recon", "ct", "predict", str(src), str(tmp_path / "o.nii.gz")],
                               capsys)  # fmt: skip
    sinos = {"complex": np.ones((64, 70), np.complex64), "not (views, detectors)":
             np.ones((2, 64, 70), np.float32), "NaN": np.full((64, 70), np.nan, np.float32)}  # fmt: skip
    for words, data in sinos.items():
        np.save(tmp_path / "s.npy", data)
        argv = ["recon", "ct", "reconstruct", str(tmp_path / "s.npy"), str(tmp_path / "o.nii.gz"),
                *CT_SCAN]  # fmt: skip
        assert words in _error(argv, capsys)
    (tmp_path / "s.npy").write_bytes(b"\x93NUMPY garbage")
    assert "cannot read" in _error(argv, capsys)
    assert not (tmp_path / "o.nii.gz").exists()


def test_model_folder_missing_its_weights_is_one_line(ct_data, mri_data, tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.yaml").write_text("model: redcnn\n")
    low = str(ct_data / "case_10000" / "low_025.nii.gz")
    err = _error(["recon", "ct", "predict", low, str(tmp_path / "o.nii.gz"), "--model",
                  str(model)], capsys)  # fmt: skip
    assert "model.safetensors" in err
    mri_model = tmp_path / "mri_model"
    mri_model.mkdir()
    to_yaml(preset("tiny"), mri_model / "config.yaml")
    h5 = mri_data / "phantom_200000.h5"
    err = _error(["recon", "mri", "predict", str(h5), str(tmp_path / "o"), "--model",
                  str(mri_model), "--quiet"], capsys)  # fmt: skip
    assert "model.safetensors" in err
    torch.manual_seed(0)
    save_checkpoint(mri_model, build_model(preset("tiny").model))  # now complete: it runs
    to_yaml(preset("tiny"), mri_model / "config.yaml")
    assert main(["recon", "mri", "predict", str(h5), str(tmp_path / "o"), "--model",
                 str(mri_model), "--quiet"]) == 0  # fmt: skip
    nan = _h5(tmp_path / "ones.h5", np.ones((1, 4, 32, 32), np.complex64))  # a delta image
    net = build_model(preset("tiny").model)
    for p in net.parameters():
        p.data.fill_(float("nan"))
    save_checkpoint(mri_model, net)  # a model whose output is NaN
    to_yaml(preset("tiny"), mri_model / "config.yaml")
    err = _error(["recon", "mri", "predict", str(nan), str(tmp_path / "o2"), "--model",
                  str(mri_model), "--quiet"], capsys)  # fmt: skip
    assert "NaN" in err and str(nan) in err and not (tmp_path / "o2").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["recon", "ct", "simulate", "x", "--cases", "-1"],
        ["recon", "ct", "simulate", "x", "--doses", "0"],
        ["recon", "ct", "simulate", "x", "--size", "0"],
        ["recon", "ct", "train", "--threads", "-2"],
        ["recon", "ct", "evaluate", "x", "--max-cases", "0"],
        ["recon", "mri", "simulate", "x", "--volumes", "-3"],
        ["recon", "mri", "simulate", "x", "--acceleration", "nan"],
        ["recon", "mri", "predict", "a", "b", "--coils", "0"],
        ["recon", "mri", "evaluate", "x", "--threads", "0"],
    ],
)
def test_negative_and_zero_counts_are_refused_by_the_parser(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and "error: argument" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_sizes_beyond_memory_are_refused_before_allocating(modality, tmp_path, capsys):
    argv = ["recon", modality, "simulate", str(tmp_path / "x"), "--size", "100000"]
    assert "more than the" in _error([*argv, "--slices", "100000"] if modality == "mri" else argv,
                                     capsys)  # fmt: skip
    assert not (tmp_path / "x").exists()


def test_mri_predict_refuses_images_it_cannot_undersample(tmp_path, capsys):
    one = tmp_path / "one.nii.gz"
    save(Image(np.ones((1, 1, 1, 1), np.float32), np.eye(4)), one)
    cplx = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((32, 32, 1), np.complex64), np.eye(4)), cplx)
    for src, words in {one: "too small", cplx: "complex"}.items():
        argv = ["recon", "mri", "predict", str(src), str(tmp_path / "o"), "--method",
                "zero_filled", "--quiet"]  # fmt: skip
        assert words in _error(argv, capsys)
    assert not (tmp_path / "o").exists()


# SIGINT while a verb replaces an earlier output: the old output or the complete new one


def test_sigint_during_ct_predict_overwrite_leaves_old_or_new(ct_data, tmp_path):
    low = ct_data / "case_10000" / "low_025.nii.gz"
    other = tmp_path / "other.nii.gz"
    image = load(low)
    save(image.with_array(image.array[:, ::-1].copy()), other)  # another input: another output
    out = tmp_path / "denoised"  # a DICOM series folder, swapped in whole
    assert main(["recon", "ct", "predict", str(low), str(out)]) == 0
    new = load(out).array
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "medimg.cli", "recon", "ct", "predict"]
    start = time.monotonic()
    old_run = [*cmd, str(other), str(out), "--overwrite"]
    assert subprocess.run(old_run, env=env, capture_output=True, timeout=120).returncode == 0
    took = time.monotonic() - start
    old = load(out).array
    assert not np.allclose(old, new)
    for fraction in (0.75, 0.9, 0.97):
        proc = subprocess.Popen([*cmd, str(low), str(out), "--overwrite"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(fraction * took)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
        got = load(out).array  # a half-written series would not load
        assert np.array_equal(got, old) or np.array_equal(got, new), (fraction, code)
        assert code in (0, 130, -signal.SIGINT), code  # -SIGINT: stopped while importing
        if np.array_equal(got, new):  # replaced: put the old output back for the next offset
            assert main(["recon", "ct", "predict", str(other), str(out), "--overwrite"]) == 0
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".denoised")]
    assert leftovers == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_one_line(ct_data, mri_data, tmp_path, capsys):
    low = str(ct_data / "case_10000" / "low_025.nii.gz")
    h5 = str(mri_data / "phantom_200000.h5")
    for argv in (["recon", "ct", "predict", low, str(tmp_path / "o.nii.gz")],
                 ["recon", "mri", "predict", h5, str(tmp_path / "o"), "--quiet"]):  # fmt: skip
        assert "no CUDA GPU" in _error([*argv, "--device", "cuda"], capsys)
    assert list(tmp_path.iterdir()) == []


def test_phantoms_refuse_sizes_beyond_memory_before_allocating():
    from medimg.errors import InputError
    from medimg.phantoms.ct import body_phantom
    from medimg.phantoms.mri import brain_phantom

    with pytest.raises(InputError, match=r"CT phantom .* needs"):
        body_phantom((100000, 100000, 100000), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(InputError, match=r"MRI phantom .* needs"):
        brain_phantom((100000, 100000, 100000))


@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_export_keeps_an_existing_model_folder_without_overwrite(modality, tmp_path):
    from medimg.errors import OutputExistsError
    from medimg.tasks.reconstruct.ct.train import export_model as export_ct
    from medimg.tasks.reconstruct.mri.train import export_model as export_mri

    export = export_ct if modality == "ct" else export_mri
    run, dest = tmp_path / "run", tmp_path / "model"
    (run / "best").mkdir(parents=True)
    (run / "best" / "model.safetensors").write_bytes(b"new weights")
    (run / "config.yaml").write_text("model: redcnn\n")
    dest.mkdir()
    (dest / "model.safetensors").write_bytes(b"shipped weights")
    with pytest.raises(OutputExistsError):
        export(run, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["model.safetensors"]  # nothing copied
    assert (dest / "model.safetensors").read_bytes() == b"shipped weights"
    export(run, dest, overwrite=True)
    assert (dest / "model.safetensors").read_bytes() == b"new weights"
    assert (dest / "config.yaml").read_text() == "model: redcnn\n"
