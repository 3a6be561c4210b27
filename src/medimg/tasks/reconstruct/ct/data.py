"""Paired full-dose / low-dose CT slices simulated from body phantoms, in memory and on disk.

A sample is one axial slice of :func:`medimg.phantoms.ct.body_phantom` (thorax or abdomen, slice
height jittered) projected by :class:`~medimg.physics.ct.CTProjector`, given transmission noise
(Poisson + electronic, :mod:`medimg.physics.ct_dose`) at full dose and at ``dose_fraction`` of
it, and reconstructed by FBP (:func:`~medimg.tasks.reconstruct.ct.baselines.fbp_hu`). Beside
the full-dose FBP (the reference scanner data offers, as in the Mayo low-dose challenge pairs)
each sample keeps the phantom and the *noiseless scan* ``clean``: the same FBP of the phantom's
noise-free line integrals, i.e. the truth at the scanner's resolution, which a phantom study can
use as training target and reference (see ``CTTrainConfig.target``).

Real CT as anatomy: :func:`scan_image` simulates the scans of any HU image (pixel size, views,
FBP filter, flux or a target noise level, tube-current modulation); :func:`build_bank` makes
the seeded, cached training bank over that acquisition space (:class:`BankConfig`: real
non-GPL slices of :data:`REAL_TRAIN` and phantoms); :func:`write_from_image` writes the pairs
of a user's own CT (``recon ct simulate --from``).

Networks see ``HU / 1000`` (water 0, air -1): :func:`to_net` / :func:`from_net`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medimg.engine import derive_seed
from medimg.errors import InputError
from medimg.phantoms.ct import REGION_Z, body_phantom
from medimg.physics.ct import CTProjector, ParallelBeamGeometry
from medimg.physics.ct_dose import TransmissionNoise, check_hu, hu_to_mu, simulate_sinogram
from medimg.tasks.reconstruct.ct.baselines import fbp_hu

__all__ = [
    "FILTER_NAMES",
    "HU_SCALE",
    "REAL_TRAIN",
    "TARGETS",
    "BankConfig",
    "MixedPatches",
    "PatchDataset",
    "SimConfig",
    "SliceDataset",
    "SlicePair",
    "axial_affine",
    "build_bank",
    "check_scan_size",
    "dicom_slice_hu",
    "from_net",
    "geometry",
    "noise_hu",
    "real_train_slices",
    "scan_image",
    "simulate_slice",
    "simulate_slices",
    "slice_image",
    "to_net",
    "write_from_image",
    "write_pairs",
]  # fmt: skip

HU_SCALE = 1000.0  # network units: HU / 1000


def to_net(hu: Any) -> torch.Tensor:
    """HU -> network units (``HU / 1000``), float32 tensor."""
    return (
        torch.as_tensor(np.asarray(hu, dtype=np.float32) if not torch.is_tensor(hu) else hu)
        / HU_SCALE
    )


def from_net(x: torch.Tensor) -> torch.Tensor:
    """Network units -> HU."""
    return x * HU_SCALE


@dataclasses.dataclass
class SimConfig:
    """How slices are simulated: grid, scanner geometry, flux and dose, FBP filter.

    ``i0`` is photons per detector element and view at full dose; at 3 mm pixels and 192 views
    1e5 gives ~15 HU noise in soft tissue at full dose and ~35 HU at 25 %.
    """

    image_size: int = 128
    pixel_mm: float = 3.0
    n_views: int = 192
    i0: float = 1e5
    dose_fraction: float = 0.25
    electronic_std: float = 5.0
    filter_name: str = "hann"
    regions: tuple[str, ...] = ("thorax", "abdomen")
    z_jitter_mm: float = 50.0
    nodule_mm: tuple[float, float] = (3.0, 30.0)

    def __post_init__(self) -> None:
        if self.image_size < 16 or not self.pixel_mm > 0 or self.n_views < 8:
            raise InputError(
                f"SimConfig needs image_size >= 16, pixel_mm > 0, n_views >= 8; got "
                f"{self.image_size}, {self.pixel_mm}, {self.n_views}"
            )
        if not 0 < self.dose_fraction <= 1 or not self.i0 > 0:
            raise InputError(
                f"dose_fraction must be in (0, 1] and i0 > 0, got {self.dose_fraction}, {self.i0}"
            )
        bad = [r for r in self.regions if r not in REGION_Z]
        if bad or not self.regions:
            raise InputError(f"regions must be a non-empty subset of {sorted(REGION_Z)}, got {bad}")


def check_scan_size(cfg: SimConfig) -> None:
    """Refuse (one line) a grid whose image, sinogram or one view's ray samples would not fit
    in memory, before anything is allocated (``--size 100000``)."""
    from medimg.io.inputs import check_allocation

    n, det = int(cfg.image_size), 2 * int(cfg.image_size) + 2  # detector: about n * sqrt(2)
    check_allocation((n, n), np.float32, what="the CT image", copies=8)
    check_allocation((cfg.n_views, det), np.float32, what="the sinogram", copies=4)
    check_allocation((det, det, 2), np.float64, what="one view's ray samples", copies=2)


def geometry(cfg: SimConfig) -> ParallelBeamGeometry:
    """The parallel-beam geometry of ``cfg`` (detector covers the whole image)."""
    n = cfg.image_size
    return ParallelBeamGeometry(image_shape=(n, n), n_views=cfg.n_views, pixel_size=cfg.pixel_mm)


@dataclasses.dataclass
class SlicePair:
    """One simulated slice: ``phantom``/``full``/``low``/``clean`` (noiseless scan: FBP of the
    noise-free line integrals) HU ``(H, W)`` float32, ``labels``, sinograms (line integrals
    ``(n_views, n_det)``), the phantom's affine and nodules."""

    seed: int
    region: str
    phantom: np.ndarray
    labels: np.ndarray
    full: np.ndarray
    low: np.ndarray
    sino_full: np.ndarray
    sino_low: np.ndarray
    affine: np.ndarray
    nodules: list[dict[str, Any]]
    clean: np.ndarray


