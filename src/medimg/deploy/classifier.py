"""The diagnosis classifier in ONNX with its out-of-distribution features, and its ONNX Runtime
side for ``diagnose predict --backend onnxruntime``.

The safeguard of a diagnosis model scores the pooled feature maps of the encoder stages (read
by :class:`~medimg.tasks.diagnose.safeguard.FeatureHooks` in torch). An ONNX Runtime session
has no hooks, so the exported graph returns them: one output ``(B, K + F)``, the ``K`` logits
then the ``F`` features the hooks collect (the same hooks run while the graph is traced). The
safeguard's statistics travel beside the file (``<file>.safeguard.safetensors``) and are read by
:meth:`~medimg.tasks.diagnose.safeguard.Safeguard.load`, so the score is the torch path's code.
Explanation maps that need gradients (LayerCAM, Grad-CAM) cannot run in ONNX Runtime; occlusion
(forward passes only) can.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["SAFEGUARD_SUFFIX", "ClassifierGraph", "OrtClassifier", "feature_count",
           "open_classifier"]  # fmt: skip

#: the safeguard's statistics beside an exported classifier: ``model.onnx.safeguard.safetensors``
SAFEGUARD_SUFFIX = "safeguard.safetensors"


class ClassifierGraph(nn.Module):
    """``model(x)`` -> ``(B, K + F)``: logits, then the safeguard's features (none when the
    model has no encoder stages the hooks read)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        from medimg.errors import InputError
        from medimg.tasks.diagnose.safeguard import FeatureHooks

        self.model = model
        try:
            FeatureHooks(model)
            self.hooked = True
        except InputError:
            self.hooked = False
        self.num_features = 0  # F, set by :func:`feature_count` once an input size is known

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from medimg.tasks.diagnose.safeguard import FeatureHooks

        if not self.hooked:
            return self.model(x)
        with FeatureHooks(self.model) as hooks:
            logits = self.model(x)
        feats = torch.cat([hooks.outputs[n] for n, _ in hooks.modules], dim=1)
        return torch.cat([logits.float(), feats], dim=1)


def feature_count(graph: ClassifierGraph, example: torch.Tensor, num_outputs: int) -> int:
    """``F``: the graph's output width minus the logits (0 without hooks); also stored."""
    if graph.hooked:
        with torch.no_grad():
            graph.num_features = int(graph.eval()(example).shape[1]) - num_outputs
    return graph.num_features


class OrtClassifier(nn.Module):
    """An exported classifier behind the torch model's call ``model(x, present)``: returns the
    logits and keeps the features of the last call in :attr:`last_features` ``(B, F)``."""

    def __init__(self, net: nn.Module, num_outputs: int) -> None:
        super().__init__()
        self.net, self.num_outputs = net, num_outputs
        self.last_features: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        out = self.net(x)
        self.last_features = out[:, self.num_outputs :] if out.shape[1] > self.num_outputs else None
        return out[:, : self.num_outputs]


def open_classifier(model: str | Path | None, device: str = "cpu") -> dict[str, Any]:
    """What :class:`~medimg.tasks.diagnose.predict.Diagnoser` needs for the onnxruntime backend:
    ``model`` (an :class:`OrtClassifier`), ``config``, ``tag``, ``folder`` (where outputs must
    not go) and ``safeguard`` (or None). ``model``: an exported ``.onnx`` (its sidecar and
    safeguard beside it) or a model folder / ``None`` (exported in memory now)."""
    from medimg.deploy.runtime import open_onnx
    from medimg.engine.config import from_yaml
    from medimg.errors import InputError
    from medimg.tasks.diagnose.predict import DEFAULT_MODEL
    from medimg.tasks.diagnose.safeguard import Safeguard
    from medimg.tasks.diagnose.train import DiagnoseConfig

    net, side = open_onnx(model, "diagnose", device=device)
    cfg = from_yaml(DiagnoseConfig, side["config"])
    if len(cfg.modalities) > 1 or cfg.supervision == "mil":
        raise InputError("the onnxruntime backend runs single-input classifiers only")
    path = Path(str(model)) if model is not None else DEFAULT_MODEL
    if path.suffix.lower() == ".onnx":
        folder = path  # the exported file: outputs must not replace it
        safeguard = _load_beside(path.with_name(f"{path.name}.{SAFEGUARD_SUFFIX}"))
    else:
        folder = path
        safeguard = Safeguard.load(path)
    if safeguard is not None and not int(side.get("features", 0)):
        safeguard = None  # an export without the features (a model without encoder stages)
    return {"model": OrtClassifier(net, int(cfg.num_outputs)), "config": cfg,
            "tag": str(side["model_tag"]), "folder": folder, "safeguard": safeguard}  # fmt: skip


def _load_beside(file: Path) -> Any:
    """The safeguard stored as ``file`` (``Safeguard.load`` reads a folder's fixed name)."""
    from medimg.tasks.diagnose.safeguard import FILE_NAME, Safeguard

    if not file.is_file():
        return None
    with tempfile.TemporaryDirectory(prefix="medimg-safeguard-") as tmp:
        shutil.copyfile(file, Path(tmp) / FILE_NAME)
        return Safeguard.load(tmp)
