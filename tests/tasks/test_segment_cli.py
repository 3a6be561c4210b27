"""``medimg segment`` verbs end to end on a tiny synthetic set, and their one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medimg.cli import main
from medimg.io.api import load, save
from medimg.io.image import Image
from medimg.io.label_table import read_label_table
from medimg.tasks.segment.plan import load_plan

TINY = {"shape": (32, 32, 8), "spacing": (12.0, 12.0, 15.0)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """simulate -> plan -> train (a few steps) through the CLI; returns (data, model) folders."""
    from medimg.phantoms.segmentation import write_msd_dataset

    tmp = tmp_path_factory.mktemp("seg")
    torch.set_num_threads(1)
    data = write_msd_dataset(tmp / "data", "ct", n_train=2, n_test=2, seed=0, **TINY)
    assert main(["segment", "plan", str(data), "--memory-mb", "32", "--base-features", "4"]) == 0
    model = tmp / "model"
    argv = ["segment", "train", str(data), "--fold", "-1", "--plan", str(data / "plan.yaml"),
            "--max-steps", "3", "--out", str(model), "--quiet", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    return data, model


@pytest.mark.parametrize("verb", ["simulate", "plan", "train", "predict", "evaluate"])
def test_every_verb_has_help_with_example(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["segment", verb, "--help"])
    assert exc.value.code == 0
    assert "example:\n  medimg segment " + verb in capsys.readouterr().out


def test_predict_folder_and_evaluate(trained, tmp_path, capsys):
    data, model = trained
    preds = tmp_path / "preds"
    assert main(["segment", "predict", str(data / "imagesTs"), str(preds), "--model", str(model),
                 "--no-mirror", "--device", "cpu"]) == 0  # fmt: skip
    names = sorted(p.name for p in preds.iterdir() if not p.name.startswith("."))
    assert names == ["ct_002.nii.gz", "ct_002.tsv", "ct_003.nii.gz", "ct_003.tsv"]
    names = names[::2]
    table = read_label_table(preds / "ct_002.tsv")  # each label map says which number is what
    assert table == dict(enumerate(load_plan(model / "plan.yaml").label_names))
    assert len(table) > 2 and table[0] == "background"
    pred, ref = (
        load(preds / names[0], is_label=True),
        load(data / "imagesTs" / "ct_002_0000.nii.gz"),
    )
    assert pred.spatial_shape == ref.spatial_shape and np.allclose(pred.affine, ref.affine)
    report = tmp_path / "report"
    argv = ["segment", "evaluate", str(preds), str(data / "labelsTs"), "--out", str(report),
            "--images", str(data / "imagesTs")]  # fmt: skip
    assert main(argv) == 0
    assert {"metrics.csv", "summary.md", "cases.png"} <= {p.name for p in report.iterdir()}
    csv = (report / "metrics.csv").read_text().splitlines()
    assert csv[0] == "case,label,name,dice,iou,hd95,assd,nsd" and len(csv) == 1 + 2 * 3
    assert "[" in (report / "summary.md").read_text()  # CIs


def test_train_init_fine_tunes_a_model(trained, tmp_path, capsys):
    """--init starts from the given model's weights and plan (a fresh run would not)."""
    import shutil

    from safetensors.torch import load_file, save_file

    data, model = trained
    init = (
        tmp_path / "init"
    )  # the trained model, every weight shifted by 1: far from any fresh init
    init.mkdir()
    shutil.copy(model / "plan.yaml", init / "plan.yaml")
    before = {k: v + 1.0 for k, v in load_file(str(model / "best" / "model.safetensors")).items()}
    save_file(before, str(init / "model.safetensors"))
    tuned = tmp_path / "tuned"
    argv = ["segment", "train", str(data), "--fold", "-1", "--init", str(init), "--max-steps",
            "1", "--out", str(tuned), "--quiet", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    after = load_file(str(next(tuned.glob("*/model.safetensors"))))
    body = [k for k in before if not k.startswith(("output_block", "deep_supervision"))]
    # one Adam step moves each weight by about the learning rate
    assert max(float((after[k] - before[k]).abs().max()) for k in body) < 0.05
    assert load_plan(tuned / "plan.yaml").patch_size == load_plan(model / "plan.yaml").patch_size
    assert main(["segment", "train", "--preset", "default", "--init", str(init)]) == 2
    assert "--init fine-tunes" in capsys.readouterr().err


def test_train_reviewed_fine_tunes_on_accepted_corrections_only(trained, tmp_path, capsys):
    """--reviewed: the accepted corrections of a review folder become the training set."""
    import shutil

    from medimg.review.folder import ReviewFolder

    data, model = trained
    review = tmp_path / "review"
    for sub in ("images", "proposals"):
        (review / sub).mkdir(parents=True)
    for case in ("ct_002", "ct_003"):
        shutil.copy(data / "imagesTs" / f"{case}_0000.nii.gz", review / "images")
        shutil.copy(data / "labelsTs" / f"{case}.nii.gz", review / "proposals")
    out = tmp_path / "tuned"
    argv = ["segment", "train", "--init", str(model), "--reviewed", str(review), "--max-steps",
            "1", "--out", str(out), "--quiet", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 2 and "no accepted review" in capsys.readouterr().err
    assert main(argv[:2] + argv[4:]) == 2 and "--init" in capsys.readouterr().err
    folder = ReviewFolder(review)
    folder.save("ct_002", [], status="accepted")
    folder.save("ct_003", [], status="rejected")
    assert main(argv) == 0
    train_set = out.parent / "tuned.reviewed-data"
    assert sorted(p.name for p in (train_set / "labelsTr").iterdir()) == ["ct_002.nii.gz"]
    truth = load(data / "labelsTs" / "ct_002.nii.gz").array
    assert np.array_equal(load(train_set / "labelsTr" / "ct_002.nii.gz").array, truth)
    assert (out / "plan.yaml").exists() and list(out.glob("*/model.safetensors"))


def test_predict_window_flags_reach_the_sliding_window(trained, tmp_path, monkeypatch, capsys):
    from medimg.tasks.segment import inference

    data, model = trained
    seen = []
    real = inference.sliding_window_segment

    def spy(*args, **kwargs):
        seen.append((kwargs["overlap"], kwargs["batch_size"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "sliding_window_segment", spy)
    src = data / "imagesTs" / "ct_002_0000.nii.gz"
    argv = ["segment", "predict", str(src), str(tmp_path / "a.nii.gz"), "--model", str(model),
            "--no-mirror", "--overlap", "0", "--batch", "3"]  # fmt: skip
    assert main(argv) == 0 and seen == [(0.0, 3)]
    with pytest.raises(SystemExit):
        main([*argv[:4], str(tmp_path / "b.nii.gz"), *argv[5:-4], "--overlap", "1"])
    assert "not in [0, 1)" in capsys.readouterr().err


def test_predict_dicom_series_writes_nifti_and_seg(trained, tmp_path):
    data, model = trained
    image = load(data / "imagesTs" / "ct_002_0000.nii.gz", modality="CT")
    series = save(image, tmp_path / "series")
    out = tmp_path / "out"
    argv = ["segment", "predict", str(series), str(out), "--model", str(model), "--no-mirror"]
    assert main(argv) == 0
    assert (out / "series.nii.gz").is_file() and (out / "series_seg.dcm").is_file()


def test_bad_inputs_are_one_line_errors(trained, tmp_path, capsys):
    data, model = trained
    flat = save(Image(np.zeros((1, 16, 16), np.float32)), tmp_path / "flat.nii.gz")
    assert (
        main(["segment", "predict", str(flat), str(tmp_path / "o.nii.gz"), "--model", str(model)])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "2D image given to a model planned for 3D CT data" in err and "\n" not in err
    two = save(Image(np.zeros((2, 8, 8, 4), np.float32)), tmp_path / "two.nii.gz")
    assert (
        main(["segment", "predict", str(two), str(tmp_path / "o.nii.gz"), "--model", str(model)])
        == 2
    )
    assert "2 channel(s) but the model expects 1" in capsys.readouterr().err
    assert main(["segment", "plan", str(tmp_path / "nowhere")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    # a prediction on another grid than its ground truth
    preds = tmp_path / "p"
    lab = load(data / "labelsTs" / "ct_002.nii.gz", is_label=True)
    save(Image(lab.array[:, :16], lab.affine, is_label=True), preds / "ct_002.nii.gz")
    assert main(["segment", "evaluate", str(preds), str(data / "labelsTs")]) == 2
    assert "differs from the ground truth" in capsys.readouterr().err


def test_fold_ensemble_folder(trained, tmp_path):
    """A folder with plan.yaml and fold_*/best/ is an ensemble: probabilities are averaged."""
    import shutil

    from medimg.tasks.segment.predict import Segmenter

    data, model = trained
    ens = tmp_path / "ens"
    for k in (0, 1):
        shutil.copytree(model / "best", ens / f"fold_{k}" / "best")
    shutil.copy2(model / "plan.yaml", ens / "plan.yaml")
    single, both = Segmenter(model, device="cpu"), Segmenter(ens, device="cpu")
    assert len(both.models) == 2
    image = load(data / "imagesTs" / "ct_003_0000.nii.gz", modality="CT")
    a = single.segment(image, mirror=False).array
    b = both.segment(image, mirror=False).array
    assert np.array_equal(a, b)  # two identical members: the ensemble equals one of them


def test_plain_folder_layout_end_to_end(tmp_path, capsys, monkeypatch):
    """plan -> train -> predict -> evaluate on images/ + labels/ pairs (no dataset.json)."""
    from medimg.phantoms.segmentation import write_folder_dataset

    data = write_folder_dataset(tmp_path / "plain", "ct", n=2, seed=5, **TINY)
    plan = tmp_path / "plan.yaml"
    argv = ["segment", "plan", str(data), "--modality", "CT", "--out", str(plan),
            "--memory-mb", "32", "--base-features", "4"]  # fmt: skip
    assert main(argv) == 0
    assert "modality: CT" in plan.read_text() and "- kidney" not in plan.read_text()
    model = tmp_path / "model"
    argv = ["segment", "train", str(data), "--fold", "-1", "--plan", str(plan), "--max-steps",
            "2", "--out", str(model), "--quiet", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    preds = tmp_path / "preds"
    argv = ["segment", "predict", str(data / "images"), str(preds), "--model", str(model),
            "--no-mirror", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert sorted(p.name for p in preds.glob("*.nii.gz")) == ["ct_005.nii.gz", "ct_006.nii.gz"]
    monkeypatch.chdir(tmp_path / "plain")  # reports land under ./runs, not in the input folders
    before = sorted(p.name for p in preds.iterdir())
    assert main(["segment", "evaluate", str(preds), str(data / "labels")]) == 0
    assert sorted(p.name for p in preds.iterdir()) == before
    csv = (Path("runs/segment/evaluation/preds") / "metrics.csv").read_text().splitlines()
    assert len(csv) == 1 + 2 * 3  # 2 cases x labels 1..3


def _corrupt(data, tmp_path, how: str):
    """A copy of the MSD set ``data`` with one problem the issue lists."""
    import shutil

    bad = tmp_path / how
    shutil.copytree(data, bad, ignore=shutil.ignore_patterns("plan.yaml", "fingerprint.json"))
    label = bad / "labelsTr" / "ct_001.nii.gz"
    lab = load(label, is_label=True)
    if how == "geometry":
        save(Image(lab.array[:, :, :20], lab.affine, is_label=True), label, overwrite=True)
    elif how == "undeclared":
        arr = lab.array.copy()
        arr[0, 0, 0, 0] = 7
        save(Image(arr, lab.affine, is_label=True), label, overwrite=True)
    else:
        (bad / "imagesTr" / "ct_001_0000.nii.gz").unlink()
    return bad


@pytest.mark.parametrize(
    ("how", "words"),
    [
        ("geometry", "label geometry (32, 20, 8)"),
        ("undeclared", "label value 7 is not declared in dataset.json"),
        ("missing", "has no image; expected imagesTr/ct_001_0000.nii.gz"),
    ],
)
def test_bad_datasets_are_one_line_errors(trained, tmp_path, capsys, how, words):
    data, _ = trained
    bad = _corrupt(data, tmp_path, how)
    assert main(["segment", "plan", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err
    assert not (bad / "plan.yaml").exists()
