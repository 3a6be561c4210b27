"""Pixel data into a preallocated float32 volume, rescaled per slice, a few slices at a time.

The output ``(C, X, Y, Z)`` is allocated once, laid out so that each slice ``out[c, :, :, k]`` is
one contiguous block whose memory order equals DICOM's row-major pixel order; a slice is then
converted and rescaled in place with no full-volume temporaries (peak memory ~ the output).
Uncompressed little-endian monochrome slices are read straight from the file offset that the
header pass recorded (``np.frombuffer``/``readinto``); everything else (compressed syntaxes,
colour, float pixel data, multi-frame) goes through pydicom's pixel-data plugins. Slices are
decoded by a small thread pool: file reads, numpy conversion and the codecs release the GIL.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.pixels import get_decoder, iter_pixels, pixel_array
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLETransferSyntaxes,
)

from medimg.errors import DicomError
from medimg.io.dicom.headers import Frame, is_deflated, number
from medimg.io.native import held_stderr

_RAW_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
#: What to install for each compressed family (python-gdcm decodes all of them too).
PLUGIN_HINTS = {
    **dict.fromkeys(JPEGTransferSyntaxes, "pylibjpeg pylibjpeg-libjpeg"),
    **dict.fromkeys(JPEGLSTransferSyntaxes, "pylibjpeg pylibjpeg-libjpeg"),
    **dict.fromkeys(JPEG2000TransferSyntaxes, "pylibjpeg pylibjpeg-openjpeg"),
    **dict.fromkeys(RLETransferSyntaxes, "pylibjpeg pylibjpeg-rle"),
}
_local = threading.local()


def allocate(channels: int, cols: int, rows: int, slices: int) -> np.ndarray:
    """float32 ``(C, X, Y, Z)`` whose ``[c, :, :, k]`` planes are contiguous (X fastest)."""
    return np.empty((channels, slices, rows, cols), np.float32).transpose(0, 3, 2, 1)


def check_stored_sizes(frames: list[Frame]) -> None:
    """Uncompressed pixel data must hold what Rows x Columns x frames declare: checked from the
    header pass (element lengths), before the volume is allocated."""
    seen: set[Path] = set()
    for frame in frames:
        ds = frame.ds
        ts = UID(str(ds.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian)))
        if frame.path in seen or ts.is_compressed or "PixelData" not in ds:
            continue
        seen.add(frame.path)
        elem = ds.get_item("PixelData", keep_deferred=True)
        if isinstance(elem, RawDataElement):
            have = elem.length
        else:
            have = len(elem.value or b"")
        if have == 0xFFFFFFFF:  # undefined length: encapsulated, sized by its codec
            continue
        n = int(number(ds, "NumberOfFrames") or 1) if frame.index is not None else 1
        bits = int(ds.get("BitsAllocated", 16) or 16) * int(ds.get("SamplesPerPixel", 1) or 1)
        need = (frame.rows * frame.cols * bits * n + 7) // 8
        if have < need:
            raise DicomError(
                f"header declares {n} frame(s) of {frame.cols}x{frame.rows} pixels ({need} "
                f"bytes) but its pixel data holds {have} bytes; the file is truncated or its "
                "header corrupt, copy or export it again",
                frame.path,
            )


def check_decodable(frame: Frame) -> None:
    """Raise a one-line :class:`DicomError` if no installed plugin decodes this transfer syntax."""
    ts = UID(str(frame.ds.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian)))
    if not ts.is_compressed:
        return
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        decoder = None
    if decoder is not None and decoder.is_available:
        return
    hint = PLUGIN_HINTS.get(ts)
    fix = (
        f"install a plugin: pip install {hint} (or python-gdcm)"
        if hint
        else "no pydicom plugin decodes it; convert the files to an uncompressed syntax first "
        "(e.g. gdcmconv --raw or dcmdjpeg)"
    )
    raise DicomError(f"cannot decode pixel data in transfer syntax {ts.name} ({ts}): {fix}",
                     frame.path)  # fmt: skip


def _raw_view(frame: Frame) -> np.ndarray | None:
    """Stored values of an uncompressed monochrome slice as (rows, cols), or None if not one."""
    ds = frame.ds
    ba = int(ds.get("BitsAllocated", 0))
    if (
        frame.index is not None
        or ds.file_meta.get("TransferSyntaxUID") not in _RAW_SYNTAXES
        or ba not in (8, 16, 32)
        or int(ds.get("SamplesPerPixel", 1)) != 1
        or ds.get("PhotometricInterpretation") not in ("MONOCHROME1", "MONOCHROME2")
        or "PixelData" not in ds
    ):
        return None
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{ba // 8}")
    count = frame.rows * frame.cols
    elem = ds.get_item("PixelData", keep_deferred=True)
    if isinstance(elem, RawDataElement) and elem.value is None:  # deferred: read at its offset
        key = (dtype, count)
        if getattr(_local, "key", None) != key:  # one reusable buffer per worker thread
            _local.key, _local.buf = key, np.empty(count, dtype)
        buf = _local.buf
        with open(frame.path, "rb", buffering=0) as f:
            f.seek(elem.value_tell)
            got = f.readinto(buf)
    else:
        data = elem.value
        got = len(data)
        buf = np.frombuffer(data, dtype, count=min(count, got // dtype.itemsize))
    if got < count * dtype.itemsize:
        raise DicomError(
            f"truncated pixel data: {got} of {count * dtype.itemsize} bytes; "
            "copy or export the file again",
            frame.path,
        )
    bits = int(ds.get("BitsStored", ba))
    if bits < ba:  # clear unused high bits (overlays), sign-extend signed values
        buf = buf.copy() if not buf.flags.writeable else buf
        shift = ba - bits
        if signed:
            buf <<= shift
            buf >>= shift
        else:
            buf &= (1 << bits) - 1
    return buf.reshape(frame.rows, frame.cols)


def _store(dst: np.ndarray, arr: np.ndarray, frame: Frame) -> None:
    """Write one decoded slice (rows, cols[, samples]) into ``dst`` (C, X, Y), rescaled."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        n = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise DicomError(
            f"{n} NaN/Inf value(s) in the float pixel data; fix the file, or replace them "
            "(e.g. numpy.nan_to_num) before exporting",
            frame.path,
        )
    src = arr.T[None] if arr.ndim == 2 else arr.transpose(2, 1, 0)
    if src.shape != dst.shape:
        raise DicomError(
            f"decoded pixel data has shape {arr.shape}, expected {frame.rows}x{frame.cols}; "
            "the header does not match the pixel data",
            frame.path,
        )
    np.copyto(dst, src, casting="unsafe")
    if frame.slope != 1.0:
        dst *= np.float32(frame.slope)
    if frame.intercept != 0.0:
        dst += np.float32(frame.intercept)


