"""``medimg register`` against hostile use: nothing replaced without asking, outputs checked
against the inputs before any work, folders written whole, and one-line refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medimg.cli import main
from medimg.io.api import save
from medimg.phantoms.registration import make_pair, write_pair_dataset

SHAPE, SPACING = (16, 16, 16), 4.0  # the default model's voxel size: no working-grid resampling


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pair")
    p = make_pair("mr", 3, shape=SHAPE, spacing=SPACING)
    files = {"fixed": p.fixed, "moving": p.moving, "fixed_labels": p.fixed_labels,
             "moving_labels": p.moving_labels}  # fmt: skip
    return {k: save(v, root / f"{k}.nii.gz") for k, v in files.items()}


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _one_error(capsys) -> str:
    """The one ``error:`` line on stderr (a progress bar may precede it; nothing else may)."""
    lines = capsys.readouterr().err.splitlines()
    err = [x for x in lines if x.strip() and not re.search(r"\| *\d+/\d+ \[", x)]  # tqdm
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _predict(pair, out, *extra) -> list[str]:
    return ["register", "predict", str(pair["fixed"]), str(pair["moving"]), str(out), *extra]


# --- simulate -------------------------------------------------------------------------------


def test_simulate_refuses_an_existing_set_and_overwrites_only_its_own(tmp_path, capsys):
    data = write_pair_dataset(tmp_path / "d", "mr", n_train=1, n_test=0, shape=(16, 16))
    before = _tree(data)
    argv = ["register", "simulate", str(data), "--pairs", "1", "--test", "0", "--shape", "16x16"]
    assert main(argv) == 2
    assert "already exists" in _one_error(capsys) and _tree(data) == before
    assert main([*argv, "--seed", "5", "--overwrite"]) == 0
    meta = json.loads((data / "dataset.json").read_text())
    assert meta["training_paired_images"][0]["fixed"] == "./imagesTr/pair_005_0000.nii.gz"
    assert not (data / "imagesTr" / "pair_000_0000.nii.gz").exists()  # swapped whole, no mix
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["register", "simulate", str(mine), "--overwrite", "--shape", "16x16"]) == 2
    assert "did not write" in _one_error(capsys) and _tree(mine) == {"notes.txt": b"keep me"}


@pytest.mark.parametrize(
    "argv",
    [["--pairs", "-1"], ["--test", "-2"], ["--shape", "48x"], ["--shape", "0x8x8"],
     ["--spacing", "-4"], ["--spacing", "nan"], ["--seed", "-1"]],
)  # fmt: skip
def test_simulate_refuses_bad_arguments(tmp_path, argv):
    with pytest.raises(SystemExit) as exc:
        main(["register", "simulate", str(tmp_path / "d"), *argv])
    assert exc.value.code == 2 and not (tmp_path / "d").exists()


def test_simulate_refuses_a_grid_beyond_memory_or_nothing_to_write(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["register", "simulate", str(out), "--shape", "100000x100000x100000"]) == 2
    assert "needs" in _one_error(capsys) and not out.exists()
    assert main(["register", "simulate", str(out), "--pairs", "0", "--test", "0"]) == 2
    assert "nothing to write" in _one_error(capsys) and not out.exists()


# --- predict --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--fixed-labels", "{fixed_labels}"], "needs --moving-labels"),
        (["--time-budget", "5"], "give --instance-opt"),
        (["--instance-opt", "-3"], None),
        (["--time-budget", "-1", "--instance-opt", "3"], None),
        (["--method", "sitk-demons", "--instance-opt", "5"], "apply to --method model"),
        (["--similarity", "mind"], "give --instance-opt"),
        (["--outputs", "warped,labels"], "give --moving-labels"),
        (["--outputs", "warped,bogus"], "choose from warped, labels"),
        (["--outputs", ""], "choose from warped, labels"),
        (["--similarity", "ssd", "--instance-opt", "3"], None),
    ],
)
def test_predict_refuses_inconsistent_options(pair, tmp_path, capsys, extra, words):
    extra = [e.format(**pair) for e in extra]
    out = tmp_path / "out"
    if words is None:  # argparse: a negative count or budget
        with pytest.raises(SystemExit) as exc:
            main(_predict(pair, out, *extra))
        assert exc.value.code == 2
    else:
        assert main(_predict(pair, out, *extra)) == 2
        assert words in _one_error(capsys)
    assert not out.exists()


def test_predict_outputs_never_land_on_an_input(pair, capsys):
    fixed = pair["fixed"]
    before = fixed.read_bytes()
    assert main(_predict(pair, fixed, "--overwrite")) == 2
    assert "is the input" in _one_error(capsys) and fixed.read_bytes() == before
    assert main(_predict(pair, fixed.parent, "--overwrite")) == 2
    assert "holds the input" in _one_error(capsys) and fixed.read_bytes() == before


def test_predict_same_file_as_both_images_and_an_earlier_output_replaced_whole(pair, tmp_path):
    out = tmp_path / "out"
    out.mkdir()  # an earlier output (from before the mark existed): only the verb's file names
    (out / "warped_labels.nii.gz").write_bytes(b"stale")
    (out / "summary.json").write_text("{}")
    argv = ["register", "predict", str(pair["fixed"]), str(pair["fixed"]), str(out)]
    assert main(argv) == 2  # exists, no --overwrite
    assert main([*argv, "--overwrite"]) == 0  # 16^3: smaller than two strides of the U-Net
    assert not (out / "warped_labels.nii.gz").exists()  # the folder is the new run's, whole
    assert json.loads((out / "summary.json").read_text())["folding_pct"] >= 0
    assert (out / "overview.png").is_file()


def test_predict_checks_the_output_folder_before_any_work(pair, tmp_path, capsys, monkeypatch):
    import medimg.tasks.register.predict as rp

    def boom(*a, **k):
        raise AssertionError("registered before the outputs were checked")

    monkeypatch.setattr(rp.Registrator, "__init__", boom)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(_predict(pair, mine, "--overwrite")) == 2
    assert "did not write" in _one_error(capsys) and _tree(mine) == {"notes.txt": b"keep me"}
    parent_file = tmp_path / "file"
    parent_file.write_text("x")
    assert main(_predict(pair, parent_file / "out")) == 2
    assert "is a file" in _one_error(capsys)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda a: a.astype(np.complex64) * (1 + 1j), "complex values"),
        (lambda a: np.stack([a, a, a], -1), "3 channels"),
        (lambda a: a[:4, :4, :4], "too small to register"),
        (lambda a: np.where(a > a.mean(), np.nan, a), "NaN"),
    ],
    ids=["complex", "rgb", "tiny", "nan"],
)
def test_predict_refuses_images_it_cannot_register(pair, tmp_path, capsys, make, words):
    a = np.asarray(nib.load(pair["moving"]).dataobj, dtype=np.float32)
    nib.save(nib.Nifti1Image(make(a), np.diag([SPACING] * 3 + [1.0])), tmp_path / "bad.nii.gz")
    out = tmp_path / "out"
    argv = ["register", "predict", str(pair["fixed"]), str(tmp_path / "bad.nii.gz"), str(out)]
    assert main(argv) == 2
    line = _one_error(capsys)
    assert words in line and "bad.nii.gz" in line and not out.exists()


def test_predict_refuses_a_model_folder_with_missing_files(pair, tmp_path, capsys):
    from medimg.tasks.register.predict import DEFAULT_MODEL

    model = tmp_path / "model"
    model.mkdir()
    argv = _predict(pair, tmp_path / "out", "--model", str(model))
    assert main(argv) == 2 and "no reg.yaml" in _one_error(capsys)
    (model / "reg.yaml").write_bytes((DEFAULT_MODEL / "coarse" / "reg.yaml").read_bytes())
    assert main(argv) == 2 and "no weights" in _one_error(capsys)
    assert not (tmp_path / "out").exists()


def test_pair_help_names_the_verb_typed(capsys):
    for verb in ("pair", "predict"):
        with pytest.raises(SystemExit) as exc:
            main(["register", verb, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: medimg register {verb} ")
        assert "default: warped,labels,field,png" in out


@pytest.mark.parametrize(
    ("choice", "files"),
    [
        (None, {"warped.nii.gz", "warped_labels.nii.gz", "field.nii.gz", "overview.png"}),
        ("transform,jacobian", {"transform.h5", "jacobian.nii.gz"}),
        ("all", {"warped.nii.gz", "warped_labels.nii.gz", "field.nii.gz", "overview.png",
                 "transform.h5", "jacobian.nii.gz"}),
    ],
)  # fmt: skip
def test_predict_writes_only_the_chosen_outputs(pair, tmp_path, choice, files):
    out = tmp_path / "out"
    extra = ["--moving-labels", str(pair["moving_labels"]), "--method", "sitk-demons"]
    assert main(_predict(pair, out, *extra, *(["--outputs", choice] if choice else []))) == 0
    written = {p.name for p in out.iterdir() if not p.name.startswith(".")}  # not medimg's mark
    assert written == {*files, "summary.json"}


def test_predict_cpu_time_counts_the_model_loading(pair, tmp_path, monkeypatch):
    import time

    import medimg.tasks.register.predict as rp

    load = rp.Registrator.__init__

    def slow_load(self, *a, **k):  # a model that takes 0.5 CPU s to load
        load(self, *a, **k)
        t0 = time.process_time()
        while time.process_time() - t0 < 0.5:
            pass

    monkeypatch.setattr(rp.Registrator, "__init__", slow_load)
    out = tmp_path / "out"
    assert main(_predict(pair, out, "--outputs", "warped")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_load_cpu_seconds"] >= 0.5
    assert summary["cpu_seconds"] > summary["model_load_cpu_seconds"]
    assert summary["seconds"] >= 0.5


# --- train, evaluate, pair lists ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("set") / "d"
    return write_pair_dataset(root, "mr", n_train=2, n_test=1, shape=(16, 16), spacing=6.0)


def test_train_refuses_an_existing_run_and_checks_the_export_first(tiny_set, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "reg.yaml").write_text("old settings\n")
    (run / "config.yaml").write_text("old config\n")
    before = _tree(run)
    argv = ["register", "train", str(tiny_set), "--out", str(run), "--max-steps", "1", "--quiet"]
    assert main(argv) == 2
    assert "--resume" in _one_error(capsys) and _tree(run) == before
    assert main([*argv, "--resume"]) == 2
    assert "no checkpoint to resume" in _one_error(capsys) and _tree(run) == before
    export = tmp_path / "export"
    export.mkdir()
    (export / "reg.yaml").write_text("shipped\n")
    fresh = tmp_path / "fresh"
    argv = ["register", "train", str(tiny_set), "--out", str(fresh), "--export", str(export),
            "--max-steps", "1", "--quiet"]  # fmt: skip
    assert main(argv) == 2
    assert "already exists" in _one_error(capsys) and not fresh.exists()


@pytest.mark.parametrize("argv", [["--threads", "-1"], ["--threads", "0"], ["--max-steps", "-5"],
                                  ["--crop", "axb"]])  # fmt: skip
def test_train_refuses_bad_counts(tiny_set, tmp_path, argv):
    with pytest.raises(SystemExit) as exc:
        main(["register", "train", str(tiny_set), "--out", str(tmp_path / "r"), *argv])
    assert exc.value.code == 2 and not (tmp_path / "r").exists()


def test_evaluate_refuses_an_existing_report_before_any_work(tiny_set, tmp_path, capsys):
    report = tmp_path / "report"
    report.mkdir()
    (report / "summary.md").write_text("last week's numbers\n")
    argv = ["register", "evaluate", str(tiny_set), "--methods", "identity", "--out", str(report),
            "--quiet"]  # fmt: skip
    assert main(argv) == 2
    assert "already exists" in _one_error(capsys)
    assert (report / "summary.md").read_text() == "last week's numbers\n"
    assert main([*argv, "--overwrite"]) == 0
    assert {p.name for p in report.iterdir()} >= {"metrics.csv", "summary.md"}
    assert main([*argv[:-3], "--out", str(tiny_set), "--overwrite", "--quiet"]) == 2
    assert "is the input" in _one_error(capsys)


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("pairs.csv", b"a,b\n1,2\n", "lacks column(s) fixed, moving"),
        ("pairs.csv", b"fixed,moving\n\xff\xfe,x\n", "not UTF-8"),
        ("dataset.json", b'"just a string"', "list of pairs or a dataset.json object"),
        ("dataset.json", b'{"training_paired_images": 5}', "must be a list of pairs"),
        ("dataset.json", b"\xff{}", "not valid UTF-8 JSON"),
        ("dataset.json", b'{"training_paired_images": [{"fixed": "x.nii.gz", "moving": "y"}]}',
         "missing"),
    ],
)  # fmt: skip
def test_bad_pair_lists_are_one_line_errors(tmp_path, capsys, name, content, words):
    (tmp_path / name).write_bytes(content)
    argv = ["register", "train", str(tmp_path / name), "--out", str(tmp_path / "r"), "--quiet"]
    assert main(argv) == 2
    assert words in _one_error(capsys) and not (tmp_path / "r").exists()
