"""Seeding, devices, data order as a function of (seed, step), sharding, inference helper."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from torch import nn

from medimg.engine import (
    SeededSamples,
    StepBatchSampler,
    StepContext,
    TrainConfig,
    batch_indices,
    derive_seed,
    fast_precision,
    get_rng_state,
    predict_in_batches,
    resolve_device,
    seed_everything,
    set_rng_state,
    shard,
    to_device,
)
from medimg.errors import InputError


def _draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.random()), float(torch.rand(()))  # noqa: NPY002


def test_seed_everything_fixes_all_three_generators() -> None:
    seed_everything(5)
    first = _draws()
    seed_everything(5)
    assert _draws() == first
    seed_everything(6)
    assert _draws() != first
    with pytest.raises(InputError, match="seed"):
        seed_everything(-1)


def test_rng_state_round_trips_through_weights_only_file() -> None:
    seed_everything(3)
    buf = io.BytesIO()
    torch.save(get_rng_state(), buf)
    expected = _draws()
    _draws()
    buf.seek(0)
    set_rng_state(torch.load(buf, weights_only=True))
    assert _draws() == expected


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == auto
    for bad in ("gpu", "cuda:", "cuda:x", "cuda1"):
        with pytest.raises(InputError, match="auto, cpu, cuda or cuda:N"):
            resolve_device(bad)
    assert TrainConfig(device="cuda:1").device == "cuda:1"  # checked when used, not in config
    with pytest.raises(InputError, match="device"):
        TrainConfig(device="gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_input_error() -> None:
    for name in ("cuda", "cuda:1"):
        with pytest.raises(InputError, match="no CUDA GPU"):
            resolve_device(name)


def test_derive_seed_does_not_alias_neighbours() -> None:
    assert derive_seed(0, 1) != derive_seed(1, 0)
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2)
    assert 0 <= derive_seed(2**40, 3) < 2**32


def test_batch_order_is_a_pure_function_of_seed_and_step() -> None:
    n, b = 23, 5  # 4 full batches per epoch, 3 samples dropped
    epoch0 = [batch_indices(n, b, seed=1, step=s) for s in range(4)]
    flat = [i for batch in epoch0 for i in batch]
    assert len(set(flat)) == 20 and all(0 <= i < n for i in flat)
    assert batch_indices(n, b, 1, 2) == epoch0[2]  # no hidden state
    assert batch_indices(n, b, 1, 4) != epoch0[0]  # next epoch reshuffles
    assert batch_indices(n, b, 2, 0) != epoch0[0]  # seed matters
    with pytest.raises(InputError, match="fewer than batch_size"):
        batch_indices(3, 4, 0, 0)


def test_ranks_split_each_global_batch() -> None:
    single = list(StepBatchSampler(20, 4, seed=0, start=3, stop=9))
    ranks = [list(StepBatchSampler(20, 4, 0, 3, 9, rank=r, world_size=2)) for r in (0, 1)]
    assert len(single) == 6 and single[0][0][0] == 3  # (step, index) pairs from the start step
    for step in range(6):
        assert ranks[0][step] + ranks[1][step] == single[step]
    with pytest.raises(InputError, match="not divisible"):
        StepBatchSampler(20, 4, 0, 0, 1, rank=0, world_size=3)


class _Noisy(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.randn(2) + 10 * i


def test_sample_augmentation_depends_on_seed_step_index_only() -> None:
    data = SeededSamples(_Noisy(), seed=0)
    a = data[(5, 1)]
    torch.randn(100)  # disturbing the global RNG must not matter
    assert torch.equal(data[(5, 1)], a)
    assert not torch.equal(data[(6, 1)], a)
    assert not torch.equal(SeededSamples(_Noisy(), seed=1)[(5, 1)], a)


def test_step_context_noise_does_not_depend_on_world_size() -> None:
    def ctx(rank: int, world: int) -> StepContext:
        gen = torch.Generator().manual_seed(9)
        return StepContext(0, 0, gen, torch.device("cpu"), rank, world)

    whole = ctx(0, 1).randn(6, 3)
    parts = [ctx(r, 2).randn(3, 3) for r in (0, 1)]
    assert torch.equal(torch.cat(parts), whole)


def test_shard_covers_items_once(monkeypatch: pytest.MonkeyPatch) -> None:
    items = [f"case{i}" for i in range(7)]
    assert shard(items) == items
    parts = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "3")
        parts.append(shard(items))
    assert sorted(i for p in parts for i in p) == sorted(items)
    assert [len(p) for p in parts] == [3, 2, 2]


def test_to_device_walks_containers() -> None:
    batch = {"x": torch.ones(2), "meta": ["a", (torch.zeros(1), 3)]}
    out = to_device(batch, torch.device("cpu"))
    assert out["meta"][0] == "a" and out["meta"][1][1] == 3 and torch.equal(out["x"], batch["x"])


def test_predict_in_batches_matches_full_forward() -> None:
    seed_everything(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)).train()
    x = torch.randn(7, 3)
    out = predict_in_batches(model, x, batch_size=3, device="cpu")
    assert model.training  # mode restored
    model.eval()
    assert torch.allclose(out, model(x), atol=1e-6) and not out.requires_grad
    samples = [{"x": row} for row in x]
    per_case = predict_in_batches(model, samples, batch_size=2, forward=lambda m, b: m(b["x"]))
    assert len(per_case) == 7 and torch.allclose(torch.stack(per_case), out, atol=1e-6)


@pytest.mark.parametrize("native", [True, False])
def test_fast_precision_uses_bf16_only_where_the_cpu_has_it(monkeypatch, native) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    a = torch.randn(4, 4)
    with fast_precision("cpu"):
        product = a @ a
    assert product.dtype == (torch.bfloat16 if native else torch.float32)
    monkeypatch.setenv("MEDIMG_PRECISION", "fp32")  # the user's way to keep full precision
    with fast_precision("cpu"):
        assert (a @ a).dtype == torch.float32
