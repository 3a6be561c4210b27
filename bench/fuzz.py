"""Reader fuzzing: mutated NIfTI/NRRD/MetaImage/DICOM files through ``load`` and ``describe``.

Small valid seed files are written once; each case applies a short *recipe* of mutations (byte
flips, boundary integers written over bytes, truncation, deletion, insertion, duplicated chunks,
and header-field edits that keep the rest of the file well-formed) to one seed, writes the
result into a fresh folder and reads it. A reader may succeed or refuse with a
:class:`~medimg.errors.MedimgError`; anything else is an internal error, and a case still running
after the time limit is a hang.

Usage::

    nice .venv/bin/python bench/fuzz.py --cases 10000 --workers 2 --timeout 20

Each case runs in a worker process with a per-case time limit (the worker is killed and replaced
on a hang) and a memory cap (``MEDIMG_MAX_MEMORY``, address-space limit). Prints counts per
outcome and per seed format, the first few internal errors, and exits non-zero if any internal
error or hang was found. ``tests/io/test_fuzz.py`` drives the same recipes with hypothesis.
"""

from __future__ import annotations

import argparse
import gzip
import io
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: A mutation step: (operation, a, b), integers that pick positions and values.
Step = tuple[int, int, int]
N_OPS = 8
#: Boundary values for integer/float header fields and for bytes written over the file.
BOUNDARY = [
    0,
    1,
    -1,
    2,
    3,
    4,
    5,
    7,
    8,
    16,
    255,
    256,
    32767,
    -32768,
    65535,
    2**31 - 1,
    -(2**31),
    2**40,
    float("nan"),
    float("inf"),
    float("-inf"),
    1e30,
    1e-30,
    0.5,
    -0.5,
]
#: Tokens written into text headers (NRRD, MetaImage) and DICOM strings.
TOKENS = [
    "0",
    "-1",
    "1",
    "65535",
    "4294967296",
    "99999999999999999999",
    "nan",
    "inf",
    "-inf",
    "1e308",
    "",
    "abc",
    "LIST",
    "LOCAL",
    "/etc/passwd",
    "../../x.raw",
    "%d.raw 1 3 1",
    "gzip",
    "bzip2",
    "raw",
    "ascii",
    "hex",
    "big",
    "little",
    "MET_FLOAT",
    "MET_UCHAR",
    "MET_DOUBLE",
    "MET_SHORT",
    "uint8",
    "float",
    "double",
    "block",
    "(nan,0,0)",
    "(0,0,0) (0,0,0) (0,0,0)",
    "True",
    "False",
    "1 2",
    "1\\2\\3",
    "\x00",
    "\xff\xfe",
    "1 1 1 1 1 1 1 1 1",
    "2 2 2 2",
]

NIFTI_FIELDS = (
    "dim",
    "datatype",
    "bitpix",
    "pixdim",
    "vox_offset",
    "scl_slope",
    "scl_inter",
    "qform_code",
    "sform_code",
    "srow_x",
    "srow_y",
    "srow_z",
    "quatern_b",
    "qoffset_x",
    "intent_code",
    "sizeof_hdr",
    "dim_info",
    "magic",
)

DICOM_FIELDS = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "NumberOfFrames",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "PixelSpacing",
    "SliceThickness",
    "RescaleSlope",
    "RescaleIntercept",
    "TransferSyntaxUID",
    "PlanarConfiguration",
    "SOPClassUID",
    "SeriesInstanceUID",
    "Modality",
    "GridFrameOffsetVector",
    "SpacingBetweenSlices",
    "PixelData",
    "FrameTime",
)
TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.90",
    "1.2.3.4",
    "",
)


# ------------------------------------------------------------------------------------ seeds
@dataclass
class Seed:
    """One valid input: its files (name -> bytes) and the path to read (a file or the folder).

    ``kind`` picks the header-field mutation: ``nifti1``/``nifti2`` (binary header, ``gz``:
    gzip-compressed), ``text`` (NRRD/MetaImage header lines) or ``dicom``."""

    name: str
    files: dict[str, bytes]
    target: str  # file name, or "" for the folder itself
    kind: str
    gz: bool = False
    raw: dict[str, bytes] = field(default_factory=dict)  # uncompressed content of gz files


