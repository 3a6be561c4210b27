"""Training pairs and training of the super-resolution network (supervised and SMORE).

Both methods learn the same thing on 2D planes: undo the slice-profile blur + decimation of one
plane axis (that axis is the patch's first dimension), starting from the cubic interpolation.
They differ in where the high-resolution planes come from:

* ``supervised`` (:func:`train_supervised`): isotropic reference volumes (the default model:
  Colin27's 1 mm T1), degraded along each of their three axes in turn; planes containing that
  axis.
* ``smore`` (:func:`train_smore`): the anisotropic volume itself (Zhao et al., "SMORE", IEEE
  TMI 2021): its in-plane axes are high resolution, so it is degraded along one in-plane axis to
  the through-plane resolution and the network learns to undo that on in-plane slices; applied
  through-plane afterwards (``predict``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from medimg.engine import TrainConfig, Trainer, seed_everything
from medimg.errors import InputError
from medimg.tasks.superres.baselines import cubic_upsample
from medimg.tasks.superres.degrade import check_factor, crop_to_multiple, degrade
from medimg.tasks.superres.models import SRNet

__all__ = [
    "PairVolume",
    "SRConfig",
    "export_model",
    "intensity_scale",
    "make_pair",
    "plane_with_axis_first",
    "train_network",
    "train_smore",
    "train_supervised",
]


@dataclass
class SRConfig:
    """What training needs; written to the run's ``config.yaml`` and read back by ``predict``."""

    factor: int = 4
    profile: str = "gaussian"
    width: int = 32
    dilations: tuple[int, ...] = (1, 1, 2, 4, 4, 2, 1)
    patch: int = 64
    sources: tuple[str, ...] = ()  # reference volumes (supervised) or the volume (smore)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=700, batch_size=12, lr=1e-3, lr_schedule="cosine", warmup_steps=20,
        val_every=100, checkpoint_every=100, val_metric="gain_db", val_mode="max",
        device="cpu", log_every=20))  # fmt: skip


def intensity_scale(volume: np.ndarray) -> float:
    """The 99.5th percentile of |volume| (1 when it is 0): networks see ``volume / scale``."""
    s = float(np.percentile(np.abs(volume), 99.5))
    return s if s > 0 else 1.0


@dataclass
class PairVolume:
    """Cubic-interpolated input and target, both divided by one scale, with the degraded axis and
    the axes along which planes containing it may be cut (``slicing``)."""

    inp: np.ndarray
    tgt: np.ndarray
    axis: int
    slicing: tuple[int, ...]

    def planes(self, s: int) -> np.ndarray:
        """Indices along slicing axis ``s`` whose target plane is not empty background."""
        means = np.abs(self.tgt).mean(axis=tuple(a for a in range(3) if a != s))
        keep = np.flatnonzero(means > 0.1 * means.max())
        return keep if keep.size else np.arange(self.tgt.shape[s])


def make_pair(volume: np.ndarray, axis: int, factor: int, profile: str,
              slicing: tuple[int, ...] | None = None) -> PairVolume:  # fmt: skip
    """Degrade ``volume`` along ``axis`` and interpolate it back: one training pair volume."""
    hr = crop_to_multiple(np.asarray(volume, np.float32), axis, factor)
    inp = cubic_upsample(degrade(hr, axis, factor, profile), axis, factor)
    scale = intensity_scale(inp)
    if slicing is None:
        slicing = tuple(a for a in range(3) if a != axis)
    return PairVolume(inp / scale, hr / scale, axis, slicing)


def plane_with_axis_first(volume: np.ndarray, cut: int, index: int, axis: int) -> np.ndarray:
    """The plane ``index`` across axis ``cut`` of ``volume``, with ``axis`` as its first dimension."""
    if axis == cut:
        raise InputError("a plane cut across the slice axis does not contain it")
    plane = np.take(volume, index, axis=cut)
    return np.moveaxis(plane, axis if axis < cut else axis - 1, 0)


