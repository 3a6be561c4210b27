"""int8 by ONNX Runtime quantisation: ``dynamic`` (weights int8, activations quantised on the
fly; no calibration) or ``static`` (QDQ: weights per channel, activation ranges calibrated on a
few inputs drawn from the task's generator).

Only convolutions are quantised, and not all of them. Kept float: a convolution that reads a
single-channel image (the first layer: at 8 bits a CT input would step by ~12 HU) or writes a
single-channel one (RED-CNN's last layer: its residual is the denoising), and fixed filters
computed in the graph (RED-CNN's local-mean restoration blurs a few-HU residual). They are a
small share of the arithmetic and most of the rounding error.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medimg.errors import InputError

__all__ = ["quantize"]

_OPS = ["Conv", "ConvTranspose"]


def _float_nodes(path: Path) -> list[str]:
    """Names of the convolutions kept float (see the module docstring)."""
    import onnx

    model = onnx.load(str(path))
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type in _OPS and len(node.input) > 1:
            shape = shapes.get(node.input[1])
            # Conv weight (out, in, ...), ConvTranspose (in, out, ...): dim 1 is 1 for a
            # single-channel input (Conv) or output (ConvTranspose)
            if shape is None or len(shape) < 3 or shape[1] == 1:
                keep.append(node.name)
    return keep


class _Reader:
    """ONNX Runtime's calibration reader over a list of inputs."""

    def __init__(self, name: str, samples: Sequence[np.ndarray]) -> None:
        self.name, self.items = name, iter(list(samples))

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self.items, None)
        return None if x is None else {self.name: np.asarray(x, np.float32)}

    def rewind(self) -> None:  # pragma: no cover - ORT calls it only for some calibrators
        pass


def quantize(
    fp32: str | Path, out: str | Path, mode: str, calibration: Sequence[np.ndarray] = ()
) -> Path:
    """Quantise the fp32 ONNX file ``fp32`` into ``out`` (``mode``: ``dynamic`` / ``static``)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="medimg-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        # graph cleanup + ONNX shape inference (the symbolic pass cannot follow dynamic axes)
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        skip = _float_nodes(pre)
        if mode == "dynamic":
            quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["Conv"], nodes_to_exclude=skip)  # fmt: skip
        elif mode == "static":
            if not calibration:
                raise InputError("static int8 needs calibration inputs")
            reader = type("Reader", (_Reader, CalibrationDataReader), {})("input", calibration)
            quantize_static(str(pre), str(out), reader, quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            per_channel=True, op_types_to_quantize=_OPS,
                            nodes_to_exclude=skip)  # fmt: skip
        else:
            raise InputError(f"int8 mode must be dynamic or static, got {mode!r}")
    return Path(out)
