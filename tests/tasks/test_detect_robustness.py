"""``medimg detect`` under hostile input: one-line errors (exit 2), nothing written on refusal,
no output (figures included) replaced without ``--overwrite``, unique outputs for same-named
inputs. Detection itself is stubbed where it is not the point (fast)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from medimg.cli import main
from medimg.io.api import save
from medimg.io.image import Image
from medimg.tasks.detect import predict as pr
from medimg.tasks.detect.infer import Candidate


def _run(*args: object) -> int:
    return main(["detect", *map(str, args)])


def _ct(value: float = 40.0, shape=(24, 20, 10)) -> Image:
    hu = np.full((1, *shape), -900.0, np.float32)
    hu[:, 4:-4, 4:-4, :] = value  # a body of soft tissue in air
    return Image(hu, np.diag([-2.0, -2.0, 3.0, 1.0]), modality="CT")


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "internal error" not in err, err
    return err


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def stub(monkeypatch):
    """Detection stubbed to one finding at the volume's centre; counts its calls."""
    calls: list[int] = []

    def detect(self, image):
        calls.append(1)
        centre = image.voxel_to_world(np.asarray(image.spatial_shape) / 2)
        return [Candidate(tuple(float(v) for v in centre), 6.0, 0.9)]

    monkeypatch.setattr(pr.Detector, "detect", detect)
    return calls


def test_figures_obey_overwrite_like_every_output(tmp_path, capsys, stub):
    src = save(_ct(), tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    assert _run("predict", src, out) == 0
    before = _tree(out)
    assert {"candidates.csv", "candidates.json", "figures/scan.png"} <= set(before)
    assert _run("predict", src, out) == 2
    assert "already exists" in _one_error(capsys)
    assert _tree(out) == before and len(stub) == 1  # refused before detection
    (out / "candidates.csv").unlink()  # an output folder missing a file is still refused
    assert _run("predict", src, out) == 2
    assert (out / "figures" / "scan.png").read_bytes() == before["figures/scan.png"]
    assert _run("predict", src, out, "--overwrite") == 0
    assert set(_tree(out)) == set(before)


def test_seg_on_a_non_dicom_input_is_refused_before_detection(tmp_path, capsys, stub):
    src = save(_ct(), tmp_path / "scan.nii.gz")
    assert _run("predict", src, tmp_path / "out", "--seg", "0.5") == 2
    assert "DICOM series folder" in _one_error(capsys)
    assert stub == [] and not (tmp_path / "out").exists()


def test_seg_on_a_folder_without_dicom_is_refused_before_the_model_loads(
    tmp_path, capsys, monkeypatch
):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("not a scan")
    (folder / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n")

    def boom(*args, **kwargs):
        raise AssertionError("the detector was loaded before --seg was checked")

    monkeypatch.setattr(pr.Detector, "__init__", boom)
    assert _run("predict", folder, tmp_path / "out", "--seg", "0.5") == 2
    assert "DICOM series folder" in _one_error(capsys)
    assert not (tmp_path / "out").exists()


def test_a_dicom_folder_is_named_by_its_series_instance_uid(tmp_path, stub):
    import pydicom

    series = save(_ct(), tmp_path / "my_folder")  # a path without extension: a DICOM series
    uid = str(pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True).SeriesInstanceUID)
    out = tmp_path / "out"
    assert _run("predict", series, out, "--seg", "0.5") == 0
    rows = list(csv.DictReader(open(out / "candidates.csv")))
    assert [r["seriesuid"] for r in rows] == [uid] and uid != "my_folder"
    assert (out / f"{uid}_seg.dcm").is_file() and (out / "figures" / f"{uid}.png").is_file()


def test_same_file_names_in_two_folders_get_their_own_outputs(tmp_path, stub):
    for sub in ("a", "b"):
        save(_ct(), tmp_path / "data" / sub / "scan.nii.gz")
    out = tmp_path / "out"
    assert _run("predict", tmp_path / "data", out) == 0
    uids = [r["seriesuid"] for r in csv.DictReader(open(out / "candidates.csv"))]
    assert uids == ["a__scan", "b__scan"]
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["a__scan.png", "b__scan.png"]


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (Image(np.zeros((1, 24, 20, 1), np.float32) - 500), "single slice"),
        (Image(np.zeros((1, 1, 1, 1), np.float32)), "single slice"),
        (Image(np.zeros((3, 24, 20, 10), np.float32)), "3 channel"),
        (Image(np.full((1, 24, 20, 10), np.nan, np.float32)), "NaN"),
    ],
)
def test_unusable_volumes_are_one_line_errors_naming_the_file(
    tmp_path, capsys, monkeypatch, stub, image, message
):
    import medimg.io.api as api

    src = tmp_path / "bad.nii.gz"
    src.write_bytes(b"")
    monkeypatch.setattr(api, "load", lambda path, **kw: image)  # as the readers would give it
    assert _run("predict", src, tmp_path / "new" / "out") == 2
    err = _one_error(capsys)
    assert message in err and "bad.nii.gz" in err
    assert stub == [] and sorted(p.name for p in tmp_path.iterdir()) == ["bad.nii.gz"]


