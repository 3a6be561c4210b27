"""Export to ONNX / TorchScript, the sidecar, int8 and the onnxruntime backend of predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medimg.cli import main
from medimg.deploy.export import export_model, report_path
from medimg.deploy.runtime import make_session, read_sidecar, sidecar_path
from medimg.deploy.targets import resolve_target
from medimg.errors import InputError
from medimg.io.api import load, save
from medimg.io.image import Image


@pytest.fixture(scope="module")
def seg_onnx(tiny_segment, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "seg.onnx"
    export_model(tiny_segment, out, check=False)
    return out


@pytest.fixture(scope="module")
def ct_onnx(tiny_ct, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "red.onnx"
    export_model(tiny_ct, out, check=False)
    return out


def _run(path, x: torch.Tensor) -> np.ndarray:
    session = make_session(path, threads=1)
    return session.run(None, {"input": x.numpy()})[0]


def test_fp32_onnx_matches_torch_on_sizes_other_than_the_export_size(
    seg_onnx, ct_onnx, tiny_segment, tiny_ct
):
    torch.manual_seed(1)
    for path, folder, x in [
        (seg_onnx, tiny_segment, torch.randn(3, 1, 24, 32, 16)),  # export: (2, 1, 16, 16, 8)
        (ct_onnx, tiny_ct, torch.randn(1, 1, 37, 52) * 0.3),  # export: (2, 1, 48, 48)
    ]:
        with torch.no_grad():
            ref = resolve_target(folder).network(x).numpy()
        got = _run(path, x)
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-4


def test_sidecar_round_trips_what_predict_needs(seg_onnx, tiny_segment):
    from medimg.engine.config import to_dict
    from medimg.tasks.segment.plan import load_plan
    from medimg.tasks.segment.predict import Segmenter

    side = read_sidecar(seg_onnx)
    torch_seg = Segmenter(tiny_segment, device="cpu")
    assert side["task"] == "segment" and side["format"] == "onnx"
    assert side["plan"] == to_dict(load_plan(tiny_segment))
    assert side["weights_sha1"] == torch_seg.tag.rsplit("sha1:", 1)[1]
    assert side["input"]["multiple_of"] == [4, 4, 2]
    onnx_seg = Segmenter(seg_onnx)  # the file alone: no model folder
    assert onnx_seg.plan == torch_seg.plan and "onnx" in onnx_seg.tag


def _case(tmp_path):
    from medimg.phantoms.segmentation import ct_organ_case

    case = ct_organ_case(3, shape=(24, 24, 12))
    return save(case.image, tmp_path / "ct.nii.gz")


def test_segment_predict_onnxruntime_gives_the_torch_labels(seg_onnx, tiny_segment, tmp_path):
    scan = _case(tmp_path)
    a, b = tmp_path / "torch.nii.gz", tmp_path / "ort.nii.gz"
    assert main(["segment", "predict", str(scan), str(a), "--model", str(tiny_segment)]) == 0
    argv = ["segment", "predict", str(scan), str(b), "--model", str(seg_onnx)]
    assert main([*argv, "--backend", "onnxruntime"]) == 0
    la, lb = load(a).array, load(b).array
    assert la.any() and np.array_equal(la, lb)


def test_python_api_takes_the_onnxruntime_backend(seg_onnx, tiny_segment, tmp_path):
    import medimg.segment

    image = load(_case(tmp_path))
    ref = medimg.segment.predict(image, model=tiny_segment, device="cpu", mirror=False)
    ort = medimg.segment.predict(image, model=seg_onnx, device="cpu", mirror=False,
                                 backend="onnxruntime")  # fmt: skip
    assert "onnx" in ort.meta["model"] and np.array_equal(ref.array, ort.array)


def test_recon_ct_predict_onnxruntime_matches_torch(ct_onnx, tiny_ct, tmp_path):
    rng = np.random.default_rng(0)
    hu = rng.normal(0, 30, (1, 40, 36, 2)) - 200 * (rng.random((1, 40, 36, 2)) < 0.2)
    scan = save(Image(hu.astype(np.float32), np.eye(4), modality="CT"), tmp_path / "low.nii.gz")
    a, b = tmp_path / "torch.nii.gz", tmp_path / "ort.nii.gz"
    assert main(["recon", "ct", "predict", str(scan), str(a), "--model", str(tiny_ct)]) == 0
    assert main(["recon", "ct", "predict", str(scan), str(b), "--model", str(ct_onnx),
                 "--backend", "onnxruntime"]) == 0  # fmt: skip
    assert np.abs(load(a).array - load(b).array).max() <= 0.1  # HU: network units 1e-4


def test_int8_files_are_smaller_and_the_parity_report_says_so(tiny_ct, ct_onnx, tmp_path):
    out = tmp_path / "red_int8.onnx"
    report = export_model(tiny_ct, out, int8="static", check_samples=1, calibration_samples=2)
    on_disk = json.loads(report_path(out).read_text())
    rows = on_disk["backends"]
    assert set(rows) == {"torch fp32", "onnx fp32", "onnx int8 static"}
    assert rows["onnx fp32"]["max_abs_diff"] <= 1e-4
    assert 0 < rows["onnx int8 static"]["max_abs_diff"] < 0.5  # quantised, not broken
    assert out.stat().st_size < ct_onnx.stat().st_size
    assert rows["onnx int8 static"]["size_bytes"] == out.stat().st_size
    assert set(rows["onnx fp32"]["latency_ms"]) == {"1 thread", "2 threads"}
    assert np.isfinite(rows["onnx int8 static"]["psnr_db"]) and report["metric"] == "psnr_db"
    assert read_sidecar(out)["precision"] == "int8-static"
    dyn = tmp_path / "red_dyn.onnx"
    export_model(tiny_ct, dyn, int8="dynamic", check=False)
    assert dyn.stat().st_size < ct_onnx.stat().st_size


def test_torchscript_export_runs_without_medimg_code(tiny_ct, tmp_path):
    out = tmp_path / "red.pt"
    export_model(tiny_ct, out, format="torchscript", check=False)
    x = torch.randn(1, 1, 30, 41) * 0.3
    with torch.no_grad():
        ref = resolve_target(tiny_ct).network(x)
        got = torch.jit.load(str(out))(x)
    assert torch.allclose(got, ref, atol=1e-5) and read_sidecar(out)["format"] == "torchscript"


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_is_one_line(tiny_ct, ct_onnx, tmp_path, capsys):
    out = str(tmp_path / "m.onnx")
    assert main(["export", "no-such-model", "--out", out]) == 2
    assert "unknown model" in _one_error(capsys)
    with pytest.raises(InputError, match="format must be one of"):
        export_model(tiny_ct, out, format="tflite")
    with pytest.raises(InputError, match="use --format onnx"):
        export_model(tiny_ct, out, format="torchscript", int8="static")
    before = ct_onnx.read_bytes()
    assert main(["export", str(tiny_ct), "--out", str(ct_onnx), "--no-check"]) == 2
    assert "exists" in _one_error(capsys) and ct_onnx.read_bytes() == before
    assert not (tmp_path / "m.onnx").exists() and not sidecar_path(out).exists()


def test_predict_refuses_a_file_of_another_task_or_without_sidecar(ct_onnx, tmp_path, capsys):
    scan = _case(tmp_path)
    argv = ["segment", "predict", str(scan), str(tmp_path / "l.nii.gz"), "--backend",
            "onnxruntime", "--model"]  # fmt: skip
    assert main([*argv, str(ct_onnx)]) == 2
    assert "not a segment model" in _one_error(capsys)
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(ct_onnx.read_bytes())
    assert main([*argv, str(bare)]) == 2
    assert "no sidecar" in _one_error(capsys)


def test_the_shipped_classifier_exports_with_dynamic_batch_and_size(tmp_path):
    out = tmp_path / "diagnose.onnx"
    export_model("diagnose", out, check=False)
    x = torch.randn(3, 1, 80, 72)  # export: (2, 1, 64, 64)
    with torch.no_grad():
        ref = resolve_target("diagnose").network(x).numpy()
    side = read_sidecar(out)
    k = ref.shape[1] - side["features"]  # the logits, then the safeguard's features
    got = _run(out, x)
    assert got.shape == ref.shape and side["features"] > 0 and k >= 1
    assert np.abs(got[:, :k] - ref[:, :k]).max() <= 1e-4
    assert np.abs(got[:, k:] - ref[:, k:]).max() <= 1e-5 * np.abs(ref[:, k:]).max()
    assert side["task"] == "diagnose" and side["config"]["input_size"] == [64, 64]


def test_folds_export_as_one_graph_whose_softmax_is_their_averaged_probabilities():
    from medimg.deploy.targets import _FoldEnsemble

    torch.manual_seed(0)
    nets = [torch.nn.Conv3d(1, 3, 3, padding=1) for _ in range(3)]
    x = torch.randn(2, 1, 6, 5, 4)
    with torch.no_grad():
        want = torch.stack([n(x).softmax(1) for n in nets]).mean(0)
        got = _FoldEnsemble(nets)(x).softmax(1)
    assert torch.allclose(got, want, atol=1e-6)


def test_static_int8_calibrates_on_a_folder_of_the_users_images(
    seg_onnx, ct_onnx, tiny_segment, tiny_ct, tmp_path, capsys
):
    from medimg.phantoms.segmentation import ct_organ_case

    folder = tmp_path / "calib"
    for seed in (5, 6):
        save(ct_organ_case(seed, shape=(24, 24, 12)).image, folder / f"ct{seed}.nii.gz")
    # segmentation: one patch per image; CT: 4 (the default count) of the 24 axial slices
    for model, ref, n in [(tiny_segment, seg_onnx, 2), (tiny_ct, ct_onnx, 4)]:
        out = tmp_path / f"{ref.stem}_int8.onnx"
        export_model(model, out, int8="static", calibration=folder, check=False)
        assert out.stat().st_size > 0
        assert read_sidecar(out)["calibration"] == f"{n} inputs from the images in calib"
    out = str(tmp_path / "x.onnx")
    (tmp_path / "empty").mkdir()
    argv = ["export", str(tiny_ct), "--out", out, "--int8", "static", "--calibration"]
    assert main([*argv, str(tmp_path / "empty")]) == 2
    assert "no image files" in _one_error(capsys)
    assert main(["export", str(tiny_ct), "--out", out, "--calibration", str(folder)]) == 2
    assert "--int8 static" in _one_error(capsys)
