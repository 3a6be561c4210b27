"""Low-dose CT denoising from Python: a CT in Hounsfield units in, the denoised CT (HU, same
grid) out, slice by slice.

Example (five lines from file to result)::

    from medimg.io.api import load, save
    import medimg.recon.ct
    model = medimg.recon.ct.load_model(device="auto")       # the shipped RED-CNN ("wgan": WGAN)
    denoised = medimg.recon.ct.predict(load("low_dose.nii.gz"), model=model)
    save(denoised, "denoised.nii.gz")

The shipped models were trained on simulated low-dose pairs (see their model card); an image
without an HU scale is a one-line :class:`~medimg.errors.InputError`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from medimg._facade import as_image, check_device
from medimg.io.image import Image
from medimg.tasks.reconstruct.ct import predict as _ct

__all__ = ["DEFAULT_DIR", "Denoiser", "denoise_slices", "load_model", "predict"]

DEFAULT_DIR = _ct.DEFAULT_DIR
denoise_slices = _ct.denoise_slices


@dataclasses.dataclass
class Denoiser:
    """A loaded CT model: ``net`` (an image-domain network in eval mode) and its ``config``."""

    net: nn.Module
    config: object

    def denoise(self, image: Image, *, assume_hu: bool = False) -> Image:
        """The denoised CT on ``image``'s grid, in HU (checks as ``medimg recon ct predict``)."""
        source = Path(str(image.meta.get("source") or "image.nii"))
        if not source.exists():  # an in-memory image: name it without reading a file
            source = Path("image.nii")
        return _ct.denoise_image(self.net, self.config, image, source, assume_hu=assume_hu)


def load_model(path: str | Path | None = None, device: str = "auto") -> Denoiser:
    """A CT model folder, or ``"redcnn"``/``"wgan"`` for a shipped one (``None``: RED-CNN), on
    ``device`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``)."""
    net, cfg = _ct.load_model(path, device=check_device(device))
    return Denoiser(net, cfg)


def predict(
    image: Image | str | Path,
    *,
    model: Denoiser | str | Path | None = None,
    device: str = "auto",
    assume_hu: bool = False,
) -> Image:
    """Denoise a CT (an :class:`Image` or a path) in HU; the result keeps its grid.

    ``model``: a loaded :class:`Denoiser`, a model folder, ``"redcnn"``/``"wgan"`` or ``None``
    (the default on ``device``). ``assume_hu``: accept an image without values below 0.
    """
    den = model if isinstance(model, Denoiser) else load_model(model, device)
    return den.denoise(as_image(image), assume_hu=assume_hu)
