"""The despeckling network and its training on simulated speckle pairs.

Network: MONAI's BasicUNet (2D, batch norm, ~0.23 M parameters) predicting a correction that
is added to the log-compressed input in [0, 1] (residual learning: an image without speckle
passes through nearly unchanged). Batch norm, not instance norm: instance norm scales every
image's features to unit variance, so a low-contrast B-mode got a correction sized for
full-contrast speckle and the network drew texture into smooth images. Data: :func:`~.despeckle_data.speckle_pair`, generated on the
fly and seeded by the sample index, so a resumed run sees the same images. Loss: L1 plus an L1
on the finite-difference gradients (keeps edges as sharp as the target's). Simulation only: no
real B-mode image was seen in training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from medimg.engine import TrainConfig, Trainer, seed_everything
from medimg.errors import InputError
from medimg.tasks.reconstruct.us.despeckle_data import speckle_pair

__all__ = ["DespeckleConfig", "DespeckleNet", "export_despeckle", "train_despeckle"]

#: validation pairs are drawn from seeds far from the training ones
VAL_SEED = 10_000_000


@dataclass
class DespeckleConfig:
    """What ``train_despeckle`` needs; written to the run's ``config.yaml``."""

    crop: int = 96
    n_val: int = 24
    val_size: int = 128
    edge_weight: float = 3.0
    features: tuple[int, ...] = (12, 16, 32, 48, 64, 12)
    norm: str = "batch"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=1000, batch_size=8, lr=2e-3, lr_schedule="cosine", warmup_steps=20,
        val_every=100, checkpoint_every=50, val_metric="l1", val_mode="min", device="cpu"))  # fmt: skip


class DespeckleNet(nn.Module):
    """``out = x + unet(x)`` on ``(B, 1, X, Z)`` images in [0, 1]; any size (padded to 16)."""

    def __init__(self, features: tuple[int, ...] = (12, 16, 32, 48, 64, 12),
                 norm: str = "batch") -> None:  # fmt: skip
        super().__init__()
        from monai.networks.nets.basic_unet import BasicUNet

        self.unet = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1,
                              features=tuple(features), act="leakyrelu", norm=norm)  # fmt: skip
        # start as the identity: the correction's last layer begins at zero
        nn.init.zeros_(self.unet.final_conv.weight)
        nn.init.zeros_(self.unet.final_conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 16, (-w) % 16  # four poolings
        xp = nn.functional.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
        return x + self.unet(xp)[..., :h, :w]


def gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the two images' finite differences along both axes."""
    dx = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    dz = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    return dx.abs().mean() + dz.abs().mean()


class PairDataset(Dataset):
    """``length`` random pairs, sample ``i`` from seed ``seed + i`` (reproducible, resumable)."""

    def __init__(self, size: int, length: int, seed: int = 0) -> None:
        self.size, self.length, self.seed = size, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        noisy, clean = speckle_pair(np.random.default_rng(self.seed + i), (self.size, self.size))
        return {"input": torch.from_numpy(noisy)[None], "target": torch.from_numpy(clean)[None]}


def train_despeckle(cfg: DespeckleConfig, run_dir: str | Path, *, resume: bool = False,
                    overwrite: bool = False):  # fmt: skip
    """Train on generated pairs; returns the engine's result (best = lowest validation L1)."""
    if cfg.crop % 16 or cfg.crop < 32:
        raise InputError(f"crop {cfg.crop} must be a multiple of 16, >= 32")
    seed_everything(cfg.train.seed)
    val = [speckle_pair(np.random.default_rng(VAL_SEED + k), (cfg.val_size, cfg.val_size))
           for k in range(cfg.n_val)]  # fmt: skip
    model = DespeckleNet(tuple(cfg.features), cfg.norm)
    data = PairDataset(cfg.crop, cfg.train.max_steps * cfg.train.batch_size)

    def step(net, batch):
        out = net(batch["input"])
        tgt = batch["target"]
        return nn.functional.l1_loss(out, tgt) + cfg.edge_weight * gradient_l1(out, tgt)

    def validate(net) -> dict:
        x = torch.from_numpy(np.stack([v[0] for v in val]))[:, None]
        y = torch.from_numpy(np.stack([v[1] for v in val]))[:, None]
        out = net(x).clamp(0, 1)
        return {"l1": float((out - y).abs().mean()), "l1_input": float((x - y).abs().mean()),
                "grad_l1": float(gradient_l1(out, y))}  # fmt: skip

    trainer = Trainer(model, data, step, cfg.train, run_dir, validate=validate, run_config=cfg)
    return trainer.fit(resume=resume, overwrite=overwrite)


def export_despeckle(run_dir: str | Path, dest: str | Path, *, overwrite: bool = False) -> Path:
    """Copy a run's ``config.yaml`` and best weights into the model folder ``dest``."""
    from medimg.engine import export_run_weights

    return export_run_weights(run_dir, dest, overwrite=overwrite)
