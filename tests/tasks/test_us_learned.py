"""The learned beamformer's pipeline on a tiny synthetic task: it must beat the 3-plane-wave
input it corrects; the exported model then runs on real channel data (shape, finite, geometry)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from medimg.cli import main
from medimg.io.api import load
from medimg.tasks.reconstruct.us.learned import learned_bmode, load_learned
from medimg.tasks.reconstruct.us.predict import default_grid
from medimg.tasks.reconstruct.us.train import LearnedConfig, export_learned, train_learned


def _write_pairs(cache, seeds, rng) -> None:
    for s in seeds:
        db = rng.normal(0, 0.15, (1, 32, 32)).astype(np.float32)
        cf = rng.uniform(0, 1, (1, 32, 32)).astype(np.float32)
        target = db - 0.4 * (1 - cf)  # incoherent pixels are clutter: darker in the target
        np.savez(cache / f"pair_{s:04d}.npz", x=np.concatenate([db, cf]), y=target)


def test_tiny_learned_beamformer_beats_its_input(tmp_path) -> None:
    cache = tmp_path / "pairs"
    cache.mkdir()
    rng = np.random.default_rng(0)
    _write_pairs(cache, range(4), rng)
    _write_pairs(cache, range(1000, 1002), rng)
    cfg = LearnedConfig(n_train=4, n_val=2, crop=32, features=(4, 4, 8, 8, 8, 4))
    cfg.train = dataclasses.replace(cfg.train, max_steps=40, batch_size=4, lr=3e-3,
                                    val_every=40, checkpoint_every=40, progress=False)  # fmt: skip
    res = train_learned(cfg, tmp_path / "run", cache)
    rows = [line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
            if "l1_db_3pw" in line]  # fmt: skip
    import json

    last = json.loads(rows[-1])
    assert last["l1_db"] < 0.8 * last["l1_db_3pw"]  # the trivial baseline: the input itself
    model = export_learned(res.run_dir, tmp_path / "model")
    net = load_learned(model)

    # the exported model on simulated channel data of a tiny phantom
    channel = tmp_path / "ch.npz"
    assert main(["recon", "us", "simulate", str(channel), "--scale", "0.2", "--density", "5",
                 "--angles", "5"]) == 0  # fmt: skip
    from medimg.tasks.reconstruct.us.data import load_channel_data

    data = load_channel_data(channel)
    grid = default_grid(data, 2e-4, 1e-4)
    env = learned_bmode(data, grid, net)
    assert env.shape == grid.shape and np.isfinite(env).all() and env.min() > 0
    out = tmp_path / "pred"
    assert main(["recon", "us", "predict", str(channel), str(out), "--method", "learned",
                 "--model", str(model), "--dx", "0.2", "--dz", "0.1"]) == 0  # fmt: skip
    assert load(out / "bmode.nii.gz").spacing[:2] == pytest.approx((0.2, 0.1))


def test_shipped_learned_beamformer_runs(tmp_path) -> None:
    from medimg.tasks.reconstruct.us.data import make_phantom, plane_waves, simulate
    from medimg.tasks.reconstruct.us.learned import DEFAULT_MODEL

    assert (DEFAULT_MODEL / "model.safetensors").is_file()
    assert (DEFAULT_MODEL.parent / "MODEL_CARD.md").is_file()
    data = simulate(make_phantom("cysts", scale=0.2, density=10), plane_waves(3), snr_db=None)
    grid = default_grid(data, 2e-4, 1e-4)
    env = learned_bmode(data, grid)  # the shipped model
    assert env.shape == grid.shape and np.isfinite(env).all()
