"""TrainConfig validation, generic YAML round trips, learning-rate schedules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from medimg.engine import (
    TrainConfig,
    build_optimizer,
    build_scheduler,
    config_diff,
    from_yaml,
    lr_factor,
    to_dict,
    to_yaml,
)
from medimg.errors import InputError


@dataclasses.dataclass
class Model:
    channels: tuple[int, ...] = (8, 16)
    norm: str | None = None


@dataclasses.dataclass
class TaskConfig:
    """What a task's own config looks like: nests TrainConfig and other dataclasses."""

    name: str = "denoise"
    data_root: Path = Path("data")
    patch: tuple[int, int] = (32, 48)
    model: Model = dataclasses.field(default_factory=Model)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


def test_nested_round_trip(tmp_path: Path) -> None:
    cfg = TaskConfig(
        name="ct",
        data_root=Path("/x/y"),
        patch=(5, 7),
        model=Model(channels=(4, 8, 16), norm="instance"),
        train=TrainConfig(lr=3e-4, grad_clip=1.0, lr_schedule="cosine", early_stop_patience=3),
    )
    path = to_yaml(cfg, tmp_path / "config.yaml")
    assert "lr: 0.0003" in path.read_text()
    assert from_yaml(TaskConfig, path) == cfg
    assert from_yaml(TaskConfig, to_dict(cfg)) == cfg


def test_missing_keys_take_defaults() -> None:
    cfg = from_yaml(TaskConfig, {"train": {"max_steps": 5}})
    assert cfg.train == TrainConfig(max_steps=5) and cfg.model == Model()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"train": {"learning_rate": 1}}, "unknown key 'learning_rate' in TaskConfig.train"),
        ({"modle": {}}, "unknown key 'modle' in TaskConfig; valid keys: name, data_root"),
        ({"train": {"lr": "fast"}}, "TaskConfig.train.lr must be of type float, got 'fast'"),
        ({"train": {"optimizer": "rmsprop"}}, "must be one of adam, adamw, sgd"),
        ({"patch": [1, 2, 3]}, "TaskConfig.patch must have 2 entries"),
        ({"train": 3}, "TaskConfig.train must be a mapping"),
    ],
)
def test_bad_yaml_is_one_line_input_error(data: dict, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError) as exc:
        from_yaml(TaskConfig, path)
    msg = str(exc.value)
    assert expected in msg and "\n" not in msg and str(path) in msg


def test_unknown_key_lists_every_valid_key() -> None:
    with pytest.raises(InputError) as exc:
        from_yaml(TrainConfig, {"epochs": 3})
    for field in dataclasses.fields(TrainConfig):
        assert field.name in str(exc.value)


def test_binary_file_given_as_config_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "weights.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n\x00")
    with pytest.raises(InputError, match=r"not UTF-8 text \(byte 0x89 at offset 0\)"):
        from_yaml(TrainConfig, path)


def test_missing_file() -> None:
    with pytest.raises(InputError, match="config file not found"):
        from_yaml(TrainConfig, "/nonexistent/config.yaml")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_steps": 2.5}, "max_steps"),
        ({"grad_clip": 0}, "grad_clip"),
        ({"val_mode": "best"}, "val_mode"),
        ({"device": "tpu"}, "device"),
        ({"early_stop_patience": 0}, "early_stop_patience"),
        ({"lr_schedule": "step"}, "lr_step_size"),
        ({"warmup_steps": 10, "max_steps": 10}, "warmup_steps"),
        ({"seed": -1}, "seed"),
        ({"amp": "yes"}, "amp"),
    ],
)
def test_bad_values_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(InputError, match=rf"TrainConfig\.{field}"):
        TrainConfig(**kwargs)


def test_config_diff_reports_nested_changes() -> None:
    old = to_dict(TaskConfig())
    new = to_dict(TaskConfig(train=TrainConfig(lr=0.1), model=Model(norm="batch")))
    assert config_diff(old, new) == ["model.norm: None -> 'batch'", "train.lr: 0.001 -> 0.1"]
    assert config_diff(old, old) == []


def test_warmup_then_cosine_poly_step() -> None:
    cfg = TrainConfig(max_steps=110, warmup_steps=10, lr_schedule="cosine")
    assert lr_factor(cfg, 0) == pytest.approx(0.1)
    assert lr_factor(cfg, 9) == pytest.approx(1.0)
    assert lr_factor(cfg, 10) == pytest.approx(1.0)
    assert lr_factor(cfg, 60) == pytest.approx(0.5)
    assert lr_factor(cfg, 110) == pytest.approx(0.0, abs=1e-12)
    poly = dataclasses.replace(cfg, lr_schedule="poly", poly_power=1.0)
    assert lr_factor(poly, 60) == pytest.approx(0.5)
    step = TrainConfig(max_steps=100, lr_schedule="step", lr_step_size=30, lr_gamma=0.5)
    assert [lr_factor(step, s) for s in (0, 29, 30, 60, 99)] == [1, 1, 0.5, 0.25, 0.125]


def test_scheduler_applies_factor_per_update() -> None:
    cfg = TrainConfig(lr=0.5, max_steps=20, warmup_steps=4, lr_schedule="poly", optimizer="sgd")
    opt = build_optimizer(torch.nn.Linear(2, 1).parameters(), cfg)
    sched = build_scheduler(opt, cfg)
    seen = []
    for _ in range(cfg.max_steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.5 * lr_factor(cfg, s) for s in range(cfg.max_steps)])
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
