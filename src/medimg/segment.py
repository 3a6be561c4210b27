"""Segmentation from Python: a CT (or the modality a model was trained on) in, labels out.

Example (five lines from file to result)::

    from medimg.io.api import load, save
    import medimg.segment
    model = medimg.segment.load_model(device="auto")        # the shipped default model
    labels = medimg.segment.predict(load("ct.nii.gz"), model=model)
    save(labels, "labels.nii.gz")                           # on the CT's own grid

``labels`` is a label :class:`~medimg.io.image.Image` ``(1, X, Y, Z)`` uint8 on the input's
grid; ``labels.meta["segment_names"]`` names each label and ``labels.meta["model"]`` the model.
The shipped model was trained on synthetic phantoms only (see its model card).
"""

from __future__ import annotations

from pathlib import Path

from medimg._facade import as_image, check_device
from medimg.io.image import Image
from medimg.tasks.segment.predict import DEFAULT_MODEL, Segmenter

__all__ = ["DEFAULT_MODEL", "Segmenter", "load_model", "predict"]


def load_model(
    path: str | Path | None = None, device: str = "auto", backend: str = "torch"
) -> Segmenter:
    """A model folder (``plan.yaml`` + weights; ``None``: the shipped default) on ``device``
    (``auto``, ``cpu``, ``cuda`` or ``cuda:N``). ``backend="onnxruntime"`` runs the network in
    ONNX Runtime: ``path`` an exported ``.onnx`` (``medimg export``), or a model folder exported
    in memory first."""
    return Segmenter(path, device=check_device(device), backend=backend)


def predict(
    image: Image | str | Path,
    *,
    model: Segmenter | str | Path | None = None,
    device: str = "auto",
    mirror: bool = True,
    force: bool = False,
    backend: str = "torch",
) -> Image:
    """Labels of ``image`` (an :class:`Image` or a path) on its own grid.

    ``model``: a loaded :class:`Segmenter`, a model folder or ``None`` (the default model, loaded
    on ``device``). ``mirror``: average over mirrored inputs (slower, smoother). An image unlike
    the model's training data is a one-line :class:`~medimg.errors.InputError` unless ``force``.
    ``backend``: ``torch`` or ``onnxruntime`` (see :func:`load_model`).
    """
    seg = model if isinstance(model, Segmenter) else load_model(model, device, backend)
    return seg.segment(as_image(image), mirror=mirror, force=force)