def _nifti_seeds() -> list[Seed]:
    import nibabel as nib

    rng = np.random.default_rng(0)
    data = rng.normal(size=(4, 3, 5)).astype(np.float32)
    affine = np.array([[0.9, 0.1, 0, -10], [0, 1.1, 0.2, 5], [0, 0, 2.5, 3], [0, 0, 0, 1]])
    out = []
    for name, cls, array in (
        ("nifti1", nib.Nifti1Image, data),
        ("nifti2", nib.Nifti2Image, data),
        ("nifti1-int16-scaled", nib.Nifti1Image, (data * 100).astype(np.int16)),
        ("nifti1-4d", nib.Nifti1Image, np.stack([data, data + 1], axis=-1)),
    ):
        img = cls(array, affine)
        if name.endswith("scaled"):
            img.header.set_slope_inter(0.5, -3.0)
        raw = img.to_bytes()
        out.append(Seed(name, {"x.nii": raw}, "x.nii", name[:6]))
        if name in ("nifti1", "nifti2"):
            gz = gzip.compress(raw, mtime=0)
            out.append(
                Seed(name + "-gz", {"x.nii.gz": gz}, "x.nii.gz", name, True, {"x.nii.gz": raw})
            )
    rgb = np.zeros((3, 4, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["G"] = 7
    raw = nib.Nifti1Image(rgb, affine).to_bytes()
    out.append(Seed("nifti1-rgb", {"x.nii": raw}, "x.nii", "nifti1"))
    return out


def _itk_seeds(tmp: Path) -> list[Seed]:
    import SimpleITK as sitk

    rng = np.random.default_rng(1)
    img = sitk.GetImageFromArray(rng.normal(size=(3, 4, 5)).astype(np.float32))
    img.SetSpacing((0.8, 0.9, 2.0))
    img.SetOrigin((1.0, -2.0, 3.0))
    img.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, 1))
    vec = sitk.GetImageFromArray(rng.integers(0, 255, (4, 5, 3)).astype(np.uint8), isVector=True)
    out = []
    for name, image, file, compress in (
        ("nrrd", img, "x.nrrd", False),
        ("nrrd-gzip", img, "x.nrrd", True),
        ("nhdr", img, "x.nhdr", False),
        ("mha", img, "x.mha", False),
        ("mha-zlib", img, "x.mha", True),
        ("mhd", img, "x.mhd", False),
        ("mha-vector", vec, "x.mha", False),
    ):
        folder = tmp / name
        folder.mkdir()
        sitk.WriteImage(image, str(folder / file), useCompression=compress)
        files = {f.name: f.read_bytes() for f in folder.iterdir()}
        out.append(Seed(name, files, file, "text"))
    return out


