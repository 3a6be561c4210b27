"""``medimg recon mri predict``: k-space files or images in, NIfTI and DICOM series out.

Inputs
------
* fastMRI-layout ``.h5`` (multi-coil): the stored k-space is reconstructed as it is, with the
  stored ``mask`` (else the non-zero phase-encode columns). A fully sampled file is undersampled
  first when ``acceleration`` is given (retrospective undersampling, as in fastMRI's validation).
  Like fastMRI, the image is centre-cropped to the header's recon matrix; the pixel spacing is
  the header's recon field of view over that matrix, the slice spacing its z field of view.
  fastMRI files carry no patient orientation, so the grid is written as axial (LPS identity).
* a magnitude image (NIfTI, NRRD/MHA, DICOM file or series folder): each slice is treated as the
  fully sampled object and undersampled retrospectively: multi-coil k-space is simulated with
  ``coils`` birdcage maps and a ``mask_kind`` mask at ``acceleration`` along the DICOM columns,
  then reconstructed. The output keeps the input's geometry and intensity units.

Outputs: ``<out>/<name>.nii.gz`` and the series ``<out>/<name>_dicom/`` (modality MR), never
over an existing file unless ``overwrite``. A network's result is checked slice by slice by the
safeguard (:mod:`~medimg.tasks.reconstruct.mri.safeguard`) when its model folder holds calibrated
thresholds: slices that stray beyond them get one ``warning:`` line on stderr, the scores and
flags go to the sidecar ``<out>/<name>.json`` (and the DICOM series description says how many
slices were flagged), and with ``fallback`` those slices are the CG-SENSE image instead.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

from medimg.datasets.fastmri import center_crop, check_fastmri, read_fastmri
from medimg.errors import InputError
from medimg.io.image import LPS_TO_RAS, Image
from medimg.io.inputs import case_ids, check_allocation, check_real
from medimg.physics.coils import birdcage_maps
from medimg.physics.mri import fft2c
from medimg.tasks.reconstruct.mri.data import make_mask
from medimg.tasks.reconstruct.mri.infer import (
    Reconstructor,
    SliceCheck,
    as_kspace,
    mask_from_kspace,
)

__all__ = ["KspaceCase", "case_from_h5", "case_from_image", "load_case", "predict_path"]

#: smallest slice side an image input may have (the masks need a centre and some periphery)
MIN_SIDE = 16


@dataclasses.dataclass
class KspaceCase:
    """Undersampled k-space ready to reconstruct, and how to put the result back on a grid."""

    name: str
    kspace: torch.Tensor  # complex64 (S, N, H, W)
    mask: torch.Tensor  # (W,) or (H, W)
    affine: np.ndarray  # of the output Image (1, W', H', S): DICOM column, row, slice
    crop: tuple[int, int] | None = None  # centre crop (h, w) of the (H, W) reconstruction
    target: np.ndarray | None = None  # (S, h, w) ground truth when the file has it
    maps: torch.Tensor | None = None  # known coil maps (simulated from an image)


def case_from_h5(
    path: str | Path,
    acceleration: float | None = None,
    mask_kind: str = "equispaced",
    center_fraction: float = 0.08,
    seed: int = 0,
) -> KspaceCase:
    """Read a multi-coil fastMRI file; see the module docstring."""
    vol = read_fastmri(path)
    if not vol.multicoil:
        raise InputError("single-coil k-space; the MRI networks need multi-coil (S, N, H, W)", path)
    k = as_kspace(vol.kspace)
    h, w = k.shape[-2:]
    if vol.mask is not None:
        mask = torch.as_tensor(np.asarray(vol.mask, np.float32))
        k = k * mask  # stored lines only (a test file is zero elsewhere already)
    else:
        mask = mask_from_kspace(k)
        if acceleration is not None and bool(mask.all()):
            mask = make_mask(mask_kind, (h, w), acceleration, center_fraction, seed)[0]
            k = k * mask
    crop, spacing = None, (1.0, 1.0, 1.0)
    if vol.header is not None:
        rx, ry, _ = vol.header.recon_size
        fx, fy, fz = vol.header.recon_fov_mm
        crop, spacing = (rx, ry), (fy / max(ry, 1), fx / max(rx, 1), fz)  # column, row, slice
    affine = LPS_TO_RAS @ np.diag([*spacing, 1.0])  # axial LPS identity (no orientation stored)
    target = vol.reconstruction
    if target is not None and crop is not None and target.shape[-2:] != tuple(crop):
        target = None
    return KspaceCase(Path(path).name.removesuffix(".h5"), k, mask, affine, crop, target)


def case_from_image(
    image: Image,
    name: str,
    acceleration: float = 4.0,
    mask_kind: str = "equispaced",
    center_fraction: float = 0.08,
    coils: int = 8,
    seed: int = 0,
) -> KspaceCase:
    """Retrospectively undersampled multi-coil k-space of a magnitude image's slices."""
    check_real(image.array, name, what="retrospective undersampling (a magnitude image)")
    if image.array.ndim not in (3, 4):
        raise InputError(
            f"expected a 2D or 3D image, got {image.array.ndim - 1} spatial axes", name
        )
    arr = np.asarray(image.array, dtype=np.float32)
    if arr.shape[0] != 1:
        raise InputError(f"expected a one-channel image, got {arr.shape[0]} channels", name)
    if min(arr.shape[1:3]) < MIN_SIDE:
        raise InputError(
            f"slices of {arr.shape[1]}x{arr.shape[2]} pixels are too small to undersample and "
            f"reconstruct; give slices of at least {MIN_SIDE}x{MIN_SIDE}", name,
        )  # fmt: skip
    check_allocation((int(np.prod(arr.shape[3:])), coils, *arr.shape[1:3]), np.complex64,
                     what="the simulated k-space", path=name, copies=4)  # fmt: skip
    if not np.isfinite(arr).all():
        raise InputError("the image contains NaN or Inf values; fix or mask them first", name)
    vol = arr[0] if arr.ndim == 4 else arr[0][..., None]  # (X, Y, Z)
    slices = torch.from_numpy(np.ascontiguousarray(vol.transpose(2, 1, 0)))  # (S, rows, cols)
    h, w = slices.shape[-2:]
    maps = birdcage_maps(coils, (h, w))
    mask = make_mask(mask_kind, (h, w), acceleration, center_fraction, seed)
    k = fft2c(maps[None] * slices[:, None].to(torch.complex64)) * mask
    return KspaceCase(name, k, mask, image.affine, None, slices.numpy(), maps)


