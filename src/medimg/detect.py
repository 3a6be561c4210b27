"""Lung-nodule detection from Python: a chest CT in HU in, candidates in world coordinates out.

Example (five lines from file to result)::

    from medimg.io.api import load
    import medimg.detect
    model = medimg.detect.load_model(device="auto")         # the shipped default model
    findings = medimg.detect.predict(load("chest_ct.nii.gz"), model=model)
    print([(f.center_ras, f.diameter_mm, f.score) for f in findings[:3]])

Each :class:`Candidate` has ``center_ras`` (RAS+ mm; ``center_lps`` for LUNA16's frame),
``diameter_mm`` and ``score``, best first; :func:`label_map` draws them on the image's grid.
The shipped model was trained on synthetic phantoms only (see its model card).
"""

from __future__ import annotations

from pathlib import Path

from medimg._facade import as_image, check_device
from medimg.io.image import Image
from medimg.tasks.detect.data import check_ct_volume
from medimg.tasks.detect.infer import Candidate
from medimg.tasks.detect.predict import DEFAULT_MODEL, Detector, findings_label_map

__all__ = ["DEFAULT_MODEL", "Candidate", "Detector", "label_map", "load_model", "predict"]


def load_model(
    path: str | Path | None = None, device: str = "auto", flips: bool = False
) -> Detector:
    """A detection model folder (``None``: the shipped default) on ``device`` (``auto``,
    ``cpu``, ``cuda`` or ``cuda:N``); ``flips`` averages over mirrored inputs."""
    return Detector(path, check_device(device), flips)


def predict(
    image: Image | str | Path,
    *,
    model: Detector | str | Path | None = None,
    device: str = "auto",
) -> list[Candidate]:
    """Nodule candidates of a CT volume in HU (an :class:`Image` or a path), best first.

    ``model``: a loaded :class:`Detector`, a model folder or ``None`` (the default model on
    ``device``). A volume that is no CT in HU is a one-line :class:`~medimg.errors.InputError`.
    """
    source = None if isinstance(image, Image) else image
    image = as_image(image, modality="CT")
    check_ct_volume(image, source or image.meta.get("source"))
    det = model if isinstance(model, Detector) else load_model(model, device)
    return det.detect(image)


def label_map(image: Image, findings: list[Candidate], threshold: float = 0.5) -> Image:
    """Findings scoring at least ``threshold`` as labelled spheres (1 = best) on ``image``'s
    grid; ``meta["segment_names"]`` describes each."""
    labels, names = findings_label_map(image, findings, threshold)
    labels.meta = {**labels.meta, "segment_names": names}
    return labels