def _dicom_seeds(tmp: Path) -> list[Seed]:
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless

    from medimg.io.dicom.write import write_dicom_series
    from medimg.io.image import Image

    rng = np.random.default_rng(2)
    c, s = np.cos(0.1), np.sin(0.1)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ np.diag([0.7, 0.8, 2.0])
    affine[:3, 3] = [-5, 2, 1]
    image = Image(rng.integers(-1000, 2000, (1, 5, 4, 3)).astype(np.float32), affine)
    folder = tmp / "dicom-series"
    write_dicom_series(image, folder, modality="CT")
    files = {}
    for k, f in enumerate(sorted(folder.glob("*.dcm"))):  # fixed UIDs and dates: same bytes
        ds = pydicom.dcmread(f)  # on every run, so a case number reproduces
        ds.StudyInstanceUID, ds.FrameOfReferenceUID = "1.2.3.1", "1.2.3.2"
        ds.SeriesInstanceUID = "1.2.3.3"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.3.4.{k + 1}"
        for keyword in ("StudyDate", "SeriesDate", "ContentDate"):
            setattr(ds, keyword, "20260101")
        for keyword in ("StudyTime", "SeriesTime", "ContentTime"):
            setattr(ds, keyword, "120000")
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        files[f.name] = buf.getvalue()
    first = next(iter(files))
    out = [
        Seed("dicom-series", files, "", "dicom"),
        Seed("dicom-file", {first: files[first]}, first, "dicom"),
    ]

    def variant(name: str, edit) -> None:  # type: ignore[no-untyped-def]
        ds = pydicom.dcmread(io.BytesIO(files[first]))
        edit(ds)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(Seed(name, {"x.dcm": buf.getvalue()}, "x.dcm", "dicom"))

    def multiframe(ds) -> None:  # type: ignore[no-untyped-def]
        ds.NumberOfFrames = 3
        ds.GridFrameOffsetVector = [0, 2, 4]
        ds.PixelData = ds.PixelData * 3

    def deflated(ds) -> None:  # type: ignore[no-untyped-def]
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian

    def rle(ds) -> None:  # type: ignore[no-untyped-def]
        ds.compress(RLELossless, generate_instance_uid=False)

    def projection(ds) -> None:  # type: ignore[no-untyped-def]
        del ds.ImageOrientationPatient, ds.ImagePositionPatient

    def enhanced(ds) -> None:  # type: ignore[no-untyped-def]
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence

        def item(sequence: str, **values: object) -> Dataset:
            inner = Dataset()
            for key, value in values.items():
                setattr(inner, key, value)
            outer = Dataset()
            setattr(outer, sequence, Sequence([inner]))
            return outer

        shared = item(
            "PlaneOrientationSequence", ImageOrientationPatient=ds.ImageOrientationPatient
        )
        shared.PixelMeasuresSequence = item(
            "PixelMeasuresSequence", PixelSpacing=ds.PixelSpacing, SliceThickness=2.0
        ).PixelMeasuresSequence
        ipp = [float(v) for v in ds.ImagePositionPatient]
        normal = np.cross(*np.reshape([float(v) for v in ds.ImageOrientationPatient], (2, 3)))
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
        ds.PerFrameFunctionalGroupsSequence = Sequence(
            [item("PlanePositionSequence", ImagePositionPatient=list(ipp + 2.0 * k * normal))
             for k in range(3)]
        )  # fmt: skip
        ds.NumberOfFrames = 3
        ds.PixelData = ds.PixelData * 3
        del ds.ImageOrientationPatient, ds.ImagePositionPatient, ds.PixelSpacing

    def colour(ds) -> None:  # type: ignore[no-untyped-def]
        rgb = np.arange(ds.Rows * ds.Columns * 3, dtype=np.uint8).reshape(ds.Rows, ds.Columns, 3)
        ds.set_pixel_data(rgb, "RGB", 8, generate_instance_uid=False)

    for name, edit in (
        ("dicom-multiframe", multiframe),
        ("dicom-deflated", deflated),
        ("dicom-rle", rle),
        ("dicom-2d", projection),
        ("dicom-enhanced", enhanced),
        ("dicom-rgb", colour),
    ):
        variant(name, edit)
    return out


def write_seeds(tmp: Path) -> list[Seed]:
    """Every seed, its files built in memory (``tmp`` is scratch space for the writers)."""
    tmp.mkdir(parents=True, exist_ok=True)
    return [*_nifti_seeds(), *_itk_seeds(tmp), *_dicom_seeds(tmp)]


# ------------------------------------------------------------------------------- mutations
def _boundary(b: int) -> float:
    return BOUNDARY[b % len(BOUNDARY)]


def _int_bytes(value: float, width: int) -> bytes:
    v = 0 if not np.isfinite(value) else int(value)
    return (v % (1 << (8 * width))).to_bytes(width, "little")


