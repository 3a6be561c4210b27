"""The model folder an ``adapt`` verb writes (CT and MRI alike): the adapted model's
``config.yaml`` + ``model.safetensors`` beside the engine run (``adapt_run/``) that made them,
under the train verbs' rules for an existing folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medimg.engine import check_run_dir
from medimg.errors import InputError, OutputExistsError

__all__ = ["MODEL_FILES", "RUN_NAME", "check_adapt_folder"]

RUN_NAME = "adapt_run"  # the engine run inside the model folder
MODEL_FILES = ("config.yaml", "model.safetensors")


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