def test_complex_volumes_are_refused():
    from medimg.errors import InputError
    from medimg.tasks.detect.data import check_ct_volume

    with pytest.raises(InputError, match="complex"):
        check_ct_volume(Image(np.ones((1, 8, 8, 8), np.complex64)), "c.nii")


def test_outputs_on_or_inside_the_input_are_refused(tmp_path, capsys, stub):
    data = tmp_path / "data"
    src = save(_ct(), data / "scan.nii.gz")
    before = src.read_bytes()
    for out in (data / "out", src, data):
        assert _run("predict", data, out) == 2
        assert "input" in _one_error(capsys)
    assert src.read_bytes() == before and [p.name for p in data.iterdir()] == ["scan.nii.gz"]


@pytest.mark.parametrize(
    "args",
    [
        ["simulate", "OUT", "--cases", "-3"],
        ["simulate", "OUT", "--subsets", "0"],
        ["predict", "in.nii.gz", "OUT", "--threads", "-1"],
        ["predict", "in.nii.gz", "OUT", "--seg", "nan"],
        ["evaluate", "a.csv", "b.csv", "--bootstrap", "-5"],
        ["train", "OUT", "--spacing", "0"],
        ["predict2d", "in.nii.gz", "OUT", "--slice", "-2"],
    ],
)
def test_negative_counts_and_bad_numbers_are_refused(tmp_path, args):
    with pytest.raises(SystemExit) as info:
        _run(*[str(tmp_path / "o") if a == "OUT" else a for a in args])
    assert info.value.code == 2
    assert not (tmp_path / "o").exists()


def test_a_huge_simulated_ct_is_refused_before_any_work(tmp_path, monkeypatch):
    from medimg.datasets.luna16 import write_luna16
    from medimg.errors import InputError

    monkeypatch.setenv("MEDIMG_MAX_MEMORY", "64M")
    with pytest.raises(InputError, match="needs"):
        write_luna16(tmp_path / "luna", 1, progress=False, shape=(4000, 4000, 4000))
    assert not (tmp_path / "luna").exists()


_HEADER = "seriesuid,coordX,coordY,coordZ,diameter_mm\n"


@pytest.mark.parametrize("which", ["candidates", "annotations", "excluded", "scans"])
def test_evaluate_csvs_that_are_not_utf8_are_one_line_errors(tmp_path, capsys, which, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = {
        "candidates": "seriesuid,coordX,coordY,coordZ,probability\n1.2,0,0,0,0.9\n",
        "annotations": _HEADER + "1.2,0,0,0,5\n",
        "excluded": _HEADER,
        "scans": "1.2\n",
    }
    paths = {}
    for name, text in files.items():
        raw = text.encode() + (b"caf\xe9\n" if name == which else b"")
        paths[name] = tmp_path / f"{name}.csv"
        paths[name].write_bytes(raw)
    args = ["evaluate", paths["candidates"], paths["annotations"], "--excluded",
            paths["excluded"], "--scans", paths["scans"], "--bootstrap", 5]  # fmt: skip
    assert _run(*args) == 2
    err = _one_error(capsys)
    assert "not UTF-8" in err and f"{which}.csv" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ("seriesuid,coordX,coordY\n1.2,0,0\n", "lacks column(s) coordZ, diameter_mm"),
        (_HEADER + "1.2,0,0,nan,5\n", "line 2"),
        ("", "empty"),
    ],
)
def test_bad_luna16_annotations_are_one_line_errors(tmp_path, capsys, annotations, message):
    (tmp_path / "c.csv").write_text("seriesuid,coordX,coordY,coordZ,probability\n1.2,0,0,0,1\n")
    (tmp_path / "a.csv").write_text(annotations)
    assert _run("evaluate", tmp_path / "c.csv", tmp_path / "a.csv", "--bootstrap", 5) == 2
    assert message in _one_error(capsys)


