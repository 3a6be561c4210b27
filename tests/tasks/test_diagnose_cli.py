"""``medimg diagnose`` end to end on tiny simulated sets, and bad input as one-line errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medimg.cli import main
from medimg.io.api import load


def _run(*args: str) -> int:
    return main(["diagnose", *map(str, args)])


def test_simulate_train_predict_evaluate_fusion(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # evaluate's default report goes under ./runs
    data, run, out = tmp_path / "ctpet", tmp_path / "run", tmp_path / "pred"
    assert _run("simulate", data, "--kind", "ctpet", "--cases", 16, "--val", 6, "--test", 6) == 0
    rows = list(csv.DictReader(open(data / "manifest.csv")))
    assert set(rows[0]) == {"path", "path2", "label", "patient_id", "split"}
    truth = json.loads((data / "ground_truth.json").read_text())
    assert truth["kind"] == "ctpet" and len(truth["cases"]) == 28
    assert _run("train", data, "--fusion", "late", "--max-steps", 4, "--batch-size", 8,
                "--width", 4, "--out", run, "--quiet", "--device", "cpu") == 0  # fmt: skip
    # --init fine-tunes that run; a network of another width cannot take its weights
    tune = ["train", data, "--fusion", "late", "--max-steps", 1, "--batch-size", 8, "--quiet",
            "--device", "cpu", "--init", run]  # fmt: skip
    assert _run(*tune, "--width", 4, "--out", tmp_path / "tuned") == 0
    capsys.readouterr()
    assert _run(*tune, "--width", 8, "--out", tmp_path / "wide") == 2
    assert "shape mismatch" in capsys.readouterr().err
    test_csv = tmp_path / "test.csv"
    keep = [r for r in rows if r["split"] == "test"]
    keep[0]["path2"] = ""  # PET missing for one case: still predicted, flagged
    with open(test_csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "path": str(data / r["path"]),
                     "path2": str(data / r["path2"]) if r["path2"] else ""} for r in keep)  # fmt: skip
    assert _run("predict", test_csv, out, "--model", run, "--device", "cpu") == 0
    preds = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(preds) == 6 and preds[0]["missing_modalities"] == "PT"
    assert {"prob_positive", "calibrated_positive", "heatmap"} <= set(preds[0])
    heat, image = load(out / f"{preds[1]['case_id']}_heatmap.nii.gz"), load(data / keep[1]["path"])
    assert heat.spatial_shape == image.spatial_shape and np.allclose(
        heat.affine, image.affine, atol=1e-4
    )
    assert (out / f"{preds[1]['case_id']}_overlay.png").is_file()
    assert _run("evaluate", out / "predictions.csv", test_csv) == 0
    report = json.loads(
        (tmp_path / "runs/diagnose/evaluation" / out.name / "metrics.json").read_text()
    )
    assert report["cases"] == 6 and 0 <= report["binary"]["auc"] <= 1
    assert (tmp_path / "runs/diagnose/evaluation" / out.name / "roc.png").is_file() and (
        tmp_path / "runs/diagnose/evaluation" / out.name / "reliability.png"
    ).is_file()
    assert _run("predict", test_csv, out, "--model", run) == 2  # never overwrites silently
    assert "already exists" in capsys.readouterr().err


def test_semi_cli_trains_fixmatch_and_predicts(tmp_path):
    from medimg.tasks.diagnose.train import load_config

    data, run, out = tmp_path / "xray", tmp_path / "run", tmp_path / "pred"
    assert _run("simulate", data, "--kind", "xray", "--cases", 16, "--val", 4, "--test", 2) == 0
    assert _run("train", data, "--supervision", "semi", "--labelled-fraction", 0.5,
                "--max-steps", 3, "--batch-size", 4, "--width", 4, "--out", run, "--quiet",
                "--device", "cpu") == 0  # fmt: skip
    cfg = load_config(run / "model.yaml")
    assert (cfg.supervision, cfg.semi_method, cfg.pseudo_threshold) == ("semi", "fixmatch", 0.95)
    assert _run("predict", data / "images", out, "--model", run, "--device", "cpu") == 0
    assert len(list(out.glob("*_heatmap.nii.gz"))) == 22  # every simulated case


def test_mil_cli_writes_attention_maps(tmp_path):
    data, run, out = tmp_path / "ct3d", tmp_path / "run", tmp_path / "pred"
    assert _run("simulate", data, "--kind", "ct3d", "--cases", 8, "--val", 4, "--test", 2) == 0
    assert _run("train", data, "--supervision", "mil", "--max-steps", 2, "--batch-size", 4,
                "--width", 4, "--out", run, "--quiet", "--device", "cpu") == 0  # fmt: skip
    assert _run("predict", data / "images", out, "--model", run, "--device", "cpu") == 0
    preds = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(preds) == 14 and "top_slice" in preds[0]
    heat = load(out / f"{preds[0]['case_id']}_heatmap.nii.gz")
    assert (
        heat.spatial_shape == load(data / "images" / f"{preds[0]['case_id']}.nii.gz").spatial_shape
    )


@pytest.mark.parametrize(
    ("csv_text", "extra", "message"),
    [
        ("path,label\nmissing.nii.gz,positive\n", [], "does not exist"),
        (
            "path,label\n{img},maybe\n",
            ["--classes", "negative", "positive"],
            "not one of the declared classes",
        ),
        (
            "path,label,patient_id,split\n{img},positive,p1,train\n{img2},negative,p1,val\n",
            [],
            "leakage",
        ),
        (
            "path,label\n{img},positive\n",
            ["--modalities", "CT", "PT"],
            "manifest has 1 path columns",
        ),
    ],
)
def test_bad_manifests_are_one_line_errors(tmp_path, capsys, csv_text, extra, message):
    from medimg.io import Image
    from medimg.io.api import save

    img = save(Image(np.zeros((1, 8, 8), np.float32)), tmp_path / "a.nii.gz")
    img2 = save(Image(np.ones((1, 8, 8), np.float32)), tmp_path / "b.nii.gz")
    (tmp_path / "m.csv").write_text(csv_text.format(img=img, img2=img2))
    assert _run("train", tmp_path / "m.csv", *extra, "--out", tmp_path / "r", "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0


def test_wrong_number_of_modalities_at_predict(tmp_path, capsys):
    data = tmp_path / "ctpet"
    _run("simulate", data, "--kind", "ctpet", "--cases", 8, "--val", 4, "--test", 0)
    _run("train", data, "--max-steps", 1, "--batch-size", 4, "--width", 4, "--out", tmp_path / "r",
         "--quiet", "--device", "cpu")  # fmt: skip
    one = next((data / "images").glob("*_CT.nii.gz"))
    assert _run("predict", one, tmp_path / "p", "--model", tmp_path / "r") == 2
    assert "takes 2 modalities" in capsys.readouterr().err
