"""Optimizer and learning-rate schedule from a :class:`TrainConfig`.

The schedule is one :class:`torch.optim.lr_scheduler.LambdaLR` over a pure function of the step
(:func:`lr_factor`), so its whole state is the step counter and resume cannot drift.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import partial

import torch

from medimg.engine.config import TrainConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def build_optimizer(
    params: Iterable[torch.nn.Parameter], cfg: TrainConfig
) -> torch.optim.Optimizer:
    """Adam, AdamW (decoupled weight decay) or SGD with momentum, from the config."""
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier of ``cfg.lr`` for the update made at (0-based) ``step``.

    Linear warm-up over ``warmup_steps`` (starting at ``1/warmup_steps``, never at 0, so no
    update is wasted), then constant, cosine to 0, polynomial decay to 0 (nnU-Net's
    ``(1 - t)^0.9``) or step decay, with ``t`` running from 0 after warm-up to 1 at
    ``max_steps``.
    """
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    after = step - cfg.warmup_steps
    t = min(1.0, after / max(1, cfg.max_steps - cfg.warmup_steps))
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if cfg.lr_schedule == "poly":
        return (1.0 - t) ** cfg.poly_power
    if cfg.lr_schedule == "step":
        return cfg.lr_gamma ** (after // (cfg.lr_step_size or 1))
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepping once per optimizer update with :func:`lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, cfg))
