"""torch.distributed glue: process-group setup under torchrun, sharding, small collectives.

``torchrun --nproc-per-node N`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; everything here
reads those, so the same script runs unchanged as one process or as N. With one process every
helper is a no-op, which keeps tasks free of ``if distributed:`` branches.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from medimg.errors import InputError

__all__ = [
    "DistInfo",
    "all_reduce_mean",
    "barrier",
    "broadcast_object",
    "dist_info",
    "gather_objects",
    "init_distributed",
    "is_main_process",
    "shard",
]

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, and its GPU index ``local_rank``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"environment variable {name} must be an integer, got {raw!r}") from None


def dist_info() -> DistInfo:
    """This process's rank and world size, from the process group or else the torchrun env."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    return DistInfo(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))


def is_main_process() -> bool:
    """True on rank 0 (and in a plain single-process run): the one that writes files."""
    return dist_info().is_main


def init_distributed(device_type: str = "cpu") -> bool:
    """Join the process group when launched by torchrun; returns True if this call created it.

    gloo on CPU, nccl on CUDA. Does nothing for a single process or when a group already exists
    (the caller then owns its lifetime).
    """
    info = dist_info()
    if not info.distributed or dist.is_initialized():
        return False
    if not dist.is_available():
        raise InputError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        raise InputError(
            "WORLD_SIZE > 1 but MASTER_ADDR/MASTER_PORT are unset; launch with torchrun"
        )
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size)
    return True


def shard(items: Sequence[T]) -> list[T]:
    """The part of ``items`` this rank handles: every ``world_size``-th item from ``rank``.

    Striding (not blocks) spreads big and small cases of a sorted list evenly across ranks;
    the union over ranks is ``items`` exactly once.
    """
    info = dist_info()
    return list(items[info.rank :: info.world_size])


def barrier() -> None:
    """Wait for every rank (no-op for one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over ranks of a small tensor (identity for one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    out = values.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s picklable ``obj`` on every rank (identity for one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: T) -> list[T]:
    """Every rank's ``obj`` in rank order, on every rank (``[obj]`` for one process).

    Use it to collect the predictions of a :func:`shard`-ed case list.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
