"""The ONNX Runtime backend: an exported file (and its sidecar JSON) as a network ``predict``
calls in place of the torch one.

:class:`OrtNetwork` is an ``nn.Module`` whose forward runs an ONNX Runtime session, so the
sliding window, resampling and post-processing of ``predict`` stay the same code: only the
network call changes. The sidecar (``<file>.json``) holds what predict needs besides the graph:
the task, the model tag, the weights digest, the input layout and the plan / config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medimg.errors import InputError

__all__ = ["BACKENDS", "OrtNetwork", "check_backend", "make_session", "open_onnx", "read_sidecar",
           "sidecar_path"]  # fmt: skip

BACKENDS = ("torch", "onnxruntime")


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


def sidecar_path(model_file: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` (``model.pt`` -> ``model.pt.json``)."""
    p = Path(model_file)
    return p.with_name(p.name + ".json")


def read_sidecar(model_file: str | Path) -> dict[str, Any]:
    """The sidecar JSON of an exported file (one-line error when missing or unreadable)."""
    side = sidecar_path(model_file)
    if not side.is_file():
        raise InputError(
            f"no sidecar {side.name} beside the exported file; export again with medimg export",
            model_file,
        )
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"sidecar is not valid JSON ({exc})", side) from None
    if not isinstance(data, dict) or "task" not in data:
        raise InputError("sidecar has no 'task'; export again with medimg export", side)
    return data


def make_session(model: str | Path | bytes, threads: int | None = None, device: str = "cpu"):
    """An ONNX Runtime session on ``threads`` CPU threads (default: torch's thread count, which
    ``--threads`` sets), CUDA when ``device`` is a GPU and ONNX Runtime has its provider."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # warnings about unused initializers are noise to users
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, opts, providers=providers)
    except Exception as exc:  # a corrupt or foreign file: ORT raises its own exception types
        where = None if isinstance(model, bytes) else Path(model)
        raise InputError(f"ONNX Runtime cannot load the file ({' '.join(str(exc).split())[:200]})",
                         where) from None  # fmt: skip


class OrtNetwork(nn.Module):
    """An ONNX Runtime session behind the ``nn.Module`` call of the torch network it replaces
    (float32 tensors in and out, on the caller's device). ``tag`` names the model in outputs;
    ``min_size`` is the smallest spatial size it takes."""

    def __init__(self, session: Any, sidecar: dict[str, Any]) -> None:
        super().__init__()
        self.session, self.sidecar = session, sidecar
        self.input_names = [i.name for i in session.get_inputs()]
        self.input_name = self.input_names[0]
        self.tag = str(sidecar.get("model_tag", "onnx model"))
        self.min_size = int(sidecar.get("input", {}).get("min_size", 1))

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        """The graph's first output for its inputs in order (most graphs take one)."""
        feeds = {name: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
                 for name, x in zip(self.input_names, xs)}  # fmt: skip
        y = self.session.run(None, feeds)[0]
        return torch.from_numpy(y).to(xs[0].device)


def open_onnx(
    model: str | Path | None, task: str, *, device: str = "cpu"
) -> tuple[OrtNetwork, dict[str, Any]]:
    """``(network, sidecar)`` for ``predict --backend onnxruntime``.

    ``model`` is an exported ``.onnx`` file (its sidecar beside it), or a model name / folder
    as ``predict --model`` takes it: then the folder's own ``model.onnx`` when it has one, else
    an fp32 export made in memory now (seconds to a minute; export once with ``medimg export``
    to skip it)."""
    path = Path(str(model)) if model is not None else None
    if path is not None and path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise InputError("ONNX file not found", path)
        side = read_sidecar(path)
        source: str | Path | bytes = path
    elif path is not None and (path / "model.onnx").is_file():
        return open_onnx(path / "model.onnx", task, device=device)
    else:
        from medimg.deploy.export import onnx_bytes, sidecar_for
        from medimg.deploy.targets import resolve_target

        target = resolve_target(_default_name(task) if model is None else model)
        source, side = onnx_bytes(target), sidecar_for(target, "onnx", None)
    if side.get("task") != task:
        raise InputError(
            f"this file holds a {side.get('task')} model, not a {task} model", path or task
        )
    if side.get("format") != "onnx":
        raise InputError("the onnxruntime backend runs .onnx files; this is not one", path)
    return OrtNetwork(make_session(source, device=device), side), side


def _default_name(task: str) -> str:
    return {"segment": "segment", "recon-ct": "redcnn", "register": "register",
            "detect": "detect", "diagnose": "diagnose", "recon-mri": "mri"}[task]  # fmt: skip
