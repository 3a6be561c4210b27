"""``medimg recon ct adapt``: self-supervised fine-tuning on a tiny simulated low-dose set.

The adapted models are scored against the noiseless scan, which adaptation never sees."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from medimg.cli import main
from medimg.engine import Trainer, load_weights, save_checkpoint, seed_everything, to_yaml
from medimg.errors import OutputExistsError
from medimg.io.api import load
from medimg.tasks.reconstruct.ct import adapt as A
from medimg.tasks.reconstruct.ct import data as D
from medimg.tasks.reconstruct.ct.predict import denoise_slices, load_model
from medimg.tasks.reconstruct.ct.train import build_for, preset_config

SIM = D.SimConfig(image_size=48, pixel_mm=8.0, n_views=64, i0=5e3, filter_name="ram-lak")
SCAN = ["--size", "48", "--pixel-mm", "8", "--views", "64", "--i0", "5e3", "--filter", "ram-lak"]
SEEDS = range(10000, 10003)
FAST = ["--max-steps", "100", "--lr", "1e-3", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("adapt") / "data"
    assert main(["recon", "ct", "simulate", str(out), "--cases", str(len(SEEDS)), *SCAN]) == 0
    return out


@pytest.fixture(scope="module")
def poor(tmp_path_factory):
    """A deliberately poor model: an untrained RED-CNN, close to the identity (no denoising)."""
    folder = tmp_path_factory.mktemp("poor") / "model"
    cfg = preset_config("redcnn", "tiny")
    cfg.kernel = 3
    seed_everything(0)
    save_checkpoint(folder, build_for(cfg), None)
    to_yaml(cfg, folder / "config.yaml")
    return folder


@pytest.fixture(scope="module")
def clean():
    return np.stack([p.clean for p in D.simulate_slices(SEEDS, SIM)])


def _rmse_on_low_images(model, data, clean) -> float:
    """RMSE (HU) against the noiseless scan of the model applied to the low-dose FBP images."""
    net, _ = load_model(model)
    low = np.stack([load(data / f"case_{s:05d}" / "low_025.nii.gz").array[0].T for s in SEEDS])
    return float(np.sqrt(np.mean((denoise_slices(net, low) - clean) ** 2)))


def test_view_split_is_disjoint_covers_all_views_and_sub_fbps_average_to_full() -> None:
    for n, k in [(64, 2), (64, 4), (97, 3), (10, 10)]:
        parts = A.split_views(n, k)
        assert len(parts) == k and sum(len(p) for p in parts) == n
        assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))  # disjoint + cover
    with pytest.raises(A.InputError):
        A.split_views(8, 1)
    sino = torch.from_numpy(D.simulate_slice(10000, SIM).sino_low)[None]
    subs = A.sub_reconstructions(sino, SIM, 4)
    full = A.fbp_hu(sino, D.geometry(SIM), filter_name=SIM.filter_name)
    assert subs.shape == (1, 4, 48, 48)
    # each subset's FBP is an unbiased estimate: their mean is the full FBP (to float round-off)
    assert torch.allclose(subs.mean(1), full, atol=1e-2)
    assert float((subs[:, 0] - full).std()) > 2 * float((subs.mean(1) - full).std())


def test_neighbour_pairs_are_distinct_pixels_half_a_cell_apart() -> None:
    rng = np.random.RandomState(0)
    for cell in (2, 4):
        i1, i2 = A._pair_indices((16, 16), cell, rng)
        dr = (i2 // cell - i1 // cell) % cell
        dc = (i2 % cell - i1 % cell) % cell
        assert bool((i1 != i2).all())
        assert set(dr.unique().tolist()) | set(dc.unique().tolist()) == {0, cell // 2}
    # the warning's estimate tells white from smoothed (correlated) noise on a water slice
    noise = np.random.default_rng(0).normal(0, 30, (96, 96)).astype(np.float32)
    assert abs(A.noise_correlation([noise])) < 0.15
    from scipy import ndimage

    assert A.noise_correlation([ndimage.gaussian_filter(noise, 1.0) * 3]) > 0.4
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    sub = A.neighbour_subsample(x, torch.zeros(1, 1, 2, 2, dtype=torch.long), 4)
    assert sub.flatten().tolist() == [0.0, 4.0, 32.0, 36.0]


def test_noise2inverse_on_sinograms_beats_the_initial_model_and_predict_loads_it(
    data, poor, clean, tmp_path
) -> None:
    model = tmp_path / "n2i"
    assert main(["recon", "ct", "adapt", str(data), "--out", str(model), "--init", str(poor),
                 "--patch", "32", *FAST]) == 0  # fmt: skip
    before = _rmse_on_low_images(poor, data, clean)
    after = _rmse_on_low_images(model, data, clean)
    assert after < 0.5 * before, (before, after)
    # the paper's estimator (mean of the k outputs on k-1 subsets) also beats the initial model
    net, _ = load_model(model)
    d = A.read_adapt_data(data)
    splits = A.n2i_denoise(net, d.sinograms, d.sim, 4, mode="splits")
    assert float(np.sqrt(np.mean((splits - clean) ** 2))) < 0.5 * before
    out = tmp_path / "den.nii.gz"
    low = data / "case_10000" / "low_025.nii.gz"
    assert main(["recon", "ct", "predict", str(low), str(out), "--model", str(model)]) == 0
    assert load(out).array.shape == load(low).array.shape


def test_neighbor2neighbor_on_images_beats_the_initial_model(data, poor, clean, tmp_path) -> None:
    model = tmp_path / "n2n"
    assert main(["recon", "ct", "adapt", str(data), "--out", str(model), "--init", str(poor),
                 "--method", "n2n", "--patch", "48", *FAST]) == 0  # fmt: skip
    assert (model / A.RUN_NAME / "metrics.jsonl").is_file()
    before = _rmse_on_low_images(poor, data, clean)
    assert _rmse_on_low_images(model, data, clean) < 0.6 * before


def test_resume_continues_an_interrupted_run_to_the_same_weights(
    data, poor, tmp_path, monkeypatch
) -> None:
    train = A._adapt_train(max_steps=8, checkpoint_every=4, progress=False, device="cpu")
    cfg = A.AdaptConfig(init=str(poor), patch=32, samples_per_epoch=64, train=train)
    A.adapt(data, tmp_path / "straight", cfg)
    real = Trainer._train_step

    def interrupted(self, net, model, batch, step, epoch):
        if step == 6:
            raise KeyboardInterrupt
        return real(self, net, model, batch, step, epoch)

    monkeypatch.setattr(Trainer, "_train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        A.adapt(data, tmp_path / "cut", cfg)
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    with pytest.raises(OutputExistsError):  # neither resumed nor replaced silently
        A.adapt(data, tmp_path / "cut", cfg)
    monkeypatch.setattr(Trainer, "_train_step", real)
    res, _ = A.adapt(data, tmp_path / "cut", cfg, resume=True)
    assert res.last_step == 8
    a, b = (load_weights(load_model(poor)[0], tmp_path / d) for d in ("straight", "cut"))
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    with pytest.raises(OutputExistsError):  # the finished model is not replaced silently
        A.adapt(data, tmp_path / "cut", cfg)


def _error(argv, capsys) -> str:
    assert main(["recon", "ct", "adapt", *argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_bad_data_gives_one_line_errors(data, tmp_path, capsys) -> None:
    out = ["--out", str(tmp_path / "m")]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no low-dose sinograms" in _error([str(empty), *out], capsys)
    bare = tmp_path / "bare"
    bare.mkdir()
    np.save(bare / "sino.npy", np.zeros((64, 69), np.float32))
    assert "cases.json" in _error([str(bare), *out], capsys)
    assert "no low-dose sinograms" in _error([str(data), *out, "--dose", "0.5"], capsys)
    low = load(data / "case_10000" / "low_025.nii.gz")
    nan = low.array.copy()
    nan[0, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(nan[0], np.eye(4)), tmp_path / "nan.nii.gz")  # medimg refuses NaN
    assert "NaN" in _error([str(tmp_path / "nan.nii.gz"), *out], capsys)
    cplx = tmp_path / "cplx"
    (cplx / "case_00001").mkdir(parents=True)
    (cplx / "cases.json").write_text((data / "cases.json").read_text())
    np.save(cplx / "case_00001" / "sino_low_025.npy", np.zeros((64, 69), np.complex64))
    assert "complex" in _error([str(cplx), *out], capsys)
    assert not (tmp_path / "m").exists()


def test_adapt_help_has_an_example(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["recon", "ct", "adapt", "--help"])
    assert exc.value.code == 0
    assert "example:\n  medimg recon ct adapt" in capsys.readouterr().out