class PatchDataset(Dataset):
    """Random 2D patches ``(1, P, P)``: first dimension = the degraded axis; seeded per index."""

    def __init__(self, pairs: list[PairVolume], patch: int, length: int, seed: int = 0) -> None:
        self.pairs, self.length, self.seed = pairs, length, seed
        self._planes = [{s: p.planes(s) for s in p.slicing} for p in pairs]
        # one patch size for every sample (a batch stacks them): no larger than the smallest plane
        sides = [p.tgt.shape[a] for p in pairs for s in p.slicing for a in range(3) if a != s]
        self.patch = min(patch, *sides)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng((self.seed, i))
        k = int(rng.integers(len(self.pairs)))
        pair = self.pairs[k]
        s = int(rng.choice(pair.slicing))
        idx = int(rng.choice(self._planes[k][s]))
        inp, tgt = (plane_with_axis_first(v, s, idx, pair.axis) for v in (pair.inp, pair.tgt))
        p0 = p1 = self.patch
        best = None
        for _ in range(4):  # prefer a patch with structure over one of background
            a = int(rng.integers(0, inp.shape[0] - p0 + 1))
            b = int(rng.integers(0, inp.shape[1] - p1 + 1))
            std = float(tgt[a : a + p0, b : b + p1].std())
            if best is None or std > best[0]:
                best = (std, a, b)
        _, a, b = best
        x, y = inp[a : a + p0, b : b + p1], tgt[a : a + p0, b : b + p1]
        if rng.random() < 0.5:
            x, y = x[::-1], y[::-1]
        if rng.random() < 0.5:
            x, y = x[:, ::-1], y[:, ::-1]
        gain = float(rng.uniform(0.8, 1.25))
        return {"input": torch.from_numpy(np.ascontiguousarray(x * gain)[None]),
                "target": torch.from_numpy(np.ascontiguousarray(y * gain)[None])}  # fmt: skip


def _validation(pairs: list[PairVolume], patch: int, n: int = 48):
    ds = PatchDataset(pairs, patch, n, seed=12345)
    batch = [ds[i] for i in range(n)]
    x = torch.stack([b["input"] for b in batch])
    y = torch.stack([b["target"] for b in batch])
    base = float(torch.mean((x - y) ** 2))

    def validate(net) -> dict:
        mse = float(torch.mean((net(x) - y) ** 2))
        return {"gain_db": 10 * float(np.log10(base / max(mse, 1e-12))), "mse": mse}

    return validate


def train_network(cfg: SRConfig, pairs: list[PairVolume], run_dir: str | Path, *,
                  init: SRNet | None = None, resume: bool = False, overwrite: bool = False):  # fmt: skip
    """Train :class:`SRNet` (or fine-tune ``init``) on patches of ``pairs``; the engine's result
    (weights in ``run_dir/best`` and ``last``)."""
    seed_everything(cfg.train.seed)
    net = init if init is not None else SRNet(cfg.width, tuple(cfg.dilations))
    data = PatchDataset(pairs, cfg.patch, cfg.train.max_steps * cfg.train.batch_size,
                        seed=cfg.train.seed)  # fmt: skip

    def step(model, batch):
        return torch.nn.functional.l1_loss(model(batch["input"]), batch["target"])

    trainer = Trainer(net, data, step, cfg.train, run_dir, validate=_validation(pairs, cfg.patch),
                      run_config=cfg)  # fmt: skip
    return trainer.fit(resume=resume, overwrite=overwrite)


def train_supervised(cfg: SRConfig, volumes: list[np.ndarray], run_dir: str | Path, *,
                     resume: bool = False, overwrite: bool = False):  # fmt: skip
    """Supervised training on isotropic ``volumes``, each degraded along all three axes."""
    factor = check_factor(cfg.factor)
    pairs = [make_pair(v, a, factor, cfg.profile) for v in volumes for a in range(3)]
    return train_network(cfg, pairs, run_dir, resume=resume, overwrite=overwrite)


def train_smore(thick: np.ndarray, axis: int, cfg: SRConfig, *,
                init: SRNet | None = None, run_dir: str | Path | None = None) -> SRNet:  # fmt: skip
    """SMORE: train on ``thick`` (slice axis ``axis``) itself; returns the trained network.

    Each in-plane axis is degraded by ``cfg.factor`` in turn; patches are cut from in-plane
    slices (planes perpendicular to ``axis``), whose other axis is the full in-plane resolution.
    """
    from medimg.tasks.superres.predict import load_model

    factor = check_factor(cfg.factor)
    in_plane = [a for a in range(3) if a != axis]
    if min(thick.shape[a] for a in in_plane) < 2 * factor:
        raise InputError(f"in-plane size {thick.shape} too small for SMORE at factor {factor}")
    pairs = [make_pair(thick, a, factor, cfg.profile, slicing=(axis,)) for a in in_plane]
    with tempfile.TemporaryDirectory(prefix="medimg-smore-") as tmp:
        folder = Path(run_dir) if run_dir is not None else Path(tmp) / "run"
        res = train_network(cfg, pairs, folder, init=init, overwrite=run_dir is not None)
        return load_model(res.run_dir)


def export_model(run_dir: str | Path, dest: str | Path, *, overwrite: bool = False) -> Path:
    """Copy a run's ``config.yaml`` and best weights into the model folder ``dest``."""
    from medimg.engine import export_run_weights

    return export_run_weights(run_dir, dest, overwrite=overwrite)
