"""``medimg export``: a model as ONNX (fp32, or int8 by ONNX Runtime quantisation) or
TorchScript, with a sidecar JSON so ``predict --backend onnxruntime`` runs the file alone, and
a parity report (torch vs ONNX fp32 vs ONNX int8).

ONNX export goes through ``torch.onnx.export(dynamo=True)`` with dynamic batch and spatial axes
(each spatial size a multiple of the network's total pooling stride, as in torch); one file,
weights inside (no ``.data`` beside it).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from medimg.deploy.runtime import sidecar_path
from medimg.deploy.targets import ExportTarget, resolve_target
from medimg.errors import InputError

__all__ = ["FORMATS", "INT8_MODES", "coarse_path", "export_model", "extra_path", "onnx_bytes",
           "sidecar_for"]  # fmt: skip

FORMATS = ("onnx", "torchscript", "monai-bundle")
INT8_MODES = ("dynamic", "static")
OPSET = 18


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's progress lines and warnings (torchvision ops missing, deprecations) say
    nothing to a user of ``medimg export``; errors still raise."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo",
                                              "torch.fx.experimental.symbolic_shapes")]  # fmt: skip
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _dynamic_shapes(target: ExportTarget) -> tuple[dict[int, Any], ...]:
    Dim = torch.export.Dim
    dims: dict[int, Any] = {0: Dim("batch", min=1, max=4096)}
    for i, m in enumerate(target.multiple_of):
        low = max(target.min_size, 2)
        if m > 1:
            dims[i + 2] = m * Dim(f"k{i}", min=max(1, -(-low // m)), max=65536 // m)
        else:
            dims[i + 2] = Dim(f"s{i}", min=low, max=65536)
    return (dims,)


#: fp32 graphs exported in this process, by (task, weights digest, settings): exporting the
#: same weights again (fp32, then int8 static and dynamic) reuses the graph (seconds each)
_EXPORTED: dict[str, bytes] = {}


def onnx_bytes(target: ExportTarget) -> bytes:
    """The fp32 ONNX graph of ``target`` (dynamic batch and spatial axes), serialised."""
    key = json.dumps([target.task, target.digest, target.settings], sort_keys=True, default=str)
    if key not in _EXPORTED:
        if len(_EXPORTED) >= 4:
            _EXPORTED.pop(next(iter(_EXPORTED)))
        _EXPORTED[key] = _export_onnx(target)
    return _EXPORTED[key]


def _examples(target: ExportTarget) -> tuple[torch.Tensor, ...]:
    """The export-time inputs at batch 2 (torch.export specialises a size-1 axis to 1)."""
    ex = target.example if isinstance(target.example, tuple) else (target.example,)
    return tuple(t.expand(2, *t.shape[1:]).contiguous() for t in ex)


def _export_onnx(target: ExportTarget) -> bytes:
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(
                target.network.eval(), _examples(target), dynamo=True, opset_version=OPSET,
                dynamic_shapes=target.dynamic or _dynamic_shapes(target),
                input_names=list(target.input_names), output_names=["output"], optimize=True,
                verbose=False,
            )  # fmt: skip
    except Exception as exc:  # the exporter's errors are pages long: keep the first line
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise InputError(f"ONNX cannot express this {target.task} model: {first[:200]}") from None
    proto = program.model_proto
    for node in proto.graph.node:  # the exporter's per-node debug notes (torch stack, FX text)
        del node.metadata_props[:]  # are a fifth of an int8 file; the sidecar says what it is
        node.doc_string = ""
    return proto.SerializeToString()


def sidecar_for(target: ExportTarget, fmt: str, int8: str | None) -> dict[str, Any]:
    """What ``predict`` needs beside the exported graph (written as ``<file>.json``)."""
    import medimg

    precision = "fp32" if int8 is None else f"int8-{int8}"
    suffix = f" {fmt}" + ("" if int8 is None else "-int8")
    head = target.tag.rsplit(" sha1:", 1)[0]
    return {
        "format": fmt,
        "task": target.task,
        "model": target.name,
        "model_tag": f"{head[: 62 - len(suffix)]}{suffix} sha1:{target.digest}",
        "weights_sha1": target.digest,
        "precision": precision,
        "input": {
            "name": ", ".join(target.input_names),
            "layout": target.layout,
            "multiple_of": target.multiple_of,
            "min_size": target.min_size,
        },
        "output": target.output,
        "opset": OPSET if fmt == "onnx" else None,
        "medimg_version": medimg.__version__,
        **target.settings,
    }


def _check_args(fmt: str, int8: str | None) -> None:
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if int8 is not None and int8 not in INT8_MODES:
        raise InputError(f"int8 must be one of {', '.join(INT8_MODES)}, got {int8!r}")
    if int8 is not None and fmt == "monai-bundle":
        raise InputError("a MONAI bundle holds fp32 weights; int8 is for --format onnx")
    if int8 is not None and fmt != "onnx":
        raise InputError("int8 quantisation is done by ONNX Runtime: use --format onnx")


def report_path(out: str | Path) -> Path:
    p = Path(out)
    return p.with_name(p.name + ".parity.json")


def export_model(
    model: str | Path,
    out: str | Path,
    *,
    format: str = "onnx",
    int8: str | None = None,
    overwrite: bool = False,
    check: bool = True,
    check_samples: int = 2,
    calibration_samples: int = 4,
    calibration: str | Path | None = None,
) -> dict[str, Any]:
    """Export ``model`` (a shipped name or a model/run folder) to ``out``; write
    ``<out>.json`` (sidecar) and, with ``check``, ``<out>.parity.json`` (parity report on
    ``check_samples`` generated cases). ``int8``: ``dynamic`` or ``static`` (QDQ, calibrated
    on ``calibration_samples`` inputs from the task's generator, or from the images in the
    folder ``calibration``). Returns the report (or the sidecar when ``check`` is off).
    ``format="monai-bundle"`` writes the folder ``out`` instead (:mod:`medimg.deploy.bundle`;
    segmentation models only, no parity report)."""
    from medimg.io.output import check_outputs

    _check_args(format, int8)
    out = Path(out)
    if format == "monai-bundle":  # a folder, checked by MONAI's own loader in the tests
        from medimg.deploy.bundle import export_bundle

        export_bundle(model, out, overwrite=overwrite)
        return {"format": format, "bundle": str(out)}
    outputs = [out, sidecar_path(out)] + ([report_path(out)] if check else [])
    check_outputs(outputs, overwrite=overwrite)
    if calibration is not None and int8 != "static":
        raise InputError("a calibration folder is for --int8 static")
    target = resolve_target(model)
    if target.task == "recon-mri" and (format != "onnx" or int8 is not None):
        raise InputError("the MRI model exports as fp32 ONNX only (--format onnx, no --int8): "
                         "its data consistency needs float precision")  # fmt: skip
    outputs += [extra_path(out, k) for k in target.extra_files]
    check_outputs(outputs, overwrite=overwrite)
    if target.task == "register" and format != "onnx":
        raise InputError("a traced registration net would keep one image size (its sampling "
                         "grids are constants in a trace); use --format onnx")  # fmt: skip
    side = sidecar_for(target, format, int8)
    if target.coarse is not None:  # the stage it refines, as a file of its own beside it
        return _with_coarse(target, out, side, format=format, int8=int8, overwrite=overwrite,
                            check=check, check_samples=check_samples,
                            calibration_samples=calibration_samples,
                            calibration=calibration)  # fmt: skip
    return _export(target, out, side, format=format, int8=int8, overwrite=overwrite,
                   check=check, check_samples=check_samples,
                   calibration_samples=calibration_samples, calibration=calibration)  # fmt: skip


def extra_path(out: str | Path, key: str) -> Path:
    """``model.onnx`` -> ``model.onnx.<key>``: a file exported beside the model."""
    p = Path(out)
    return p.with_name(f"{p.name}.{key}")


def coarse_path(out: str | Path) -> Path:
    """``reg.onnx`` -> ``reg.coarse.onnx``: the coarse stage of an exported registration."""
    p = Path(out)
    return p.with_name(f"{p.stem}.coarse{p.suffix}")


def _with_coarse(target: ExportTarget, out: Path, side: dict[str, Any], **options: Any) -> dict:
    """Export the coarse stage to :func:`coarse_path` first, then ``target``; the coarse files
    go again if the second export fails (no half-exported model is left)."""
    from medimg.io.output import check_outputs

    first = coarse_path(out)
    files = [first, sidecar_path(first), report_path(first)]
    check_outputs([*files, out, sidecar_path(out), report_path(out)],
                  overwrite=options["overwrite"])  # fmt: skip
    assert target.coarse is not None
    coarse_report = export_model(target.coarse, first, **options)
    side["coarse"] = first.name
    try:
        report = _export(target, out, side, **options)
    except BaseException:
        for f in files:
            f.unlink(missing_ok=True)
        raise
    return {**report, "coarse": coarse_report} if options["check"] else report


def _export(
    target: ExportTarget,
    out: Path,
    side: dict[str, Any],
    *,
    format: str,
    int8: str | None,
    overwrite: bool,
    check: bool,
    check_samples: int,
    calibration_samples: int,
    calibration: str | Path | None,
) -> dict[str, Any]:
    from medimg.io.output import atomic_path

    calib: list = []
    if int8 == "static":  # before the export: a bad folder is refused at once
        if calibration is not None:
            from medimg.deploy.calibration import calibration_inputs

            calib = calibration_inputs(target, calibration, calibration_samples)
        else:
            calib = target.sample(calibration_samples, 0)
        side["calibration"] = f"{len(calib)} " + (
            f"inputs from the images in {Path(calibration).name}"
            if calibration is not None
            else "inputs generated for the task"
        )
    with tempfile.TemporaryDirectory(prefix="medimg-export-") as tmp:
        files: dict[str, Path] = {}
        if format == "torchscript":
            with _quiet(), torch.no_grad():
                traced = torch.jit.trace(target.network.eval(), target.example, check_trace=False)
            files["torchscript"] = Path(tmp) / "model.pt"
            traced.save(str(files["torchscript"]))
        else:
            files["onnx fp32"] = Path(tmp) / "fp32.onnx"
            files["onnx fp32"].write_bytes(onnx_bytes(target))
        if int8 is not None:
            from medimg.deploy.quantize import quantize

            files[f"onnx int8 {int8}"] = Path(tmp) / "int8.onnx"
            quantize(files["onnx fp32"], files[f"onnx int8 {int8}"], int8, calib)
        report = None
        if check:
            from medimg.deploy.parity import parity_report

            report = parity_report(target, files, samples=check_samples)
        final = files[list(files)[-1]]
        with atomic_path(out, overwrite) as t:
            t.write_bytes(final.read_bytes())
    for key, src in target.extra_files.items():
        with atomic_path(extra_path(out, key), overwrite) as t:
            t.write_bytes(Path(src).read_bytes())
    with atomic_path(sidecar_path(out), overwrite) as t:
        t.write_text(json.dumps(side, indent=1) + "\n", encoding="utf-8")
    if report is None:
        return side
    report = {"model": side["model_tag"], "file": str(out), **report}
    with atomic_path(report_path(out), overwrite) as t:
        t.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report
