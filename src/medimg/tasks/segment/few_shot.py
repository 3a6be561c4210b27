"""Few-shot fine-tuning: a schedule for 1-5 labelled cases, starting from a trained model.

``segment train DATA --init MODEL --few-shot`` (API ``train_segmentation(..., init=MODEL,
few_shot=True)``) starts from ``MODEL`` (the shipped model, an earlier run, or a pre-trained
encoder folder: ``plan.yaml`` + ``model.safetensors``); output layers for another number of
classes start fresh. With so few cases the pre-trained features are worth more than anything
the cases can teach them early on, so the schedule is:

1. **Base rate** 0.25x the plan's learning rate (AdamW, the plan's poly decay).
2. **Fewer steps**: a quarter of the plan's ``max_steps`` (at least 100) unless ``--max-steps``
   is given.
3. **Frozen encoder** for the first 20 % of the steps: only the decoder and the output layers
   move, so fresh output layers settle before any gradient reaches the encoder.
4. **Encoder at 0.1x** the rate for the rest: every weight trains, the encoder slowly.
5. **Stronger augmentation**: the plan's transforms at about twice their probability with wider
   ranges (rotation, scaling, noise, blur, brightness, gamma, low resolution, mirroring), since
   five cases hold little variation.

The engine builds one optimizer parameter group for the whole model, so the encoder's rate is
applied here by torch's optimizer step hooks: before each update the encoder weights are
remembered (and, while frozen, its gradients zeroed); after it, the encoder's change is scaled
by 0 (frozen) or 0.1. Every optimizer the engine offers (Adam, AdamW, SGD) moves a weight by
an amount proportional to its learning rate, so this is exactly a 0.1x rate for the encoder
group, and the schedule depends only on the step, so ``--resume`` continues it exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from medimg.engine import validation_interval
from medimg.engine.steps import takes_context
from medimg.errors import InputError
from medimg.tasks.segment.plan import SegPlan

__all__ = ["ENCODER_RATE", "FREEZE_FRACTION", "EncoderSchedule", "encoder_parameters",
           "few_shot_plan", "is_encoder_param", "strong_augmentation"]  # fmt: skip

FREEZE_FRACTION = 0.2
ENCODER_RATE = 0.1
BASE_RATE = 0.25
STEP_FRACTION = 0.25
MIN_STEPS = 100
#: parameter-name prefixes of the encoder (DynUNet; SegResNet)
ENCODER_LAYERS = ("input_block.", "downsamples.", "bottleneck.", "convInit.", "down_layers.")


def is_encoder_param(name: str) -> bool:
    """Whether a parameter belongs to the encoder (names inside a network pair or DDP too)."""
    for prefix in ("module.", "net.", "other."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name.startswith(ENCODER_LAYERS)


def encoder_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in model.named_parameters() if is_encoder_param(n) and p.requires_grad]


def check_few_shot(few_shot: bool, init: Any) -> None:
    if few_shot and init is None:
        raise InputError("--few-shot fine-tunes a trained model: add --init MODEL ('default' "
                         "for the shipped one, or a pre-trained encoder folder)")  # fmt: skip


def few_shot_plan(plan: SegPlan, max_steps: int | None) -> SegPlan:
    """The plan with the schedule's rate and step count (``max_steps`` given: kept)."""
    train = dataclasses.replace(plan.train, lr=plan.train.lr * BASE_RATE)
    if max_steps is None:
        train.max_steps = max(MIN_STEPS, int(plan.train.max_steps * STEP_FRACTION))
        train.val_every = train.checkpoint_every = validation_interval(train.max_steps)
    return dataclasses.replace(plan, train=train, augment=True)


def strong_augmentation(plan: SegPlan):  # -> monai.transforms.Compose
    """The plan's augmentation at about twice the probability, with wider ranges."""
    from medimg.tasks.segment.data import build_augmentation

    return build_augmentation(plan, strong=True)


class EncoderSchedule:
    """The frozen-then-slow encoder of the module doc, as optimizer step hooks.

    Use as a context manager around training, and wrap the step with :meth:`wrap` (it records
    the step number the next update belongs to). Only optimizers that hold the encoder's
    parameters are touched."""

    def __init__(
        self,
        model: nn.Module,
        max_steps: int,
        *,
        freeze_fraction: float = FREEZE_FRACTION,
        rate: float = ENCODER_RATE,
    ) -> None:
        self.params = encoder_parameters(model)
        self.freeze_steps = round(max_steps * freeze_fraction)
        self.rate, self.step = rate, 0
        self._ids = {id(p) for p in self.params}
        self._saved: list[torch.Tensor] | None = None
        self._handles: list[Any] = []

    def factor(self, step: int) -> float:
        """The encoder's rate relative to the rest at (0-based) ``step``."""
        return 0.0 if step < self.freeze_steps else self.rate

    def wrap(self, step_fn: Callable[..., Any]) -> Callable[..., Any]:
        with_ctx = takes_context(step_fn)

        def step(net: nn.Module, batch: Any, ctx: Any) -> Any:
            self.step = ctx.step
            return step_fn(net, batch, ctx) if with_ctx else step_fn(net, batch)

        return step

    def _ours(self, optimizer: torch.optim.Optimizer) -> bool:
        return any(id(p) in self._ids for g in optimizer.param_groups for p in g["params"])

    def _before(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        if not self._ours(optimizer):
            return
        self._saved = [p.detach().clone() for p in self.params]
        if self.factor(self.step) == 0.0:  # frozen: no gradient feeds the encoder's moments
            for p in self.params:
                if p.grad is not None:
                    p.grad.zero_()

    def _after(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        if self._saved is None or not self._ours(optimizer):
            return
        f = self.factor(self.step)
        with torch.no_grad():
            for p, old in zip(self.params, self._saved):
                p.copy_(old + f * (p - old))  # the update the encoder's own rate makes
        self._saved = None

    def __enter__(self) -> EncoderSchedule:
        from torch.optim.optimizer import (
            register_optimizer_step_post_hook,
            register_optimizer_step_pre_hook,
        )

        self._handles = [register_optimizer_step_pre_hook(self._before),
                         register_optimizer_step_post_hook(self._after)]  # fmt: skip
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
