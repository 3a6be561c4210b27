"""Whole-volume inference: sliding window -> heatmap peaks -> candidates in world mm -> NMS.

The prepared volume (:func:`.data.prepare`) goes through MONAI's ``sliding_window_inference``
(Gaussian-weighted blending of overlapping windows); optional test-time flips average the
heatmap/size maps of the flipped passes (offsets flipped back with their sign). Peaks are voxels
equal to the maximum of their 3x3x3 neighbourhood with a score above ``min_score``; each gives a
centre ``voxel + offset`` and a diameter ``exp(size)``, mapped to RAS+ mm by the prepared affine.
Duplicates are merged by 3D NMS on the cube boxes ``centre +- diameter/2`` (IoU > ``nms_iou``),
best ``max_candidates`` kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medimg.io.image import Image
from medimg.metrics.detection import centers_to_boxes, nms
from medimg.tasks.detect.data import Prepared, prepare

__all__ = ["Candidate", "InferenceConfig", "decode", "detect_prepared", "detect_volume"]


@dataclass
class InferenceConfig:
    """Inference settings (stored in a model folder's ``config.yaml``)."""

    window: int = 96
    overlap: float = 0.25
    min_score: float = 0.02
    max_candidates: int = 60
    nms_iou: float = 0.05
    flips: bool = False


@dataclass(frozen=True)
class Candidate:
    """A finding: centre in RAS+ mm, diameter mm, score in [0, 1]."""

    center_ras: tuple[float, float, float]
    diameter_mm: float
    score: float

    @property
    def center_lps(self) -> tuple[float, float, float]:
        x, y, z = self.center_ras
        return (-x, -y, z)


def _maps(model: torch.nn.Module, x: torch.Tensor, cfg: InferenceConfig) -> torch.Tensor:
    from monai.inferers import sliding_window_inference

    # windows a multiple of 16 (the UNet's total stride); MONAI pads a smaller volume up to them
    roi = tuple(min(cfg.window, -(-s // 16) * 16) for s in x.shape[2:])
    run = lambda t: sliding_window_inference(  # noqa: E731
        t, roi, 1, model, overlap=cfg.overlap, mode="gaussian", padding_mode="replicate"
    )
    out = run(x)
    out[:, 0] = torch.sigmoid(out[:, 0])
    if not cfg.flips:
        return out
    for ax in (2, 3, 4):
        o = run(torch.flip(x, (ax,))).flip((ax,))
        o[:, 0] = torch.sigmoid(o[:, 0])
        o[:, 2 + ax - 2] = -o[:, 2 + ax - 2]  # the offset along a flipped axis changes sign
        out = out + o
    return out / 4


def decode(maps: np.ndarray, prep: Prepared, cfg: InferenceConfig) -> list[Candidate]:
    """Peaks of ``maps`` (5, X, Y, Z) -> candidates in world mm after NMS (module doc)."""
    heat = torch.from_numpy(np.ascontiguousarray(maps[0]))[None, None]
    peak = (heat == F.max_pool3d(heat, 3, stride=1, padding=1)) & (heat >= cfg.min_score)
    idx = np.argwhere(peak[0, 0].numpy())
    if idx.size == 0:
        return []
    scores = maps[0][tuple(idx.T)]
    top = np.argsort(-scores, kind="stable")[: 4 * cfg.max_candidates]
    idx, scores = idx[top], scores[top]
    centre_vox = idx + maps[2:5][(slice(None), *idx.T)].T
    dia_mm = np.exp(maps[1][tuple(idx.T)]) * prep.spacing
    centre = centre_vox @ prep.affine[:3, :3].T + prep.affine[:3, 3]
    keep = nms(centers_to_boxes(centre, dia_mm), scores, cfg.nms_iou, cfg.max_candidates)
    return [Candidate(tuple(float(v) for v in centre[i]), float(dia_mm[i]), float(scores[i]))  # type: ignore[arg-type]
            for i in keep]  # fmt: skip


@torch.inference_mode()
def detect_prepared(
    model: torch.nn.Module,
    prep: Prepared,
    cfg: InferenceConfig | None = None,
    device: str | torch.device = "cpu",
) -> list[Candidate]:
    """Candidates of one prepared volume (the model is put in eval mode)."""
    cfg = cfg or InferenceConfig()
    was_training = model.training
    model.eval()
    try:
        x = torch.from_numpy(prep.x)[None, None].to(device)
        maps = _maps(model, x, cfg)[0].float().cpu().numpy()
    finally:
        model.train(was_training)
    return decode(maps, prep, cfg)


def detect_volume(
    model: torch.nn.Module,
    image: Image,
    spacing: float,
    cfg: InferenceConfig | None = None,
    device: str | torch.device = "cpu",
) -> list[Candidate]:
    """Candidates of a CT :class:`Image` in HU (resampled to the model's ``spacing`` mm)."""
    return detect_prepared(model, prepare(image, spacing), cfg, device)


def load_model_folder(folder: str | Path) -> tuple[torch.nn.Module, dict]:
    """``(model, config dict)`` from a model folder (``config.yaml`` + ``model.safetensors``)."""
    import yaml

    from medimg.engine import load_weights
    from medimg.errors import CheckpointError
    from medimg.tasks.detect.models import build_detector

    f = Path(folder)
    cfg_path = f / "config.yaml"
    weights = f / "model.safetensors"
    if not weights.is_file():
        for sub in ("best", "last"):
            if (f / sub / "model.safetensors").is_file():
                weights = f / sub / "model.safetensors"
                break
    if not cfg_path.is_file() or not weights.is_file():
        raise CheckpointError("not a detection model folder (config.yaml + model.safetensors)", f)
    try:
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
        channels = tuple(int(c) for c in cfg["model"]["channels"])
        float(cfg["model"]["spacing"])
        InferenceConfig(**dict(cfg.get("inference") or {}))
    except (yaml.YAMLError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise CheckpointError(
            "config.yaml is not a detection model's (needs model.channels, model.spacing and "
            "valid inference settings); use a folder written by 'medimg detect train'",
            cfg_path,
        ) from None
    try:
        model = build_detector(channels)
    except (ValueError, TypeError, RuntimeError) as exc:  # torch's words for impossible shapes
        raise CheckpointError(f"describes no buildable model ({exc})", cfg_path) from None
    load_weights(model, weights)
    return model.eval(), cfg


def load_onnx(
    model: str | Path | None, backend: str, device: str
) -> tuple[torch.nn.Module, dict, str]:
    """``(network, config dict, model tag)`` for ``--backend onnxruntime``: an exported
    ``.onnx`` (its sidecar holds the config), or a model folder exported now; the sliding
    window, flips, decoding and NMS above stay the same."""
    from medimg.deploy.runtime import check_backend, open_onnx

    check_backend(backend)
    net, side = open_onnx(model, "detect", device=device)
    return net, side["config"], net.tag
