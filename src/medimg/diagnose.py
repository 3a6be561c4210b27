"""Computer-aided diagnosis from Python: an image (one per modality the model takes) in,
class probabilities, an out-of-distribution score and a heat map out.

Example (five lines from file to result)::

    from medimg.io.api import load, save
    import medimg.diagnose
    model = medimg.diagnose.load_model(device="auto")       # the shipped default model
    result = medimg.diagnose.predict(load("chest.nii.gz"), model=model)
    print(result.calibrated, result.ood_score); save(result.heatmap, "heatmap.nii.gz")

``result`` is a :class:`CasePrediction`: ``probs`` and ``calibrated`` per class, ``predicted``,
``ood_score`` (higher = less like the training images) and ``heatmap`` on the input's grid. The
shipped model was trained on synthetic chest radiographs only (see its model card).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medimg._facade import as_image, check_device
from medimg.io.image import Image
from medimg.tasks.diagnose.predict import DEFAULT_MODEL, CasePrediction, Diagnoser

__all__ = ["DEFAULT_MODEL", "CasePrediction", "Diagnoser", "load_model", "predict"]


def load_model(path: str | Path | None = None, device: str = "auto") -> Diagnoser:
    """A diagnosis model folder (``None``: the shipped default) on ``device`` (``auto``,
    ``cpu``, ``cuda`` or ``cuda:N``)."""
    return Diagnoser(path, check_device(device))


def predict(
    image: Image | str | Path | Sequence[Image | str | Path | None],
    *,
    model: Diagnoser | str | Path | None = None,
    device: str = "auto",
    explain: str | None = "layercam",
) -> CasePrediction:
    """Predict one case: an image (or a path), or a list with one per modality of the model
    (``None`` = missing). ``explain``: ``layercam``, ``gradcam`` or ``None`` (no heat map)."""
    dx = model if isinstance(model, Diagnoser) else load_model(model, device)
    many = isinstance(image, Sequence) and not isinstance(image, str)
    images = list(image) if many else [image]  # type: ignore[list-item]
    return dx.predict([None if im is None else as_image(im) for im in images], explain=explain)
