"""Checkpoint files: safetensors weights, weights-only state, atomic replacement, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from medimg.engine import checkpoint as ckpt_module
from medimg.engine import (
    find_checkpoint,
    load_training_state,
    load_weights,
    read_metadata,
    save_checkpoint,
    seed_everything,
)
from medimg.errors import CheckpointError


def _net(hidden: int = 5, seed: int = 0) -> nn.Module:
    seed_everything(seed)
    return nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, 2))


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_weights_and_state_round_trip(tmp_path: Path) -> None:
    src = _net(seed=1)
    state = {"step": 7, "optimizer": torch.optim.Adam(src.parameters()).state_dict()}
    folder = save_checkpoint(tmp_path / "last", src, state, metadata={"step": "7"})
    assert sorted(os.listdir(folder)) == ["model.safetensors", "state.pt"]
    assert sorted(os.listdir(tmp_path)) == ["last"]  # no temp folders left behind
    dst = load_weights(_net(seed=2), folder)
    assert _same(src, dst)
    assert load_training_state(folder)["step"] == 7  # loads with weights_only=True
    assert read_metadata(folder / "model.safetensors") == {"step": "7"}


def test_run_folder_prefers_best(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "last", _net(seed=1))
    save_checkpoint(tmp_path / "best", _net(seed=2))
    assert _same(load_weights(_net(seed=3), tmp_path), _net(seed=2))


def test_tied_weights_round_trip(tmp_path: Path) -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)
            self.b.weight = self.a.weight

    seed_everything(0)
    src = Tied()
    save_checkpoint(tmp_path / "c", src)
    dst = load_weights(Tied(), tmp_path / "c")
    assert torch.equal(dst.b.weight, src.a.weight) and dst.b.weight is dst.a.weight


def test_shape_mismatch_names_key_and_leaves_model_untouched(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "c", _net(hidden=5))
    target = _net(hidden=6, seed=4)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as exc:
        load_weights(target, tmp_path / "c")
    msg = str(exc.value)
    assert "shape mismatch for '0.weight'" in msg and "(5, 3)" in msg and "\n" not in msg
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_key_mismatch_names_key(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "c", _net())
    bigger = nn.Sequential(*_net(), nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match=r"missing key '3\.weight'"):
        load_weights(bigger, tmp_path / "c")
    with pytest.raises(CheckpointError, match=r"unexpected key '2\.bias'"):
        load_weights(nn.Sequential(nn.Linear(3, 5)), tmp_path / "c")


def test_missing_files_are_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(_net(), tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="train first"):
        load_weights(_net(), tmp_path)
    save_checkpoint(tmp_path / "best", _net())
    with pytest.raises(CheckpointError, match="training state file is missing"):
        load_training_state(tmp_path / "best")


def test_failed_save_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(tmp_path / "last", _net(seed=1), {"step": 1})

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # stands in for a kill while the state file is written

    monkeypatch.setattr(ckpt_module.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "last", _net(seed=2), {"step": 2})
    monkeypatch.undo()
    found = find_checkpoint(tmp_path / "last")
    assert load_training_state(found)["step"] == 1
    assert _same(load_weights(_net(seed=3), found), _net(seed=1))
    save_checkpoint(tmp_path / "last", _net(seed=2), {"step": 2})  # the debris is cleaned up
    assert sorted(os.listdir(tmp_path)) == ["last"]


def test_kill_between_renames_falls_back_to_old(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "last", _net(seed=1), {"step": 1})
    os.replace(tmp_path / "last", tmp_path / "last.old")  # the state right after step 2
    found = find_checkpoint(tmp_path / "last")
    assert found == tmp_path / "last.old" and load_training_state(found)["step"] == 1
    assert _same(load_weights(_net(seed=3), tmp_path), _net(seed=1))


def test_keep_fresh_lets_named_layers_differ_in_shape(tmp_path: Path) -> None:
    """Fine-tuning to another number of classes: the head starts fresh, the rest is loaded."""

    def head(n_out: int, seed: int) -> nn.Module:
        seed_everything(seed)
        return nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, n_out))

    src = head(2, seed=1)
    save_checkpoint(tmp_path / "c", src)
    target = head(4, seed=2)
    fresh_head = target[2].weight.clone()
    load_weights(target, tmp_path / "c", keep_fresh=lambda k: k.startswith("2."))
    assert torch.equal(target[0].weight, src[0].weight)  # the body came from the file
    assert torch.equal(target[2].weight, fresh_head)  # the head kept its own values
    with pytest.raises(CheckpointError, match=r"shape mismatch for '2\.weight'"):
        load_weights(head(4, seed=3), tmp_path / "c", keep_fresh=lambda k: k.startswith("0."))
