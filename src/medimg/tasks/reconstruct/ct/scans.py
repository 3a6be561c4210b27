"""Real CT as anatomy: scans simulated from any HU image, the seeded training bank over the
acquisition space, and low-/full-dose pairs from a user's own CT.

:func:`scan_image` simulates the scans of an HU image (pixel size, views, FBP filter, flux or
a target noise level, tube-current modulation); :func:`build_bank` makes the seeded, cached
training bank over that acquisition space (:class:`BankConfig`: real non-GPL slices of
:data:`REAL_TRAIN` and body phantoms); :func:`write_from_image` writes the pairs of a user's
own CT (``recon ct simulate --from``). :mod:`medimg.tasks.reconstruct.ct.data` re-exports all
of it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medimg.engine import derive_seed
from medimg.errors import InputError
from medimg.phantoms.ct import REGION_Z, body_phantom
from medimg.physics.ct import CTProjector, ParallelBeamGeometry
from medimg.physics.ct_dose import TransmissionNoise, check_hu, hu_to_mu
from medimg.tasks.reconstruct.ct.baselines import fbp_hu

__all__ = [
    "FILTER_NAMES",
    "REAL_TRAIN",
    "BankConfig",
    "build_bank",
    "dicom_slice_hu",
    "noise_hu",
    "real_train_slices",
    "scan_image",
    "write_from_image",
]

_PROJECTORS: dict[ParallelBeamGeometry, CTProjector] = {}

#: Non-GPL real CT slices used as training anatomy: (real-data source, file, what). The GPL
#: head CT (invesalius Cranium) and ankle (octave-dicom) are kept for validation only
#: (``bench/bench_ct_real.py``): whole subjects never meet across the two sets.
REAL_TRAIN = (
    ("pydicom-data", "693_UNCR.dcm", "head, CQ500, 0.48 mm"),
    ("pydicom-data", "bad_sequence.dcm", "neck, Siemens B30s, 0.29 mm"),
    ("pydicom-data", "explicit_VR-UN.dcm", "abdomen (pancreas CT), 0.86 mm"),
    ("pydicom", "CT_small.dcm", "head, 128 x 128, 0.66 mm"),
)
FILTER_NAMES = ("ram-lak", "shepp-logan", "cosine", "hann")


def dicom_slice_hu(path: str | Path, frame: int = 0) -> tuple[np.ndarray, float]:
    """``(HU (H, W) float32, pixel mm)`` of one DICOM CT slice (rescale applied; padding below
    -1024 HU outside the reconstruction circle set to air)."""
    import pydicom

    ds = pydicom.dcmread(str(path))
    arr = np.asarray(ds.pixel_array, dtype=np.float32)
    arr = arr[frame] if arr.ndim == 3 else arr
    hu = arr * float(ds.get("RescaleSlope", 1.0)) + float(ds.get("RescaleIntercept", 0.0))
    spacing = ds.get("PixelSpacing")
    if spacing is None:
        raise InputError("no PixelSpacing: pass the pixel size yourself", path)
    return np.clip(hu, -1000.0, 3071.0).astype(np.float32), float(spacing[0])


def real_train_slices() -> list[tuple[np.ndarray, float]]:
    """The :data:`REAL_TRAIN` slices as ``(HU, pixel mm)`` (fetched into the data cache)."""
    from medimg.datasets.real_sources import real_file

    out = []
    for source, name, _ in REAL_TRAIN:
        if source == "pydicom":
            from pydicom.data import get_testdata_file

            path = Path(str(get_testdata_file(name)))
        else:
            path = real_file(source, name)
        out.append(dicom_slice_hu(path))
    return out


def _flux_profile(sino: torch.Tensor, amplitude: float) -> torch.Tensor | None:
    """Tube-current modulation: relative flux per view ``1 + a cos 2(theta - theta_max)``
    (mean 1), highest along the most attenuating direction, as automatic exposure control."""
    if amplitude <= 0:
        return None
    v = sino.shape[-2]
    theta = torch.arange(v, dtype=torch.float64) * np.pi / v
    t_max = theta[int(sino.reshape(v, -1).sum(1).argmax())]
    w = 1 + amplitude * torch.cos(2 * (theta - t_max))
    return (w / w.mean())[:, None]


def noise_hu(low: np.ndarray, clean: np.ndarray) -> float:
    """Soft-tissue noise: std of ``low - clean`` where the noiseless scan is in [-150, 250] HU
    (and not at an edge); NaN when there is no soft tissue."""
    from scipy import ndimage

    mask = (clean > -150) & (clean < 250)
    mask = ndimage.binary_erosion(mask, iterations=2)
    return float(np.std((low - clean)[mask])) if mask.sum() > 50 else float("nan")


def scan_image(
    hu: np.ndarray,
    pixel_mm: float,
    *,
    n_views: int,
    filter_name: str,
    i0: float = 1e5,
    doses: tuple[float, ...] = (1.0,),
    seed: int = 0,
    electronic_std: float = 5.0,
    tcm: float = 0.0,
    full_noise_hu: float | None = None,
    sinograms: bool = False,
) -> dict[Any, Any]:
    """Simulate scans of an HU image (``(H, W)``, square pixels of ``pixel_mm``).

    Returns ``clean`` (FBP of the noise-free line integrals), per dose ``f`` of ``doses`` the
    FBP of noisy line integrals at flux ``i0 * f`` (key ``f``), all HU on the image's grid, and
    ``i0``. ``full_noise_hu``: choose ``i0`` instead so that the full-dose scan has this
    soft-tissue noise (:func:`noise_hu`; one trial scan at ``i0``, noise variance ~ 1 / flux).
    ``tcm``: amplitude of tube-current modulation over the views (0 = constant flux).
    ``sinograms``: also the noisy line integrals, key ``("sino", f)``."""
    check_hu(hu, "image")
    h, w = hu.shape
    if h != w:
        raise InputError(f"scan_image needs a square image, got {h}x{w}; pad or crop it first")
    # one projector per (size, views): line integrals scale with the pixel size, and the FBP
    # of a sinogram scaled by d is d times the FBP of the unit-pixel geometry
    g = ParallelBeamGeometry(image_shape=(h, w), n_views=int(n_views), pixel_size=1.0)
    d = float(pixel_mm)

    def recon(sino: torch.Tensor) -> np.ndarray:
        return fbp_hu(sino / d, g, filter_name=filter_name)[0, 0].numpy()

    def noisy(dose: float, flux: float, k: int) -> torch.Tensor:
        return TransmissionNoise(flux, dose_fraction=dose, electronic_std=electronic_std,
                                 seed=derive_seed(seed, 11 + k), view_flux=view)(p)  # fmt: skip

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(hu, np.float32))[None, None]
        p = _projector_for(g).A(hu_to_mu(x)) * d
        out: dict[Any, Any] = {"clean": recon(p)}
        view = _flux_profile(p[0, 0], tcm)
        if full_noise_hu is not None:
            trial = noise_hu(recon(noisy(1.0, i0, 99)), out["clean"])
            if np.isfinite(trial):
                i0 = float(np.clip(i0 * (trial / full_noise_hu) ** 2, 1e2, 1e9))
        for k, dose in enumerate(doses):
            sino = noisy(dose, i0, k)
            out[dose] = recon(sino)
            if sinograms:
                out[("sino", dose)] = sino[0, 0].numpy()
    out["i0"] = i0
    return out


def _projector_for(g: ParallelBeamGeometry) -> CTProjector:
    if g not in _PROJECTORS:
        _PROJECTORS.clear()
        _PROJECTORS[g] = CTProjector(g)  # type: ignore[index]
    return _PROJECTORS[g]  # type: ignore[index]


@dataclasses.dataclass
class BankConfig:
    """The acquisition space a generalising denoiser trains over, and how many slices.

    Slices of ``size`` pixels, one group per (views, filter): ``views_per_side`` times the
    image side (0.35-2.35: 180-1200 views at 512 pixels), every filter of :data:`FILTER_NAMES`.
    Each group holds ``slices_per_group`` anatomies, a ``real_fraction`` of them from the
    :data:`REAL_TRAIN` slices (resampled to ``real_pixel_mm``, rotated, flipped, cropped,
    intensity-jittered), the rest body phantoms at ``phantom_pixel_mm``; each anatomy is scanned
    at ``levels`` fluxes giving soft-tissue noise log-uniform in ``noise_hu``, with tube-current
    modulation of amplitude up to ``tcm_max`` on half of them."""

    size: int = 256
    views_per_side: tuple[float, ...] = (0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.35)
    filters: tuple[str, ...] = FILTER_NAMES
    slices_per_group: int = 8
    levels: int = 3
    noise_hu: tuple[float, float] = (8.0, 180.0)
    real_pixel_mm: tuple[float, float] = (0.3, 1.5)
    phantom_pixel_mm: tuple[float, float] = (1.4, 3.0)
    real_fraction: float = 0.6
    tcm_max: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [f for f in self.filters if f not in FILTER_NAMES]
        if bad or self.size < 32 or self.slices_per_group < 1 or self.levels < 1:
            raise InputError(f"BankConfig needs filters in {FILTER_NAMES}, size >= 32 and counts "
                             f">= 1; got filters {list(self.filters)}, size {self.size}")  # fmt: skip


_BANK_VERSION = 2  # bump when the generator changes: cached banks are keyed by it


def _real_anatomy(rng: np.random.Generator, real: list[tuple[np.ndarray, float]],
                  size: int, pixel: float) -> np.ndarray:  # fmt: skip
    from scipy import ndimage

    hu, native = real[int(rng.integers(len(real)))]
    hu = ndimage.rotate(hu, float(rng.uniform(0, 360)), reshape=False, order=1, cval=-1000.0)
    if rng.random() < 0.5:
        hu = hu[:, ::-1]
    span = int(np.ceil(size * pixel / native)) + 2  # native pixels covering the crop
    body = np.argwhere(hu > -500)
    r, c = body[int(rng.integers(len(body)))] if len(body) else (hu.shape[0] // 2,) * 2
    pad = np.pad(hu, span, constant_values=-1000.0)
    crop = pad[r + span - span // 2 : r + span - span // 2 + span,
               c + span - span // 2 : c + span - span // 2 + span]  # fmt: skip
    out = ndimage.zoom(crop, size / span, order=1, grid_mode=True, mode="nearest")[:size, :size]
    scale, shift = rng.uniform(0.95, 1.05), rng.uniform(-20, 20)
    tissue = out > -500  # contrast and level jitter of the tissue, air stays air
    out = np.where(tissue, (out + 1000) * scale - 1000 + shift, out)
    return np.clip(out, -1000.0, 3071.0).astype(np.float32)


def _phantom_anatomy(rng: np.random.Generator, size: int, pixel: float, seed: int) -> np.ndarray:
    region = ("thorax", "abdomen")[int(rng.integers(2))]
    z = REGION_Z[region] + float(rng.uniform(-50, 50))
    ph = body_phantom((size, size), (pixel, pixel), z_center=z, seed=seed)
    return ph.hu.astype(np.float32)


def build_bank(cfg: BankConfig, *, cache: bool = True, progress: bool = False) -> dict[str, Any]:
    """Simulate (or load from the cache) the bank of ``cfg``: ``low`` ``(N, S, S)`` float16 HU,
    ``clean_index`` ``(N,)`` into ``clean`` ``(M, S, S)`` float16 HU (the noiseless scans),
    ``noise_hu`` ``(N,)``, ``pixel_mm``, ``views``, ``filter`` per low image. Seeded by
    ``cfg.seed``: the same config gives the same bank. Cached under
    ``$MEDIMG_CACHE`` (default ``~/.cache/medimg``)``/ct-bank/<hash>.npz``."""
    import hashlib
    import os

    key = json.dumps({"v": _BANK_VERSION, **dataclasses.asdict(cfg)}, sort_keys=True)
    root = Path(os.environ.get("MEDIMG_CACHE", Path.home() / ".cache" / "medimg")) / "ct-bank"
    path = root / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"
    if cache and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    real = real_train_slices() if cfg.real_fraction > 0 else []
    s, lo_n, hi_n = cfg.size, np.log(cfg.noise_hu[0]), np.log(cfg.noise_hu[1])
    lows, cleans, idx, noise, pix, views, filt = [], [], [], [], [], [], []
    groups = [(v, f) for v in cfg.views_per_side for f in cfg.filters]
    for gi, (vps, fname) in enumerate(groups):
        n_views = max(16, round(vps * s))
        for j in range(cfg.slices_per_group):
            seed = derive_seed(cfg.seed, 1000 * gi + j)
            rng = np.random.default_rng(seed)
            if rng.random() < cfg.real_fraction and real:
                pixel = float(np.exp(rng.uniform(*np.log(cfg.real_pixel_mm))))
                hu = _real_anatomy(rng, real, s, pixel)
            else:
                pixel = float(rng.uniform(*cfg.phantom_pixel_mm))
                hu = _phantom_anatomy(rng, s, pixel, seed % 100000)
            sig = np.exp(rng.uniform(lo_n, hi_n, cfg.levels))
            tcm = float(rng.uniform(0, cfg.tcm_max)) if rng.random() < 0.5 else 0.0
            doses = tuple(float((sig[0] / x) ** 2) for x in sig)
            out = scan_image(hu, pixel, n_views=n_views, filter_name=fname, doses=doses,
                             seed=seed, tcm=tcm, full_noise_hu=float(sig[0]))  # fmt: skip
            cleans.append(out["clean"].astype(np.float16))
            for d in doses:
                lows.append(out[d].astype(np.float16))
                idx.append(len(cleans) - 1)
                noise.append(noise_hu(out[d], out["clean"]))
                pix.append(pixel)
                views.append(n_views)
                filt.append(FILTER_NAMES.index(fname))
        if progress:
            print(f"bank: group {gi + 1}/{len(groups)} ({n_views} views, {fname})", flush=True)
    bank = {"low": np.stack(lows), "clean": np.stack(cleans), "clean_index": np.array(idx),
            "noise_hu": np.array(noise), "pixel_mm": np.array(pix), "views": np.array(views),
            "filter": np.array(filt)}  # fmt: skip
    if cache:
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **bank)
        os.replace(tmp, path)
    return bank


def write_from_image(
    out_dir: str | Path,
    source: str | Path,
    *,
    n_views: int = 720,
    filter_name: str = "ram-lak",
    i0: float = 1e5,
    full_noise_hu: float | None = None,
    doses: tuple[float, ...] = (0.25,),
    slices: list[int] | None = None,
    seed: int = 0,
    fmt: str = "nifti",
    sinograms: bool = True,
    overwrite: bool = False,
) -> Path:
    """Low-dose / full-dose pairs simulated from a user's own CT (an HU image file or DICOM
    series): per axial slice a ``case_<k>/`` folder as :func:`write_pairs` writes (``full``,
    ``low_<pct>``, ``phantom`` = the input slice itself, optional sinograms) and ``cases.json``,
    so ``recon ct evaluate`` and ``predict`` run on it. The slice is scanned on its own grid
    and pixel size (:func:`scan_image`; a non-square slice is padded with air to a square and
    cropped back); ``slices``: axial indices (default the middle one)."""
    from medimg.io.api import load, save
    from medimg.io.image import Image
    from medimg.io.output import atomic_dir
    from medimg.tasks.reconstruct.ct.data import SimConfig, check_scan_size
    from medimg.tasks.reconstruct.ct.predict import check_ct_input
    from medimg.tasks.reconstruct.outputs import check_image_outputs

    src = Path(source)
    if fmt not in ("nifti", "dicom"):
        raise InputError(f"fmt must be 'nifti' or 'dicom', got {fmt!r}")
    names = [f"low_{round(100 * d):03d}" for d in doses]
    if len(set(names)) != len(names) or not all(0 < d <= 1 for d in doses):
        raise InputError(f"doses must be distinct fractions in (0, 1] (to 1 %), got {list(doses)}")
    check_image_outputs([out_dir], inputs=[src], overwrite=overwrite)
    image = load(src)
    if image.num_channels != 1:
        raise InputError(f"expected one channel of CT in HU, got {image.num_channels}", src)
    check_ct_input(image, src)
    vol = image.array[0] if image.array.ndim == 4 else image.array[0][..., None]
    sx, sy = image.spacing[:2]
    if abs(sx - sy) > 0.02 * max(sx, sy):
        raise InputError(f"pixels of {sx:.3g} x {sy:.3g} mm are not square; resample the image "
                         "to square pixels first", src)  # fmt: skip
    ks = [vol.shape[2] // 2] if slices is None else [int(k) for k in slices]
    bad = [k for k in ks if not 0 <= k < vol.shape[2]]
    if bad or len(set(ks)) != len(ks):
        raise InputError(
            f"slices must be distinct indices in [0, {vol.shape[2] - 1}], got {ks}", src
        )
    nx, ny = vol.shape[:2]
    n = max(nx, ny)
    sinograms = sinograms and nx == ny  # a padded slice's sinogram is not of the stored grid
    cfg = SimConfig(image_size=n, pixel_mm=float(sx), n_views=n_views, i0=i0,
                    dose_fraction=doses[0], filter_name=filter_name)  # fmt: skip
    check_scan_size(cfg)
    ext = ".nii.gz" if fmt == "nifti" else ""
    index = []
    with atomic_dir(out_dir, overwrite, inputs=[src]) as out:
        for k in ks:
            plane = np.full((n, n), -1000.0, np.float32)  # pad with air to a square
            plane[:nx, :ny] = np.clip(vol[:, :, k], -1000.0, None)
            o = scan_image(plane, float(sx), n_views=n_views, filter_name=filter_name, i0=i0,
                           doses=(1.0, *doses), seed=derive_seed(seed, k), sinograms=sinograms,
                           full_noise_hu=full_noise_hu)  # fmt: skip
            affine = image.affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, k if
                                              image.array.ndim == 4 else 0], [0, 0, 0, 1.0]])  # fmt: skip

            def put(arr: np.ndarray, name: str, case: Path, affine: np.ndarray = affine) -> None:
                img = Image(arr[:nx, :ny, None][None].astype(np.float32), affine, modality="CT")
                save(img, case / f"{name}{ext}")

            case = out / f"case_{k:05d}"
            case.mkdir()
            put(o[1.0], "full", case)
            put(plane, "phantom", case)
            for dose, name in zip(doses, names):
                put(o[dose], name, case)
                if sinograms:
                    np.save(case / f"sino_{name}.npy", o[("sino", dose)])
            if sinograms:
                np.save(case / "sino_full.npy", o[("sino", 1.0)])
            index.append({"case": case.name, "seed": k, "slice": k, "region": "real",
                          "nodules": [], "full_noise_hu": noise_hu(o[1.0], o["clean"]),
                          "i0": o["i0"]})  # fmt: skip
        cfg.i0 = float(index[0]["i0"])
        meta = {"sim": dataclasses.asdict(cfg), "doses": list(doses), "format": fmt,
                "source": str(src), "cases": index}  # fmt: skip
        (out / "cases.json").write_text(json.dumps(meta, indent=1))
    return Path(out_dir)
