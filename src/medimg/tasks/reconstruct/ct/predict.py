"""Inference: load a CT model folder (the shipped default unless told otherwise) and denoise
HU images slice by slice, from NIfTI or DICOM to NIfTI or a DICOM series with the input geometry.

A model folder holds ``config.yaml`` (:class:`~.train.CTTrainConfig`) and weights
(``model.safetensors``, or a run's ``best/``/``last/``). Shipped: ``default/redcnn`` (the
default) and, when present, ``default/wgan``; pass ``"redcnn"``/``"wgan"`` to pick one.
Input contract: axial CT slices in Hounsfield units (DICOM with RescaleSlope/Intercept), pixels
near the training spacing (see the model card); images without an HU scale are refused.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medimg.engine import from_yaml, load_weights, resolve_device
from medimg.errors import InputError
from medimg.io.image import Image
from medimg.physics.ct_dose import check_hu
from medimg.tasks.reconstruct.ct import data as D

__all__ = ["DEFAULT_DIR", "check_ct_input", "denoise_image", "denoise_slices", "load_model"]
__all__ += ["predict_path"]

DEFAULT_DIR = Path(__file__).parent / "default"


def _folder(path: str | Path | None) -> Path:
    if path is None:
        path = "redcnn"
    p = Path(path)
    if not p.exists() and str(path) in ("redcnn", "wgan"):
        p = DEFAULT_DIR / str(path)
    if not (p / "config.yaml").is_file():
        raise InputError(
            "not a CT model folder (config.yaml missing); pass a training run folder", p
        )
    return p


def load_model(
    path: str | Path | None = None, *, device: str = "cpu", backend: str = "torch"
) -> tuple[nn.Module, object]:
    """``(network in eval mode, CTTrainConfig)`` of a model folder; for a GAN the generator.
    ``backend="onnxruntime"`` (or an exported ``.onnx`` path): the network runs in ONNX
    Runtime, its config read from the file's sidecar."""
    from medimg.deploy.runtime import check_backend
    from medimg.tasks.reconstruct.ct.train import CTTrainConfig, build_for

    dev = resolve_device(device)  # one line when CUDA is asked for and missing
    if check_backend(backend) == "onnxruntime" or str(path).lower().endswith(".onnx"):
        from medimg.deploy.runtime import open_onnx

        ort_net, side = open_onnx(path, "recon-ct", device=str(dev))
        return ort_net, from_yaml(CTTrainConfig, side["config"])
    folder = _folder(path)
    cfg = from_yaml(CTTrainConfig, folder / "config.yaml")
    net = load_weights(build_for(cfg), folder)
    if cfg.model == "wgan":
        net = net.generator  # type: ignore[assignment]
    return net.to(dev).eval(), cfg


def denoise_slices(net: nn.Module, hu: np.ndarray, *, batch: int = 4) -> np.ndarray:
    """Apply an image-domain network to ``(N, H, W)`` HU slices; returns float32 HU."""
    from medimg.tasks.reconstruct.ct.models import LearnedPrimalDual

    if isinstance(net, LearnedPrimalDual):
        raise InputError(
            "an lpd model reconstructs from sinograms, not images; use evaluate or "
            "LearnedPrimalDual(y, physics, x0) from Python"
        )
    arr = np.asarray(hu, dtype=np.float32)
    need = int(getattr(net, "min_size", 1))
    if arr.ndim != 3 or min(arr.shape[1:], default=0) < need:
        raise InputError(
            f"slices of {'x'.join(map(str, arr.shape[1:]))} pixels are too small for this model "
            f"(it needs at least {need}x{need}); give a larger image"
        )
    # an ONNX Runtime network has no parameters: it takes host tensors
    dev = next(net.parameters(), torch.zeros(())).device
    out = np.empty_like(arr)
    with torch.no_grad():
        for a in range(0, len(arr), batch):
            x = D.to_net(arr[a : a + batch])[:, None].to(dev)
            out[a : a + batch] = D.from_net(net(x))[:, 0].cpu().numpy()
    return out


def _dicom_rescale_missing(path: Path) -> bool:
    """True when the (first) DICOM file has no RescaleSlope/Intercept: stored values, not HU."""
    import pydicom

    files = [path] if path.is_file() else sorted(f for f in path.iterdir() if f.is_file())
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:
            continue
        return "RescaleIntercept" not in ds or "RescaleSlope" not in ds
    return False