def test_evaluate_replaces_a_report_only_with_overwrite(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the report goes to ./runs/detect/evaluation/<candidates folder>
    default = tmp_path / "runs" / "detect" / "evaluation" / tmp_path.name
    (tmp_path / "c.csv").write_text("seriesuid,coordX,coordY,coordZ,probability\n1.2,0,0,0,1\n")
    (tmp_path / "a.csv").write_text(_HEADER + "1.2,0,0,0,5\n")
    ev = ["evaluate", tmp_path / "c.csv", tmp_path / "a.csv", "--bootstrap", 5]
    assert _run(*ev) == 0
    report = _tree(default)
    assert {"froc.csv", "froc.png", "summary.md", "summary.json"} <= set(report)
    assert _run(*ev) == 2
    assert "already exists" in _one_error(capsys)
    assert _tree(default) == report
    assert _run(*ev, "--overwrite") == 0


def test_dl_info_that_is_not_utf8_is_a_one_line_error(tmp_path, capsys):
    root = tmp_path / "DeepLesion"
    (root / "Images_png").mkdir(parents=True)
    (root / "DL_info.csv").write_bytes(b"File_name,Key_slice_index\ncaf\xe9,1\n")
    assert _run("predict2d", root, tmp_path / "out") == 2
    assert "not UTF-8" in _one_error(capsys)
    assert not (tmp_path / "out").exists()


def test_predict2d_refuses_a_colour_image_and_reads_a_lone_slice(tmp_path, capsys, monkeypatch):
    import medimg.io.api as api

    hu = np.full((1, 48, 48), -900.0, np.float32)
    hu[:, 10:38, 10:38] = 40.0
    one = save(Image(hu, np.diag([-1.0, -1.0, 1.0, 1.0]), modality="CT"), tmp_path / "s.nii.gz")
    assert _run("predict2d", one, tmp_path / "o2", "--no-figures") == 0
    assert (tmp_path / "o2" / "detections.csv").is_file()
    assert _run("predict2d", one, tmp_path / "o2", "--no-figures") == 2
    assert "already exists" in _one_error(capsys)
    rgb = Image(np.zeros((3, 32, 32), np.float32))  # the NIfTI reader gives RGB as 3 channels
    monkeypatch.setattr(api, "load", lambda path, **kw: rgb)
    assert _run("predict2d", one, tmp_path / "o1") == 2
    assert "colour" in _one_error(capsys)
    assert not (tmp_path / "o1").exists()


def test_a_model_folder_missing_files_is_a_one_line_error(tmp_path, capsys):
    src = save(_ct(), tmp_path / "scan.nii.gz")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.yaml").write_text("model: {}\n")
    assert _run("predict", src, tmp_path / "out", "--model", tmp_path / "model") == 2
    assert "model folder" in _one_error(capsys)
    (tmp_path / "model" / "model.safetensors").write_bytes(b"junk")
    assert _run("predict", src, tmp_path / "out", "--model", tmp_path / "model") == 2
    _one_error(capsys)
    (tmp_path / "model" / "config.yaml").write_text(": : [")
    assert _run("predict", src, tmp_path / "out", "--model", tmp_path / "model") == 2
    _one_error(capsys)
    assert not (tmp_path / "out").exists()


def test_a_patch_smaller_than_the_network_is_refused(tmp_path, capsys):
    from medimg.datasets.luna16 import write_luna16

    data = write_luna16(tmp_path / "luna", 2, progress=False, shape=(32, 32, 8), n_nodules=(1, 1))
    assert _run("train", data, "--patch", 3, "--max-steps", 1, "--out", tmp_path / "r") == 2
    assert "too small" in _one_error(capsys)
    assert not (tmp_path / "r").exists()


def test_a_resampling_grid_too_fine_for_memory_is_refused(monkeypatch):
    from medimg.errors import InputError
    from medimg.tasks.detect.data import prepare

    monkeypatch.setenv("MEDIMG_MAX_MEMORY", "64M")
    with pytest.raises(InputError, match=r"resampled to 0\.01 mm"):
        prepare(_ct(), spacing=0.01)


def test_a_lesion_model_config_with_impossible_values_is_a_one_line_error(tmp_path, capsys):
    import shutil

    from medimg.tasks.detect.cli2d import DEFAULT_MODEL_2D

    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_2D, model)
    (model / "config.yaml").write_text("neighbours: -1\n")
    one = save(Image(np.zeros((1, 32, 32), np.float32) - 500), tmp_path / "s.nii.gz")
    assert _run("predict2d", one, tmp_path / "out", "--model", model) == 2
    assert "describes no buildable model" in _one_error(capsys)


def test_simulate_replaces_an_earlier_set_only_with_overwrite(tmp_path):
    from medimg.datasets.luna16 import write_luna16
    from medimg.errors import OutputExistsError

    opts = {"progress": False, "shape": (32, 32, 8), "n_nodules": (1, 1)}
    root = write_luna16(tmp_path / "luna", 1, **opts)
    before = _tree(root)
    with pytest.raises(OutputExistsError):
        write_luna16(root, 2, **opts)
    assert _tree(root) == before
    write_luna16(root, 2, overwrite=True, **opts)
    assert len(list(root.rglob("*.mhd"))) == 2


def test_export_refuses_to_replace_model_files_before_training(tmp_path, capsys):
    from medimg.datasets.luna16 import write_luna16

    data = write_luna16(tmp_path / "luna", 2, progress=False, shape=(32, 32, 8), n_nodules=(1, 1))
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "config.yaml").write_text("mine\n")
    args = ["--export", dest, "--out", tmp_path / "r", "--max-steps", 1, "--quiet"]
    assert _run("train", data, *args) == 2
    assert "already exists" in _one_error(capsys)
    assert (dest / "config.yaml").read_text() == "mine\n" and not (tmp_path / "r").exists()
