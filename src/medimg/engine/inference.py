"""Small inference helpers every task's ``infer`` module reuses.

Whole-volume sliding-window inference is MONAI's ``sliding_window_inference``; these helpers only
batch a list of cases, move them to the device and back, and put the model in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import default_collate

from medimg.engine.runtime import resolve_device, to_device

__all__ = ["predict_in_batches"]


@torch.inference_mode()
def predict_in_batches(
    model: nn.Module,
    inputs: torch.Tensor | Sequence[Any],
    *,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    forward: Callable[[nn.Module, Any], Any] | None = None,
    collate_fn: Callable[[list[Any]], Any] = default_collate,
) -> torch.Tensor | list[Any]:
    """Run ``model`` over ``inputs`` ``batch_size`` at a time; outputs come back on the CPU.

    Parameters
    ----------
    model
        Put in eval mode for the call (its previous mode is restored afterwards).
    inputs
        A tensor ``(N, ...)`` -> the outputs concatenated along dim 0; or a sequence of samples
        (tensors, dicts, ...) -> a list with one output per sample (collated with
        ``collate_fn``, split back with MONAI's ``decollate_batch``).
    device
        Where to run; ``None`` keeps the model where it is, else ``"auto"|"cpu"|"cuda"`` and the
        model is moved there.
    forward
        ``forward(model, batch) -> output`` when calling ``model(batch)`` is not enough (e.g. a
        sliding window or a dict batch).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if device is not None:
        model.to(resolve_device(device))
    target = next(iter(model.parameters()), torch.empty(0)).device
    call = forward or (lambda m, b: m(b))
    was_training = model.training
    model.eval()
    try:
        if isinstance(inputs, torch.Tensor):
            parts = [
                to_device(call(model, chunk.to(target)), torch.device("cpu"))
                for chunk in inputs.split(batch_size)
            ]
            return torch.cat(parts) if parts else inputs.new_empty((0,))
        from monai.data import decollate_batch  # lazy: monai.data takes seconds to import

        outputs: list[Any] = []
        for start in range(0, len(inputs), batch_size):
            batch = collate_fn(list(inputs[start : start + batch_size]))
            out = to_device(call(model, to_device(batch, target)), torch.device("cpu"))
            outputs.extend(decollate_batch(out, detach=True))
        return outputs
    finally:
        model.train(was_training)
