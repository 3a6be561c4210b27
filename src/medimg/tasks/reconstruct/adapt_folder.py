"""What the ``adapt`` verbs share (CT and MRI alike): the model folder they write (the adapted
model's ``config.yaml`` + ``model.safetensors`` beside the engine run ``adapt_run/`` that made
them, under the train verbs' rules for an existing folder) and their fine-tuning defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medimg.engine import TrainConfig, check_run_dir
from medimg.errors import InputError, OutputExistsError

__all__ = ["MODEL_FILES", "RUN_NAME", "adapt_train_config", "check_adapt_folder"]

RUN_NAME = "adapt_run"  # the engine run inside the model folder
MODEL_FILES = ("config.yaml", "model.safetensors")


def adapt_train_config(**kw: Any) -> TrainConfig:
    """A fine-tune, not a new training: 300 Adam steps at lr 3e-4 on a cosine schedule with
    gradients clipped at 1; each modality sets its batch size and logging through ``kw``."""
    base = {"max_steps": 300, "lr": 3e-4, "optimizer": "adam", "lr_schedule": "cosine",
            "grad_clip": 1.0}  # fmt: skip
    return TrainConfig(**{**base, **kw})


def check_adapt_folder(
    out: Path, resume: bool, overwrite: bool, run_config: dict[str, Any]
) -> None:
    """An earlier adaptation is continued only with ``resume`` and replaced only with
    ``overwrite``; a model folder that is no adaptation run likewise. Writes nothing."""
    if out.exists() and not out.is_dir():
        raise InputError("is a file, not a model folder; choose a folder for --out", out)
    check_run_dir(out / RUN_NAME, resume=resume, overwrite=overwrite, run_config=run_config)
    if not resume and not overwrite and any((out / n).exists() for n in MODEL_FILES):
        raise OutputExistsError(
            "holds a model (config.yaml, model.safetensors); pass --overwrite to replace it or "
            "choose another --out",
            out,
        )