_PROJECTORS: dict[tuple, CTProjector] = {}


def _projector(cfg: SimConfig) -> CTProjector:
    return _projector_for(geometry(cfg))  # the projector caches its sampling grids: keep it


def simulate_slice(seed: int, cfg: SimConfig, *, dose_fraction: float | None = None) -> SlicePair:
    """Simulate slice ``seed``: region and slice height drawn from ``seed``, independent noise
    at full dose and at ``dose_fraction`` (default ``cfg.dose_fraction``)."""
    dose = cfg.dose_fraction if dose_fraction is None else float(dose_fraction)
    if not 0 < dose <= 1:
        raise InputError(f"dose fraction must be in (0, 1], got {dose}")
    rng = np.random.default_rng(derive_seed(seed, 7))
    region = cfg.regions[int(rng.integers(len(cfg.regions)))]
    z = REGION_Z[region] + float(rng.uniform(-1, 1)) * cfg.z_jitter_mm
    n, d = cfg.image_size, cfg.pixel_mm
    ph = body_phantom((n, n), (d, d), z_center=z, seed=seed, nodule_diameter_mm=cfg.nodule_mm)
    op, g = _projector(cfg), geometry(cfg)
    x = torch.from_numpy(ph.hu)[None, None]
    kw = {"i0": cfg.i0, "electronic_std": cfg.electronic_std}
    sino_f = simulate_sinogram(x, op, dose_fraction=1.0, seed=derive_seed(seed, 1), **kw)
    sino_l = simulate_sinogram(x, op, dose_fraction=dose, seed=derive_seed(seed, 2), **kw)
    full = fbp_hu(sino_f, g, filter_name=cfg.filter_name)[0, 0].numpy()
    low = fbp_hu(sino_l, g, filter_name=cfg.filter_name)[0, 0].numpy()
    with torch.no_grad():  # the noiseless scan: same projector and FBP, no photon noise
        clean = fbp_hu(op.A(hu_to_mu(x)), g, filter_name=cfg.filter_name)[0, 0].numpy()
    nods = [dataclasses.asdict(nd) for nd in ph.nodules]
    return SlicePair(seed, region, ph.hu, ph.labels, full, low, sino_f[0, 0].numpy(),
                     sino_l[0, 0].numpy(), ph.affine, nods, clean)  # fmt: skip


_SLICE_CACHE: dict[tuple, SlicePair] = {}


def simulate_slices(
    seeds: list[int] | range, cfg: SimConfig, *, dose_fraction: float | None = None
) -> list[SlicePair]:
    """:func:`simulate_slice` for each seed (about 1 s each at 128 x 128). The last 128 slices
    are kept in memory (treat them as read-only): a resumed or repeated run in the same process
    does not simulate them again."""
    out = []
    for s in seeds:
        key = (int(s), dataclasses.astuple(cfg), dose_fraction)
        if key not in _SLICE_CACHE:
            if len(_SLICE_CACHE) >= 128:
                _SLICE_CACHE.pop(next(iter(_SLICE_CACHE)))
            _SLICE_CACHE[key] = simulate_slice(int(s), cfg, dose_fraction=dose_fraction)
        out.append(_SLICE_CACHE[key])
    return out