def check_ct_input(image, source: Path, *, assume_hu: bool = False) -> None:
    """Refuse, in one line, what is not CT in HU: NaN/Inf, missing DICOM rescale, normalised or
    non-negative-only values (stored values without the rescale: air must be near -1000)."""
    image.check_finite(str(source))
    if image.modality not in ("CT", "OT"):
        raise InputError(f"modality is {image.modality}, not CT; this model denoises CT", source)
    if (
        source.is_dir() or source.suffix.lower() in (".dcm", ".ima", "")
    ) and _dicom_rescale_missing(source):
        raise InputError(
            "DICOM has no RescaleSlope/RescaleIntercept, so no HU scale; add them", source
        )
    try:
        check_hu(image.array, "image")
    except InputError as exc:
        raise InputError(str(exc), source) from None
    if not assume_hu and float(image.array.min()) >= 0.0:
        raise InputError(
            "no value below 0, so no air at -1000 HU: stored values without the HU rescale? "
            "apply slope/intercept, or pass --assume-hu if this really is HU", source
        )  # fmt: skip


def _trained_pixel_range(cfg: object) -> tuple[float, float]:
    """Pixel sizes (mm) a model saw: the bank's real and phantom ranges, else the phantoms'."""
    if getattr(cfg, "data", None) == "bank":
        bank = cfg.bank  # type: ignore[attr-defined]
        sizes = [*bank.real_pixel_mm, *bank.phantom_pixel_mm]
        return float(min(sizes)), float(max(sizes))
    pix = float(cfg.sim.pixel_mm)  # type: ignore[attr-defined]
    return pix, pix


def denoise_image(
    net: torch.nn.Module, cfg: object, image: Image, src: Path, *, assume_hu: bool = False
) -> Image:
    """The denoised CT on ``image``'s grid, in HU, after the checks every caller needs: real,
    one channel, HU-like values (``assume_hu`` skips that), 2D/3D, large enough for ``net``;
    a note on stderr when the pixels are far from the training spacing. ``src`` names the
    input in messages. Axial planes go through :func:`denoise_slices`."""
    from medimg.io.inputs import check_real

    check_real(image.array, src, what="CT denoising")
    if image.num_channels != 1:
        raise InputError(f"expected one channel, got {image.num_channels}", src)
    check_ct_input(image, src, assume_hu=assume_hu)
    need = int(getattr(net, "min_size", 1))
    if min(image.array.shape[1:3]) < need:
        raise InputError(
            f"image of {'x'.join(map(str, image.array.shape[1:]))} voxels is too small for the "
            f"{cfg.model} model (slices of at least {need}x{need}); give a larger image",  # type: ignore[attr-defined]
            src,
        )
    sx, sy = image.spacing[:2]
    lo, hi = _trained_pixel_range(cfg)
    if not (0.5 * lo <= min(sx, sy) and max(sx, sy) <= 2 * hi):
        trained = f"{lo:g} mm" if lo == hi else f"{lo:g}-{hi:g} mm"
        print(
            f"note: pixels {sx:.2f}x{sy:.2f} mm, the model was trained at {trained}",
            file=sys.stderr,
        )
    vol = image.array[0].astype(np.float32)
    if vol.ndim not in (2, 3):
        raise InputError(f"expected a 2D or 3D image, got {vol.ndim} spatial axes", src)
    planes = vol[None] if vol.ndim == 2 else np.moveaxis(vol, -1, 0)  # (Z, X, Y) axial planes
    den = denoise_slices(net, planes)
    den = den[0] if vol.ndim == 2 else np.moveaxis(den, 0, -1)
    from medimg.engine.provenance import model_tag

    result = image.with_array(den[None].astype(np.float32))
    result.modality = "CT"
    # which model denoised it: NIfTI descrip, DICOM Series Description
    tag = getattr(net, "tag", None) or model_tag("recon-ct", cfg.model, [net])  # type: ignore[attr-defined]
    result.meta = {**result.meta, "description": tag}
    return result


def predict_path(
    input_path: str | Path,
    output: str | Path,
    *,
    model: str | Path | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    assume_hu: bool = False,
    backend: str = "torch",
) -> Path:
    """Denoise a CT image file or DICOM series; write NIfTI (by extension) or a DICOM series
    folder (no extension) on the input's grid, in HU. ``backend``: ``torch`` or
    ``onnxruntime`` (``model`` an exported ``.onnx``, or a model exported in memory)."""
    from medimg.io.api import load, save
    from medimg.tasks.reconstruct.outputs import check_image_outputs

    src = Path(input_path)
    check_image_outputs([output], inputs=[src], overwrite=overwrite)
    net, cfg = load_model(model, device=device, backend=backend)
    image = load(src)
    result = denoise_image(net, cfg, image, src, assume_hu=assume_hu)
    return save(result, output, overwrite=overwrite, **_dicom_options(image, output))


def _dicom_options(image: Image, output: str | Path) -> dict[str, str]:
    """A DICOM output joins the input's study and frame of reference (same patient, same grid)."""
    if Path(output).suffix or str(output).lower().endswith(".nii.gz"):
        return {}
    opts: dict[str, str] = {}  # the Series Description names the model (image.meta)
    for key in ("study_uid", "frame_of_reference_uid", "patient_id"):
        if image.meta.get(key):
            opts[key] = str(image.meta[key])
    return opts