def _decode_error(frame: Frame, exc: Exception) -> DicomError:
    return DicomError(
        f"cannot decode pixel data ({type(exc).__name__}: {exc}); the file may be truncated or "
        "corrupt, copy or export it again",
        frame.path,
    )


def _decoder_failed(exc: BaseException) -> bool:
    """Whether a pixel-data plugin failed on the data: any Exception, and a Rust codec's panic
    (pyo3's PanicException, e.g. pylibjpeg-rle on a damaged stream), which derives from
    BaseException so that ``except Exception`` lets it through. Interrupts are not failures."""
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def _load_single(frame: Frame, dst: np.ndarray) -> None:
    try:
        arr = _raw_view(frame)
        if arr is None:
            # pydicom's plugins; from the file they read only what they need, but a deflated
            # file can only be decoded from the dataset already inflated in memory
            arr = pixel_array(frame.ds if is_deflated(frame.ds) else frame.path)
    except DicomError:
        raise
    except BaseException as exc:
        if not _decoder_failed(exc):
            raise
        raise _decode_error(frame, exc) from None
    _store(dst, arr, frame)


def _load_multiframe(path: Path, slots: list[tuple[int, Frame]], out: np.ndarray) -> None:
    """Decode the frames of one multi-frame file one at a time, into their output slices."""
    slots = sorted(slots, key=lambda s: s[1].index)  # type: ignore[arg-type,return-value]
    ds = slots[0][1].ds
    indices = [f.index for _, f in slots]
    frames = iter_pixels(ds if is_deflated(ds) else path, indices=indices)  # type: ignore[arg-type]
    for k, frame in slots:
        try:
            arr = next(frames)
        except BaseException as exc:
            if not _decoder_failed(exc):
                raise
            raise _decode_error(frame, exc) from None
        _store(out[:, :, :, k], arr, frame)


def load_pixels(frames: list[Frame], out: np.ndarray, *, workers: int | None = None) -> None:
    """Fill ``out[:, :, :, k]`` with frame ``k``'s rescaled pixels."""
    syntaxes = {str(f.ds.file_meta.get("TransferSyntaxUID")) for f in frames}
    native = any(ts not in _RAW_SYNTAXES for ts in syntaxes)
    # codecs (Rust panics, C++ notes) may print on stderr: held back while they run
    with held_stderr() if native else contextlib.nullcontext():
        _load_pixels(frames, out, workers)


def _load_pixels(frames: list[Frame], out: np.ndarray, workers: int | None) -> None:
    for ts_frame in {str(f.ds.file_meta.get("TransferSyntaxUID")): f for f in frames}.values():
        check_decodable(ts_frame)  # fail before decoding anything
    multi: dict[Path, list[tuple[int, Frame]]] = defaultdict(list)
    single: list[int] = []
    for k, f in enumerate(frames):
        (multi[f.path].append((k, f)) if f.index is not None else single.append(k))
    for path, slots in multi.items():
        _load_multiframe(path, slots, out)
    n_workers = min(workers or min(8, os.cpu_count() or 1), len(single))
    if n_workers <= 1:
        for k in single:
            _load_single(frames[k], out[:, :, :, k])
        return
    with ThreadPoolExecutor(n_workers) as pool:
        # list() re-raises the first worker exception here
        list(pool.map(lambda k: _load_single(frames[k], out[:, :, :, k]), single))
