"""Training configuration and generic dataclass <-> YAML helpers.

Every task defines its own config dataclass that nests :class:`TrainConfig`; :func:`to_yaml` and
:func:`from_yaml` work on any such tree so a run's ``config.yaml`` reproduces it exactly. Values
are checked when the dataclass is built (``__post_init__``), so a bad YAML file and a bad Python
call fail the same way: one line naming the field, the allowed values and what was given.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from medimg.errors import InputError
from medimg.io.inputs import read_text

__all__ = ["TrainConfig", "config_diff", "from_yaml", "to_dict", "to_yaml", "validation_interval"]

T = TypeVar("T")

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "poly", "step")


@dataclasses.dataclass
class TrainConfig:
    """What the engine needs to train any task; tasks nest it in their own config.

    ``batch_size`` is global: under DDP each of the ``world_size`` ranks gets
    ``batch_size / world_size`` samples, so the maths does not change with the process count.
    Steps count optimizer updates; an epoch is ``len(dataset) // batch_size`` steps (the last
    incomplete batch is dropped so every step sees a full global batch).
    """

    max_steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    momentum: float = 0.9  # sgd only
    lr_schedule: Literal["constant", "cosine", "poly", "step"] = "constant"
    warmup_steps: int = 0  # linear warm-up from lr/warmup_steps to lr
    lr_step_size: int | None = None  # "step" schedule: multiply by lr_gamma every N steps
    lr_gamma: float = 0.1
    poly_power: float = 0.9
    grad_clip: float | None = None  # max global grad norm; None = off
    amp: bool = True  # mixed precision, used on CUDA only
    val_every: int = 100  # validate every N steps (and after the last step)
    val_metric: str = "loss"  # key of the dict that validate() returns
    val_mode: Literal["min", "max"] = "min"
    early_stop_patience: int | None = None  # validation rounds without improvement; None = off
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    num_workers: int = 0
    log_every: int = 10
    progress: bool = True

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                value = getattr(self, name)
                raise InputError(f"TrainConfig.{name} must be {rule}, got {value!r}")

        for name in ("max_steps", "batch_size", "val_every", "checkpoint_every", "log_every"):
            need(_is_int(getattr(self, name)) and getattr(self, name) >= 1, name, "an integer >= 1")
        for name in ("warmup_steps", "num_workers", "seed"):
            need(_is_int(getattr(self, name)) and getattr(self, name) >= 0, name, "an integer >= 0")
        need(_is_num(self.lr) and self.lr > 0, "lr", "a finite number > 0")
        for name in ("weight_decay", "momentum", "poly_power"):
            need(_is_num(getattr(self, name)) and getattr(self, name) >= 0, name, "a number >= 0")
        need(_is_num(self.lr_gamma) and 0 < self.lr_gamma <= 1, "lr_gamma", "in (0, 1]")
        need(self.optimizer in OPTIMIZERS, "optimizer", f"one of {', '.join(OPTIMIZERS)}")
        need(self.lr_schedule in SCHEDULES, "lr_schedule", f"one of {', '.join(SCHEDULES)}")
        need(self.val_mode in ("min", "max"), "val_mode", "'min' or 'max'")
        need(_is_device(self.device), "device", "auto, cpu, cuda or cuda:N")
        need(isinstance(self.val_metric, str) and bool(self.val_metric), "val_metric", "a name")
        for name in ("amp", "progress"):
            need(isinstance(getattr(self, name), bool), name, "true or false")
        need(
            self.grad_clip is None or (_is_num(self.grad_clip) and self.grad_clip > 0),
            "grad_clip",
            "a number > 0 or null (off)",
        )
        need(
            self.early_stop_patience is None
            or (_is_int(self.early_stop_patience) and self.early_stop_patience >= 1),
            "early_stop_patience",
            "an integer >= 1 or null (off)",
        )
        need(
            self.lr_step_size is None or (_is_int(self.lr_step_size) and self.lr_step_size >= 1),
            "lr_step_size",
            "an integer >= 1 or null",
        )
        if self.lr_schedule == "step" and self.lr_step_size is None:
            raise InputError("TrainConfig.lr_step_size must be set when lr_schedule is 'step'")
        if self.warmup_steps >= self.max_steps:
            raise InputError(
                f"TrainConfig.warmup_steps ({self.warmup_steps}) must be smaller than "
                f"max_steps ({self.max_steps})"
            )


def _is_device(v: Any) -> bool:
    from medimg.devices import parse_device

    try:
        parse_device(v)
    except InputError:
        return False
    return isinstance(v, str)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass tree as plain YAML/JSON types (tuples -> lists, paths -> strings)."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise InputError(f"expected a dataclass instance, got {type(obj).__name__}")
    return _plain(obj)


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return v


def to_yaml(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write a dataclass tree to ``path`` atomically (temp file + rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=False)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def from_yaml(cls: type[T], source: str | os.PathLike[str] | dict[str, Any]) -> T:
    """Build dataclass ``cls`` from a YAML file or a dict, recursing into nested dataclasses.

    Missing keys take the dataclass defaults; unknown keys are an :class:`InputError` that lists
    the valid ones, because a typo (``learning_rate`` for ``lr``) must not be silently ignored.
    """
    where = None
    if isinstance(source, dict):
        data: Any = source
    else:
        where = Path(source)
        if not where.is_file():
            raise InputError("config file not found; check the path", path=where)
        try:
            data = yaml.safe_load(read_text(where)) or {}  # a binary file: one-line error
        except yaml.YAMLError as exc:
            raise InputError(f"not valid YAML ({exc})", path=where) from None
    try:
        return _build(cls, data, cls.__name__)
    except InputError as exc:
        raise InputError(str(exc), path=where) from None


def _build(cls: type[T], data: Any, where: str) -> T:
    if not isinstance(data, dict):
        raise InputError(f"{where} must be a mapping of keys to values, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise InputError(f"unknown key {unknown[0]!r} in {where}; valid keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # e.g. a required field without default is missing
        raise InputError(f"{where}: {exc}") from None


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except InputError as exc:
                errors.append(str(exc))
        raise InputError(errors[0])
    if origin is Literal:
        if value not in args:
            raise InputError(f"{where} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where} must be a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        elif origin is tuple and args and len(args) != len(value):
            raise InputError(f"{where} must have {len(args)} entries, got {value!r}")
        items = [
            _coerce(v, (args[i] if origin is tuple else args[0]) if args else Any, where)
            for i, v in enumerate(value)
        ]
        return tuple(items) if (origin or tp) is tuple else items
    if tp is float and _is_int(value):
        return float(value)
    if tp in (int, float, str, bool) and not (
        isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    ):
        raise InputError(f"{where} must be of type {tp.__name__}, got {value!r}")
    if tp is Path and isinstance(value, str):
        return Path(value)
    return value


def validation_interval(max_steps: int, times: int = 5, at_least: int = 50) -> int:
    """Validate about ``times`` times in a run, but not more often than every ``at_least`` steps:
    a short trial run (``--max-steps 6``) then validates once, after its last step, instead of
    after every step."""
    return max(max_steps // times, min(at_least, max_steps), 1)


def config_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two :func:`to_dict` trees, as ``key: a -> b``."""
    out = []
    for key in list(old) + [k for k in new if k not in old]:
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, prefix=f"{name}.")
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out
