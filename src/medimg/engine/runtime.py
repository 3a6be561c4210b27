"""Seeds, devices and random-number state: what makes a run repeatable.

Reproducibility in the trainer does not depend on carrying random state from step to step: every
seed is derived from ``(seed, purpose, step, ...)`` by :func:`derive_seed`, so step ``k`` of a
resumed run draws exactly what step ``k`` of an uninterrupted run drew.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from medimg.errors import InputError

__all__ = [
    "derive_seed",
    "get_rng_state",
    "resolve_device",
    "seed_everything",
    "seed_globals",
    "set_rng_state",
    "to_device",
]


def derive_seed(*keys: int) -> int:
    """A well-mixed 32-bit seed from non-negative integers (e.g. seed, stream, step, index).

    ``seed + step`` would make run (seed=0, step=1) repeat run (seed=1, step=0); numpy's
    ``SeedSequence`` hashes the whole tuple instead.
    """
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and all CUDA devices).

    Call it before building the model so every process initialises the same weights.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    seed_globals(seed)
    torch.manual_seed(seed)  # also queues the seed for CUDA devices not yet initialised


def seed_globals(seed: int) -> None:
    """Reseed the global generators that user code, transforms and dropout draw from.

    Cheap enough to call per sample: ``torch.manual_seed`` would also queue lazy seeding for
    every uninitialised accelerator backend (recording a stack trace each time, ~1 ms), so
    only the CPU generator and already-initialised CUDA devices are seeded.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - user code and transforms read the global one
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; ``"cuda"``/``"cuda:N"`` without that GPU is
    a one-line error (names: :func:`medimg.devices.parse_device`).

    Under torchrun on GPUs each process gets ``cuda:LOCAL_RANK`` from the trainer, not here.
    """
    from medimg.devices import parse_device

    spec = parse_device(device)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise InputError(f"device {spec!r} requested but no CUDA GPU is available; use cpu/auto")
    index = int(spec.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise InputError(
            f"device {spec!r} does not exist: {torch.cuda.device_count()} CUDA GPU(s) here"
        )
    return torch.device(spec)


def to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move every tensor inside nested dicts/lists/tuples to ``device``; other values pass."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, Mapping):
        return type(obj)({k: to_device(v, device, non_blocking) for k, v in obj.items()})
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(to_device(v, device, non_blocking) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device, non_blocking) for v in obj)
    return obj


def get_rng_state() -> dict[str, Any]:
    """Global python/numpy/torch generator states as ``torch.load(weights_only=True)``-safe types."""
    py = random.getstate()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": [py[0], torch.tensor(py[1], dtype=torch.int64), py[2]],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` captured."""
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(int(k) for k in keys.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
