"""``export --format monai-bundle``: MONAI's own bundle runner segments like ``segment predict``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_model

from medimg.cli import main
from medimg.io.api import load, save
from medimg.io.image import Image


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def _scan(folder: Path, spacing: tuple[float, float, float]) -> Path:
    """A CT phantom stored left-right and front-back reversed (so Orientationd and its inverse
    matter) at a spacing other than the plan's (so Spacingd and its inverse matter)."""
    from medimg.phantoms.segmentation import ct_organ_case

    case = ct_organ_case(3, shape=(40, 36, 20), spacing=spacing)
    affine = case.image.affine.copy()
    affine[:2, :] *= -1
    arr = np.ascontiguousarray(case.image.array[:, ::-1, ::-1])
    folder.mkdir(parents=True, exist_ok=True)
    return save(Image(arr, affine, modality="CT"), folder / "ct.nii.gz")


def _run_bundle(bundle: Path, data: Path, out: Path) -> None:
    from monai.bundle import run

    run(run_id="run", config_file=str(bundle / "configs/inference.json"),
        meta_file=str(bundle / "configs/metadata.json"), bundle_root=str(bundle),
        dataset_dir=str(data), output_dir=str(out))  # fmt: skip


def _predict(model: Path, scan: Path, out: Path) -> np.ndarray:
    assert main(["segment", "predict", str(scan), str(out), "--model", str(model), "--force"]) == 0
    return load(out).array


@pytest.fixture(scope="module")
def tiny_folds(tiny_segment, tmp_path_factory) -> Path:
    """The tiny plan with two differently initialised folds (fold_k/best/)."""
    from medimg.tasks.segment.models import build_network
    from medimg.tasks.segment.plan import load_plan

    folder = tmp_path_factory.mktemp("folds") / "two_folds"
    folder.mkdir()
    shutil.copyfile(tiny_segment / "plan.yaml", folder / "plan.yaml")
    for k in range(2):
        torch.manual_seed(10 + k)
        (folder / f"fold_{k}/best").mkdir(parents=True)
        save_model(
            build_network(load_plan(folder)), str(folder / f"fold_{k}/best/model.safetensors")
        )
    return folder


def test_monai_runs_the_bundle_and_its_labels_are_those_of_predict(tiny_segment, tmp_path):
    bundle = tmp_path / "bundle"
    assert (
        main(["export", str(tiny_segment), "--format", "monai-bundle", "--out", str(bundle)]) == 0
    )
    for f in ["configs/metadata.json", "configs/inference.json", "models/model.pt",
              "models/model.ts", "docs/README.md"]:  # fmt: skip
        assert (bundle / f).is_file(), f
    config = json.loads((bundle / "configs/inference.json").read_text())
    assert config["network_def"]["_target_"] == "DynUNet"
    assert config["inferer"]["roi_size"] == [16, 16, 8]
    steps = [t["_target_"] for t in config["preprocessing"]["transforms"]]
    assert steps[:4] == ["LoadImaged", "EnsureChannelFirstd", "Orientationd", "Spacingd"]
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"]["1"] == "liver"
    # 3.2 -> 4 mm: no voxel of the input grid lies exactly half-way between two label voxels,
    # so nearest-neighbour rounding (scipy in predict, torch in Invertd) cannot differ
    scan = _scan(tmp_path / "data", (3.2, 3.2, 4.0))
    _run_bundle(bundle, scan.parent, tmp_path / "eval")
    got = load(tmp_path / "eval/ct_seg.nii.gz")
    want = _predict(tiny_segment, scan, tmp_path / "predict.nii.gz")
    assert len(np.unique(want)) > 1  # the tiny untrained model still draws several labels
    assert np.allclose(got.affine, load(scan).affine, atol=1e-4)
    assert np.array_equal(got.array, want)


def test_a_folder_of_folds_becomes_one_torchscript_network(tiny_folds, tmp_path):
    from medimg.deploy import export_model

    bundle = tmp_path / "bundle"
    export_model(tiny_folds, bundle, format="monai-bundle")
    assert (bundle / "models/model.ts").is_file() and not (bundle / "models/model.pt").exists()
    scan = _scan(tmp_path / "data", (3.2, 3.2, 4.0))
    _run_bundle(bundle, scan.parent, tmp_path / "eval")
    want = _predict(tiny_folds, scan, tmp_path / "predict.nii.gz")
    assert np.array_equal(load(tmp_path / "eval/ct_seg.nii.gz").array, want)


def test_bundle_refusals_are_one_line(tiny_ct, tiny_segment, tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["export", str(tiny_ct), "--format", "monai-bundle", "--out", str(out)]) == 2
    assert "segmentation models only" in _one_error(capsys)
    argv = ["export", str(tiny_segment), "--format", "monai-bundle", "--out", str(out)]
    assert main([*argv, "--int8", "static"]) == 2
    assert "int8 is for --format onnx" in _one_error(capsys)
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(argv) == 2
    assert "exists" in _one_error(capsys) and (out / "keep.txt").read_text() == "x"
