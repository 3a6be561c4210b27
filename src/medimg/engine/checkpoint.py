"""Checkpoints: weights in safetensors, training state in a weights-only torch file.

A checkpoint is a folder (``last/`` or ``best/`` in the run directory) holding
``model.safetensors`` and, for ``last``, ``state.pt`` (optimizer, scheduler, scaler, step, RNG).
The folder is replaced as a whole so weights and state never come from different steps:

1. write ``last.tmp/`` completely;
2. rename ``last/`` -> ``last.old/`` and ``last.tmp/`` -> ``last/``;
3. delete ``last.old/``.

A kill at any point leaves either ``last/`` or ``last.old/`` complete, and :func:`find_checkpoint`
picks the newest complete one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_model
from torch import nn

from medimg.errors import CheckpointError

__all__ = [
    "MODEL_FILE",
    "STATE_FILE",
    "export_run_weights",
    "find_checkpoint",
    "load_training_state",
    "load_weights",
    "read_metadata",
    "save_checkpoint",
    "unwrap_model",
]

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _fsync_write(path: Path, write: Any) -> None:
    write(str(path))
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def save_checkpoint(
    directory: str | os.PathLike[str],
    model: nn.Module,
    state: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Atomically (re)write checkpoint folder ``directory`` with the model and optional state.

    ``metadata`` (strings) goes into the safetensors header, readable without loading tensors.
    """
    final = Path(directory)
    tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    module = unwrap_model(model)
    _fsync_write(tmp / MODEL_FILE, lambda p: save_model(module, p, metadata=metadata))
    if state is not None:
        _fsync_write(tmp / STATE_FILE, lambda p: torch.save(state, p))
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The complete checkpoint folder for ``directory`` (itself, else its ``.old`` twin)."""
    final = Path(directory)
    for candidate in (final, final.with_name(final.name + ".old")):
        if (candidate / MODEL_FILE).is_file():
            return candidate
    return None


def export_run_weights(
    run_dir: str | os.PathLike[str], dest: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Copy a run's ``config.yaml`` and best (else last) weights into the model folder
    ``dest``: what a task whose model is a config plus one network ships."""
    from medimg.errors import InputError
    from medimg.io.output import copy_files

    run, out = Path(run_dir), Path(dest)
    ckpt = find_checkpoint(run / "best") or find_checkpoint(run / "last")
    if ckpt is None or not (run / "config.yaml").is_file():
        raise InputError("no finished training here (config.yaml and best/ or last/)", run)
    copy_files([(run / "config.yaml", out / "config.yaml"),
                (ckpt / MODEL_FILE, out / MODEL_FILE)], overwrite=overwrite)  # fmt: skip
    return out


def load_training_state(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``state.pt`` dict of a checkpoint folder, loaded with ``weights_only=True``."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise CheckpointError("training state file is missing; the checkpoint is incomplete", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or not a torch file
        raise CheckpointError(f"cannot read training state ({type(exc).__name__})", path) from None


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` file (or of a checkpoint folder's model)."""
    path = _weights_file(Path(path))
    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def _weights_file(path: Path) -> Path:
    if path.is_file():
        return path
    # a checkpoint folder (or its .old twin after a crash), else a run folder: best, then last
    for candidate in (path, path / "best", path / "last"):
        found = find_checkpoint(candidate)
        if found is not None:
            return found / MODEL_FILE
    if path.is_dir():
        raise CheckpointError(f"no {MODEL_FILE} here nor in best/ or last/; train first", path)
    raise CheckpointError("weights file not found; check the path or train a model", path)


def load_weights(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    keep_fresh: Callable[[str], bool] | None = None,
) -> nn.Module:
    """Load safetensors weights into ``model`` for inference or fine-tuning; returns the model.

    ``path`` is a ``.safetensors`` file, a checkpoint folder, or a run folder (``best/`` is used,
    else ``last/``). Keys and shapes are checked before anything is copied, so a mismatch leaves
    the model untouched and names the first offending key. ``keep_fresh(key)`` names keys whose
    shape may differ (a fine-tune's output layers for another number of classes): those keep the
    model's own initial values.
    """
    file = _weights_file(Path(path))
    module = unwrap_model(model)
    try:
        loaded = load_file(str(file), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"cannot read safetensors file ({exc})", file) from None
    expected = module.state_dict()
    for key, ref in expected.items():  # model order: the first mismatch a reader looks for
        if key in loaded:
            if tuple(loaded[key].shape) != tuple(ref.shape):
                if keep_fresh is not None and keep_fresh(key):
                    loaded[key] = ref
                    continue
                raise CheckpointError(
                    f"shape mismatch for {key!r}: file {tuple(loaded[key].shape)}, "
                    f"model {tuple(ref.shape)}; the file is for another configuration",
                    file,
                )
            continue
        # safetensors stores tied (shared) tensors once; refill the alias from its twin
        twin = next((k for k in loaded if k in expected and _same_storage(expected[k], ref)), None)
        if twin is None:
            raise CheckpointError(f"missing key {key!r}; the file is for another model", file)
        loaded[key] = loaded[twin]
    unexpected = sorted(set(loaded) - set(expected))
    if unexpected:
        raise CheckpointError(
            f"unexpected key {unexpected[0]!r}; the file is for another model", file
        )
    module.load_state_dict(loaded, strict=True)
    return model


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.device == b.device
        and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
        and a.storage_offset() == b.storage_offset()
        and a.shape == b.shape
        and a.stride() == b.stride()
    )
