"""ONNX export and the onnxruntime backend of the unrolled MRI model (MoDL with its CG data
consistency, complex k-space split into real and imaginary inputs) and of the diagnosis
classifier (with the safeguard's features as a second part of its output)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_model

from medimg.cli import main
from medimg.deploy.export import export_model
from medimg.engine.config import to_yaml
from medimg.io.api import load, save
from medimg.io.image import Image


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def tiny_mri(tmp_path_factory) -> Path:
    """A 1-iteration MoDL (1 CG step, 1-step CG-SENSE start) with random denoiser weights: its
    zero-initialised last layer would make the U-Net path invisible to a parity check."""
    from medimg.tasks.reconstruct.mri.models import ModelConfig, build_model
    from medimg.tasks.reconstruct.mri.train import MRITrainConfig

    cfg = MRITrainConfig(model=ModelConfig(name="modl", cascades=1, features=(4, 4, 8, 8, 16, 4),
                                           cg_iter=1, maps="espirit", init_iter=1))  # fmt: skip
    torch.manual_seed(0)
    net = build_model(cfg.model)
    with torch.no_grad():
        for p in net.denoiser.parameters():
            p.add_(0.1 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("mri") / "tiny_modl"
    folder.mkdir()
    to_yaml(cfg, folder / "config.yaml")
    save_model(net, str(folder / "model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def mri_onnx(tiny_mri, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mri_onnx") / "modl.onnx"
    export_model(tiny_mri, out, check=False)
    return out


@pytest.mark.slow  # the unrolled graph's export: about 1 CPU-minute (once for the module)
def test_mri_graph_matches_torch_at_sizes_other_than_the_export_size(tiny_mri, mri_onnx):
    from medimg.deploy.mri import mri_inputs, open_mri
    from medimg.tasks.reconstruct.mri.infer import Reconstructor

    ort_net, tag, _ = open_mri(mri_onnx)
    assert "onnx" in tag
    for shape, coils in [((48, 40), 3), ((33, 27), 2)]:  # export: 64 x 64, 4 coils
        c = mri_inputs(1, 7, shape=shape, coils=coils)[0]
        ref = Reconstructor("net", tiny_mri)(c["kspace"], c["mask"], c["maps"])
        got = Reconstructor("net", ort_net)(c["kspace"], c["mask"], c["maps"])
        assert np.abs(got - ref).max() <= 1e-4 * ref.max()
        zero_filled = Reconstructor("zero_filled")(c["kspace"], c["mask"])
        assert np.abs(zero_filled - ref).max() > 0.05 * ref.max()  # the network did something


@pytest.mark.slow
def test_recon_mri_predict_onnxruntime_writes_the_torch_image(tiny_mri, mri_onnx, tmp_path):
    rng = np.random.default_rng(0)
    arr = np.zeros((1, 32, 32, 2), np.float32)
    arr[0, 8:24, 6:26] = 100 + 20 * rng.random((16, 20, 2))
    src = tmp_path / "slab.nii.gz"
    save(Image(arr, np.eye(4), modality="MR"), src)
    outs = {}
    for backend, model in (("torch", tiny_mri), ("onnxruntime", mri_onnx)):
        argv = ["recon", "mri", "predict", str(src), str(tmp_path / backend), "--model",
                str(model), "--format", "nifti", "--quiet", "--backend", backend]  # fmt: skip
        assert main(argv) == 0
        outs[backend] = load(tmp_path / backend / "slab.nii.gz").array
    assert np.abs(outs["onnxruntime"] - outs["torch"]).max() <= 1e-4 * outs["torch"].max()


def test_mri_backend_and_export_refusals_are_one_line(mri_onnx, tmp_path, capsys):
    src = tmp_path / "slab.nii.gz"
    save(Image(np.ones((1, 32, 32, 1), np.float32), np.eye(4), modality="MR"), src)
    argv = ["recon", "mri", "predict", str(src), str(tmp_path / "o"), "--backend", "onnxruntime"]
    assert main([*argv, "--model", str(tmp_path / "missing.onnx")]) == 2
    assert "ONNX file not found" in _one_error(capsys)
    assert main([*argv, "--method", "cg_sense"]) == 2
    assert "runs a network" in _one_error(capsys)
    from medimg.tasks.reconstruct.mri.train import NAMED_MODELS

    varnet = str(NAMED_MODELS["phantom-varnet"])
    assert main(["export", varnet, "--out", str(tmp_path / "v.onnx")]) == 2
    assert "VarNet" in _one_error(capsys)
    assert main(["export", "mri", "--out", str(tmp_path / "m.onnx"), "--int8", "static"]) == 2
    assert "fp32 ONNX only" in _one_error(capsys)
    assert not list(tmp_path.glob("*.onnx*"))


@pytest.fixture(scope="module")
def tiny_dx(tmp_path_factory) -> Path:
    """A width-8 classifier on 32x32 radiographs, untrained, with a calibrated safeguard."""
    from medimg.phantoms.diagnosis import make_cases
    from medimg.tasks.diagnose.data import from_phantoms
    from medimg.tasks.diagnose.safeguard import calibrate
    from medimg.tasks.diagnose.train import MODEL_WEIGHTS, MODEL_YAML, DiagnoseConfig, build_model

    cfg = DiagnoseConfig(width=8, input_size=[32, 32], classes=["normal", "nodule"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    folder = tmp_path_factory.mktemp("dx") / "tiny_dx"
    folder.mkdir()
    to_yaml(cfg, folder / MODEL_YAML)
    save_model(model, str(folder / MODEL_WEIGHTS))
    calibrate(model, from_phantoms(make_cases("xray", 20, seed=0, size=32))).save(folder)
    return folder


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow  # a classifier export and four predict runs: about 10 CPU s
def test_diagnose_predict_onnxruntime_gives_the_torch_probabilities_and_safeguard(
    tiny_dx, tmp_path, capsys
):
    from medimg.phantoms.diagnosis import make_cases

    images = tmp_path / "films"
    for i, case in enumerate(make_cases("xray", 2, seed=9, size=32)):
        save(case.to_images()["DX"], images / f"film{i}.nii.gz")
    noise = np.random.default_rng(1).uniform(size=(1, 32, 32)).astype(np.float32)
    save(Image(noise, np.eye(4)), images / "noise.nii.gz")
    onnx = tmp_path / "dx.onnx"
    export_model(tiny_dx, onnx, check=False)
    assert (tmp_path / "dx.onnx.safeguard.safetensors").is_file()
    base = ["diagnose", "predict", str(images)]
    assert (
        main(
            [
                *base,
                str(tmp_path / "t"),
                "--model",
                str(tiny_dx),
                "--explain",
                "none",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                *base,
                str(tmp_path / "o"),
                "--model",
                str(onnx),
                "--backend",
                "onnxruntime",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    torch_rows, ort_rows = (
        _rows(tmp_path / "t/predictions.csv"),
        _rows(tmp_path / "o/predictions.csv"),
    )
    assert [r["case_id"] for r in ort_rows] == [r["case_id"] for r in torch_rows]
    for t, o in zip(torch_rows, ort_rows):
        assert abs(float(t["prob_nodule"]) - float(o["prob_nodule"])) <= 1e-5
        assert abs(float(t["ood_score"]) - float(o["ood_score"])) <= 1e-3 * float(t["ood_score"])
        assert t["ood_flag"] == o["ood_flag"]
    assert any(r["ood_flag"] == "1" for r in ort_rows)  # the noise image is flagged
    assert (tmp_path / "o/film0_heatmap.nii.gz").is_file()  # occlusion: forward passes only
    assert "onnx" in ort_rows[0]["model"]
    capsys.readouterr()
    argv = [*base, str(tmp_path / "x"), "--model", str(onnx), "--explain", "gradcam"]
    assert main(argv) == 2
    assert "needs gradients" in _one_error(capsys)
    argv = [*base, str(tmp_path / "y"), "--backend", "onnxruntime", "--model"]
    assert main([*argv, str(tmp_path / "none.onnx")]) == 2
    assert "ONNX file not found" in _one_error(capsys)
