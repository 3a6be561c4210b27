"""Which model made an output: a short tag written into every file a ``predict`` writes.

A result found later on a disk should say which model produced it (default models are retrained
from time to time): the tag names medimg's version, the task, the model folder and the first
digits of the SHA-1 of its weights. It is short enough for a NIfTI ``descrip`` (79 bytes) and a
DICOM Series Description (64 characters). Writers take it from ``Image.meta["description"]``
(:func:`medimg.io.api.save`: NIfTI ``descrip``, NRRD/MHA ``description`` field, DICOM Series
Description), so a task only sets that key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["DESCRIPTION_CHARS", "model_tag", "weights_digest"]

#: the shortest place a tag goes: DICOM Series Description (LO, 64 characters)
DESCRIPTION_CHARS = 64


def weights_digest(models: Iterable[nn.Module]) -> str:
    """First 8 hex digits of the SHA-1 over every model's parameter names and bytes."""
    digest = hashlib.sha1()
    for net in models:
        for key, tensor in net.state_dict().items():
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:8]


def model_tag(task: str, name: str, models: Iterable[nn.Module], detail: str = "") -> str:
    """``medimg <version> <task> <name> (<detail>) sha1:<digest>``, cut to fit a NIfTI descrip."""
    import medimg

    tag = f"medimg {medimg.__version__} {task} {name}" + (f" ({detail})" if detail else "")
    return f"{tag[:62]} sha1:{weights_digest(models)}"
