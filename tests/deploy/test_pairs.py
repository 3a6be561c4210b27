"""ONNX export of the registration network (with its integration and coarse stage) and of the
nodule detector, and ``--backend onnxruntime`` of ``register pair`` and ``detect predict``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_model

from medimg.cli import main
from medimg.deploy.export import coarse_path, export_model, report_path
from medimg.deploy.runtime import make_session, read_sidecar, sidecar_path
from medimg.deploy.targets import resolve_target
from medimg.engine.config import to_yaml
from medimg.io.api import load, save


def _reg_folder(folder: Path, spacing: float, coarse: str = "") -> Path:
    from medimg.tasks.register.models import ModelConfig, build_model
    from medimg.tasks.register.train import RegConfig

    # 3 squaring steps, not 7: the same graph pattern, a shorter export
    cfg = RegConfig(model=ModelConfig(channels=(4, 4, 4, 4), final_channels=(4,), symmetric=True,
                                      downsample="shuffle", integration_steps=3),
                    working_spacing_mm=(spacing,) * 3, coarse=coarse)  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    to_yaml(cfg, folder / "reg.yaml")
    torch.manual_seed(int(spacing))
    net = build_model(cfg.model)
    last = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)][-1]
    torch.nn.init.normal_(last.weight, std=0.05)  # a field worth comparing, not ~0
    save_model(net, str(folder / "model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def tiny_reg(tmp_path_factory) -> Path:
    """A two-stage registration model: a coarse stage at 8 mm refined at 4 mm."""
    folder = tmp_path_factory.mktemp("reg") / "tiny_reg"
    _reg_folder(folder / "coarse", 8.0)
    return _reg_folder(folder, 4.0, coarse="coarse")


@pytest.fixture(scope="module")
def reg_onnx(tiny_reg, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "reg.onnx"
    export_model(tiny_reg, out, check_samples=1)
    return out


@pytest.mark.slow  # the two-stage export: about 1 CPU-minute
def test_registration_graph_matches_torch_with_its_integration(reg_onnx, tiny_reg):
    torch.manual_seed(1)
    x = torch.rand(1, 2, 24, 32, 16)  # export: (2, 2, 16, 16, 16)
    for file, folder in [(reg_onnx, tiny_reg), (coarse_path(reg_onnx), tiny_reg / "coarse")]:
        with torch.no_grad():
            ref = resolve_target(folder).network(x).numpy()
        got = make_session(file, threads=1).run(None, {"input": x.numpy()})[0]
        assert got.shape == ref.shape == (1, 3, 24, 32, 16)
        assert np.abs(ref).max() > 0.05 and np.abs(got - ref).max() <= 1e-4
    side = read_sidecar(reg_onnx)
    assert side["task"] == "register" and side["coarse"] == "reg.coarse.onnx"
    assert side["input"]["multiple_of"] == [8, 8, 8] and side["input"]["min_size"] == 16
    rows = json.loads(report_path(reg_onnx).read_text())["backends"]
    assert rows["onnx fp32"]["max_abs_diff"] <= 1e-4
    assert rows["onnx fp32"]["dice"] == pytest.approx(rows["torch fp32"]["dice"], abs=1e-3)


@pytest.mark.slow
def test_register_pair_onnxruntime_warps_as_torch(reg_onnx, tiny_reg, tmp_path, monkeypatch):
    from medimg.phantoms.registration import make_pair

    monkeypatch.setenv("MEDIMG_PRECISION", "fp32")  # torch in float32 too (no bfloat16)
    p = make_pair("mr", 3, shape=(20, 26, 18), spacing=4.0)  # not multiples of the stride
    fixed, moving = save(p.fixed, tmp_path / "f.nii.gz"), save(p.moving, tmp_path / "m.nii.gz")
    a, b = tmp_path / "torch", tmp_path / "ort"
    assert (
        main(["register", "pair", str(fixed), str(moving), str(a), "--model", str(tiny_reg)]) == 0
    )
    assert main(["register", "pair", str(fixed), str(moving), str(b), "--model", str(reg_onnx),
                 "--backend", "onnxruntime"]) == 0  # fmt: skip
    wa, wb = load(a / "warped.nii.gz").array, load(b / "warped.nii.gz").array
    assert np.abs(wa - load(moving).array).max() > 1e-3  # the pair really was warped
    assert np.abs(wa - wb).max() <= 1e-4 * np.abs(wa).max()  # float32 rounding only
    fa, fb = load(a / "field.nii.gz").array, load(b / "field.nii.gz").array
    assert np.abs(fa - fb).max() <= 1e-3  # mm, through both stages and the resampling between


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory) -> Path:
    from medimg.tasks.detect.models import build_detector

    folder = tmp_path_factory.mktemp("det") / "tiny_det"
    folder.mkdir()
    cfg = {
        "model": {"channels": [4, 8, 8], "spacing": 4.0},
        "inference": {"window": 32, "overlap": 0.25, "min_score": 0.0, "max_candidates": 8},
    }
    (folder / "config.yaml").write_text(json.dumps(cfg))  # JSON is YAML
    torch.manual_seed(0)
    save_model(build_detector((4, 8, 8)), str(folder / "model.safetensors"))
    return folder


def test_detector_exports_and_detect_predict_onnxruntime_finds_the_same(tiny_detector, tmp_path):
    from medimg.phantoms.detection import nodule_ct_case

    out = tmp_path / "det.onnx"
    export_model(tiny_detector, out, check=False)
    x = torch.randn(3, 1, 48, 32, 16)  # export: (2, 1, 32, 32, 32)
    with torch.no_grad():
        ref = resolve_target(tiny_detector).network(x).numpy()
    got = make_session(out, threads=1).run(None, {"input": x.numpy()})[0]
    assert got.shape == ref.shape == (3, 5, 48, 32, 16) and np.abs(got - ref).max() <= 1e-4
    assert read_sidecar(out)["config"]["inference"]["window"] == 32
    scan = save(nodule_ct_case(1, shape=(48, 48, 20), spacing=(4.0, 4.0, 5.0)).image,
                tmp_path / "ct.nii.gz")  # fmt: skip
    a, b = tmp_path / "torch", tmp_path / "ort"
    argv = ["detect", "predict", str(scan), "--no-figures", "--model"]
    assert main([*argv[:3], str(a), *argv[3:], str(tiny_detector)]) == 0
    assert main([*argv[:3], str(b), *argv[3:], str(out), "--backend", "onnxruntime"]) == 0
    ca = json.loads((a / "candidates.json").read_text())["series"]["ct"]
    cb = json.loads((b / "candidates.json").read_text())["series"]["ct"]
    assert len(ca) > 0
    for u, v in zip(ca, cb, strict=True):
        assert np.allclose(u["center_ras_mm"], v["center_ras_mm"], atol=1e-3)
        assert u["score"] == pytest.approx(v["score"], abs=1e-4)


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_refusals_are_one_line(tiny_reg, tiny_detector, tmp_path, capsys):
    out = str(tmp_path / "r.pt")
    assert main(["export", str(tiny_reg), "--format", "torchscript", "--out", out]) == 2
    assert "use --format onnx" in _one_error(capsys)
    assert not sidecar_path(out).exists()  # (the MRI model's refusals: test_backends_mri_diagnose)


def test_learned_beamformer_exports_and_loads_as_onnx_for_recon_us(tmp_path):
    from medimg.tasks.reconstruct.us.learned import load_learned
    from medimg.tasks.reconstruct.us.models import LearnedBeamformer
    from medimg.tasks.reconstruct.us.train import LearnedConfig

    folder = tmp_path / "tiny_bf"
    folder.mkdir()
    cfg = LearnedConfig(features=(4, 4, 4, 4, 4, 4))
    to_yaml(cfg, folder / "config.yaml")
    torch.manual_seed(0)
    save_model(LearnedBeamformer(cfg.features), str(folder / "model.safetensors"))
    out = tmp_path / "bf.onnx"
    export_model(folder, out, check=False)
    x = torch.randn(1, 2, 40, 56)  # not multiples of 16: padded as the network pads
    with torch.no_grad():
        ref = load_learned(folder)(x).numpy()
        got = load_learned(out)(x).numpy()  # what recon us predict --model bf.onnx runs
    assert got.shape == ref.shape == (1, 1, 40, 56) and np.abs(got - ref).max() <= 1e-4
    assert read_sidecar(out)["task"] == "recon-us"
