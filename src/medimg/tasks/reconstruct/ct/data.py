"""Paired full-dose / low-dose CT slices simulated from body phantoms, in memory and on disk.

A sample is one axial slice of :func:`medimg.phantoms.ct.body_phantom` (thorax or abdomen, slice
height jittered) projected by :class:`~medimg.physics.ct.CTProjector`, given transmission noise
(Poisson + electronic, :mod:`medimg.physics.ct_dose`) at full dose and at ``dose_fraction`` of
it, and reconstructed by FBP (:func:`~medimg.tasks.reconstruct.ct.baselines.fbp_hu`). Beside
the full-dose FBP (the reference scanner data offers, as in the Mayo low-dose challenge pairs)
each sample keeps the phantom and the *noiseless scan* ``clean``: the same FBP of the phantom's
noise-free line integrals, i.e. the truth at the scanner's resolution, which a phantom study can
use as training target and reference (see ``CTTrainConfig.target``).

Real CT as anatomy (:func:`scan_image`, the training bank :func:`build_bank` /
:class:`BankConfig`, :func:`write_from_image` for ``recon ct simulate --from``) lives in
:mod:`medimg.tasks.reconstruct.ct.scans` and is re-exported here.

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
from medimg.physics.ct_dose import hu_to_mu, simulate_sinogram
from medimg.tasks.reconstruct.ct.baselines import fbp_hu
from medimg.tasks.reconstruct.ct.scans import (  # re-exported: one place to import CT data from
    FILTER_NAMES,
    REAL_TRAIN,
    BankConfig,
    _projector_for,
    build_bank,
    dicom_slice_hu,
    noise_hu,
    real_train_slices,
    scan_image,
    write_from_image,
)

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
