"""A tiny detector trained on planted spheres (with tubes as distractors) beats chance."""

import numpy as np
import torch

from medimg.engine import TrainConfig, Trainer, seed_everything
from medimg.metrics.detection import froc, match_luna16
from medimg.tasks.detect.data import PatchDataset, Prepared, make_targets
from medimg.tasks.detect.infer import InferenceConfig, detect_prepared
from medimg.tasks.detect.models import build_detector, centernet_loss


def _volume(seed: int, n: int = 32):
    """Noise, 2 bright spheres (diameter 5-8 voxels) and 2 tubes of the same brightness."""
    rng = np.random.default_rng(seed)
    x = 0.1 + 0.03 * rng.standard_normal((n, n, n))
    g = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).astype(float)
    rows = []
    for _ in range(2):
        c, d = rng.uniform(6, n - 6, 3), rng.uniform(5, 8)
        x[np.linalg.norm(g - c, axis=-1) < d / 2] = 0.7
        rows.append([*c, d])
    for _ in range(2):
        ax, c = rng.integers(3), rng.uniform(4, n - 4, 3)
        dist = np.linalg.norm(np.delete(g - c, ax, axis=-1), axis=-1)
        x[dist < 1.6] = 0.7
    prep = Prepared(x.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]), 2.0)
    nod = np.asarray(rows)
    return prep, np.c_[nod[:, :3] * 2.0, nod[:, 3] * 2.0], nod  # world mm rows, voxel rows


def _cpm(scans, cands_of):
    ms = []
    for prep, world, _ in scans:
        c = cands_of(prep)
        xyz = np.asarray([k[0] for k in c]).reshape(-1, 3)
        ms.append(match_luna16(xyz, [k[1] for k in c], world[:, :3], world[:, 3]))
    return froc(ms).cpm


def test_tiny_training_finds_spheres_better_than_chance(tmp_path):
    train = [_volume(s) for s in range(4)]
    test = [_volume(100 + s) for s in range(3)]
    assert make_targets((8, 8, 8), train[0][2][:0])["heatmap"].max() == 0  # no nodule, no peak
    data = PatchDataset([p for p, _, _ in train], [v for _, _, v in train], patch=24,
                        samples_per_epoch=16)  # fmt: skip
    seed_everything(0)
    model = build_detector((8, 16, 32))
    cfg = TrainConfig(max_steps=80, batch_size=2, lr=3e-3, progress=False, device="cpu",
                      checkpoint_every=80, log_every=20)  # fmt: skip
    Trainer(model, data, lambda m, b: centernet_loss(m(b["image"]), b), cfg, tmp_path).fit()
    inf = InferenceConfig(window=32, min_score=0.01, max_candidates=20)
    trained = _cpm(test, lambda p: [(c.center_ras, c.score)
                                    for c in detect_prepared(model, p, inf)])  # fmt: skip
    rng = np.random.default_rng(0)  # chance: 20 random candidates with random scores per scan
    chance = _cpm(test, lambda p: [(tuple(rng.uniform(0, 64, 3)), rng.random()) for _ in range(20)])
    print(f"CPM trained {trained:.3f}, chance {chance:.3f}")
    assert trained > chance + 0.3, (trained, chance)
    assert torch.isfinite(next(model.parameters())).all()