TARGETS = ("full", "clean")


class PatchDataset(Dataset):
    """Random ``patch`` x ``patch`` crops of (low, target) slice pairs, flipped/rotated at random.

    ``target``: ``"full"`` (the full-dose FBP, as scanner pairs give) or ``"clean"`` (the
    noiseless scan, which only simulation gives). Indices only count samples per epoch: what a
    read returns comes from the global numpy RNG, which :class:`medimg.engine.SeededSamples`
    seeds per ``(seed, step, index)``. Crops centred in air (below -900 HU in the target) are
    redrawn up to three times: they teach nothing about tissue. With ``tissue_focus`` the
    redraw rule is stricter: the centre must lie in the soft-tissue window [-160, 240] HU.
    """

    def __init__(
        self,
        pairs: list[SlicePair],
        patch: int,
        samples_per_epoch: int = 512,
        *,
        target: str = "full",
        tissue_focus: bool = False,
    ) -> None:
        if not pairs:
            raise InputError("PatchDataset needs at least one slice pair")
        if target not in TARGETS:
            raise InputError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        size = min(p.full.shape[-1] for p in pairs)
        if not 8 <= patch <= size:
            raise InputError(f"patch must be in [8, {size}] pixels, got {patch}")
        self.low = [to_net(p.low) for p in pairs]
        self.full = [to_net(getattr(p, target)) for p in pairs]
        self.patch, self.n = int(patch), int(samples_per_epoch)
        self.lo, self.hi = (-0.16, 0.24) if tissue_focus else (-0.9, np.inf)

    @classmethod
    def from_bank(
        cls, bank: dict[str, Any], patch: int, samples_per_epoch: int = 512, *,
        tissue_focus: bool = False,
    ) -> PatchDataset:  # fmt: skip
        """Patches of a :func:`build_bank` bank: (low-dose FBP, noiseless scan) pairs."""
        if not 8 <= patch <= bank["low"].shape[-1]:
            raise InputError(f"patch must be in [8, {bank['low'].shape[-1]}] pixels, got {patch}")
        self = cls.__new__(cls)
        clean = [to_net(c.astype(np.float32)) for c in bank["clean"]]
        self.low = [to_net(x.astype(np.float32)) for x in bank["low"]]
        self.full = [clean[int(i)] for i in bank["clean_index"]]  # shared, not copied
        self.patch, self.n = int(patch), int(samples_per_epoch)
        self.lo, self.hi = (-0.16, 0.24) if tissue_focus else (-0.9, np.inf)
        return self

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rand = np.random  # seeded per (seed, step, index) by the engine's SeededSamples
        k = int(rand.randint(len(self.full)))
        full, low, p = self.full[k], self.low[k], self.patch
        for _ in range(4):
            r = int(rand.randint(full.shape[0] - p + 1))
            c = int(rand.randint(full.shape[1] - p + 1))
            if self.lo < full[r + p // 2, c + p // 2] < self.hi:
                break
        pair = torch.stack([low[r : r + p, c : c + p], full[r : r + p, c : c + p]])
        pair = torch.rot90(pair, int(rand.randint(4)), dims=(1, 2))
        if rand.rand() < 0.5:
            pair = pair.flip(2)
        return {"input": pair[0:1].contiguous(), "target": pair[1:2].contiguous()}


class MixedPatches(Dataset):
    """Patches from ``focus`` with probability ``fraction``, else from ``main`` (both
    :class:`PatchDataset`): training weighted towards one part of the acquisition space
    (e.g. sharp-filter, fine-pixel, noisy scans) while the whole space stays in the mix.
    The draw reads the global numpy RNG, as :class:`PatchDataset` does."""

    def __init__(self, main: PatchDataset, focus: PatchDataset, fraction: float) -> None:
        if not 0 <= fraction <= 1:
            raise InputError(f"the focus fraction must be in [0, 1], got {fraction}")
        self.main, self.focus, self.fraction = main, focus, float(fraction)

    def __len__(self) -> int:
        return len(self.main)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rand = np.random  # seeded per (seed, step, index) by the engine
        src = self.focus if rand.rand() < self.fraction else self.main
        return src[index]


class SliceDataset(Dataset):
    """Whole slices with their low-dose sinograms, for models that use the projector (LPD);
    ``target`` as in :class:`PatchDataset`."""

    def __init__(self, pairs: list[SlicePair], *, target: str = "full") -> None:
        if not pairs:
            raise InputError("SliceDataset needs at least one slice pair")
        if target not in TARGETS:
            raise InputError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        self.pairs, self.target = pairs, target

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        p = self.pairs[index]
        return {"sino": torch.from_numpy(p.sino_low)[None].float(),
                "input": to_net(p.low)[None], "target": to_net(getattr(p, self.target))[None]}  # fmt: skip


def axial_affine(size: int, pixel_mm: float) -> np.ndarray:
    """``(row, col, 0)`` -> RAS+ mm of a ``size`` x ``size`` axial slice centred on the axis, as
    the phantoms lay it out: rows run posterior, columns to the patient's left."""
    a = np.zeros((4, 4))
    a[:3, 0], a[:3, 1], a[:3, 2] = (0, -pixel_mm, 0), (-pixel_mm, 0, 0), (0, 0, -pixel_mm)
    a[:2, 3], a[3, 3] = (size - 1) / 2 * pixel_mm, 1.0
    return a


def slice_image(hu: np.ndarray, affine: np.ndarray, is_label: bool = False):
    """A ``(row, col)`` slice with its ``(row, col, 0)`` affine as an :class:`Image` (CT or SEG)."""
    from medimg.io.image import Image

    swap = affine[:, [1, 0, 2, 3]]  # (row, col) arrays -> the project's (X=col, Y=row)
    return Image(hu.T[None], swap, modality="SEG" if is_label else "CT", is_label=is_label)


def write_pairs(
    out_dir: str | Path,
    seeds: list[int] | range,
    cfg: SimConfig,
    *,
    doses: tuple[float, ...] = (0.25,),
    fmt: str = "nifti",
    sinograms: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write ``case_<seed>/`` folders: ``phantom``, ``full``, ``low_<pct>`` (one per dose),
    ``labels`` (NIfTI ``.nii.gz``, or DICOM series folders with HU rescale for ``fmt="dicom"``),
    optional sinograms ``.npy`` and ``cases.json`` with the simulation settings and nodules."""
    from medimg.io.api import save
    from medimg.io.output import atomic_dir, check_outputs

    if fmt not in ("nifti", "dicom"):
        raise InputError(f"fmt must be 'nifti' or 'dicom', got {fmt!r}")
    names = [f"low_{round(100 * d):03d}" for d in doses]
    if len(set(names)) != len(names) or not all(0 < d <= 1 for d in doses):
        raise InputError(f"doses must be distinct fractions in (0, 1] (to 1 %), got {list(doses)}")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise InputError(f"give one or more distinct seeds, got {seeds}")
    check_outputs([out_dir], overwrite=overwrite)  # refuse before minutes of simulation
    ext = ".nii.gz" if fmt == "nifti" else ""
    # the whole set is written beside out_dir and swapped in at the end: an interrupt leaves
    # the earlier set (or nothing), and --overwrite replaces only a set medimg wrote
    with atomic_dir(out_dir, overwrite) as out:
        index = _write_cases(out, seeds, cfg, doses, names, ext, sinograms, save)
        meta = {"sim": dataclasses.asdict(cfg), "doses": list(doses), "format": fmt,
                "cases": index}  # fmt: skip
        (out / "cases.json").write_text(json.dumps(meta, indent=1))
    return Path(out_dir)


def _write_cases(
    out: Path, seeds: list[int], cfg: SimConfig, doses: tuple[float, ...], names: list[str],
    ext: str, sinograms: bool, save: Any,
) -> list[dict[str, Any]]:  # fmt: skip
    index = []
    for seed in seeds:
        case = out / f"case_{seed:05d}"
        case.mkdir()
        base = None
        for dose, name in zip(doses, names):
            pair = simulate_slice(seed, cfg, dose_fraction=dose)
            save(slice_image(pair.low, pair.affine), case / f"{name}{ext}")
            if sinograms:
                np.save(case / f"sino_{name}.npy", pair.sino_low)
            base = pair
        assert base is not None
        save(slice_image(base.full, base.affine), case / f"full{ext}")
        save(slice_image(base.phantom, base.affine), case / f"phantom{ext}")
        if ext:  # label maps are not CT: NIfTI only
            save(slice_image(base.labels, base.affine, True), case / "labels.nii.gz")
        if sinograms:
            np.save(case / "sino_full.npy", base.sino_full)
        index.append({"case": case.name, "seed": seed, "region": base.region,
                      "nodules": base.nodules})  # fmt: skip
    return index


# --- real CT as anatomy: scans simulated from an HU image, and the training bank -------------

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
