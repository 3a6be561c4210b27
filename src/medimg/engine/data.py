"""Data order as a pure function of ``(seed, step)``: what makes resume and DDP exact.

Step ``s`` of a run uses the global batch :func:`batch_indices` ``(n, batch_size, seed, s)``:
epoch ``e = s // (n // batch_size)`` is a permutation drawn from a generator seeded by
``(seed, e)``, and the step takes its next ``batch_size`` entries. Under DDP rank ``r`` of ``W``
takes the ``r``-th contiguous slice of that global batch, so the samples seen per step do not
depend on the process count.

Per-sample randomness (augmentation in the dataset's transforms) is seeded from
``(seed, step, index)`` just before ``dataset[index]`` is read, in whichever process or worker
reads it; so a sample's augmentation does not depend on workers, ranks or interruptions either.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import torch
from torch.utils.data import Dataset, Sampler

from medimg.engine.runtime import derive_seed, seed_globals
from medimg.errors import InputError

__all__ = ["SeededSamples", "StepBatchSampler", "batch_indices", "steps_per_epoch"]

_EPOCH_STREAM, _SAMPLE_STREAM = 1, 2


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full global batches per pass over ``n`` samples; the incomplete remainder is dropped."""
    if n < batch_size:
        raise InputError(
            f"the training set has {n} samples, fewer than batch_size {batch_size}; "
            "lower batch_size or add data"
        )
    return n // batch_size


@lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    gen = torch.Generator().manual_seed(derive_seed(seed, _EPOCH_STREAM, epoch))
    return tuple(torch.randperm(n, generator=gen).tolist())


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Dataset indices of the global batch used at (0-based) ``step``."""
    per_epoch = steps_per_epoch(n, batch_size)
    epoch, pos = divmod(step, per_epoch)
    return list(_permutation(n, seed, epoch)[pos * batch_size : (pos + 1) * batch_size])


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields, for steps ``start..stop-1``, this rank's slice of the global batch.

    Items are ``(step, index)`` pairs, which :class:`SeededSamples` turns into seeded reads.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        start: int,
        stop: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size:
            raise InputError(
                f"batch_size {batch_size} is not divisible by the {world_size} processes; "
                "make the global batch a multiple of --nproc-per-node"
            )
        steps_per_epoch(n, batch_size)  # validates n >= batch_size
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.stop = start, stop
        self.local = batch_size // world_size
        self.offset = rank * self.local

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            batch = batch_indices(self.n, self.batch_size, self.seed, step)
            yield [(step, i) for i in batch[self.offset : self.offset + self.local]]

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


class SeededSamples(Dataset):
    """Wraps a map-style dataset; ``item[(step, index)]`` reads ``dataset[index]`` seeded.

    Before the read, python's ``random``, numpy's and torch's global generators are seeded from
    ``(seed, step, index)``, and so is a MONAI ``Randomizable`` ``dataset.transform`` (MONAI
    transforms keep their own generator), so augmentation is reproducible per sample.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> object:
        step, index = key
        seed = derive_seed(self.seed, _SAMPLE_STREAM, step, index)
        seed_globals(seed)
        transform = getattr(self.dataset, "transform", None)
        if hasattr(transform, "set_random_state"):
            transform.set_random_state(seed=seed)
        return self.dataset[index]
