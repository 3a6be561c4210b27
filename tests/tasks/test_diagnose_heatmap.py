"""The heat-map nodule detector: disc targets on the inserted nodule, a score that is a smooth
maximum on any input size, a tiny model that learns to find faint blobs, and the model folder
it trains loading into the predictor with its own map as the explanation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medimg.phantoms.chest_xray import ThoraxProjection
from medimg.tasks.diagnose.chest_films import FilmRecipe, sample_film
from medimg.tasks.diagnose.heatmap import HeatmapNet, disc_targets, heatmap_loss, smooth_max

RECIPE = FilmRecipe(detector=96, input_size=64)


def _background() -> ThoraxProjection:
    n = RECIPE.detector
    p = np.full((n, n), 3.0, np.float32)
    lung = np.zeros((n, n), np.float32)
    lung[8:40, 20:75] = lung[56:88, 20:75] = 150.0  # lungs reaching the crop's edges
    p -= 0.02 * lung * 0.85
    return ThoraxProjection(p, lung, RECIPE.fov_mm / n, "PA", 1.1)


@pytest.mark.parametrize("seed", range(8))
def test_disc_targets_sit_on_the_inserted_nodule(seed):
    bg, kw = _background(), dict(recipe=RECIPE, process=False, noise=False)
    pos, nod = sample_film(bg, np.random.default_rng(seed), True, **kw)
    neg, _ = sample_film(bg, np.random.default_rng(seed), False, **kw)
    assert nod is not None and 0 <= nod[0] < 64 and 0 <= nod[1] < 64  # never cropped away
    t = disc_targets([nod, None], (64, 64))
    assert t.shape == (2, 1, 32, 32) and t[1].sum() == 0 and t[0].sum() >= 1
    diff = (pos - neg)[0]
    peak = np.unravel_index(int(np.argmax(diff)), diff.shape)
    assert t[0, 0, peak[0] // 2, peak[1] // 2] == 1  # the film's rise lies in the disc
    rise = diff.reshape(32, 2, 32, 2).mean((1, 3))
    assert rise[t[0, 0] > 0].mean() > 5 * max(rise[t[0, 0] == 0].mean(), 1e-6)


def test_a_higher_contrast_film_shows_a_stronger_nodule():
    bg, kw = _background(), dict(recipe=RECIPE, process=False, noise=False)
    neg, _ = sample_film(bg, np.random.default_rng(1), False, **kw)
    one, nod = sample_film(bg, np.random.default_rng(1), True, **kw)
    two, nod2 = sample_film(bg, np.random.default_rng(1), True, contrast=2.0, **kw)
    assert nod == nod2 and (two - neg).max() > 1.5 * (one - neg).max()


@pytest.mark.parametrize("shape", [(64, 64), (40, 52), (37, 37), (8, 120)])
def test_the_score_is_a_smooth_max_of_the_map_on_any_input_size(shape):
    net = HeatmapNet(1, 4).eval()
    x = torch.randn(2, 1, *shape)
    with torch.no_grad():
        z = net.logit_map(x)
        score = net(x)
        heat = net.heatmap(x)
    assert z.shape == (2, 1, (shape[0] + 1) // 2, (shape[1] + 1) // 2)
    assert score.shape == (2, 1) and heat.shape == (2, *shape)
    top = z.flatten(1).sort(1, descending=True).values[:, : net.k].mean(1)
    torch.testing.assert_close(score[:, 0], net.scale * top + net.shift)
    m = torch.tensor([[[0.0, 3.0], [1.0, 2.0]]])
    assert float(smooth_max(m, 1)) == 3.0 and float(smooth_max(m, 2)) == 2.5
    assert float(smooth_max(m, 99)) == 1.5  # k beyond the map: its mean


def _blobs(n: int, seed: int, size: int = 24) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Noisy images, half with a faint Gaussian blob (peak 2 noise std) somewhere."""
    rng = np.random.default_rng(seed)
    uu, vv = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    x = rng.normal(0, 1, (n, 1, size, size)).astype(np.float32)
    nods: list = []
    for i in range(n):
        if i % 2:
            u, v = rng.uniform(6, size - 6, 2)
            x[i, 0] += 0.8 * 2.5 * np.exp(-((uu - u) ** 2 + (vv - v) ** 2) / (2 * 2.0**2))
            nods.append((u, v, 3.0))
        else:
            nods.append(None)
    return torch.from_numpy(x), torch.from_numpy(disc_targets(nods, (size, size))), nods


