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
from medimg.io.output import atomic_path
from medimg.typing import PathType

__all__ = ["FastMRIVolume", "IsmrmrdHeader", "read_fastmri", "write_fastmri"]

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


def _center_crop(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
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
        recon = _center_crop(np.asarray(recon, dtype=np.float32), rsize)
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


def read_fastmri(path: PathType, slices: slice | int | None = None) -> FastMRIVolume:
    """Read a fastMRI HDF5 file (optionally only ``slices``) and check its layout.

    Raises
    ------
    ImageReadError
        Missing file or ``kspace``, not HDF5, real-valued or wrongly shaped k-space, a mask that
        does not match the phase-encode axis, NaN/Inf values, or an unreadable header.
    """
    p = Path(path)
    if not p.is_file():
        raise _fail(p, "no such file; check the path to the fastMRI .h5 file")
    sel = slice(None) if slices is None else slices
    try:
        f = h5py.File(p, "r")
    except OSError as err:
        raise _fail(p, f"not a readable HDF5 file ({err}); fastMRI volumes are .h5") from err
    with f:
        if "kspace" not in f:
            raise _fail(p, f"no 'kspace' dataset (found {sorted(f.keys())}); not fastMRI layout")
        ds = f["kspace"]
        if ds.dtype.kind != "c":
            raise _fail(p, f"'kspace' must be complex, got {ds.dtype}; store complex64 k-space")
        if ds.ndim not in (3, 4):
            raise _fail(p, f"'kspace' must be (slices, [coils,] H, W), got shape {ds.shape}")
        kspace = np.asarray(ds[sel], dtype=np.complex64)
        kspace = kspace[None] if isinstance(sel, int) else kspace
        height, width = ds.shape[-2:]
        mask = np.asarray(f["mask"][()]) if "mask" in f else None
        if mask is not None and (
            mask.shape[-1] != width or (mask.ndim >= 2 and mask.shape[-2] not in (1, height))
        ):
            raise _fail(
                p, f"'mask' shape {mask.shape} does not match k-space shape {ds.shape} (W={width})"
            )
        recon = None
        for name in ("reconstruction_rss", "reconstruction_esc"):
            if name in f:
                recon = np.asarray(f[name][sel], dtype=np.float32)
                recon = recon[None] if isinstance(sel, int) else recon
        header = None
        if "ismrmrd_header" in f or "ismrmrd_header" in f.attrs:
            raw = f["ismrmrd_header"][()] if "ismrmrd_header" in f else f.attrs["ismrmrd_header"]
            try:
                header = IsmrmrdHeader.from_xml(raw)
            except (ET.ParseError, ValueError) as err:
                raise _fail(p, f"unreadable 'ismrmrd_header' XML ({err})") from err
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    for name, arr in (("kspace", kspace), ("reconstruction", recon)):
        if arr is not None and not np.isfinite(arr).all():
            raise _fail(p, f"'{name}' contains NaN or Inf values; the file is corrupt")
    return FastMRIVolume(p, kspace, header, recon, mask, attrs)
