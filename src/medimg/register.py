"""Deformable registration from Python: a fixed and a moving image in, the warped image and the
displacement field out.

Example (five lines from file to result)::

    from medimg.io.api import load, save
    import medimg.register
    model = medimg.register.load_model(device="auto")       # the shipped default model
    result = medimg.register.predict(load("fixed.nii.gz"), load("moving.nii.gz"), model=model)
    save(result.warped, "warped.nii.gz")                    # on the fixed image's grid

``result`` is a :class:`RegResult`: ``warped`` (the moving image on the fixed grid), ``field``
(RAS+ mm displacements), ``warped_labels`` (with ``moving_labels``) and ``info``. The shipped
network was trained on synthetic same-contrast pairs (see its model card); for other contrasts
pass ``instance_steps`` and ``similarity="mind"``.
"""

from __future__ import annotations

from pathlib import Path

from medimg._facade import as_image, check_device
from medimg.io.image import Image
from medimg.tasks.register.predict import DEFAULT_MODEL, Registrator, RegResult

__all__ = ["DEFAULT_MODEL", "RegResult", "Registrator", "load_model", "predict"]


def load_model(path: str | Path | None = None, device: str = "auto") -> Registrator:
    """A registration model folder (``reg.yaml`` + weights; ``None``: the shipped default) on
    ``device`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``)."""
    return Registrator(path, device=check_device(device))


def predict(
    fixed: Image | str | Path,
    moving: Image | str | Path,
    *,
    model: Registrator | str | Path | None = None,
    device: str = "auto",
    moving_labels: Image | str | Path | None = None,
    instance_steps: int = 0,
    similarity: str | None = None,
    affine: bool = False,
) -> RegResult:
    """Register ``moving`` to ``fixed`` (each an :class:`Image` or a path).

    ``model``: a loaded :class:`Registrator`, a model folder or ``None`` (the default model on
    ``device``). ``moving_labels`` are warped too (nearest neighbour); ``instance_steps`` > 0
    refines the network's field by optimisation on this pair with ``similarity``; ``affine``
    runs an affine stage first. See :meth:`Registrator.register` for the rest.
    """
    reg = model if isinstance(model, Registrator) else load_model(model, device)
    labels = None if moving_labels is None else as_image(moving_labels, is_label=True)
    return reg.register(as_image(fixed), as_image(moving), moving_labels=labels, affine=affine,
                        instance_steps=instance_steps, similarity=similarity)  # fmt: skip
