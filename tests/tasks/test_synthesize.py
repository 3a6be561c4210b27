"""Cross-modality synthesis: appearance models, head labels, predict geometry, CLI errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from medimg.cli import main
from medimg.engine import to_yaml
from medimg.io.api import load, save
from medimg.io.image import Image
from medimg.tasks.synthesize.anatomy import HEAD_LABELS, derive_head_labels, toy_head_labels
from medimg.tasks.synthesize.appearance import CT_HU, render_ct, render_mr
from medimg.tasks.synthesize.evaluate import ct_metrics
from medimg.tasks.synthesize.predict import synthesize_volume
from medimg.tasks.synthesize.train import SynthConfig

#: textbook HU ranges the CT appearance must honour, by label value
HU_RANGES = {0: (-1000, -1000), 1: (0, 15), 2: (35, 45), 3: (20, 30), 4: (30, 45),
             5: (20, 60), 6: (-120, -80), 7: (700, 1500), 8: (200, 800)}  # fmt: skip


def _blocks() -> torch.Tensor:
    """A 1 mm map of nine 20 x 20 blocks, one per label (0..8), in a row."""
    lab = torch.zeros(40, 9 * 40, dtype=torch.long)
    for k in range(9):
        lab[:, 40 * k : 40 * k + 40] = k
    return lab


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ct_appearance_gives_calibrated_hu_per_class(seed) -> None:
    ct = render_ct(_blocks(), seed)  # 2 mm: 20 x 180
    for k, (lo, hi) in HU_RANGES.items():
        centre = ct[5:15, 20 * k + 5 : 20 * k + 15].mean().item()
        assert lo - 5 <= centre <= hi + 5, (HEAD_LABELS[k], centre)
    assert set(CT_HU) == set(HEAD_LABELS)


@pytest.mark.parametrize("contrast", ["t1", "t2"])
def test_mr_appearance_bone_dark_and_contrast_order(contrast) -> None:
    mr = render_mr(_blocks(), 3, contrast)

    def mean(k: int) -> float:
        return mr[5:15, 20 * k + 5 : 20 * k + 15].mean().item()

    assert mean(7) < 0.2 * mean(3) and mean(7) < 0.2 * mean(2)  # cortical bone dark
    if contrast == "t1":
        assert mean(1) < mean(2) < mean(3) < mean(6)  # CSF < GM < WM < fat
    else:
        assert mean(3) < mean(2) < mean(1)  # WM < GM < CSF


def test_toy_head_is_deterministic_and_has_the_classes() -> None:
    a, b = toy_head_labels(seed=4), toy_head_labels(seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, toy_head_labels(seed=5))
    assert {0, 1, 2, 3, 5, 6, 7} <= set(np.unique(a).tolist())


def test_skull_is_derived_between_brain_and_scalp() -> None:
    # a ball of brain, a dark unlabelled shell (bone below the head mask's cut), bright scalp
    g = np.mgrid[:56, :56, :40] - np.array([28, 28, 20])[:, None, None, None]
    r = np.sqrt(g[0] ** 2 + g[1] ** 2)
    lab = np.select([r < 10, r < 11, r < 16, r < 23], [3, 5, 0, 6], 0).astype(np.uint8)
    t1 = np.select([r < 10, r < 11, r < 16, r < 23], [110.0, 60.0, 20.0, 150.0], 0.0)
    t1 = t1 + np.random.default_rng(0).normal(0, 1, t1.shape)
    out = derive_head_labels(lab, t1)[..., 16:24]  # middle of a 40 mm long cylinder
    r = r[..., 16:24]
    shell = (r > 13) & (r < 15)
    assert np.isin(out[shell], (7, 8)).mean() > 0.9  # the dark band became bone
    assert (out[r < 9] == 3).all() and (out[r > 24] == 0).all()
    assert np.isin(out[(r > 18) & (r < 22)], (5, 6)).all()  # scalp stays soft tissue / fat


def _tiny_model(tmp_path, direction: str = "mr2ct"):
    from safetensors.torch import save_file

    from medimg.tasks.synthesize.models import build_model

    cfg = SynthConfig(direction=direction, anatomy="toy", channels=(4, 4, 8, 8, 8, 4))
    folder = tmp_path / f"model_{direction}"
    to_yaml(cfg, folder / "config.yaml")
    torch.manual_seed(0)
    save_file(build_model((4, 4, 8, 8, 8, 4)).state_dict(), str(folder / "model.safetensors"))
    return folder


def test_predict_keeps_grid_and_orientation(tmp_path) -> None:
    model = _tiny_model(tmp_path)
    rng = np.random.default_rng(0)
    arr = rng.uniform(0, 100, (1, 30, 26, 3)).astype(np.float32)
    affine = np.array([[0, 0, 3.0, -5], [-1.5, 0, 0, 7], [0, 1.2, 0, 2], [0, 0, 0, 1]])
    img = Image(arr, affine, modality="MR")
    out = synthesize_volume(img, "mr2ct", model)
    assert out.array.shape == arr.shape and np.allclose(out.affine, affine)
    assert out.array.dtype == np.int16 and out.modality == "CT"
    assert -1024 <= out.array.min() and out.array.max() <= 3071
    # the same anatomy stored canonically gives the same voxels, reoriented
    can = img.canonical()
    out_can = synthesize_volume(can, "mr2ct", model).array[0]
    assert np.array_equal(Image(out.array, affine).canonical().array[0], out_can)


def test_predict_writes_nifti_on_input_grid(tmp_path) -> None:
    model = _tiny_model(tmp_path, "ct2mr")
    hu = np.full((1, 24, 24, 2), -1000, np.int16)
    hu[:, 6:18, 6:18] = 40
    affine = np.diag([0.8, 0.8, 5.0, 1.0])
    save(Image(hu, affine, modality="CT"), tmp_path / "ct.nii.gz")
    argv = ["synthesize", "predict", str(tmp_path / "ct.nii.gz"), str(tmp_path / "mr.nii.gz"),
            "--direction", "ct2mr", "--model", str(model)]  # fmt: skip
    assert main(argv) == 0
    got = load(tmp_path / "mr.nii.gz")
    assert got.array.shape == hu.shape and np.allclose(got.affine, affine)
    assert main(argv) == 2  # exists: refused without --overwrite


def _run_error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_inputs_give_one_line_errors(tmp_path, capsys) -> None:
    mr_model, ct_model = _tiny_model(tmp_path), _tiny_model(tmp_path, "ct2mr")
    mr = Image(np.random.default_rng(0).uniform(0, 50, (1, 16, 16, 2)).astype(np.float32))
    save(mr, tmp_path / "mr.nii.gz")
    hu = Image(np.full((1, 16, 16, 2), -1000.0, np.float32))
    save(hu, tmp_path / "ct.nii.gz")
    out = str(tmp_path / "o.nii.gz")
    assert "HU" in _run_error(["synthesize", "predict", str(tmp_path / "mr.nii.gz"), out,
                               "--direction", "ct2mr", "--model", str(ct_model)], capsys)  # fmt: skip
    assert "ct2mr" in _run_error(["synthesize", "predict", str(tmp_path / "ct.nii.gz"), out,
                                  "--model", str(mr_model)], capsys)  # fmt: skip
    assert "translates" in _run_error(["synthesize", "predict", str(tmp_path / "mr.nii.gz"), out,
                                       "--model", str(ct_model)], capsys)  # fmt: skip
    _run_error(["synthesize", "predict", str(tmp_path / "missing.nii.gz"), out], capsys)
    _run_error(["synthesize", "evaluate", str(tmp_path / "mr.nii.gz")], capsys)


@pytest.mark.filterwarnings("ignore:divide by zero")  # PSNR of a perfect match is infinite
def test_ct_metrics_perfect_and_shifted() -> None:
    ref = np.full((20, 20), -1000.0)
    ref[4:16, 4:16] = 40.0
    ref[4:6, 4:16] = 1200.0
    body = ref > -400
    perfect = ct_metrics(ref, ref, body)
    assert perfect["mae_hu"] == 0 and perfect["bone_dice"] == 1 and perfect["ssim"] > 0.999
    worse = ct_metrics(ref, ref + 100, body)
    assert worse["mae_hu"] == pytest.approx(100) and worse["psnr_db"] < 40


def test_tiny_paired_model_beats_mean_baseline(tmp_path) -> None:
    from medimg.tasks.synthesize.train import train_synth

    cfg = SynthConfig(direction="mr2ct", anatomy="toy", channels=(8, 8, 16, 16, 32, 8), pool=8,
                      n_val=2, crop=48)  # fmt: skip
    cfg.train = dataclasses.replace(cfg.train, max_steps=25, batch_size=4, lr=5e-3,
                                    warmup_steps=0, val_every=25, checkpoint_every=25,
                                    progress=False)  # fmt: skip
    res = train_synth(cfg, tmp_path / "run", log=lambda *_: None)
    import json

    val = [json.loads(x) for x in res.metrics_path.read_text().splitlines() if '"val"' in x][-1]
    assert val["mae"] < 0.8 * val["mae_mean_baseline"]


def test_simulate_then_evaluate_files(tmp_path, capsys) -> None:
    model = _tiny_model(tmp_path)
    heads = tmp_path / "heads"
    assert main(["synthesize", "simulate", str(heads), "--heads", "2"]) == 0
    import nibabel as nib

    assert nib.load(heads / "ct.nii.gz").get_data_dtype() == np.int16  # HU stored as int16
    ct = load(heads / "ct.nii.gz")
    assert ct.array.shape == (1, 96, 112, 2)
    body = load(heads / "body.nii.gz").array[0] > 0
    assert np.percentile(ct.array[0][~body], 95) < -900 and np.median(ct.array[0][body]) > -200
    out = tmp_path / "report"
    argv = ["synthesize", "evaluate", str(heads / "mr.nii.gz"), str(heads / "ct.nii.gz"),
            "--mask", str(heads / "body.nii.gz"), "--model", str(model), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "mae_hu" in (out / "summary.md").read_text() and (out / "panel.png").is_file()
    assert "bone_dice" in (out / "metrics.csv").read_text()
