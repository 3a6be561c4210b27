"""``medimg diagnose`` under hostile input: one-line errors (exit 2), nothing written on refusal,
no output replaced without ``--overwrite``, unique outputs for same-named inputs."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medimg.cli import main
from medimg.errors import InputError
from medimg.io.api import load, save
from medimg.io.image import Image


def _run(*args: object) -> int:
    return main(["diagnose", *map(str, args)])


def _xray(seed: int = 1) -> Image:
    from medimg.phantoms.diagnosis import make_case

    return make_case("xray", seed, True).to_images()["DX"]


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "internal error" not in err, err
    return err


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_second_predict_replaces_nothing_without_overwrite(tmp_path, capsys):
    img = save(_xray(), tmp_path / "in" / "chest.nii.gz")
    out = tmp_path / "out"
    assert _run("predict", img, out, "--device", "cpu") == 0
    before = _tree(out)
    assert {"predictions.csv", "chest_heatmap.nii.gz", "chest_overlay.png"} <= set(before)
    assert _run("predict", img, out, "--device", "cpu", "--explain", "gradcam") == 2
    assert "already exists" in _one_error(capsys)
    assert _tree(out) == before  # figures included
    assert _run("predict", img, out, "--device", "cpu", "--overwrite") == 0
    assert set(_tree(out)) == set(before)


def test_a_refused_predict_leaves_no_folder(tmp_path, capsys):
    """A failure while predicting (here a 3D volume for the 2D model) writes nothing, not even
    the parent folders of the output."""
    vol = save(Image(np.random.default_rng(0).random((1, 16, 16, 8), np.float32)),
               tmp_path / "vol.nii.gz")  # fmt: skip
    assert _run("predict", vol, tmp_path / "new" / "out", "--device", "cpu") == 2
    assert "2D images" in _one_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol.nii.gz"]


def test_same_file_names_in_two_folders_get_their_own_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # evaluate's default report goes under ./runs
    for sub, seed in (("A", 1), ("B", 2)):
        save(_xray(seed), tmp_path / sub / "p01.nii.gz")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nA/p01.nii.gz,nodule\nB/p01.nii.gz,normal\n")
    out = tmp_path / "out"
    assert _run("predict", manifest, out, "--device", "cpu") == 0
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert [r["case_id"] for r in rows] == ["A__p01", "B__p01"]
    a, b = (load(out / f"{c}_heatmap.nii.gz").array for c in ("A__p01", "B__p01"))
    assert not np.array_equal(a, b)  # two cases, two maps: neither written over the other
    assert _run("evaluate", out / "predictions.csv", manifest) == 0
    report = json.loads(
        (tmp_path / "runs/diagnose/evaluation" / out.name / "metrics.json").read_text()
    )
    assert (report["cases"], report["missing"]) == (2, 0)


def test_the_same_file_twice_in_a_manifest_is_refused_naming_both(tmp_path, capsys):
    save(_xray(), tmp_path / "p01.nii.gz")
    (tmp_path / "m.csv").write_text("path\np01.nii.gz\n./p01.nii.gz\n")
    assert _run("predict", tmp_path / "m.csv", tmp_path / "out") == 2
    assert "same case" in _one_error(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("verb", ["predict", "evaluate", "train"])
def test_csv_files_that_are_not_utf8_are_one_line_errors(tmp_path, capsys, verb):
    save(_xray(), tmp_path / "p01.nii.gz")
    bad = tmp_path / "m.csv"
    bad.write_bytes(b"path,label\np01.nii.gz,caf" + b"\xe9\n")
    args = {
        "predict": ["predict", bad, tmp_path / "out"],
        "evaluate": ["evaluate", bad, bad, "--out", tmp_path / "out"],
        "train": ["train", bad, "--out", tmp_path / "out", "--quiet"],
    }[verb]
    assert _run(*args) == 2
    assert "not UTF-8" in _one_error(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("shape", [(64, 64, 1), (64, 64)])
def test_single_slice_and_2d_images_are_diagnosed_on_their_own_grid(tmp_path, shape):
    x = _xray()
    image = Image(x.array.reshape(1, *shape), x.affine, modality="DX")
    src = save(image, tmp_path / "one.nii.gz")
    out = tmp_path / "out"
    assert _run("predict", src, out, "--device", "cpu") == 0
    heat = load(out / "one_heatmap.nii.gz")
    assert heat.spatial_shape == load(src).spatial_shape
    assert (out / "one_overlay.png").stat().st_size > 1000


def test_a_single_dicom_slice_is_diagnosed(tmp_path):
    x = _xray()
    # like pydicom's CT_small: one file of a series, a single slice
    series = save(Image(x.array[..., None] * 1000, x.affine, modality="CT"), tmp_path / "series")
    one = next(p for p in Path(series).iterdir() if not p.name.startswith("."))
    assert _run("predict", one, tmp_path / "out", "--device", "cpu") == 0
    assert len(list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))) == 1


def test_rgb_becomes_grey_and_complex_nan_and_tiny_images_are_refused():
    from medimg.tasks.diagnose.data import LUMA, check_case_image

    rng = np.random.default_rng(0)
    rgb = Image(rng.random((3, 16, 16), np.float32), np.eye(4))
    grey = check_case_image(rgb, "rgb.png", channels=1)
    assert grey.num_channels == 1
    np.testing.assert_allclose(grey.array[0], np.tensordot(LUMA, rgb.array, axes=1), rtol=1e-5)
    with pytest.raises(InputError, match="has 2 channels but the model takes 1"):
        check_case_image(Image(rng.random((2, 16, 16), np.float32), np.eye(4)), "x", 1)
    with pytest.raises(InputError, match="complex"):
        check_case_image(Image(np.ones((1, 8, 8), np.complex64), np.eye(4)), "c.nii")
    nan = np.ones((1, 8, 8), np.float32)
    nan[0, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        check_case_image(Image(nan, np.eye(4)), "n.nii")
    for shape in [(1, 1), (1, 1, 1), (1, 40)]:
        with pytest.raises(InputError, match="too small"):
            check_case_image(Image(np.ones((1, *shape), np.float32), np.eye(4)), "t.nii")


def test_an_rgb_image_is_predicted_as_grey(tmp_path, monkeypatch):
    """The NIfTI reader gives RGB files as 3 channels; the one-channel model gets the luma."""
    import medimg.io.api as api

    x = _xray().array[0]
    rgb = Image(np.stack([x, x, x]), _xray().affine)
    monkeypatch.setattr(api, "load", lambda path, **kw: rgb)
    (tmp_path / "rgb.nii.gz").write_bytes(b"")  # what load reads is the RGB image above
    assert _run("predict", tmp_path / "rgb.nii.gz", tmp_path / "out", "--device", "cpu") == 0


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.full((1, 32, 32), np.nan, np.float32), "NaN"),
        (np.ones((1, 1, 1, 1), np.float32), "too small"),
    ],
)
def test_nan_and_one_voxel_files_are_one_line_errors(tmp_path, capsys, array, message):
    import nibabel as nib

    src = tmp_path / "bad.nii.gz"  # written by nibabel: medimg's writer refuses NaN
    nib.save(nib.Nifti1Image(array[0], np.eye(4)), src)
    assert _run("predict", src, tmp_path / "out") == 2
    err = _one_error(capsys)
    assert message in err and "bad.nii.gz" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["simulate", "OUT", "--cases", "-3"],
        ["simulate", "OUT", "--val", "-1"],
        ["train", "OUT", "--threads", "-2"],
        ["train", "OUT", "--batch-size", "0"],
        ["train", "OUT", "--labelled-fraction", "nan"],
        ["evaluate", "a.csv", "b.csv", "--threshold", "2"],
    ],
)
def test_negative_counts_and_bad_numbers_are_refused(tmp_path, capsys, args):
    with pytest.raises(SystemExit) as info:
        _run(*[str(tmp_path / "o") if a == "OUT" else a for a in args])
    assert info.value.code == 2
    assert not (tmp_path / "o").exists()


def test_a_huge_simulated_set_is_refused_before_any_work(monkeypatch):
    from medimg.phantoms.diagnosis import make_cases

    monkeypatch.setenv("MEDIMG_MAX_MEMORY", "1M")
    with pytest.raises(InputError, match="needs"):
        make_cases("xray", 10_000)
    with pytest.raises(InputError, match="needs"):
        make_cases("xray", 1, size=100_000)


def test_outputs_on_or_inside_an_input_are_refused(tmp_path, capsys):
    folder = tmp_path / "images"
    img = save(_xray(), folder / "chest.nii.gz")
    before = img.read_bytes()
    for out in (folder / "out", img, folder):
        assert _run("predict", folder, out) == 2
        assert "input" in _one_error(capsys)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path\n{img}\n")
    assert _run("predict", manifest, folder) == 2  # the folder holds a file the manifest names
    assert "input" in _one_error(capsys)
    assert img.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == [img.name]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,label\n", "no rows"),
        ("", "empty"),
        ("path,label\nnothere.nii.gz,nodule\n", "does not exist"),
        ("file,label\nx.nii.gz,nodule\n", "'path' column"),
    ],
)
def test_bad_manifests_at_predict_are_one_line_errors(tmp_path, capsys, text, message):
    (tmp_path / "m.csv").write_text(text)
    assert _run("predict", tmp_path / "m.csv", tmp_path / "out") == 2
    assert message in _one_error(capsys)
    assert not (tmp_path / "out").exists()


def test_a_model_folder_missing_files_is_a_one_line_error(tmp_path, capsys):
    img = save(_xray(), tmp_path / "chest.nii.gz")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.yaml").write_text("task: binary\n")
    assert _run("predict", img, tmp_path / "out", "--model", tmp_path / "model") == 2
    assert "model folder" in _one_error(capsys)
    (tmp_path / "model" / "model.safetensors").write_bytes(b"not weights")
    (tmp_path / "model" / "model.yaml").write_text(": : not yaml [")
    assert _run("predict", img, tmp_path / "out", "--model", tmp_path / "model") == 2
    _one_error(capsys)
    assert not (tmp_path / "out").exists()


def test_evaluate_refuses_predictions_that_are_not_probabilities(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # evaluate's default report goes under ./runs
    save(_xray(), tmp_path / "p01.nii.gz")
    (tmp_path / "m.csv").write_text("path,label\np01.nii.gz,nodule\n")
    (tmp_path / "pred.csv").write_text("case_id,prob_nodule,calibrated_nodule\np01,nan,0.5\n")
    assert _run("evaluate", tmp_path / "pred.csv", tmp_path / "m.csv") == 2
    assert "not a probability" in _one_error(capsys)
    assert not (tmp_path / "runs").exists()


def test_export_refuses_to_replace_model_files_before_training(tmp_path, capsys):
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "model.yaml").write_text("mine\n")
    args = ["--export", dest, "--out", tmp_path / "r", "--max-steps", 1, "--quiet"]
    assert _run("train", "--preset", "default", *args) == 2
    assert "already exists" in _one_error(capsys)
    assert (dest / "model.yaml").read_text() == "mine\n" and not (tmp_path / "r").exists()


def _interrupt_at(cmd: list[str], marker: bytes) -> tuple[bytes, int]:
    """Run ``cmd``, send SIGINT once its stderr (the progress bar) matches the regex ``marker``;
    its stderr and exit code (0 when it finished before the signal could land)."""
    import re
    import threading

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = bytearray()

    def read() -> None:
        while chunk := proc.stderr.read1(256):
            seen.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 120
    while not re.search(marker, seen) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    return bytes(seen), proc.returncode


def test_sigint_during_predict_overwrite_leaves_old_or_complete_new_output(tmp_path):
    """Ctrl-C mid-way and at the end of ``predict --overwrite`` over an earlier output: the
    folder is the old output or the complete new one, never a mix; no temporary folder is left."""
    images = tmp_path / "images"
    n = 30  # enough cases that a signal sent mid-way lands mid-way on an idle machine too
    for t in range(n):
        save(_xray(t), images / f"c{t}.nii.gz")
    out = tmp_path / "out"
    assert _run("predict", images / "c0.nii.gz", out, "--device", "cpu") == 0  # the old: 1 case
    old = _tree(out)
    cmd = [sys.executable, "-m", "medimg.cli", "diagnose", "predict", str(images), str(out),
           "--overwrite", "--device", "cpu"]  # fmt: skip

    def complete_new() -> bool:
        rows = list(csv.DictReader(open(out / "predictions.csv")))
        return len(rows) == n and all((out / f"c{t}_overlay.png").is_file() for t in range(n))

    # mid-way: some cases written into the private folder
    err, code = _interrupt_at(cmd, rb"\| *([2-9]|1[0-9])/30 \[")
    assert b"internal error" not in err
    if code == 0:  # finished before the signal landed: then the new output is whole
        assert complete_new()
        return
    assert b"interrupted" in err and _tree(out) == old
    _interrupt_at(cmd, rb" 30/30 ")  # the last case done: at or around the swap
    assert _tree(out) == old or complete_new()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "out"]


def test_an_input_size_of_the_wrong_dimension_is_a_one_line_error(tmp_path, capsys):
    from medimg.tasks.diagnose.sources import write_simulated_set

    data = write_simulated_set(tmp_path / "d", "xray", n_train=4, n_val=2, n_test=0)
    assert _run("train", data, "--input-size", 32, "--out", tmp_path / "r", "--quiet") == 2
    assert "--input-size gives 1 number(s) but the images are 2D" in _one_error(capsys)


def test_a_model_yaml_describing_an_impossible_network_is_a_one_line_error(tmp_path, capsys):
    import shutil

    from medimg.tasks.diagnose.predict import DEFAULT_MODEL

    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, model)
    text = (model / "model.yaml").read_text()
    (model / "model.yaml").write_text(text.replace("width: 16", "width: -3"))
    img = save(_xray(), tmp_path / "chest.nii.gz")
    assert _run("predict", img, tmp_path / "out", "--model", model) == 2
    assert "model.yaml: describes no buildable model" in _one_error(capsys)


def test_an_output_holding_the_model_folder_is_refused(tmp_path, capsys):
    import shutil

    from medimg.io.output import mark_owned
    from medimg.tasks.diagnose.predict import DEFAULT_MODEL

    runs = tmp_path / "runs"
    shutil.copytree(DEFAULT_MODEL, runs / "model")
    mark_owned(runs)  # even an earlier medimg output is not replaced when it holds the model
    img = save(_xray(), tmp_path / "chest.nii.gz")
    assert _run("predict", img, runs, "--model", runs / "model", "--overwrite") == 2
    assert "holds the input" in _one_error(capsys)
    assert (runs / "model" / "model.safetensors").is_file()
