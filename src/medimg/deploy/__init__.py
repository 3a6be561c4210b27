"""Deployment: export to ONNX (fp32 / int8) or TorchScript, and the ONNX Runtime backend of
``predict`` (:mod:`.export`, :mod:`.runtime`, :mod:`.quantize`, :mod:`.parity`)."""

from __future__ import annotations

from typing import Any

__all__ = ["export_model", "open_onnx"]


def export_model(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See :func:`medimg.deploy.export.export_model` (imported here lazily: torch is heavy)."""
    from medimg.deploy.export import export_model as run

    return run(*args, **kwargs)


def open_onnx(*args: Any, **kwargs: Any) -> Any:
    """See :func:`medimg.deploy.runtime.open_onnx`."""
    from medimg.deploy.runtime import open_onnx as run

    return run(*args, **kwargs)
