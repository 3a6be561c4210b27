"""Train a synthesis model (MR -> CT or CT -> MR) on pairs rendered from deformed heads.

Data (:mod:`~.data`): ``pool`` pairs are rendered once (Colin27 training slices, a fifth toy
heads) and training draws random ``crop``-pixel patches of them with left-right mirrors, so the CPU spends its time
on the network; validation uses ``n_val`` pairs from held-out slices and deformation seeds.
Paired (default): L1 between the U-Net's output and the target (CT in HU / 1000; MR in
:func:`~.appearance.normalize_mr` units), optionally pix2pix's adversarial term
(``adversarial``). ``unpaired``: CycleGAN (:class:`~.models.CycleModel`) on pairs whose target
comes from another head. Validation metric: MAE inside the body (HU for CT, MR units for MR).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from medimg.engine import TrainConfig, Trainer, seed_everything
from medimg.errors import InputError
from medimg.tasks.synthesize.data import (
    DIRECTIONS,
    HU_SCALE,
    VAL_SEED,
    HeadSlices,
    PairDataset,
)
from medimg.tasks.synthesize.models import build_model

__all__ = ["SynthConfig", "export_model", "head_slices", "train_synth"]


@dataclass
class SynthConfig:
    """What :func:`train_synth` needs; written to the run's ``config.yaml``."""

    direction: str = "mr2ct"
    anatomy: str = "colin27"  # colin27 (+ toy heads) or toy (offline)
    unpaired: bool = False
    adversarial: float = 0.0
    cycle: float = 10.0
    channels: tuple[int, ...] = (16, 16, 32, 64, 128, 16)
    crop: int = 64
    toy_fraction: float = 0.2
    t2_fraction: float = 0.25
    pool: int = 800
    n_val: int = 16
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=900, batch_size=12, lr=2e-3, optimizer="adam", lr_schedule="cosine",
        warmup_steps=20, val_every=100, checkpoint_every=100, val_metric="mae",
        val_mode="min", device="cpu"))  # fmt: skip


def head_slices(anatomy: str, split: str, toy_fraction: float) -> HeadSlices:
    """The label-slice source of ``anatomy`` ("colin27" fetches Colin27 on first use)."""
    if anatomy == "toy":
        return HeadSlices(None, split)
    if anatomy != "colin27":
        raise InputError(f"anatomy must be 'colin27' or 'toy', got {anatomy!r}")
    from medimg.tasks.synthesize.anatomy import colin27_head_labels

    return HeadSlices(colin27_head_labels(), split, toy_fraction)


class PoolDataset(Dataset):
    """Random ``crop`` x ``crop`` patches (with left-right mirrors) of pre-rendered pairs,
    seeded per index: a 128 mm patch holds the context bone needs, at 40% of a slice's cost."""

    def __init__(self, pool: list[dict], length: int, crop: int):
        self.pool, self.length, self.crop = pool, length, crop

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng(i)
        item = self.pool[int(rng.integers(len(self.pool)))]
        c = self.crop
        _, nx, ny = item["input"].shape
        ix, iy = int(rng.integers(0, nx - c + 1)), int(rng.integers(0, ny - c + 1))
        item = {k: v[:, ix : ix + c, iy : iy + c] for k, v in item.items()}
        if rng.random() < 0.5:
            item = {k: v.flip(1) for k, v in item.items()}
        return {k: v.contiguous() for k, v in item.items()}


def _render(ds: PairDataset, n: int) -> list[dict]:
    return [ds[i] for i in range(n)]


def body_mae(pred: torch.Tensor, target: torch.Tensor, body: torch.Tensor) -> float:
    """Mean absolute error inside ``body`` (same units as the inputs)."""
    return float(((pred - target).abs() * body).sum() / body.sum().clamp_min(1))


def train_synth(cfg: SynthConfig, run_dir: str | Path, *, resume: bool = False,
                overwrite: bool = False, allow_config_change: bool = False,
                log=print):  # fmt: skip
    """Render the pools and train; returns the engine's result. ``allow_config_change`` with
    ``resume``: continue a run under a changed config (a longer schedule, say)."""
    if cfg.direction not in DIRECTIONS:
        raise InputError(f"direction must be one of {DIRECTIONS}, got {cfg.direction!r}")
    if len(cfg.channels) != 6:
        raise InputError(f"channels needs six feature counts (BasicUNet), got {cfg.channels}")
    if cfg.crop % 16 or not 16 <= cfg.crop <= 96:
        raise InputError(f"crop {cfg.crop} must be a multiple of 16 in [16, 96]")
    train_src = head_slices(cfg.anatomy, "train", cfg.toy_fraction)
    val_src = head_slices(cfg.anatomy, "test", cfg.toy_fraction)
    common = {"unpaired": cfg.unpaired, "t2_fraction": cfg.t2_fraction}
    pool = _render(PairDataset(train_src, cfg.direction, cfg.pool, **common), cfg.pool)
    log(f"rendered {len(pool)} training pairs")
    val = _render(PairDataset(val_src, cfg.direction, cfg.n_val, base_seed=VAL_SEED,
                              t2_fraction=cfg.t2_fraction), cfg.n_val)  # fmt: skip
    vx = torch.stack([v["input"] for v in val])
    vy = torch.stack([v["target"] for v in val])
    vb = torch.stack([v["body"] for v in val])
    scale = HU_SCALE if cfg.direction == "mr2ct" else 1.0
    seed_everything(cfg.train.seed)
    model = build_model(tuple(cfg.channels), unpaired=cfg.unpaired, adversarial=cfg.adversarial,
                        cycle=cfg.cycle)  # fmt: skip
    data = PoolDataset(pool, cfg.train.max_steps * cfg.train.batch_size, cfg.crop)

    def step(net, batch):
        core = net.module if hasattr(net, "module") else net
        return core.losses(batch["input"], batch["target"])

    def validate(net) -> dict:
        out = net(vx.to(next(net.parameters()).device)).cpu()
        if cfg.direction == "mr2ct":
            out = out.clamp(-1.024, 3.071)
        mean = (vy * vb).sum() / vb.sum()
        return {"mae": body_mae(out, vy, vb) * scale,
                "mae_mean_baseline": body_mae(mean.expand_as(vy), vy, vb) * scale}  # fmt: skip

    trainer = Trainer(model, data, step, cfg.train, run_dir, validate=validate, run_config=cfg)
    return trainer.fit(resume=resume, overwrite=overwrite, allow_config_change=allow_config_change)


def export_model(run_dir: str | Path, dest: str | Path, *, overwrite: bool = False) -> Path:
    """Copy a run's ``config.yaml`` and best weights into the model folder ``dest``."""
    from medimg.engine import export_run_weights

    return export_run_weights(run_dir, dest, overwrite=overwrite)
