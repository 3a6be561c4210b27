"""Training films from cached thorax projections: nodules where placed and only in positives,
the default preset's data path at tiny sizes."""

from __future__ import annotations

import numpy as np
import pytest

from medimg.phantoms.chest_xray import ThoraxProjection
from medimg.tasks.diagnose import sources
from medimg.tasks.diagnose.chest_films import FilmRecipe, film_arrays, sample_film

RECIPE = FilmRecipe(detector=96, input_size=64)


def _background() -> ThoraxProjection:
    """A flat 'chest': line integrals 3 (soft tissue), two lung fields of 150 mm lung."""
    n = RECIPE.detector
    p = np.full((n, n), 3.0, np.float32)
    lung = np.zeros((n, n), np.float32)
    lung[15:42, 20:75] = lung[54:81, 20:75] = 150.0
    p -= 0.02 * lung * 0.85  # aerated lung is ~15 % of water
    return ThoraxProjection(p, lung, RECIPE.fov_mm / n, "PA", 1.1)


@pytest.mark.parametrize("seed", range(6))  # each its own crop, rotation and nodule
def test_a_positive_film_rises_inside_its_nodule_only(seed):
    bg, kw = _background(), dict(recipe=RECIPE, process=False, noise=False)
    pos, nod = sample_film(bg, np.random.default_rng(seed), True, **kw)
    neg, none = sample_film(bg, np.random.default_rng(seed), False, **kw)
    assert none is None and nod is not None
    u, v, r = nod
    assert r >= 0.5 and 0 <= u < 64 and 0 <= v < 64
    diff = (pos - neg)[0]
    uu, vv = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    dist = np.hypot(uu - u, vv - v)
    inside, far = diff[dist <= max(r * 0.5, 0.8)], diff[dist > r + 4]
    assert inside.mean() > 0.01  # dense = bright: the film rises over the nodule
    assert np.abs(far).max() < 0.1 * inside.mean()  # and barely anywhere else


def test_film_arrays_put_one_box_in_each_positive_and_none_in_negatives():
    data = film_arrays([_background()], 12, seed=3, recipe=RECIPE)
    assert data.x.shape == (12, 1, 64, 64) and data.y.sum() == 6
    for y, boxes in zip(data.y, data.boxes):
        assert len(boxes) == int(y)
        for u0, v0, u1, v1 in boxes:
            assert -4 <= u0 < u1 <= 68 and -4 <= v0 < v1 <= 68


def test_the_preset_films_render_cache_and_reuse_backgrounds(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDIMG_CACHE", str(tmp_path))
    tiny = {**sources.CHEST_FILMS_PRESET, "train_patients": [0], "detector": 32, "voxel_mm": 16.0,
            "input_size": 24}  # fmt: skip
    monkeypatch.setattr(sources, "CHEST_FILMS_PRESET", tiny)
    first = sources.preset_films("train", 4)
    assert first.x.shape == (4, 1, 24, 24) and first.y.sum() == 2
    assert np.isfinite(first.x).all() and first.x.std() > 0.05
    assert len(list((tmp_path / "chest-thorax").glob("*.npz"))) == 1
    again = sources.preset_films("train", 4)  # from the cache: the same films
    np.testing.assert_array_equal(first.x, again.x)
    with pytest.raises(Exception, match="split"):
        sources.preset_films("holdout", 2)


def test_simulate_chest_writes_the_preset_films_with_their_truth(tmp_path, monkeypatch):
    import csv
    import json

    from medimg.io.api import load

    monkeypatch.setenv("MEDIMG_CACHE", str(tmp_path / "cache"))
    tiny = {**sources.CHEST_FILMS_PRESET, "train_patients": [0], "val_patients": [1],
            "detector": 32, "voxel_mm": 16.0, "input_size": 24}  # fmt: skip
    monkeypatch.setattr(sources, "CHEST_FILMS_PRESET", tiny)
    root = sources.write_simulated_set(tmp_path / "set", "chest", n_train=2, n_val=2, n_test=0)
    rows = list(csv.DictReader(open(root / "manifest.csv")))
    assert [r["split"] for r in rows] == ["train", "train", "val", "val"]
    truth = json.loads((root / "ground_truth.json").read_text())["cases"]
    for r in rows:
        img = load(root / r["path"])
        assert img.spatial_shape[:2] == (24, 24)
        assert (r["label"] == "positive") == bool(truth[r["patient_id"]]["boxes"])


def test_patches_of_positive_films_hold_the_whole_nodule():
    from medimg.tasks.diagnose.chest_films import PatchDataset

    data = film_arrays([_background()], 8, seed=3, recipe=RECIPE)
    data.boxes[1] = [(60, 58, 70, 68)]  # a nodule at the corner, partly outside the film
    data.y[1] = 1.0
    ds = PatchDataset(data, patch=32, augment=0.0)
    np.random.seed(0)  # noqa: NPY002  (the engine seeds it per sample)
    for i in range(len(data)):
        for _ in range(5):
            a, b = ds.offsets(i)
            assert 0 <= a <= 32 and 0 <= b <= 32
            for u0, v0, u1, v1 in data.boxes[i]:
                assert a <= max(u0, 0) and min(u1, 64) <= a + 32
                assert b <= max(v0, 0) and min(v1, 64) <= b + 32
        item = ds[i]
        assert item["x"].shape == (1, 32, 32) and float(item["y"]) == data.y[i]
    with pytest.raises(Exception, match="larger"):
        PatchDataset(data, patch=100)


def test_the_chest_films_preset_trains_and_recalibrates_at_tiny_sizes(tmp_path, monkeypatch):
    from medimg.tasks.diagnose.safeguard import FILE_NAME, Safeguard

    monkeypatch.setenv("MEDIMG_CACHE", str(tmp_path / "cache"))
    tiny = {**sources.CHEST_FILMS_PRESET, "train_patients": [0], "val_patients": [0],
            "detector": 32, "voxel_mm": 16.0, "input_size": 32, "patch": 16, "n_train": 24,
            "n_val": 8, "width": 4, "batch_size": 8}  # fmt: skip
    monkeypatch.setattr(sources, "CHEST_FILMS_PRESET", tiny)
    run = tmp_path / "run"
    sources.train_preset(run, preset="chest-films", max_steps=2, device="cpu", progress=False)
    assert (run / "model.safetensors").is_file() and (run / FILE_NAME).is_file()
    (run / FILE_NAME).unlink()
    sources.calibrate_model(run, preset="chest-films", cases=16)
    sg = Safeguard.load(run)
    assert sg is not None and sg.info["fit_images"] == 16 and "chest films" in sg.info["source"]
    with pytest.raises(Exception, match="--preset"):
        sources.calibrate_model(run)  # a model folder without --data or --preset
