"""``medimg segment`` against hostile use: nothing replaced without asking, every output checked
before work, one-line refusals, and an interrupted prediction leaves the old or the new file."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medimg.cli import main
from medimg.io.api import load, save
from medimg.io.image import Image

TINY = {"shape": (32, 32, 8), "spacing": (12.0, 12.0, 15.0)}
AFFINE = np.diag([4.0, 4.0, 5.0, 1.0])  # the default model's own voxel size: no resampling


def _scan(path: Path, value: float | None = None, shape=(24, 24, 8), affine=AFFINE) -> Path:
    rng = np.random.default_rng(0)
    a = rng.normal(0, 50, shape) if value is None else np.full(shape, value)
    return save(Image(a[None].astype(np.float32), affine, modality="CT"), path)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _one_error(capsys) -> str:
    """The one ``error:`` line on stderr (a progress bar may precede it; nothing else may)."""
    lines = capsys.readouterr().err.splitlines()
    err = [x for x in lines if x.strip() and not re.search(r"\| *\d+/\d+ \[", x)]  # tqdm
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# --- simulate: existing data sets ----------------------------------------------------------


def test_simulate_refuses_an_existing_set_without_overwrite(tmp_path, capsys):
    from medimg.phantoms.segmentation import write_msd_dataset

    data = write_msd_dataset(tmp_path / "d", "ct", n_train=1, n_test=0, **TINY)
    before = _tree(data)
    assert main(["segment", "simulate", str(data), "--cases", "1", "--test", "0"]) == 2
    assert "already exists" in _one_error(capsys)
    assert _tree(data) == before


def test_simulate_overwrite_replaces_only_a_set_medimg_wrote(tmp_path, capsys):
    from medimg.phantoms.segmentation import write_folder_dataset, write_msd_dataset

    data = write_msd_dataset(tmp_path / "d", "ct", n_train=1, n_test=1, seed=0, **TINY)
    write_msd_dataset(data, "ct", n_train=1, n_test=0, seed=7, overwrite=True, **TINY)
    names = {p.name for p in (data / "imagesTr").iterdir()}
    assert names == {"ct_007_0000.nii.gz"} and not any((data / "imagesTs").iterdir())
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["segment", "simulate", str(mine), "--overwrite", "--cases", "1"]) == 2
    assert "did not write" in _one_error(capsys)
    assert _tree(mine) == {"notes.txt": b"keep me"}
    with pytest.raises(Exception, match="did not write"):
        write_folder_dataset(mine, "ct", n=1, overwrite=True, **TINY)


@pytest.mark.parametrize("argv", [["--cases", "-3"], ["--cases", "0"], ["--test", "-1"],
                                  ["--seed", "-2"], ["--cases", "two"]])  # fmt: skip
def test_simulate_refuses_bad_counts(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(["segment", "simulate", str(tmp_path / "d"), *argv])
    assert exc.value.code == 2 and not (tmp_path / "d").exists()


def test_simulate_refuses_a_grid_beyond_memory(tmp_path, monkeypatch):
    from medimg.errors import InputError
    from medimg.phantoms.segmentation import write_msd_dataset

    monkeypatch.setenv("MEDIMG_MAX_MEMORY", "64M")
    with pytest.raises(InputError, match=r"more than the 64\.0 MiB"):
        write_msd_dataset(tmp_path / "d", "ct", n_train=1, shape=(4000, 4000, 400))
    assert not (tmp_path / "d").exists()


# --- train and plan: existing runs and plans -----------------------------------------------


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    from medimg.phantoms.segmentation import write_msd_dataset

    return write_msd_dataset(tmp_path_factory.mktemp("set") / "d", "ct", n_train=2, n_test=0,
                             **TINY)  # fmt: skip


def _old_run(folder: Path) -> Path:
    folder.mkdir()
    (folder / "plan.yaml").write_text("old plan\n")
    (folder / "config.yaml").write_text("old config\n")
    (folder / "metrics.jsonl").write_text('{"step": 1}\n')
    return folder


def test_train_refuses_an_existing_run_and_changes_nothing(tiny_set, tmp_path, capsys):
    run = _old_run(tmp_path / "run")
    before = _tree(run)
    argv = ["segment", "train", str(tiny_set), "--fold", "-1", "--out", str(run),
            "--max-steps", "1", "--quiet", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 2
    assert "--resume" in _one_error(capsys) and _tree(run) == before
    assert main([*argv, "--resume"]) == 2  # nothing to resume: no checkpoint in last/
    assert "no checkpoint to resume" in _one_error(capsys) and _tree(run) == before


def test_train_overwrite_never_starts_over_a_folder_medimg_did_not_write(
    tiny_set, tmp_path, capsys
):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    argv = ["segment", "train", str(tiny_set), "--fold", "-1", "--out", str(mine), "--overwrite",
            "--max-steps", "1", "--quiet", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 2
    assert "did not write" in _one_error(capsys) and _tree(mine) == {"thesis.tex": b"keep me"}


def test_train_checks_the_export_folder_before_training(tiny_set, tmp_path, capsys):
    export = tmp_path / "export"
    export.mkdir()
    (export / "model.safetensors").write_bytes(b"the shipped weights")
    argv = ["segment", "train", str(tiny_set), "--fold", "-1", "--out", str(tmp_path / "run"),
            "--export", str(export), "--max-steps", "1", "--quiet", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 2
    assert "already exists" in _one_error(capsys)
    assert not (tmp_path / "run").exists()


def test_plan_refuses_to_replace_a_plan_or_land_on_an_input(tiny_set, tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text("hand-edited plan\n")
    assert main(["segment", "plan", str(tiny_set), "--out", str(plan)]) == 2
    assert "already exists" in _one_error(capsys) and plan.read_text() == "hand-edited plan\n"
    image = next((tiny_set / "imagesTr").iterdir())
    before = image.read_bytes()
    assert main(["segment", "plan", str(tiny_set), "--out", str(image), "--overwrite"]) == 2
    assert "is the input" in _one_error(capsys) and image.read_bytes() == before


# --- predict: outputs against inputs, all checked first -------------------------------------


def test_predict_never_writes_over_its_input(tmp_path, capsys):
    scan = _scan(tmp_path / "scan.nii.gz")
    before = scan.read_bytes()
    assert main(["segment", "predict", str(scan), str(scan), "--overwrite"]) == 2
    assert "is the input" in _one_error(capsys) and scan.read_bytes() == before
    assert main(["segment", "predict", str(tmp_path), str(tmp_path / "preds"), "--overwrite"]) == 2
    assert "lies inside the input" in _one_error(capsys)
    assert not (tmp_path / "preds").exists()


def test_predict_checks_the_dicom_seg_path_before_any_work(tmp_path, capsys):
    series = save(Image(np.zeros((1, 24, 24, 8), np.float32), AFFINE, modality="CT"),
                  tmp_path / "series")  # fmt: skip
    (tmp_path / "series_seg.dcm").write_bytes(b"an earlier SEG")
    out = tmp_path / "labels.nii.gz"
    assert main(["segment", "predict", str(series), str(out)]) == 2
    assert "series_seg.dcm: already exists" in _one_error(capsys)
    assert not out.exists()


def test_predict_folder_writes_nothing_when_a_later_case_is_refused(tmp_path, capsys):
    scans = tmp_path / "scans"
    _scan(scans / "a.nii.gz")
    a = np.ones((24, 24, 8), np.complex64)
    nib.save(nib.Nifti1Image(a, AFFINE), scans / "b.nii.gz")
    out = tmp_path / "preds"
    assert main(["segment", "predict", str(scans), str(out), "--no-mirror", "--device", "cpu"]) == 2
    assert "complex" in _one_error(capsys)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["scans"]


def test_empty_segmentation_writes_the_nifti_a_note_and_no_seg(tmp_path, capsys):
    series = save(Image(np.full((1, 24, 24, 8), -1000.0, np.float32), AFFINE, modality="CT"),
                  tmp_path / "air")  # fmt: skip
    out = tmp_path / "out"
    assert (
        main(["segment", "predict", str(series), str(out), "--no-mirror", "--device", "cpu"]) == 0
    )
    std = capsys.readouterr()
    notes = [line for line in std.out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "no DICOM-SEG" in notes[0]
    assert not load(out / "air.nii.gz", is_label=True).array.any()
    assert not (out / "air_seg.dcm").exists()


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda a: a.astype(np.complex64) * (1 + 1j), "complex values"),
        (lambda a: np.stack([a, a, a], -1), "3 channel(s) but the model expects 1"),
        (lambda a: a[:1, :1, :1], "too small to segment"),
        (lambda a: a[:, :, :1], "too small to segment"),
        (lambda a: a[:, :, 0], "2D image given to a model planned for 3D"),
        (lambda a: np.where(a > 60, np.nan, a), "NaN"),
    ],
    ids=["complex", "rgb", "one-voxel", "one-slice", "2d", "nan"],
)
def test_predict_refuses_images_the_model_cannot_take(tmp_path, capsys, make, words):
    a = np.random.default_rng(0).normal(0, 50, (24, 24, 8)).astype(np.float32)
    nib.save(nib.Nifti1Image(make(a), AFFINE), tmp_path / "bad.nii.gz")
    out = tmp_path / "labels.nii.gz"
    assert main(["segment", "predict", str(tmp_path / "bad.nii.gz"), str(out)]) == 2
    line = _one_error(capsys)
    assert words in line and "bad.nii.gz" in line and not out.exists()


def test_predict_refuses_a_model_folder_with_missing_or_broken_files(tmp_path, capsys):
    from medimg.tasks.segment.predict import DEFAULT_MODEL

    scan = _scan(tmp_path / "scan.nii.gz")
    model = tmp_path / "model"
    model.mkdir()
    argv = ["segment", "predict", str(scan), str(tmp_path / "l.nii.gz"), "--model", str(model)]
    assert main(argv) == 2 and "no plan.yaml" in _one_error(capsys)
    (model / "plan.yaml").write_bytes((DEFAULT_MODEL / "plan.yaml").read_bytes())
    assert main(argv) == 2 and "no weights" in _one_error(capsys)
    (model / "model.safetensors").write_bytes(b"\x00" * 100)
    assert main(argv) == 2 and "model.safetensors" in _one_error(capsys)


def test_resampling_raises_no_library_warning():
    from medimg.tasks.segment.resample import resample_to_spacing

    image = Image(np.random.default_rng(0).random((1, 12, 10, 6), np.float32), AFFINE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for order in (0, 1, 3):
            resample_to_spacing(image, (3.0, 3.0, 4.0), order=order)


# --- Ctrl-C over an earlier output ----------------------------------------------------------


def test_interrupted_predict_leaves_the_old_or_the_complete_new_labels(tmp_path):
    scan = _scan(tmp_path / "scan.nii.gz")
    out = tmp_path / "labels.nii.gz"
    old = save(Image(np.full((1, 24, 24, 8), 3, np.uint8), AFFINE, is_label=True), out)
    old_bytes = old.read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    argv = [sys.executable, "-m", "medimg.cli", "segment", "predict", str(scan), str(out),
            "--overwrite", "--no-mirror", "--device", "cpu"]  # fmt: skip
    for offset in (1.5, 3.5, 5.5):  # imports, model load, inference+write (about 6 s here)
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(offset)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        data = out.read_bytes()
        if data != old_bytes:  # replaced: then completely, by labels on the scan's grid
            labels = load(out, is_label=True)
            assert labels.spatial_shape == (24, 24, 8) and labels.array.max() < 4
        names = {p.name for p in tmp_path.iterdir()}  # no temporary file left behind
        assert {"labels.nii.gz", "scan.nii.gz"} <= names <= {"labels.nii.gz", "labels.tsv",
                                                              "scan.nii.gz"}  # fmt: skip


def test_train_resumes_or_starts_over_only_when_asked(tiny_set, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["segment", "train", str(tiny_set), "--fold", "-1", "--out", str(run),
            "--max-steps", "1", "--quiet", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    first = (run / "plan.yaml").read_bytes()
    assert main(argv) == 2 and "--resume" in _one_error(capsys)
    assert (run / "plan.yaml").read_bytes() == first
    assert main([*argv, "--resume"]) == 0  # already at max_steps: picks up where it stopped
    assert (run / "plan.yaml").is_file() and (run / "last").is_dir()


def test_evaluate_checks_its_report_folder_and_image_folder_first(tmp_path, capsys):
    labels = Image(np.zeros((1, 8, 8, 4), np.uint8), AFFINE, is_label=True)
    labels.array[0, 2:5, 2:5, 1:3] = 1
    for sub in ("pred", "gt"):
        save(labels, tmp_path / sub / "a.nii.gz")
    report = tmp_path / "report"
    report.mkdir()
    (report / "metrics.csv").write_text("last week\n")
    argv = ["segment", "evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--out",
            str(report)]  # fmt: skip
    assert main(argv) == 2 and "already exists" in _one_error(capsys)
    assert main([*argv, "--images", str(tmp_path / "nowhere"), "--overwrite"]) == 2
    assert "--images" in _one_error(capsys)
    assert (report / "metrics.csv").read_text() == "last week\n"
    assert main([*argv, "--overwrite"]) == 0
    assert (report / "metrics.csv").read_text().startswith("case,label")
    assert main([*argv[:-2], "--out", str(tmp_path / "gt"), "--overwrite"]) == 2
    assert "is the input" in _one_error(capsys)
