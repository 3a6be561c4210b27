"""What ``diagnose predict`` writes and ``diagnose evaluate`` reports: probabilities at full
precision beside their logits, and one labelled AUC per probability type."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import special

from medimg.cli import main
from medimg.io.api import save
from medimg.metrics.classification import roc_auc
from medimg.tasks.diagnose import predict as predict_mod
from medimg.tasks.diagnose.predict import CasePrediction, predict_path


def _xray(seed: int):
    from medimg.phantoms.diagnosis import make_case

    return make_case("xray", seed, bool(seed % 2), size=32).to_images()["DX"]


def test_confident_probabilities_keep_their_ranking(tmp_path, monkeypatch):
    """Logits 12, 14, 16 give probabilities that all round to 1.000000 at six decimals; the
    file must keep them apart (and hold the logits beside them)."""
    logits = iter([12.0, 14.0, 16.0])

    def fake_predict(self, images, explain=None):
        z = next(logits)
        p = float(special.expit(z))
        return CasePrediction({"nodule": p}, {"nodule": p}, "nodule", [], logits={"nodule": z})

    monkeypatch.setattr(predict_mod.Diagnoser, "predict", fake_predict)
    for i in range(3):
        save(_xray(i), tmp_path / "in" / f"c{i}.nii.gz")
    predict_path(tmp_path / "in", tmp_path / "out", device="cpu", explain=None)
    with open(tmp_path / "out" / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    probs = [float(r["prob_nodule"]) for r in rows]
    assert len(set(probs)) == 3 and probs == sorted(probs)
    assert probs == [float(special.expit(z)) for z in (12.0, 14.0, 16.0)]  # exact round trip
    assert [float(r["logit_nodule"]) for r in rows] == [12.0, 14.0, 16.0]


def test_the_default_model_writes_logits_that_give_its_probabilities(tmp_path):
    save(_xray(1), tmp_path / "in" / "a.nii.gz")
    predict_path(tmp_path / "in", tmp_path / "out", device="cpu", explain=None)
    with open(tmp_path / "out" / "predictions.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    z = float(row["logit_nodule"])
    assert float(row["prob_nodule"]) == float(special.expit(z))
    assert row["model"].startswith("medimg ") and " diagnose default sha1:" in row["model"]


def test_overlay_title_gives_the_probability_and_the_safeguard_verdict() -> None:
    from medimg.tasks.diagnose.predict import CasePrediction, _overlay_title

    inside = CasePrediction({"nodule": 0.9}, {"nodule": 0.873}, "nodule", [], ood_score=0.4)
    assert _overlay_title("c1", inside) == "c1: nodule, p(nodule) = 0.873"
    outside = CasePrediction({"nodule": 0.2}, {"nodule": 0.2}, "normal", [], ood_score=3.0)
    assert _overlay_title("c2", outside).endswith("p(nodule) = 0.200; outside the training data")


def _write_eval_inputs(tmp_path, raw, cal, logits=None):
    labels = [0, 1, 0, 1, 1, 0]
    man = ["path,label"] + [
        f"c{i}.nii.gz,{'positive' if y else 'negative'}" for i, y in enumerate(labels)
    ]
    (tmp_path / "m.csv").write_text("\n".join(man) + "\n")
    head = "case_id,prob_nodule,calibrated_nodule" + (",logit_nodule" if logits else "")
    lines = [head]
    for i in range(len(labels)):
        extra = f",{logits[i]!r}" if logits else ""
        lines.append(f"c{i},{raw[i]},{cal[i]}{extra}")
    (tmp_path / "pred.csv").write_text("\n".join(lines) + "\n")
    return np.array(labels)


def test_evaluate_labels_each_auc_with_its_probability(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # evaluate's default report goes under ./runs
    """Raw and calibrated columns that rank differently give two AUCs, each named."""
    raw = [0.1, 0.9, 0.2, 0.8, 0.3, 0.7]
    cal = [0.1, 0.9, 0.8, 0.2, 0.3, 0.7]
    y = _write_eval_inputs(tmp_path, raw, cal)
    assert main(["diagnose", "evaluate", str(tmp_path / "pred.csv"), str(tmp_path / "m.csv")]) == 0
    report = json.loads(
        (tmp_path / "runs/diagnose/evaluation" / tmp_path.name / "metrics.json").read_text()
    )
    b = report["binary"]
    assert b["auc"] == pytest.approx(roc_auc(y, np.array(raw)))
    assert b["auc_ranked_by"] == "raw probability"
    assert b["auc_calibrated"] == pytest.approx(roc_auc(y, np.array(cal)))
    assert abs(b["auc_calibrated"] - b["auc"]) > 0.3
    assert report["per_class"][0]["auc"] == pytest.approx(b["auc_calibrated"])
    text = (tmp_path / "runs/diagnose/evaluation" / tmp_path.name / "metrics.md").read_text()
    assert "AUC (temperature-scaled) |" in text  # the table's column
    assert f"AUC (raw, ranked by raw probability) {b['auc']:.3f}" in text
    assert f"AUC (temperature-scaled) {b['auc_calibrated']:.3f}" in text
    # no bare "AUC " anywhere: each one says which probability it ranks
    assert text.count("AUC") == text.count("AUC (")


def test_evaluate_ranks_raw_scores_by_logits_when_probabilities_tie(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # evaluate's default report goes under ./runs
    raw = ["1.000000"] * 6
    logits = [12.0, 17.0, 13.0, 16.0, 15.0, 14.0]
    y = _write_eval_inputs(tmp_path, raw, raw, logits)
    main(["diagnose", "evaluate", str(tmp_path / "pred.csv"), str(tmp_path / "m.csv")])
    b = json.loads(
        (tmp_path / "runs/diagnose/evaluation" / tmp_path.name / "metrics.json").read_text()
    )["binary"]
    assert b["auc_ranked_by"] == "raw logit"
    assert b["auc"] == pytest.approx(1.0) and roc_auc(y, np.array(logits)) == 1.0
    assert b["auc_calibrated"] == pytest.approx(0.5)


def test_a_monochrome1_film_is_read_dense_bright(tmp_path):
    """A MONOCHROME1 DICOM (lowest value white, as most CR films) holding the inverse of a
    MONOCHROME2 film gets the same call: both are read as dense = bright."""
    from pathlib import Path

    import pydicom

    from medimg.io.image import Image
    from medimg.tasks.diagnose.data import load_case_images

    x = _xray(1)
    grey = np.clip(np.round(x.array / x.array.max() * 4000), 0, 4000)[..., None]  # 12 bits
    files = {}
    for kind in ("MONOCHROME2", "MONOCHROME1"):
        series = save(Image(grey, x.affine, modality="CT"), tmp_path / kind)
        f = next(p for p in Path(series).iterdir() if not p.name.startswith("."))
        ds = pydicom.dcmread(f)
        if kind == "MONOCHROME1":
            ds.PhotometricInterpretation = "MONOCHROME1"
            ds.BitsStored = 12
            ds.PixelRepresentation = 0  # unsigned 12-bit values, as CR films store them
            ds.RescaleSlope, ds.RescaleIntercept = 1, 0
            stored = (4095 - grey[0, ..., 0].T).astype(np.uint16)  # (rows, cols)
            ds.PixelData = stored.tobytes()
        ds.save_as(f)
        files[kind] = f
    a, b = (load_case_images([files[k]], 1, 1)[0] for k in ("MONOCHROME2", "MONOCHROME1"))
    assert np.corrcoef(a.array.ravel(), b.array.ravel())[0, 1] > 0.999  # not inverted
    dx = predict_mod.Diagnoser(device="cpu")
    pa, pb = (dx.predict([im], explain=None).logits["nodule"] for im in (a, b))
    assert pa == pytest.approx(pb, abs=1e-3)
