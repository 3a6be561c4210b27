"""The out-of-distribution safeguard of diagnosis models: calibrated on the training
distribution, it passes images like those and flags CT slices and noise; training writes it,
``predict`` reports it (columns + one warning line), ``calibrate`` recomputes it."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from medimg.cli import main
from medimg.engine import TrainConfig
from medimg.io.api import save
from medimg.io.image import Image
from medimg.phantoms.diagnosis import make_cases
from medimg.tasks.diagnose.data import CaseArrays, from_phantoms
from medimg.tasks.diagnose.safeguard import FILE_NAME, Safeguard, _features, calibrate
from medimg.tasks.diagnose.train import DiagnoseConfig, build_model, train_diagnosis


def _xrays(n: int, seed: int, size: int = 32) -> CaseArrays:
    return from_phantoms(make_cases("xray", n, seed=seed, size=size))


def _noise(n: int, size: int = 32) -> CaseArrays:
    x = np.random.default_rng(5).uniform(size=(n, 1, size, size)).astype(np.float32)
    return CaseArrays(x, np.zeros(n, np.float32), np.ones((n, 1), bool), [str(i) for i in range(n)])


def test_in_distribution_images_pass_and_ct_slices_and_noise_are_flagged():
    torch.manual_seed(0)
    model = build_model(DiagnoseConfig(width=8, input_size=[32, 32], classes=["no", "yes"]))
    sg = calibrate(model, _xrays(100, 0), _xrays(30, 1))
    same = sg.scores(_features(model, _xrays(60, 2)))  # radiographs never seen
    ct = from_phantoms(make_cases("ctpet", 20, seed=3, size=32)).select_modalities([0])
    assert np.mean(same > 1) <= 0.05
    assert np.all(sg.scores(_features(model, ct)) > 1)
    assert np.all(sg.scores(_features(model, _noise(20))) > 1)


def test_the_safeguard_round_trips_through_its_file(tmp_path):
    torch.manual_seed(0)
    model = build_model(DiagnoseConfig(width=8, input_size=[32, 32], classes=["no", "yes"]))
    sg = calibrate(model, _xrays(40, 0))  # a fifth held out for the threshold
    assert sg.info["held_out_images"] == 8 and sg.threshold > 0
    back = Safeguard.load(sg.save(tmp_path).parent)
    f = _features(model, _xrays(4, 2))
    assert np.allclose(back.scores(f), sg.scores(f))
    with pytest.raises(Exception, match="at least 8 fitting"):
        calibrate(model, _xrays(6, 0))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    tcfg = TrainConfig(max_steps=4, batch_size=16, lr=3e-3, val_every=4, checkpoint_every=4,
                       progress=False, device="cpu")  # fmt: skip
    cfg = DiagnoseConfig(width=8, augment=0.0, input_size=[32, 32], classes=["normal", "nodule"],
                         train=tcfg)  # fmt: skip
    torch.manual_seed(0)
    train_diagnosis(cfg, _xrays(60, 0), _xrays(20, 1), out)
    return out


def test_training_writes_the_safeguard_and_predict_flags_what_lies_outside(tiny_run, tmp_path,
                                                                           capsys):  # fmt: skip
    assert (tiny_run / FILE_NAME).is_file()
    for i, case in enumerate(make_cases("xray", 2, seed=7, size=32)):
        save(case.to_images()["DX"], tmp_path / "in" / f"chest{i}.nii.gz")
    noise = np.random.default_rng(1).uniform(size=(1, 32, 32)).astype(np.float32)
    save(Image(noise, np.eye(4)), tmp_path / "in" / "noise.nii.gz")
    code = main(["diagnose", "predict", str(tmp_path / "in"), str(tmp_path / "out"),
                 "--model", str(tiny_run), "--explain", "none", "--device", "cpu"])  # fmt: skip
    assert code == 0
    with open(tmp_path / "out" / "predictions.csv") as fh:
        rows = {r["case_id"]: r for r in csv.DictReader(fh)}
    assert rows["noise"]["ood_flag"] == "1" and float(rows["noise"]["ood_score"]) > 1
    assert rows["chest0"]["ood_flag"] == rows["chest1"]["ood_flag"] == "0"
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "1 of 3" in warnings[0] and "noise" in warnings[0]


def test_calibrate_recomputes_it_from_a_manifest(tiny_run, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_run, model, ignore=shutil.ignore_patterns("best", "last", "*.jsonl"))
    (model / FILE_NAME).unlink()
    assert main(["diagnose", "simulate", str(tmp_path / "set"), "--cases", "20", "--val", "0",
                 "--test", "0"]) == 0  # fmt: skip
    assert main(["diagnose", "calibrate", str(model), "--data", str(tmp_path / "set")]) == 0
    sg = Safeguard.load(model)
    assert sg is not None and sg.info["fit_images"] == 16 and "set" in sg.info["source"]


def test_an_unreadable_safeguard_is_a_one_line_error(tiny_run, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_run, model, ignore=shutil.ignore_patterns("best", "last"))
    (model / FILE_NAME).write_bytes(b"garbage")
    case = make_cases("xray", 1, seed=7, size=32)[0]
    img = save(case.to_images()["DX"], tmp_path / "c.nii.gz")
    assert (
        main(["diagnose", "predict", str(img), str(tmp_path / "out"), "--model", str(model)]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "recalibrate" in err
    assert not (tmp_path / "out").exists()


def test_a_set_too_small_for_a_safeguard_still_trains(tmp_path):
    tcfg = TrainConfig(max_steps=2, batch_size=4, lr=3e-3, val_every=2, checkpoint_every=2,
                       progress=False, device="cpu")  # fmt: skip
    cfg = DiagnoseConfig(width=4, augment=0.0, input_size=[32, 32], classes=["normal", "nodule"],
                         train=tcfg)  # fmt: skip
    train_diagnosis(cfg, _xrays(12, 0), _xrays(2, 1), tmp_path / "run")
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert not (tmp_path / "run" / FILE_NAME).exists()  # predicted unchecked, not refused