def _byte_op(data: bytes, op: int, a: int, b: int) -> bytes:
    n = len(data)
    if n == 0:
        return bytes([b % 256]) * (a % 8)
    pos = a % n
    if op == 0:  # flip one byte
        return data[:pos] + bytes([data[pos] ^ (b % 255 + 1)]) + data[pos + 1 :]
    if op == 1:  # a boundary integer (2/4/8 bytes) written over the file
        width = (2, 4, 8)[b % 3]
        return data[:pos] + _int_bytes(_boundary(b // 3), width) + data[pos + width :]
    if op == 2:  # truncate
        return data[:pos]
    if op == 3:  # delete a run
        return data[:pos] + data[pos + 1 + b % 64 :]
    if op == 4:  # insert bytes
        return data[:pos] + np.random.default_rng(b).bytes(1 + b % 16) + data[pos:]
    # duplicate a chunk
    return data[:pos] + data[pos : pos + 1 + b % 256] + data[pos:]


def _nifti_field(raw: bytes, version: str, a: int, b: int) -> bytes:
    import nibabel as nib

    dtype = (nib.Nifti1Header if version == "nifti1" else nib.Nifti2Header).template_dtype
    name = NIFTI_FIELDS[a % len(NIFTI_FIELDS)]
    ftype, offset = dtype.fields[name][:2]
    base, count = (ftype.base, ftype.shape[0]) if ftype.shape else (ftype, 1)
    if base.kind == "S":  # magic: another or broken signature
        value = [b"n+1\0", b"ni1\0", b"n+2\0\r\n\x1a\n", b"\0\0\0\0", b"xxxx"][b % 5]
        return raw[:offset] + value[: base.itemsize] + raw[offset + base.itemsize :]
    index = (a // len(NIFTI_FIELDS)) % count
    start = offset + index * base.itemsize
    value = _boundary(b)
    if base.kind == "f":
        blob = np.array([value], dtype=base).tobytes()
    else:
        blob = _int_bytes(value, base.itemsize)
    return raw[:start] + blob + raw[start + base.itemsize :]


def _text_field(data: bytes, a: int, b: int) -> bytes:
    """Edit one header line of a NRRD/MetaImage file: a token replaced, the line dropped or
    doubled; the data after the header is kept."""
    nrrd = data.startswith(b"NRRD")
    end = data.find(b"\n\n") + 2 if nrrd else data.find(b"\n", data.find(b"ElementDataFile")) + 1
    if end <= 1:
        end = min(len(data), 512)
    lines = data[:end].split(b"\n")
    k = a % max(1, len(lines) - 1)
    line = lines[k]
    action = b % 4
    if action == 0:
        lines.pop(k)
    elif action == 1:
        lines.insert(k, line)
    else:
        token = TOKENS[(b // 4) % len(TOKENS)].encode("latin-1")
        sep = b":" if nrrd else b"="
        key, found, value = line.partition(sep)
        parts = value.split()
        if found and parts and action == 2:
            parts[(a // 7) % len(parts)] = token
            line = key + found + b" " + b" ".join(parts)
        elif found:
            line = key + found + b" " + token
        lines[k] = line
    return b"\n".join(lines) + data[end:]


def _dicom_field(data: bytes, a: int, b: int) -> bytes:
    import pydicom
    from pydicom.datadict import dictionary_VR

    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    keyword = DICOM_FIELDS[a % len(DICOM_FIELDS)]
    if keyword == "TransferSyntaxUID":
        ds.file_meta.TransferSyntaxUID = TRANSFER_SYNTAXES[b % len(TRANSFER_SYNTAXES)]
    elif b % 5 == 0:
        if keyword in ds:
            delattr(ds, keyword)
    else:
        vr = dictionary_VR(keyword)
        if vr in ("US", "SS", "UL", "SL"):
            lo, hi = {
                "US": (0, 65535),
                "SS": (-32768, 32767),
                "UL": (0, 2**32 - 1),
                "SL": (-(2**31), 2**31 - 1),
            }[vr]
            value = _boundary(b // 5)
            setattr(ds, keyword, int(np.clip(value if np.isfinite(value) else 0, lo, hi)))
        elif vr in ("OB", "OW", "OB or OW"):
            setattr(ds, keyword, np.random.default_rng(b).bytes(b % 97))
        else:
            token = TOKENS[(b // 5) % len(TOKENS)]
            if (
                vr in ("DS", "IS")
                and keyword in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing")
                and b % 3
            ):
                n = {"ImageOrientationPatient": 6, "ImagePositionPatient": 3}.get(keyword, 2)
                token = "\\".join(str(_boundary(b // 15 + i)) for i in range(n))
            elem = pydicom.DataElement(keyword, vr, None)
            elem = pydicom.dataelem.RawDataElement(
                elem.tag, vr, len(token), token.encode("latin-1"), 0, False, True
            )
            ds[elem.tag] = elem
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def mutate(seed: Seed, recipe: Sequence[Step]) -> dict[str, bytes]:
    """The seed's files after the recipe's steps (deterministic in the recipe)."""
    import warnings

    files = dict(seed.raw or seed.files)  # gz seeds: mutate the content, then compress
    names = sorted(files)
    post: list[Step] = []
    for op, a, b in recipe:
        op %= N_OPS
        if op == 7 and seed.gz:  # corrupt the compressed stream itself
            post.append((b % 6, a, b))
            continue
        if op in (6, 7):  # header-field edit, keeping the rest well-formed
            target = seed.target or names[a % len(names)]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if seed.kind.startswith("nifti"):
                        files[target] = _nifti_field(files[target], seed.kind, a, b)
                    elif seed.kind == "text":
                        files[target] = _text_field(files[target], a, b)
                    else:
                        files[target] = _dicom_field(files[target], a, b)
                continue
            except Exception:  # the edit itself failed (pydicom refused): flip a byte instead
                op = 0
        name = names[b % len(names)] if len(names) > 1 and op != 2 else (seed.target or names[0])
        files[name] = _byte_op(files[name], op, a, b)
    if seed.gz:
        files = {n: gzip.compress(d, mtime=0) for n, d in files.items()}
        for op, a, b in post:
            for n in files:
                files[n] = _byte_op(files[n], op, a, b)
    return files


def random_recipe(rng: np.random.Generator) -> list[Step]:
    """1-4 steps; a third of the recipes edit header fields only (the rest of the file stays
    well-formed, so the reads get past the parsers into size, geometry and decoding checks)."""
    n = int(rng.integers(1, 5))
    ops = rng.integers(0, N_OPS, n) if rng.random() > 1 / 3 else np.full(n, 6)
    values = rng.integers(0, 2**32, (n, 2))
    return [(int(o), int(a), int(b)) for o, (a, b) in zip(ops, values)]


def write_case(seed: Seed, files: dict[str, bytes], folder: Path) -> Path:
    """Write a mutated case into an empty ``folder``; the path to read."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder / seed.target if seed.target else folder


# ---------------------------------------------------------------------------------- checking
def check(path: Path) -> tuple[str, str]:
    """('ok' | 'refused' | 'internal', detail) after ``load`` and ``describe`` of ``path``."""
    from medimg.errors import MedimgError
    from medimg.io.api import describe, load

    for call in (load, describe):
        try:
            call(path)
        except MedimgError as e:
            return "refused", str(e)
        except BaseException as e:  # a native panic derives from BaseException
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            tb = traceback.extract_tb(e.__traceback__)[-1]
            where = f"{Path(tb.filename).name}:{tb.lineno}"
            return "internal", f"{call.__name__}: {type(e).__name__}: {e} ({where})"[:500]
    return "ok", ""


def _limit_memory(max_bytes: int) -> None:
    import resource

    os.environ.setdefault("MEDIMG_MAX_MEMORY", "256M")
    resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))


def _worker(conn: Any, seeds: list[Seed], root: str, base_seed: int, memory: int) -> None:
    import warnings

    warnings.simplefilter("ignore")
    _limit_memory(memory)
    while True:
        index = conn.recv()
        if index is None:
            return
        seed, recipe = case(seeds, base_seed, index)
        folder = Path(root) / f"case{index}"
        try:
            outcome, detail = check(write_case(seed, mutate(seed, recipe), folder))
        except Exception as e:  # the harness itself failed: report, do not hide
            outcome, detail = "internal", f"harness: {type(e).__name__}: {e}"
        shutil.rmtree(folder, ignore_errors=True)
        conn.send((outcome, detail))


def case(seeds: list[Seed], base_seed: int, index: int) -> tuple[Seed, list[Step]]:
    """Case ``index``: seeds in turn, a random recipe from (base_seed, index)."""
    rng = np.random.default_rng([base_seed, index])
    return seeds[index % len(seeds)], random_recipe(rng)


@dataclass
class Tally:
    counts: Counter = field(default_factory=Counter)
    per_format: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    internal: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seed: Seed, index: int, outcome: str, detail: str) -> None:
        with self.lock:
            self.counts[outcome] += 1
            self.per_format[seed.name][outcome] += 1
            if outcome == "internal":
                self.internal.append(f"case {index} ({seed.name}): {detail}")
            elif outcome == "hang":
                self.hangs.append(f"case {index} ({seed.name})")


def _drive(
    indices: list[int], seeds: list[Seed], args: argparse.Namespace, root: str, tally: Tally
) -> None:
    """One worker process fed case by case; killed and replaced when a case overruns."""
    ctx = mp.get_context("spawn")  # never fork a process that runs threads
    proc = conn = None
    for index in indices:
        if proc is None:
            conn, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker, args=(child, seeds, root, args.seed, args.memory), daemon=True
            )
            proc.start()
        conn.send(index)
        seed = seeds[index % len(seeds)]
        if conn.poll(args.timeout):
            try:
                outcome, detail = conn.recv()
            except EOFError:  # the worker died (a crash in native code)
                outcome, detail = (
                    "internal",
                    f"worker died (exit code {proc.join(1) or proc.exitcode})",
                )
                proc = None
        else:
            outcome, detail = "hang", ""
            proc.kill()
            proc.join()
            proc = None
        tally.add(seed, index, outcome, detail)
    if proc is not None:
        conn.send(None)
        proc.join(5)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10000, help="mutated files (default 10000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per case (hang)")
    parser.add_argument("--seed", type=int, default=0, help="base random seed")
    parser.add_argument("--memory", type=int, default=3 << 30, help="address-space cap, bytes")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medimg-fuzz-") as root:
        seeds = write_seeds(Path(root) / "seeds")
        tally = Tally()
        threads = [
            threading.Thread(
                target=_drive,
                args=(list(range(w, args.cases, args.workers)), seeds, args, root, tally),
            )
            for w in range(args.workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    elapsed = time.perf_counter() - start
    c = tally.counts
    print(
        f"files: {sum(c.values())}  ok: {c['ok']}  clean refusals (MedimgError): "
        f"{c['refused']}  internal errors: {c['internal']}  hangs: {c['hang']}  "
        f"({elapsed:.0f} s, {args.workers} workers, {args.timeout:g} s limit, seed {args.seed})"
    )
    print(f"{'format':22s} {'files':>6s} {'ok':>6s} {'refused':>8s} {'internal':>9s} {'hangs':>6s}")
    for name in sorted(tally.per_format):
        f = tally.per_format[name]
        print(
            f"{name:22s} {sum(f.values()):6d} {f['ok']:6d} {f['refused']:8d} "
            f"{f['internal']:9d} {f['hang']:6d}"
        )
    for line in tally.internal[:10]:
        print("internal:", line)
    for line in tally.hangs[:10]:
        print("hang:", line)
    return 1 if c["internal"] or c["hang"] else 0


if __name__ == "__main__":
    sys.exit(main())