def _is_h5(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in (".h5", ".hdf5")


def case_name(path: str | Path) -> str:
    """The output name of an input: the file name without ``.h5`` or its image extension."""
    p = Path(path)
    name = p.name[: -len(p.suffix)] if _is_h5(p) else case_ids([p])[0].split(".")[0]
    return name or "volume"


def load_case(path: str | Path, **options: object) -> KspaceCase:
    """A ``.h5`` file (:func:`case_from_h5`) or any image medimg reads (:func:`case_from_image`)."""
    p = Path(path)
    if _is_h5(p):
        keys = ("acceleration", "mask_kind", "center_fraction", "seed")
        case = case_from_h5(p, **{k: v for k, v in options.items() if k in keys})  # type: ignore[arg-type]
        case.name = case_name(p)
        return case
    from medimg.io.api import load

    opts = {k: v for k, v in options.items() if v is not None}
    return case_from_image(load(p), case_name(p), **opts)  # type: ignore[arg-type]


def to_image(recon: np.ndarray, case: KspaceCase) -> Image:
    """``(S, h, w)`` magnitudes as an MR :class:`Image` ``(1, w, h, S)`` with the case's grid."""
    vol = np.ascontiguousarray(recon.transpose(2, 1, 0))[None].astype(np.float32)
    return Image(vol, case.affine, modality="MR", meta={"source": case.name})


def predict_path(
    inputs: str | Path,
    out_dir: str | Path,
    *,
    method: str = "net",
    model: str | Path | None = None,
    formats: tuple[str, ...] = ("nifti", "dicom"),
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    fallback: bool = False,
    safeguard: bool = True,
    backend: str = "torch",
    **options: object,
) -> list[Path]:
    """Reconstruct a file, a DICOM folder or a folder of ``.h5`` files into ``out_dir``.

    ``safeguard``: check a network's slices (see the module docstring); ``fallback``: write
    the classical image for the slices it flags. ``backend="onnxruntime"`` (or an exported
    ``.onnx`` as ``model``): the network runs in ONNX Runtime
    (:func:`medimg.deploy.mri.open_mri`); coil maps, safeguard and outputs stay this code.

    Every output and every ``.h5`` input's layout is checked before any reconstruction, so a
    refusal writes nothing. A new ``out_dir`` appears only once complete; in an existing one
    each output is replaced whole (``overwrite``)."""
    from medimg.io.api import save
    from medimg.io.output import atomic_dir, check_outputs
    from medimg.tasks.reconstruct.outputs import check_image_outputs

    src = Path(inputs)
    if not src.exists():
        raise InputError("no such file or folder; check the input path", src)
    if not formats or set(formats) - {"nifti", "dicom"}:
        raise InputError(f"formats must be nifti and/or dicom, got {list(formats)}")
    files = sorted(src.glob("*.h5")) if src.is_dir() and any(src.glob("*.h5")) else [src]
    names = [case_name(f) for f in files]
    out = check_outputs([out_dir], inputs=[src], overwrite=True)[0]  # may exist, not the input
    check_image_outputs(_outputs(out, names, formats), inputs=[src], overwrite=overwrite)
    for f in files:  # a bad file later in the folder is found before anything is written
        if _is_h5(f):
            check_fastmri(f)
    ort_tag = None
    from medimg.deploy.runtime import check_backend

    if check_backend(backend) == "onnxruntime" or str(model).lower().endswith(".onnx"):
        if method != "net":
            raise InputError(f"--backend onnxruntime runs a network; --method {method} is "
                             "classical, use --method net or --backend torch")  # fmt: skip
        from medimg.deploy.mri import open_mri

        net, ort_tag, thresholds = open_mri(model, device=device)
        recon = Reconstructor("net", net, device,
                              safeguard=thresholds if safeguard and thresholds else False)  # fmt: skip
    else:
        recon = Reconstructor(method, model, device, safeguard=safeguard and method == "net")
    checked = recon.thresholds is not None
    if fallback and not checked:
        raise InputError(
            "--fallback needs a network whose model folder holds safeguard thresholds "
            "(safeguard.json); use --method net, or calibrate the model with "
            "'medimg recon mri calibrate MODEL'"
        )
    sidecars = [out / f"{n}.json" for n in names] if checked else []
    check_outputs(sidecars, inputs=[src], overwrite=overwrite)
    desc = f"medimg MRI recon ({method})"
    if ort_tag is not None:
        desc = ort_tag
    elif recon.net is not None:  # which network: NIfTI descrip, DICOM Series Description
        from medimg.engine.provenance import model_tag

        name = "default" if model is None else Path(str(model)).name
        desc = model_tag("recon-mri", name, [recon.net])

    def run(folder: Path, replace: bool) -> None:
        for f in files:
            case = load_case(f, **options)
            maps = case.maps if recon.needs_maps else None
            try:
                image = center_crop(recon(case.kspace, case.mask, maps, progress), case.crop)
            except InputError as exc:  # name the file the k-space or mask came from
                raise exc if exc.path else InputError(str(exc), f) from None
            if not np.isfinite(image).all():
                raise InputError(
                    f"the {method} reconstruction holds NaN or Inf values; this model does not "
                    "suit this k-space, try another --method or --model", f,
                )  # fmt: skip
            series = desc
            if recon.last_check is not None:
                check = recon.last_check
                image = _apply_safeguard(image, check, case, f, fallback)
                _write_sidecar(folder / f"{case.name}.json", check, fallback, replace)
                if check.flagged.any():
                    series += f" safeguard: {int(check.flagged.sum())} slice(s) flagged"
                    series += ", CG-SENSE used" if fallback else ""
            image = to_image(image, case)
            image.meta = {**image.meta, "description": desc}
            if "nifti" in formats:
                save(image, folder / f"{case.name}.nii.gz", overwrite=replace)
            if "dicom" in formats:
                # a DICOM series in: the output joins its patient and study (a derived series)
                source = {"source": f} if f.is_dir() else {}
                save(image, folder / f"{case.name}_dicom", overwrite=replace,
                     series_description=series[:64], **source)  # fmt: skip

    if out.is_dir() and any(out.iterdir()):
        run(out, overwrite)
    else:  # a new folder: written beside and swapped in, so it appears only when complete
        with atomic_dir(out, overwrite) as tmp:
            run(tmp, False)
    return _outputs(out, names, formats) + sidecars


def _apply_safeguard(
    image: np.ndarray, check: SliceCheck, case: KspaceCase, src: Path, fallback: bool
) -> np.ndarray:
    """One warning line for the flagged slices; with ``fallback`` their classical image."""
    bad = np.flatnonzero(check.flagged)
    if bad.size == 0:
        return image
    what = "replaced by CG-SENSE" if fallback else "pass --fallback to use CG-SENSE there"
    print(f"warning: {src}: slice(s) {', '.join(map(str, bad))} of {len(check.flagged)}: the "
          f"network strays beyond its calibrated safeguard (data-consistency or classical "
          f"difference); not to be trusted there, {what}", file=sys.stderr)  # fmt: skip
    if not fallback:
        return image
    out = image.copy()
    out[bad] = center_crop(check.classical, case.crop)[bad]
    return out


def _write_sidecar(path: Path, check: SliceCheck, fallback: bool, overwrite: bool) -> None:
    from medimg.io.output import atomic_path

    info = {
        "safeguard": {
            "acceleration": round(check.acceleration, 3),
            "thresholds": check.thresholds,
            "scores": {k: [round(float(v), 5) for v in a] for k, a in check.scores.items()},
            "flagged_slices": [int(i) for i in np.flatnonzero(check.flagged)],
            "fallback": "cg_sense" if fallback and check.flagged.any() else None,
        }
    }
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")


def _outputs(out: Path, names: list[str], formats: tuple[str, ...]) -> list[Path]:
    return [out / f"{n}{ext}" for n in names for fmt, ext in
            (("nifti", ".nii.gz"), ("dicom", "_dicom")) if fmt in formats]  # fmt: skip
