"""MRI reconstruction from Python: undersampled multi-coil k-space (or a magnitude image to
undersample retrospectively) in, magnitude images out.

Example (five lines from file to result)::

    from medimg.io.api import save
    import medimg.recon.mri
    model = medimg.recon.mri.load_model(device="auto")      # the shipped default MoDL
    image = medimg.recon.mri.predict("brain.nii.gz", model=model)  # or a fastMRI .h5 file
    save(image, "recon.nii.gz")

A fastMRI ``.h5`` file is reconstructed with its stored mask; an image (an :class:`Image` or a
path) is undersampled ``acceleration``-fold with simulated coils first, and the result keeps
its grid. Raw k-space ``(S, N, H, W)`` gives magnitudes ``(S, H, W)`` as a NumPy array. The
shipped network is a MoDL trained on k-space simulated from real brain images and phantoms;
its model card says where the classical ``cs_tv`` is still better.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medimg._facade import check_device
from medimg.datasets.fastmri import center_crop
from medimg.errors import InputError
from medimg.io.image import Image
from medimg.tasks.reconstruct.mri.infer import CLASSICAL, Reconstructor, reconstruct
from medimg.tasks.reconstruct.mri.predict import case_from_image, load_case, to_image

__all__ = ["CLASSICAL", "Reconstructor", "load_model", "predict", "reconstruct"]


def load_model(
    path: str | Path | None = None, device: str = "auto", method: str = "net"
) -> Reconstructor:
    """A reconstructor on ``device`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``): the network of
    a model folder (``None``: the shipped default), or a classical ``method`` (:data:`CLASSICAL`)."""
    return Reconstructor(method, path, check_device(device))


def predict(
    data: Image | str | Path | np.ndarray | torch.Tensor,
    *,
    model: Reconstructor | str | Path | None = None,
    device: str = "auto",
    mask: np.ndarray | torch.Tensor | None = None,
    acceleration: float = 4.0,
    seed: int = 0,
) -> Image | np.ndarray:
    """Reconstruct ``data``: a ``.h5`` path or an image (:class:`Image` or path) -> an MR
    :class:`Image`; complex k-space ``(S, N, H, W)`` (with ``mask``; ``None``: its non-zero
    columns) -> magnitudes ``(S, H, W)``.

    ``model``: a loaded :class:`Reconstructor`, a model folder or ``None`` (the default network
    on ``device``). ``acceleration`` and ``seed`` set the retrospective mask of an image.
    """
    rec = model if isinstance(model, Reconstructor) else load_model(model, device)
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return rec(data, mask)
    if isinstance(data, Image):
        name = Path(str(data.meta.get("source") or "image")).name
        case = case_from_image(data, name, acceleration=acceleration, seed=seed)
    elif isinstance(data, (str, Path)):
        case = load_case(data, acceleration=acceleration, seed=seed)
    else:
        raise InputError(f"expected k-space, an Image or a path, got {type(data).__name__}")
    recon = rec(case.kspace, case.mask, case.maps if rec.needs_maps else None)
    return to_image(center_crop(recon, case.crop), case)
