"""Inference with the learned beamformer: 3 plane waves in, a 75-angle-compound-like envelope out.

The model folder holds ``config.yaml`` (:class:`~.train.LearnedConfig`) and
``model.safetensors``; the shipped one is ``default/learned`` (see its MODEL_CARD.md). Input
contract: plane-wave channel data of a linear array near the training probe (128 elements, 0.3
mm pitch, 5.2 MHz) with transmits spanning about +-16 degrees; the three used are the first,
middle and last of the file's angles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medimg.errors import InputError
from medimg.physics.ultrasound import ChannelData
from medimg.physics.ultrasound_das import Grid, beamform, to_baseband
from medimg.tasks.reconstruct.us.models import DB_SCALE, LearnedBeamformer, features

__all__ = ["DEFAULT_MODEL", "learned_bmode", "load_learned"]

DEFAULT_MODEL = Path(__file__).parent / "default" / "learned"


def load_learned(path: str | Path | None = None) -> torch.nn.Module:
    """The network of a model folder (or training run: its ``best/``), in eval mode; a
    ``.onnx`` file from ``medimg export us-learned`` runs in ONNX Runtime instead."""
    from medimg.engine import find_checkpoint, from_yaml, load_weights
    from medimg.tasks.reconstruct.us.train import LearnedConfig

    if str(path).lower().endswith(".onnx"):
        from medimg.deploy.runtime import open_onnx
        from medimg.deploy.targets_more import OrtBeamformer

        return OrtBeamformer(open_onnx(path, "recon-us")[0])
    folder = Path(path) if path is not None else DEFAULT_MODEL
    if not (folder / "config.yaml").is_file():
        raise InputError("not a learned-beamformer folder (config.yaml missing)", folder)
    cfg = from_yaml(LearnedConfig, folder / "config.yaml")
    net = LearnedBeamformer(tuple(cfg.features))
    ckpt = folder if (folder / "model.safetensors").is_file() else find_checkpoint(folder / "best")
    if ckpt is None:
        raise InputError("no model.safetensors here or in best/", folder)
    load_weights(net, ckpt)
    return net.eval()


def learned_bmode(
    data: ChannelData, grid: Grid, model: str | Path | torch.nn.Module | None = None
) -> np.ndarray:
    """Linear envelope ``(n_x, n_z)`` from 3 of the file's plane waves (first, middle, last)."""
    if data.transmits.kind != "plane" or len(data.transmits) < 3:
        raise InputError("the learned beamformer needs >= 3 plane-wave transmits")
    n = len(data.transmits)
    idx = [0, n // 2, n - 1]
    sub = data.subset(idx)
    iq = to_baseband(sub)
    iqs = beamform(sub, grid.x, grid.z, iq=iq, compound=False)
    net = model if isinstance(model, torch.nn.Module) else load_learned(model)
    with torch.no_grad():
        out = net(torch.from_numpy(features(iqs))[None])[0, 0].numpy()
    return (10 ** (out * DB_SCALE / 20)).astype(np.float32)
