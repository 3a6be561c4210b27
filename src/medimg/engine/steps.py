"""What one training step hands back and forth: context in, loss out, sanity checks.

Kept apart from :mod:`medimg.engine.trainer` so the loop reads top to bottom.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medimg.engine.checkpoint import find_checkpoint
from medimg.errors import InputError

__all__ = ["StepContext", "check_finite", "nonfinite_error", "split_output", "takes_context"]


@dataclass(frozen=True)
class StepContext:
    """Passed as third argument to a ``step`` that accepts one.

    ``generator`` is seeded from ``(seed, step)`` and is the same on every rank; draw noise with
    :meth:`randn` / :meth:`rand`, which draw for the whole global batch and return this rank's
    rows, so a sample gets the same noise whatever the process count and after a resume. The
    global RNGs (dropout) are seeded from ``(seed, step, rank)``. Per-sample augmentation
    belongs in the dataset, which is seeded per ``(seed, step, index)``.
    """

    step: int
    epoch: int
    generator: torch.Generator
    device: torch.device
    rank: int
    world_size: int

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Standard normal noise of ``shape`` (``shape[0]`` = this rank's batch) on the device."""
        return self._draw(torch.randn, shape, dtype)

    def rand(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Uniform [0, 1) noise of ``shape`` (``shape[0]`` = this rank's batch) on the device."""
        return self._draw(torch.rand, shape, dtype)

    def _draw(
        self, fn: Callable[..., torch.Tensor], shape: tuple[int, ...], dtype: torch.dtype
    ) -> torch.Tensor:
        if not shape:
            raise ValueError("shape must start with the local batch size")
        full = fn((shape[0] * self.world_size, *shape[1:]), generator=self.generator, dtype=dtype)
        return full[self.rank * shape[0] : (self.rank + 1) * shape[0]].to(self.device)


def takes_context(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` accepts a third positional argument (the :class:`StepContext`)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return True
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in kinds for p in params) >= 3


def split_output(out: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(loss, extras)`` from a step's output: a scalar tensor or a dict with ``"loss"``.

    Extras become detached float scalars on ``device`` (sorted by name, so every rank reduces
    them in the same order).
    """
    extras: dict[str, Any] = {}
    if isinstance(out, Mapping):
        if "loss" not in out:
            raise InputError(f"step() returned a dict without 'loss' (keys: {', '.join(out)})")
        extras = {k: v for k, v in sorted(out.items()) if k != "loss"}
        out = out["loss"]
    if not isinstance(out, torch.Tensor) or out.numel() != 1:
        raise InputError("step() must return a scalar loss tensor or a dict with 'loss'")
    scalars = {}
    for key, value in extras.items():
        value = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        if value.numel() != 1:
            raise InputError(f"step() extra {key!r} must be a scalar, got shape {value.shape}")
        scalars[key] = value.float().reshape(()).to(device)
    return out.reshape(()), scalars


def nonfinite_error(what: str, step: int, lr: float, run_dir: Path) -> InputError:
    """The one-line message for a diverged run, naming the step and the way out."""
    last = find_checkpoint(run_dir / "last")
    keep = f"the last good checkpoint is {last}" if last else "no checkpoint was written"
    return InputError(
        f"{what} at step {step} (lr {lr:.3g}); training stopped and {keep}; "
        "lower lr or set grad_clip (e.g. 1.0)"
    )


def check_finite(model: nn.Module, step: int, lr: float, run_dir: Path) -> None:
    """Refuse to checkpoint weights that contain NaN/inf."""
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise nonfinite_error("model weights are not finite", step, lr, run_dir)
