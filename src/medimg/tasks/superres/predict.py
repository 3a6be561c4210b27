"""Restore thin slices: interpolation baselines, the supervised network, SMORE.

:func:`predict_volume` takes an :class:`~medimg.io.image.Image` (or a path: NIfTI, NRRD/MHA, a
DICOM series) with thick slices along one axis and returns the volume on the thin grid of
:func:`~.degrade.thin_affine`: ``factor`` times more slices over the same world extent, the
in-plane grid and the intensities' units (HU for CT) unchanged.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.tasks.superres.baselines import INTERPOLATORS, cubic_upsample
from medimg.tasks.superres.degrade import check_factor, thin_affine
from medimg.tasks.superres.models import SRNet
from medimg.tasks.superres.train import SRConfig, intensity_scale

__all__ = [
    "DEFAULT_MODEL",
    "METHODS",
    "apply_network",
    "load_model",
    "predict_file",
    "predict_volume",
    "restore",
    "slice_axis",
]

DEFAULT_MODEL = Path(__file__).parent / "default"
METHODS = ("cubic", "sinc", "supervised", "smore")
#: SMORE's step budget by default: about 3 CPU minutes (one thread), whatever the volume size
SMORE_STEPS = 200


def load_model(path: str | Path | None = None) -> SRNet:
    """The network of a model folder or training run (its ``best/``), in eval mode, with its
    :class:`~.train.SRConfig` as ``.config``."""
    from medimg.engine import find_checkpoint, from_yaml, load_weights

    folder = Path(path) if path is not None else DEFAULT_MODEL
    if not (folder / "config.yaml").is_file():
        raise InputError("not a super-resolution model folder (config.yaml missing)", folder)
    cfg = from_yaml(SRConfig, folder / "config.yaml")
    net = SRNet(cfg.width, tuple(cfg.dilations))
    ckpt = folder if (folder / "model.safetensors").is_file() else (
        find_checkpoint(folder / "best") or find_checkpoint(folder / "last"))  # fmt: skip
    if ckpt is None:
        raise InputError("no model.safetensors here or in best/ or last/", folder)
    load_weights(net, ckpt)
    net.config = cfg
    return net.eval()


def apply_network(net: SRNet, upsampled: np.ndarray, axis: int, batch: int = 8) -> np.ndarray:
    """Run ``net`` over every plane containing ``axis`` of the interpolated volume, cut across
    both other axes, and average the two (as SMORE does)."""
    scale = intensity_scale(upsampled)
    vol = torch.from_numpy(np.ascontiguousarray(upsampled / scale, dtype=np.float32))
    outs = []
    for cut in (a for a in range(3) if a != axis):
        pos = axis + 1 if axis < cut else axis  # where ``axis`` is once ``cut`` comes first
        planes = vol.movedim(cut, 0).movedim(pos, 1)
        res = torch.empty_like(planes)
        with torch.no_grad():
            for i in range(0, planes.shape[0], batch):
                res[i : i + batch] = net(planes[i : i + batch, None])[:, 0]
        outs.append(res.movedim(1, pos).movedim(0, cut))
    return (0.5 * (outs[0] + outs[1])).numpy() * scale


def slice_axis(image: Image) -> int:
    """The axis with the largest voxel spacing (the thick slices'); refuses a volume whose
    spacing does not tell (name the axis then)."""
    sp = np.asarray(image.spacing[:3], float)
    order = np.argsort(sp)
    if sp[order[2]] < 1.5 * sp[order[1]]:
        sizes = "x".join(f"{s:.2f}" for s in sp)
        raise InputError(f"voxel spacing {sizes} mm shows no thick-slice axis; name it (--axis)")
    return int(order[2])


def _check_volume(image: Image) -> None:
    if image.spatial_ndim != 3 or min(image.spatial_shape) < 2:
        raise InputError(f"super-resolution needs a 3D volume; got {image.spatial_shape} voxels")


def restore(thick: np.ndarray, axis: int, factor: int, method: str = "supervised", *,
            model: str | Path | SRNet | None = None, smore_steps: int = SMORE_STEPS,
            smore_init: str | Path | SRNet | None = None, seed: int = 0) -> np.ndarray:  # fmt: skip
    """``factor`` x more slices along ``axis`` of the 3D array ``thick`` by ``method``."""
    factor = check_factor(factor)
    if method in INTERPOLATORS:
        return INTERPOLATORS[method](thick, axis, factor)
    if method == "supervised":
        net = model if isinstance(model, SRNet) else load_model(model)
        trained = getattr(net, "config", SRConfig()).factor
        if trained != factor:
            raise InputError(f"the model restores {trained}x, not {factor}x; use --method smore, "
                             "cubic or sinc, or train one for this factor")  # fmt: skip
        return apply_network(net, cubic_upsample(thick, axis, factor), axis)
    if method == "smore":
        from medimg.tasks.superres.train import train_smore

        cfg = SRConfig(factor=factor)
        cfg.train = replace(cfg.train, max_steps=smore_steps, val_every=smore_steps,
                            checkpoint_every=smore_steps, progress=False, seed=seed,
                            warmup_steps=min(20, smore_steps // 10))  # fmt: skip
        init = None
        if smore_init is not None:  # a copy: the caller's network stays as it was
            init = copy.deepcopy(
                smore_init if isinstance(smore_init, SRNet) else load_model(smore_init)
            )
            cfg = replace(cfg, width=init.config.width, dilations=tuple(init.config.dilations))
        net = train_smore(thick, axis, cfg, init=init)
        return apply_network(net, cubic_upsample(thick, axis, factor), axis)
    raise InputError(f"method {method!r} must be one of {', '.join(METHODS)}")


def predict_volume(image: Image | str | Path, factor: int | None = None, method: str = "supervised",
                   *, axis: int | None = None, model: str | Path | SRNet | None = None,
                   smore_steps: int = SMORE_STEPS,
                   smore_init: str | Path | SRNet | None = None) -> Image:  # fmt: skip
    """Thin slices from thick ones: the returned image has ``factor`` x the slices along the
    slice ``axis`` (default: the one with the largest spacing) and ``factor`` x smaller spacing
    there, over the same world extent. ``factor`` defaults to the thick / in-plane spacing
    ratio, rounded. ``smore_init``: a model (folder) SMORE starts from instead of the identity."""
    if not isinstance(image, Image):
        from medimg.io.api import load

        image = load(image)
    _check_volume(image)
    image.check_finite()
    axis = slice_axis(image) if axis is None else axis
    if axis not in (0, 1, 2):
        raise InputError(f"axis {axis} must be 0, 1 or 2")
    if factor is None:
        sp = np.asarray(image.spacing[:3], float)
        factor = round(float(sp[axis]) / min(float(s) for a, s in enumerate(sp) if a != axis))
    factor = check_factor(factor)
    if method == "supervised" and not isinstance(model, SRNet):
        model = load_model(model)
    channels = [restore(np.asarray(c, np.float32), axis, factor, method, model=model,
                        smore_steps=smore_steps, smore_init=smore_init)
                for c in image.array]  # fmt: skip
    return Image(np.stack(channels), thin_affine(image.affine, axis, factor),
                 modality=image.modality, meta=dict(image.meta))  # fmt: skip


def predict_file(source: str | Path, output: str | Path, *, overwrite: bool = False,
                 **options) -> Path:  # fmt: skip
    """Read ``source``, restore it (:func:`predict_volume` ``options``), write ``output`` (NIfTI,
    MHA/NRRD) whole or not at all."""
    from medimg.io.api import load, save
    from medimg.io.output import check_outputs

    check_outputs([output], inputs=[source], overwrite=overwrite)
    if not str(output).endswith((".nii", ".nii.gz", ".mha", ".mhd", ".nrrd")):
        raise InputError("name the output .nii.gz (or .mha / .nrrd)", output)
    result = predict_volume(load(source), **options)
    return save(result, output, overwrite=overwrite)