def test_a_tiny_heatmap_model_learns_faint_blobs_and_points_at_them():
    from medimg.metrics.classification import roc_auc

    torch.manual_seed(0)
    x, t, _ = _blobs(32, 0)
    xv, _, nods = _blobs(40, 1)
    net = HeatmapNet(1, 4)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(60):
        loss = heatmap_loss(net, x, t)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        score, heat = net(xv)[:, 0].numpy(), net.heatmap(xv).numpy()
    y = np.array([n is not None for n in nods], float)
    # the trivial baseline, the brightest pixel, is near chance at this contrast
    brightest = xv.flatten(1).amax(1).numpy()
    assert roc_auc(y, score) > 0.9 and roc_auc(y, score) > roc_auc(y, brightest) + 0.15
    hits = [np.hypot(*(np.array(np.unravel_index(heat[i].argmax(), heat[i].shape)) - n[:2])) <= 4
            for i, n in enumerate(nods) if n is not None]  # fmt: skip
    assert np.mean(hits) >= 0.8


def test_a_heatmap_model_folder_predicts_with_its_own_map(tmp_path):
    from safetensors.torch import save_model

    from medimg.engine.config import to_yaml
    from medimg.io.image import Image
    from medimg.tasks.diagnose.predict import Diagnoser
    from medimg.tasks.diagnose.safeguard import calibrate
    from medimg.tasks.diagnose.train import DiagnoseConfig

    cfg = DiagnoseConfig(classes=["normal", "nodule"], input_size=[32, 32], arch="heatmap",
                         width=4)  # fmt: skip
    net = HeatmapNet(1, 4).eval()
    save_model(net, str(tmp_path / "model.safetensors"))
    to_yaml(cfg, tmp_path / "model.yaml")
    from medimg.tasks.diagnose.data import CaseArrays

    xs = np.random.default_rng(0).random((20, 1, 32, 32)).astype(np.float32)
    cases = CaseArrays(
        xs, np.zeros(20, np.float32), np.ones((20, 1), bool), list("abcdefghijklmnopqrst")
    )
    calibrate(net, cases).save(tmp_path)
    dx = Diagnoser(tmp_path, device="cpu")
    film = Image(np.random.default_rng(1).random((1, 50, 60)).astype(np.float32), np.eye(4))
    pred = dx.predict([film])
    assert pred.heatmap is not None and pred.heatmap.spatial_shape == (50, 60)
    assert 0 <= pred.heatmap.array.min() and pred.heatmap.array.max() <= 1
    assert pred.ood_score is not None and np.isfinite(pred.ood_score)


def test_the_chest_heatmap_preset_trains_a_loadable_model_at_tiny_sizes(tmp_path, monkeypatch):
    from medimg.tasks.diagnose import heatmap_train, sources
    from medimg.tasks.diagnose.predict import Diagnoser

    monkeypatch.setenv("MEDIMG_CACHE", str(tmp_path / "cache"))
    tiny = {**heatmap_train.HEATMAP_PRESET, "train_patients": [0], "val_patients": [0],
            "detector": 32, "voxel_mm": 16.0, "input_size": 32, "patch": 16, "n_real": 24,
            "n_easy": 8, "n_val": 8, "width": 4, "batch_size": 4, "val_every": 2}  # fmt: skip
    monkeypatch.setattr(heatmap_train, "HEATMAP_PRESET", tiny)
    res, summary = sources.train_preset(tmp_path / "run", preset="chest-heatmap", max_steps=3,
                                        device="cpu", progress=False)  # fmt: skip
    assert res.last_step == 3 and res.best_step in (2, 3) and summary["temperature"] > 0
    dx = Diagnoser(tmp_path / "run", device="cpu")
    assert dx.cfg.arch == "heatmap" and dx.safeguard is not None
