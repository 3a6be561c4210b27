"""Reader and writer for the fastMRI HDF5 layout (one file per volume).

Layout contract (as in the public fastMRI knee/brain files):

* ``kspace``: ``(slices, coils, H, W)`` complex64 for multi-coil, ``(slices, H, W)`` single-coil;
  ``H`` is the readout (frequency-encode) axis, ``W`` the phase-encode axis;
* ``reconstruction_rss`` (multi-coil) or ``reconstruction_esc`` (single-coil): float32
  ``(slices, h, w)`` ground truth, centre-cropped to the ISMRMRD recon matrix (fastMRI: 320x320);
* ``mask`` (test/challenge files only): the sampled phase-encode lines, ``(W,)``;
* ``ismrmrd_header``: ISMRMRD XML (bytes) with ``encodedSpace``/``reconSpace`` matrix sizes and
  fields of view and the ``kspace_encoding_step_1`` limits;
* attributes ``acquisition`` (e.g. ``CORPD_FBK``), ``max`` and ``norm`` of the reconstruction,
  ``patient_id``; test files add ``acceleration`` and ``num_low_frequency``.

Violations raise a one-line :class:`~medimg.errors.ImageReadError` naming the file.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from medimg.errors import ImageReadError, InputError
from medimg.io.inputs import check_allocation, check_regular_file
from medimg.io.output import atomic_path
from medimg.typing import PathType

__all__ = ["FastMRIVolume", "IsmrmrdHeader", "center_crop", "check_fastmri", "read_fastmri"]
__all__ += ["write_fastmri"]

_NS = "http://www.ismrm.org/ISMRMRD"


@dataclass(frozen=True)
class IsmrmrdHeader:
    """The parts of the ISMRMRD header fastMRI uses: sizes ``(x, y, z)``, FOV in mm."""

    encoded_size: tuple[int, int, int]
    recon_size: tuple[int, int, int]
    encoded_fov_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    recon_fov_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    kspace_center: int = 0
    kspace_maximum: int = 0

    def to_xml(self) -> bytes:
        def triple(parent: ET.Element, tag: str, values: tuple[Any, ...]) -> None:
            node = ET.SubElement(parent, tag)
            for axis, v in zip("xyz", values):
                ET.SubElement(node, axis).text = str(v)

        root = ET.Element("ismrmrdHeader", xmlns=_NS)
        enc = ET.SubElement(root, "encoding")
        for space, size, fov in (
            ("encodedSpace", self.encoded_size, self.encoded_fov_mm),
            ("reconSpace", self.recon_size, self.recon_fov_mm),
        ):
            node = ET.SubElement(enc, space)
            triple(node, "matrixSize", size)
            triple(node, "fieldOfView_mm", fov)
        limits = ET.SubElement(ET.SubElement(enc, "encodingLimits"), "kspace_encoding_step_1")
        for tag, v in (("minimum", 0), ("maximum", self.kspace_maximum)):
            ET.SubElement(limits, tag).text = str(v)
        ET.SubElement(limits, "center").text = str(self.kspace_center)
        ET.SubElement(enc, "trajectory").text = "cartesian"
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)

    @classmethod
    def from_xml(cls, xml: bytes | str) -> IsmrmrdHeader:
        root = ET.fromstring(xml)
        ns = {"m": _NS} if root.tag.startswith("{") else {"m": ""}
        p = "m:" if ns["m"] else ""

        def values(path: str, kind: type) -> tuple[Any, ...]:
            node = root.find(f"{p}encoding/{path}".replace("/", f"/{p}"), ns)
            if node is None:
                raise ValueError(f"missing encoding/{path}")
            return tuple(kind(node.findtext(f"{p}{a}", "0", ns)) for a in "xyz")

        def limit(tag: str) -> int:
            path = f"{p}encoding/{p}encodingLimits/{p}kspace_encoding_step_1/{p}{tag}"
            return int(root.findtext(path, "0", ns))

        return cls(
            encoded_size=values("encodedSpace/matrixSize", int),  # type: ignore[arg-type]
            recon_size=values("reconSpace/matrixSize", int),  # type: ignore[arg-type]
            encoded_fov_mm=values("encodedSpace/fieldOfView_mm", float),  # type: ignore[arg-type]
            recon_fov_mm=values("reconSpace/fieldOfView_mm", float),  # type: ignore[arg-type]
            kspace_center=limit("center"),
            kspace_maximum=limit("maximum"),
        )


@dataclass
class FastMRIVolume:
    """One fastMRI file in memory (numpy arrays, as stored)."""

    path: Path
    kspace: np.ndarray
    header: IsmrmrdHeader | None = None
    reconstruction: np.ndarray | None = None  # reconstruction_rss or reconstruction_esc
    mask: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def multicoil(self) -> bool:
        return self.kspace.ndim == 4


def center_crop(x: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """The centre ``size`` (h, w) of the last two axes, as fastMRI crops its reconstructions
    (sides larger than ``x`` keep ``x``'s); ``None`` keeps ``x`` whole."""
    if size is None:
        return x
    h, w = x.shape[-2:]
    ch, cw = min(size[0], h), min(size[1], w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top : top + ch, left : left + cw]


def _image(kspace: np.ndarray) -> np.ndarray:
    """RSS (multi-coil) or magnitude (single-coil) of the centred orthonormal inverse FFT."""
    img = np.fft.fftshift(
        np.fft.ifft2(np.fft.ifftshift(kspace, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
    )
    return np.sqrt((np.abs(img) ** 2).sum(1)) if kspace.ndim == 4 else np.abs(img)


def _num_low_frequency(lines: np.ndarray) -> int:
    """Length of the run of sampled lines through the centre ``W // 2``."""
    lo = hi = lines.size // 2
    if not lines[lo]:
        return 0
    while lo > 0 and lines[lo - 1]:
        lo -= 1
    while hi < lines.size - 1 and lines[hi + 1]:
        hi += 1
    return hi - lo + 1


def write_fastmri(
    path: PathType,
    kspace: np.ndarray,
    *,
    reconstruction: np.ndarray | str | None = "auto",
    mask: np.ndarray | None = None,
    recon_size: tuple[int, int] | None = None,
    fov_mm: tuple[float, float, float] = (220.0, 220.0, 3.0),
    acquisition: str = "CORPD_FBK",
    patient_id: str = "",
    attrs: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write one volume in the fastMRI layout; never overwrites unless ``overwrite=True``.

    ``reconstruction="auto"`` stores the RSS (or magnitude) of ``kspace`` centre-cropped to
    ``recon_size`` (default: the k-space size), which is ground truth only for fully sampled
    k-space; pass an array, or ``None`` to omit it. A column mask is stored as ``(W,)``, with the
    ``acceleration`` and ``num_low_frequency`` attributes of the fastMRI test set.
    """
    k = np.asarray(kspace)
    if not np.iscomplexobj(k) or k.ndim not in (3, 4):
        raise InputError(
            f"kspace must be complex (slices, [coils,] H, W), got {k.dtype} {k.shape}", path
        )
    k = k.astype(np.complex64)
    height, width = k.shape[-2:]
    rsize = recon_size or (height, width)
    recon = _image(k) if isinstance(reconstruction, str) else reconstruction
    if recon is not None:
        recon = center_crop(np.asarray(recon, dtype=np.float32), rsize)
    header = IsmrmrdHeader(
        encoded_size=(height, width, 1),
        recon_size=(rsize[0], rsize[1], 1),
        encoded_fov_mm=(fov_mm[0] * height / rsize[0], fov_mm[1], fov_mm[2]),
        recon_fov_mm=fov_mm,
        kspace_center=width // 2,
        kspace_maximum=width - 1,
    )
    with atomic_path(path, overwrite) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("kspace", data=k)
        f.create_dataset("ismrmrd_header", data=np.bytes_(header.to_xml()))
        if recon is not None:
            name = "reconstruction_rss" if k.ndim == 4 else "reconstruction_esc"
            f.create_dataset(name, data=recon)
            f.attrs["max"] = float(recon.max())
            f.attrs["norm"] = float(np.linalg.norm(recon))
        if mask is not None:
            m = np.asarray(mask) != 0
            if m.ndim == 2 and (m == m[:1]).all():
                m = m[0]
            f.create_dataset("mask", data=m)
            if m.ndim == 1:
                f.attrs["acceleration"] = float(m.size / max(int(m.sum()), 1))
                f.attrs["num_low_frequency"] = _num_low_frequency(m)
        f.attrs["acquisition"] = acquisition
        f.attrs["patient_id"] = patient_id
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return Path(path)


def _fail(path: PathType, message: str) -> ImageReadError:
    return ImageReadError(message, path)


def _dataset(f: h5py.File, name: str, p: Path) -> h5py.Dataset | None:
    """``f[name]`` if present, refused unless it is a dataset (a group or broken link)."""
    try:
        if name not in f:
            return None
        obj = f[name]
    except (KeyError, OSError, ValueError, TypeError) as err:
        raise _fail(p, f"'{name}' cannot be opened ({err}); the file is corrupt") from None
    if not isinstance(obj, h5py.Dataset):
        raise _fail(p, f"'{name}' is a {type(obj).__name__}, not a dataset; not fastMRI layout")
    return obj


def _read(ds: h5py.Dataset, sel: Any, dtype: Any, p: Path, what: str) -> np.ndarray:
    """``ds[sel]`` as ``dtype`` once its size fits the memory budget; HDF5 errors in one line."""
    n = ds.shape[0] if ds.ndim else 1
    rows = 1 if isinstance(sel, int) else len(range(*sel.indices(n))) if ds.ndim else 1
    check_allocation((rows, *ds.shape[1:]), dtype, what=f"'{what}'", path=p)
    try:
        arr = np.asarray(ds[sel] if ds.ndim else ds[()], dtype=dtype)
    except (OSError, ValueError, TypeError) as err:
        raise _fail(p, f"cannot read '{what}' ({err}); the file is truncated or corrupt") from None
    return arr[None] if isinstance(sel, int) and ds.ndim else arr


def _selection(slices: slice | int | None, n: int, p: Path) -> slice | int:
    if slices is None:
        return slice(None)
    if isinstance(slices, slice):
        return slices
    if isinstance(slices, (int, np.integer)) and -n <= int(slices) < n:
        return int(slices) % n
    raise InputError(f"slice {slices!r} is outside the file's {n} slices (0..{n - 1})", p)


def _check_kspace(f: h5py.File, p: Path) -> h5py.Dataset:
    ds = _dataset(f, "kspace", p)
    if ds is None:
        raise _fail(p, f"no 'kspace' dataset (found {sorted(f.keys())}); not fastMRI layout")
    if ds.dtype.kind != "c":
        raise _fail(p, f"'kspace' must be complex, got {ds.dtype}; store complex64 k-space")
    if ds.ndim not in (3, 4):
        raise _fail(p, f"'kspace' must be (slices, [coils,] H, W), got shape {ds.shape}")
    if ds.shape[0] == 0:
        raise _fail(p, "'kspace' has no slices; the file holds no data")
    if 0 in ds.shape:
        raise _fail(p, f"'kspace' has an empty axis, shape {ds.shape}; the file holds no data")
    return ds


def _check_mask(f: h5py.File, p: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    ds = _dataset(f, "mask", p)
    if ds is None:
        return None
    height, width = shape[-2:]
    if ds.dtype.kind not in "biuf" or ds.ndim not in (1, 2) or (
        ds.shape[-1] != width or (ds.ndim == 2 and ds.shape[0] not in (1, height))
    ):  # fmt: skip
        raise _fail(
            p, f"'mask' shape {ds.shape} ({ds.dtype}) does not match k-space shape {shape} "
            f"(W={width}); a fastMRI mask is (W,) numbers",
        )  # fmt: skip
    mask = _read(ds, slice(None), ds.dtype, p, "mask")
    if not np.isfinite(mask).all():
        raise _fail(p, "'mask' holds NaN or Inf values; the file is corrupt")
    if not mask.any():
        raise _fail(p, "'mask' samples no k-space line, so there is nothing to reconstruct")
    return mask


def _check_header(f: h5py.File, p: Path) -> IsmrmrdHeader | None:
    ds = _dataset(f, "ismrmrd_header", p)
    if ds is not None and (ds.size > 1 or ds.dtype.kind not in "SOUV"):
        raise _fail(p, f"'ismrmrd_header' is {ds.dtype} {ds.shape}, not one ISMRMRD XML text")
    try:
        raw: Any = ds[()] if ds is not None else f.attrs.get("ismrmrd_header")
    except (KeyError, OSError, ValueError, TypeError) as err:
        raise _fail(p, f"'ismrmrd_header' cannot be read ({err})") from None
    if raw is None:
        return None
    if isinstance(raw, np.ndarray) and raw.size == 1:
        raw = raw.reshape(-1)[0]
    if isinstance(raw, np.void):
        raw = raw.tobytes()
    if not isinstance(raw, (bytes, str)):
        raise _fail(p, f"'ismrmrd_header' is {type(raw).__name__}, not ISMRMRD XML text")
    try:
        header = IsmrmrdHeader.from_xml(raw)
    except (ET.ParseError, ValueError, TypeError, OverflowError) as err:
        raise _fail(p, f"unreadable 'ismrmrd_header' XML ({err})") from None
    sizes, fov = header.recon_size[:2], header.recon_fov_mm
    if min(sizes) < 1 or not all(np.isfinite(v) and v > 0 for v in fov):
        raise _fail(
            p, f"'ismrmrd_header' gives recon matrix {sizes} and field of view {fov} mm; both "
            "must be positive",
        )  # fmt: skip
    return header


def _attrs(f: h5py.File) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in list(f.attrs):
        try:  # an attribute of a type h5py cannot convert is left out, not fatal
            v = f.attrs[key]
        except (OSError, TypeError, ValueError, KeyError):
            continue
        out[key] = v.item() if isinstance(v, np.generic) else v
    return out


def check_fastmri(path: PathType) -> tuple[int, ...]:
    """Check a fastMRI file's layout without reading its k-space; return the k-space shape.

    For verbs that check every input before writing anything. Raises like :func:`read_fastmri`
    (except for NaN values, which only a full read finds).
    """
    p = check_regular_file(path)
    with _open(p) as f:
        ds = _check_kspace(f, p)
        _check_mask(f, p, ds.shape)
        _check_header(f, p)
        return tuple(int(s) for s in ds.shape)


def _open(p: Path) -> h5py.File:
    try:
        return h5py.File(p, "r")
    except (OSError, ValueError) as err:
        raise _fail(p, f"not a readable HDF5 file ({err}); fastMRI volumes are .h5") from None


def read_fastmri(path: PathType, slices: slice | int | None = None) -> FastMRIVolume:
    """Read a fastMRI HDF5 file (optionally only ``slices``) and check its layout.

    Raises
    ------
    ImageReadError
        Missing file or ``kspace``, not HDF5, real-valued, empty or wrongly shaped k-space, a
        mask that does not match the phase-encode axis or samples nothing, a reconstruction
        whose slices do not match, NaN/Inf values, or an unreadable header.
    InputError
        A declared size beyond the memory budget (``MEDIMG_MAX_MEMORY``), a slice out of range.
    """
    p = Path(path)
    if not p.exists():
        raise _fail(p, "no such file; check the path to the fastMRI .h5 file")
    check_regular_file(p)
    with _open(p) as f:
        ds = _check_kspace(f, p)
        sel = _selection(slices, ds.shape[0], p)
        mask = _check_mask(f, p, ds.shape)
        header = _check_header(f, p)
        kspace = _read(ds, sel, np.complex64, p, "kspace")
        recon = None
        for name in ("reconstruction_rss", "reconstruction_esc"):
            rds = _dataset(f, name, p)
            if rds is None:
                continue
            if rds.dtype.kind not in "biuf" or rds.ndim != 3 or rds.shape[0] != ds.shape[0]:
                raise _fail(
                    p, f"'{name}' must be real (slices, h, w) with the k-space's {ds.shape[0]} "
                    f"slices, got {rds.dtype} {rds.shape}",
                )  # fmt: skip
            recon = _read(rds, sel, np.float32, p, name)
        attrs = _attrs(f)
    for name, arr in (("kspace", kspace), ("reconstruction", recon)):
        if arr is not None and not np.isfinite(arr).all():
            raise _fail(p, f"'{name}' contains NaN or Inf values; the file is corrupt")
    return FastMRIVolume(p, kspace, header, recon, mask, attrs)
