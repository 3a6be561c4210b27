"""Train the learned beamformer (3 plane waves -> the 75-angle compound) on simulated phantoms.

Data: random speckle phantoms (15 x 20 mm fields at random lateral positions and depths 5-45
mm; 1-3 cysts of 1-3.5 mm radius, anechoic or -12/+6/+12 dB; 0-4 point targets; scatterer
density 20-40 /mm^2; attenuation 0.3-0.7 dB/cm/MHz; SNR 30-50 dB), each simulated with 75
plane waves over +-16 degrees (:mod:`medimg.physics.ultrasound`). Input: the three single-angle
DAS images at -16, 0, +16 degrees (:func:`~.models.features`); target: the 75-angle compound in
dB relative to its speckle median. Simulation only: no real channel data were available.
Loss: L1 in dB/40 on random 128 x 128 pixel crops (12.8 mm lateral x 6.4 mm depth), mirrored
left-right at random (the angle set is symmetric).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from medimg.engine import TrainConfig, Trainer, seed_everything
from medimg.errors import InputError
from medimg.physics.ultrasound import LinearArray
from medimg.physics.ultrasound_das import Grid, beamform, to_baseband
from medimg.tasks.reconstruct.us.data import Phantom, plane_waves, simulate, speckle_phantom
from medimg.tasks.reconstruct.us.models import LearnedBeamformer, features, relative_db

__all__ = ["LearnedConfig", "export_learned", "make_pairs", "random_phantom", "train_learned"]

N_ANGLES = 75
INPUT_ANGLES = (0, 37, 74)  # -16, 0, +16 degrees of the 75


@dataclass
class LearnedConfig:
    """What ``train_learned`` needs; written to the run's ``config.yaml``."""

    n_train: int = 12
    n_val: int = 2
    crop: int = 128
    features: tuple[int, ...] = (16, 16, 32, 64, 64, 16)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=600, batch_size=8, lr=1e-3, lr_schedule="cosine", warmup_steps=20,
        val_every=50, checkpoint_every=50, val_metric="l1_db", val_mode="min",
        device="cpu"))  # fmt: skip


def random_phantom(seed: int) -> tuple[Phantom, float, float]:
    """A random training phantom, its attenuation (dB/cm/MHz) and SNR (dB)."""
    rng = np.random.default_rng(10_000 + seed)
    xc, z0 = rng.uniform(-9e-3, 9e-3), rng.uniform(5e-3, 25e-3)
    extent = (xc - 7.5e-3, xc + 7.5e-3, z0, z0 + 20e-3)
    cysts = []
    for _ in range(rng.integers(1, 4)):
        r = rng.uniform(1e-3, 3.5e-3)
        db = float(rng.choice([-math.inf, -math.inf, -12.0, 6.0, 12.0]))
        cysts.append((rng.uniform(extent[0] + r, extent[1] - r),
                      rng.uniform(extent[2] + r, extent[3] - r), r, db))  # fmt: skip
    points = [(rng.uniform(extent[0] + 1e-3, extent[1] - 1e-3),
               rng.uniform(extent[2] + 1e-3, extent[3] - 1e-3))
              for _ in range(rng.integers(0, 5))]  # fmt: skip
    ph = speckle_phantom(extent, rng.uniform(20, 40), cysts, points,
                         point_amplitude=rng.uniform(10, 50), seed=seed)  # fmt: skip
    return ph, float(rng.uniform(0.3, 0.7)), float(rng.uniform(30, 50))


def single_angle_images(data, grid: Grid, idx=INPUT_ANGLES) -> np.ndarray:
    """``(len(idx), n_x, n_z)`` complex DAS images, one per transmit."""
    sub = data.subset(list(idx))
    iq = to_baseband(sub)
    return beamform(sub, grid.x, grid.z, iq=iq, compound=False)


def make_pairs(seed: int, probe: LinearArray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(features (2, X, Z), target (1, X, Z))`` of one random phantom, float32."""
    ph, att, snr = random_phantom(seed)
    data = simulate(ph, plane_waves(N_ANGLES), probe, attenuation=att, snr_db=snr, seed=seed)
    x0, x1, z0, z1 = ph.extent
    grid = Grid.from_extent((x0, x1), (z0, z1), 1e-4, 5e-5)
    feats = features(single_angle_images(data, grid))
    target = relative_db(beamform(data, grid.x, grid.z)) / 40.0
    return feats.astype(np.float32), target[None].astype(np.float32)


class CropDataset(Dataset):
    """Random crops (and left-right mirrors) of the stored pairs, seeded per index."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], crop: int, length: int):
        self.pairs, self.crop, self.length = pairs, crop, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng(i)
        x, y = self.pairs[int(rng.integers(len(self.pairs)))]
        c = self.crop
        ix = int(rng.integers(0, x.shape[1] - c + 1))
        iz = int(rng.integers(0, x.shape[2] - c + 1))
        x, y = x[:, ix : ix + c, iz : iz + c], y[:, ix : ix + c, iz : iz + c]
        if rng.random() < 0.5:
            x, y = x[:, ::-1], y[:, ::-1]
        return {"input": torch.from_numpy(x.copy()), "target": torch.from_numpy(y.copy())}


def _load_or_make(cache: Path, seeds: range, log=print) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for s in seeds:
        f = cache / f"pair_{s:04d}.npz"
        if not f.is_file():
            x, y = make_pairs(s)
            tmp = f.with_suffix(".tmp.npz")
            np.savez(tmp, x=x, y=y)
            tmp.replace(f)
            log(f"simulated training phantom {s}")
        with np.load(f) as z:
            pairs.append((z["x"], z["y"]))
    return pairs


def train_learned(cfg: LearnedConfig, run_dir: str | Path, cache: str | Path, *,
                  resume: bool = False, overwrite: bool = False):  # fmt: skip
    """Simulate (or reuse from ``cache``) the phantoms and train; returns the engine's result."""
    if cfg.crop % 16 or cfg.crop < 32:
        raise InputError(f"crop {cfg.crop} must be a multiple of 16, >= 32")
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    train_pairs = _load_or_make(cache, range(cfg.n_train))
    val_pairs = _load_or_make(cache, range(1000, 1000 + cfg.n_val))
    seed_everything(cfg.train.seed)
    model = LearnedBeamformer(cfg.features)
    data = CropDataset(train_pairs, cfg.crop, cfg.train.max_steps * cfg.train.batch_size)

    def step(net, batch):
        return torch.nn.functional.l1_loss(net(batch["input"]), batch["target"])

    def validate(net) -> dict:
        errs = []
        for x, y in val_pairs:
            out = net(torch.from_numpy(x)[None])[0].numpy()
            errs.append(float(np.abs(out - y).mean() * 40))
        base = float(np.mean([np.abs(x[:1] - y).mean() * 40 for x, y in val_pairs]))
        return {"l1_db": float(np.mean(errs)), "l1_db_3pw": base}

    trainer = Trainer(model, data, step, cfg.train, run_dir, validate=validate, run_config=cfg)
    return trainer.fit(resume=resume, overwrite=overwrite)


def export_learned(run_dir: str | Path, dest: str | Path, *, overwrite: bool = False) -> Path:
    """Copy a run's ``config.yaml`` and best weights into the model folder ``dest``."""
    from medimg.engine import export_run_weights

    return export_run_weights(run_dir, dest, overwrite=overwrite)
