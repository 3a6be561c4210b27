"""Despeckling: the pair generator's speckle statistics, the shipped network on held-out
simulated frames (speckle SNR up, edges kept), ``medimg recon us despeckle`` on tiny ultrasound
DICOMs (outputs, pixels outside the image region unchanged, cines, colour) and one-line errors."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medimg.cli import main
from medimg.tasks.reconstruct.us.despeckle import despeckle_array, load_despeckle
from medimg.tasks.reconstruct.us.despeckle_data import PairParams, speckle_pair
from medimg.tasks.reconstruct.us.despeckle_eval import delog, profile_width
from medimg.tasks.reconstruct.us.dicom_out import write_us_grey_dicom

#: a clean generator setting: fully developed speckle, nothing else
PLAIN = PairParams(fwhm_lateral=3.0, fwhm_axial=2.0, density=1.0, dynamic_range=80.0,
                   snr_db=80.0, tgc_db=0.0, quantise=False)  # fmt: skip


def _snr(img01: np.ndarray, dynamic_range: float) -> float:
    env = delog(img01, dynamic_range)
    return float(env.mean() / env.std())


@pytest.fixture(scope="module")
def net():
    return load_despeckle()


def test_generated_speckle_is_fully_developed_and_target_is_speckle_free() -> None:
    flat = np.zeros((192, 192))
    noisy, clean = speckle_pair(np.random.default_rng(1), (192, 192), PLAIN, db_map=flat)
    assert _snr(noisy, 80) == pytest.approx(1.91, abs=0.1)  # Rayleigh envelope
    assert clean.std() < 1e-4  # the truth of a uniform region is uniform
    env, env_clean = delog(noisy, 80), delog(clean, 80)
    assert env.mean() == pytest.approx(env_clean.mean(), rel=0.05)  # mean brightness kept
    sparse = dataclasses.replace(PLAIN, density=0.02)
    noisy_sparse, _ = speckle_pair(np.random.default_rng(1), (192, 192), sparse, db_map=flat)
    assert _snr(noisy_sparse, 80) < 1.6  # few scatterers per cell: not fully developed


def test_shipped_network_raises_speckle_snr_on_a_held_out_frame(net) -> None:
    p = dataclasses.replace(PLAIN, fwhm_lateral=5.0, fwhm_axial=2.5, dynamic_range=60.0,
                            quantise=True)  # fmt: skip
    noisy, _ = speckle_pair(np.random.default_rng(987_654), (128, 128), p,
                            db_map=np.zeros((128, 128)))  # fmt: skip
    out = despeckle_array(noisy, net)
    inner = (slice(16, -16), slice(16, -16))
    assert _snr(out[inner], 60) > 2.0 * _snr(noisy[inner], 60)


@pytest.mark.parametrize("axis", [0, 1])
def test_step_edge_stays_sharp(net, axis) -> None:
    db = np.zeros((128, 128))
    half = [slice(None)] * 2
    half[axis] = slice(64, None)
    db[tuple(half)] = -10.0
    p = dataclasses.replace(PLAIN, dynamic_range=60.0)
    noisy, _ = speckle_pair(np.random.default_rng(55 + axis), (128, 128), p, db_map=db)
    out = despeckle_array(noisy, net)
    other = 1 - axis
    w_in = profile_width(noisy.mean(other)[32:96])
    w_out = profile_width(out.mean(other)[32:96])
    # the shipped model widens a 10 dB step ~2x (the 1.2x goal is not reached; see its card);
    # a blurring network (e.g. a 9 x 9 mean filter: ~4x) fails this bound
    assert 0 < w_out <= 2.5 * w_in + 0.5


def _tiny_us_dicom(path, frames: int = 1, rgb: bool = False):
    """A 112 x 96 frame: speckle in a box (the image region), burned-in white text above it."""
    rng = np.random.default_rng(3)
    grey = np.zeros((frames, 112, 96))
    for t in range(frames):
        noisy, _ = speckle_pair(rng, (80, 64), dataclasses.replace(PLAIN, dynamic_range=60.0),
                                db_map=np.zeros((80, 64)))  # fmt: skip
        grey[t, 16:96, 24:88] = noisy * 255
    grey[:, 10:40, 4:12] = np.where(rng.random((frames, 30, 8)) < 0.4, 255, 0)  # "text"
    write_us_grey_dicom(grey, (0.2, 0.2), path.parent / "w", description="test")
    ds = pydicom.dcmread(path.parent / "w" / "bmode.dcm")
    if rgb:
        px = np.repeat(ds.pixel_array[..., None], 3, -1).copy()
        px[..., 40:48, 30:38, :] = (200, 30, 30)  # a colour (Doppler-like) patch in the region
        ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PlanarConfiguration = "RGB", 3, 0
        ds.PixelData = px.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds


def test_cli_despeckles_dicom_inside_the_image_region_only(tmp_path, capsys) -> None:
    src = tmp_path / "us.dcm"
    _tiny_us_dicom(src)
    before = pydicom.dcmread(src).pixel_array.astype(int)
    out = tmp_path / "out"
    assert main(["recon", "us", "despeckle", str(src), "--out", str(out)]) == 0
    assert (out / "before_after.png").stat().st_size > 1000
    after = pydicom.dcmread(out / "dicom" / "bmode.dcm")
    assert after.Modality == "US" and after.pixel_array.shape == before.shape
    a = after.pixel_array.astype(int)
    region = np.zeros(before.shape, bool)
    region[24:88, 16:96] = True  # rows = depth, columns = lateral
    assert np.array_equal(a[~region], before[~region])  # text and frame untouched
    assert np.abs(a[region] - before[region]).mean() > 5
    nii = nib.load(out / "despeckled.nii.gz").get_fdata()
    assert nii.shape[:2] == (112, 96) and nii.max() <= 255
    assert main(["recon", "us", "despeckle", str(src), "--out", str(out)]) == 2  # no overwrite
    assert "error:" in capsys.readouterr().err


def test_cli_cine_frames_and_colour(tmp_path, capsys) -> None:
    src = tmp_path / "cine.dcm"
    _tiny_us_dicom(src, frames=3, rgb=True)
    out = tmp_path / "out"
    assert main(["recon", "us", "despeckle", str(src), "--out", str(out), "--frames", "2"]) == 0
    assert "coloured pixels" in capsys.readouterr().out
    ds = pydicom.dcmread(out / "dicom" / "bmode.dcm")
    assert int(ds.NumberOfFrames) == 2
    assert ds.SOPClassUID == pydicom.uid.UltrasoundMultiFrameImageStorage
    grey = pydicom.dcmread(src).pixel_array[:2].astype(float).mean(-1)
    patch = (slice(None), slice(40, 48), slice(30, 38))
    assert np.allclose(ds.pixel_array[patch], np.round(grey[patch]), atol=1)  # colour kept as is


def test_bad_inputs_are_one_line_errors(tmp_path, capsys) -> None:
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    ct = tmp_path / "ct.dcm"
    ds = _tiny_us_dicom(ct)
    ds.Modality = "CT"
    ds.save_as(ct, enforce_file_format=True)
    vol = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 8)), np.eye(4)), vol)
    for bad, words in ((empty, "empty"), (ct, "not an ultrasound"), (vol, "volume")):
        capsys.readouterr()
        assert main(["recon", "us", "despeckle", str(bad), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and words in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_png_input_round_trip(tmp_path, net) -> None:
    from PIL import Image as PILImage

    noisy, _ = speckle_pair(np.random.default_rng(9), (64, 48), dataclasses.replace(
        PLAIN, dynamic_range=60.0), db_map=np.zeros((64, 48)))  # fmt: skip
    src = tmp_path / "b.png"
    PILImage.fromarray(np.round(noisy.T * 255).astype(np.uint8)).save(src)
    assert main(["recon", "us", "despeckle", str(src), "--out", str(tmp_path / "o")]) == 0
    out = nib.load(tmp_path / "o" / "despeckled.nii.gz").get_fdata().squeeze()
    assert out.shape == (64, 48) and 0 <= out.min() and out.max() <= 255
    assert not (tmp_path / "o" / "dicom").exists()


def test_tiny_training_beats_the_identity(tmp_path) -> None:
    from medimg.tasks.reconstruct.us.despeckle_train import DespeckleConfig, train_despeckle

    cfg = DespeckleConfig(crop=32, n_val=3, val_size=32, features=(4, 4, 8, 8, 8, 4))
    cfg.train = dataclasses.replace(cfg.train, max_steps=20, batch_size=4, warmup_steps=0,
                                    val_every=20, checkpoint_every=20, progress=False)  # fmt: skip
    res = train_despeckle(cfg, tmp_path / "run")
    val = [r for r in map(eval_json, (tmp_path / "run" / "metrics.jsonl").read_text().split("\n"))
           if r and r.get("kind") == "val"][-1]  # fmt: skip
    assert res.last_step == 20 and val["l1"] < val["l1_input"]


def eval_json(line: str) -> dict:
    import json

    return json.loads(line) if line.strip() else {}
