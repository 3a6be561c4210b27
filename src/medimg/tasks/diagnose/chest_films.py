"""Training films for the chest X-ray nodule classifier: cached thorax projections, nodules and
acquisition variety added per sample.

Projecting a 3D thorax (:func:`medimg.phantoms.chest_xray.thorax_projection`) costs ~10 CPU s;
exposing it costs milliseconds. Line integrals add, so one noise-free projection per patient
(its *background*) serves any number of films: a nodule is its analytic chord
(:func:`medimg.physics.xray.nodule_line_integral`) added to the background's line integrals
at the centre plane's magnification, then the film is exposed (:func:`~medimg.physics.xray.expose`:
dose, scatter, detector blur, Poisson noise; :func:`~medimg.physics.xray.log_image`) and
processed the way CR/DX systems and viewers do (edge enhancement, a tone curve, a crop of
72-98 % of each side, a small rotation). Backgrounds are cached as ``.npz`` under
``$MEDIMG_CACHE`` (default ``~/.cache/medimg``)``/chest-thorax/``.

Negatives carry no nodule; positives one, 6-30 mm (log-uniform), solid / part-solid /
calcified (2:1:1), centred where the ray crosses at least its diameter + 10 mm of lung (behind
the heart, ribs and diaphragm domes included).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from medimg.errors import InputError
from medimg.phantoms.chest_xray import ThoraxProjection, thorax_projection
from medimg.physics.xray import _blur_mm, expose, log_image, nodule_line_integral
from medimg.tasks.diagnose.data import CaseArrays, normalise, resize

__all__ = ["FilmRecipe", "PatchDataset", "film_arrays", "load_backgrounds", "sample_film"]

KINDS = ("solid", "solid", "part_solid", "calcified")


@dataclass(frozen=True)
class FilmRecipe:
    """How backgrounds are rendered (``detector`` px over ``fov_mm``, ``voxel_mm`` thorax) and
    what the model gets (``input_size`` px square)."""

    detector: int = 384
    fov_mm: float = 420.0
    voxel_mm: float = 3.0
    input_size: int = 256
    diameter_mm: tuple[float, float] = (6.0, 30.0)
    ap_every: int = 4  # every 4th patient is filmed AP (bedside, 100 cm)


def _cache_root() -> Path:
    return Path(os.environ.get("MEDIMG_CACHE", Path.home() / ".cache" / "medimg")) / "chest-thorax"


def load_backgrounds(
    seeds: Sequence[int], recipe: FilmRecipe = FilmRecipe(), *, cache: bool = True,
    progress: bool = False,
) -> list[ThoraxProjection]:  # fmt: skip
    """One projection per patient seed (PA, or AP for every ``ap_every``-th seed), read from
    the cache when there, else rendered (and cached when ``cache``)."""
    out = []
    for k, seed in enumerate(seeds):
        view = "AP" if recipe.ap_every and seed % recipe.ap_every == recipe.ap_every - 1 else "PA"
        name = f"thorax{seed}_{view}_{recipe.detector}_{recipe.fov_mm:g}_{recipe.voxel_mm:g}.npz"
        path = _cache_root() / name
        if cache and path.is_file():
            z = np.load(path)
            out.append(ThoraxProjection(z["p"], z["lung_mm"], float(z["pixel_mm"]), view,
                                        float(z["magnification"])))  # fmt: skip
            continue
        proj = thorax_projection(int(seed), recipe.detector, view=view, voxel_mm=recipe.voxel_mm,
                                 fov_mm=recipe.fov_mm)  # fmt: skip
        if cache:
            from medimg.io.output import atomic_path

            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path, overwrite=True) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, p=proj.p, lung_mm=proj.lung_mm, pixel_mm=proj.pixel_mm,
                         magnification=proj.magnification)  # fmt: skip
        if progress:
            print(f"rendered thorax {seed} ({view}), {k + 1}/{len(seeds)}", flush=True)
        out.append(proj)
    return out


def _process(log: np.ndarray, pixel_mm: float, rng: np.random.Generator) -> np.ndarray:
    """CR/DX-style processing of a log image: unsharp-mask edge enhancement (large kernel: the
    dynamic-range compression of chest processing) and a monotone tone curve."""
    sigma_mm = rng.uniform(4.0, 30.0)
    amount = rng.uniform(0.0, 2.5)
    low = _blur_mm(torch.from_numpy(log), sigma_mm, (pixel_mm, pixel_mm)).numpy()
    x = log + amount * (log - low)
    lo, hi = np.percentile(x, [0.5, 99.5])
    t = np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1)
    gamma = float(np.exp(rng.uniform(-0.35, 0.35)))
    return (t**gamma).astype(np.float32)


def _rotated(u: float, v: float, angle: float, n: int) -> tuple[float, float]:
    """Where ``ndimage.rotate(..., angle, reshape=False)`` moves pixel ``(u, v)`` of an
    ``n`` x ``n`` image."""
    a = np.deg2rad(angle)
    du, dv = u - (n - 1) / 2, v - (n - 1) / 2
    return (float(np.cos(a) * du - np.sin(a) * dv + (n - 1) / 2),
            float(np.sin(a) * du + np.cos(a) * dv + (n - 1) / 2))  # fmt: skip


def sample_film(
    bg: ThoraxProjection,
    rng: np.random.Generator,
    positive: bool,
    recipe: FilmRecipe = FilmRecipe(),
    *,
    process: bool = True,
    noise: bool = True,
    contrast: float = 1.0,
) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """One film of background ``bg`` as model input ``(1, S, S)`` (intensities as
    :func:`~medimg.tasks.diagnose.data.prepare_image` maps them) and, for a positive, the
    nodule ``(u, v, radius)`` in input pixels (module doc). The acquisition is drawn before
    the nodule, so the same ``rng`` state gives the same film with and without one.
    ``contrast`` scales the nodule's line integral (above 1: easier films for a curriculum).
    The crop always keeps a positive's nodule centre at least its radius inside the film."""
    acq = np.random.default_rng(rng.integers(2**63))
    p = torch.from_numpy(bg.p)
    pix, mag = bg.pixel_mm, bg.magnification
    nodule = None
    if positive:
        dia = float(np.exp(rng.uniform(*np.log(recipe.diameter_mm))))
        room = np.argwhere(bg.lung_mm > dia + 10.0)
        if not len(room):
            room = np.argwhere(bg.lung_mm >= bg.lung_mm.max() * 0.8)
        c = room[rng.integers(len(room))] + rng.uniform(-0.5, 0.5, 2)
        kind = str(rng.choice(KINDS))
        chord = nodule_line_integral(p.shape, (pix, pix), (float(c[0]), float(c[1])), dia * mag,
                                     kind, axes_ratio=(1.0, 1.0, 1.0 / mag))  # fmt: skip
        p = p + float(contrast) * chord
        nodule = (float(c[0]), float(c[1]), dia * mag / pix / 2)
    i0 = float(np.exp(acq.uniform(np.log(2e3), np.log(5e4))))
    gen = torch.Generator().manual_seed(int(acq.integers(2**31)))
    counts = expose(p, (pix, pix), i0=i0, scatter_fraction=float(acq.uniform(0.15, 0.5)),
                    scatter_sigma_mm=float(acq.uniform(25, 80)),
                    blur_sigma_mm=float(acq.uniform(0.2, 1.0)),
                    noise="poisson" if noise else "none", generator=gen)  # fmt: skip
    log = log_image(counts, i0).numpy()
    if process:
        log = _process(log, pix, acq)
    # rotation about the centre, then a crop of 72-98 % of each side (the 420 mm field holds
    # air beside and above the patient; chest films are collimated to 350-430 mm)
    n = log.shape[0]
    angle = float(acq.uniform(-5, 5))
    log = ndimage.rotate(log, angle, reshape=False, order=1, mode="nearest")
    cu, cv = (int(n * acq.uniform(0.72, 0.98)) for _ in range(2))
    u0, v0 = int(acq.integers(0, n - cu + 1)), int(acq.integers(0, n - cv + 1))
    if nodule is not None:  # a positive whose nodule the crop cut off would be a false label
        ru, rv = _rotated(nodule[0], nodule[1], angle, n)
        m = nodule[2]
        u0 = int(np.clip(u0, int(np.ceil(ru + m)) - cu + 1, int(ru - m)))
        v0 = int(np.clip(v0, int(np.ceil(rv + m)) - cv + 1, int(rv - m)))
        u0, v0 = int(np.clip(u0, 0, n - cu)), int(np.clip(v0, 0, n - cv))
    crop = log[u0 : u0 + cu, v0 : v0 + cv]
    size = recipe.input_size
    x = resize(normalise(crop[None], None), (size, size))
    if nodule is not None:
        ru, rv = _rotated(nodule[0], nodule[1], angle, n)
        nodule = ((ru - u0 + 0.5) * size / cu - 0.5, (rv - v0 + 0.5) * size / cv - 0.5,
                  nodule[2] * size / max(cu, cv))  # fmt: skip
    return x.astype(np.float32), nodule


def film_arrays(
    backgrounds: Sequence[ThoraxProjection], n: int, seed: int, recipe: FilmRecipe = FilmRecipe(),
    prefix: str = "film",
) -> CaseArrays:  # fmt: skip
    """``n`` films (half with a nodule, alternating) cycling over ``backgrounds``; ``boxes``
    hold each nodule's box ``(u0, v0, u1, v1)`` in input pixels."""
    if not backgrounds or n < 1:
        raise InputError(f"need at least one background and one film, got {len(backgrounds)}, {n}")
    rng = np.random.default_rng([seed, 71])
    size = recipe.input_size
    x = np.empty((n, 1, size, size), np.float32)
    y = np.zeros(n, np.float32)
    boxes: list[list[tuple[int, ...]]] = []
    order = rng.permutation(n)
    for i in range(n):
        positive = bool(order[i] % 2)
        x[i], nod = sample_film(backgrounds[i % len(backgrounds)], rng, positive, recipe)
        y[i] = float(positive)
        if nod is None:
            boxes.append([])
        else:
            u, v, r = nod
            boxes.append([(int(np.floor(u - r)), int(np.floor(v - r)), int(np.ceil(u + r)),
                           int(np.ceil(v + r)))])  # fmt: skip
    return CaseArrays(x, y, np.ones((n, 1), bool), [f"{prefix}{i:05d}" for i in range(n)], boxes)


class PatchDataset(torch.utils.data.Dataset):
    """Training crops ``patch`` x ``patch`` of films (:func:`film_arrays`): a positive film's
    crop holds its whole nodule; a negative film's crop lies anywhere, or (half of them) holds
    the box of a random positive's nodule, i.e. lung where nodules go. A nodule covers ~0.1 %
    of a 256^2 film, and at its real contrast (a few % of the film's range) a classifier that
    sees whole films at once stays at chance for hundreds of steps; crops make the nodule a
    larger share of what each step sees and cost a seventh of a whole film. The network
    (convolutions, global max pooling) then runs on whole films unchanged."""

    def __init__(self, data: CaseArrays, patch: int = 96, augment: float = 1.0) -> None:
        if patch > data.x.shape[-1] or patch > data.x.shape[-2]:
            raise InputError(f"patch {patch} is larger than the films {data.x.shape[-2:]}")
        self.data, self.patch, self.augment = data, patch, augment
        self.decoys = [b[0] for b in data.boxes if b]  # nodule boxes of the positives

    def __len__(self) -> int:
        return len(self.data)

    def offsets(self, i: int) -> tuple[int, int]:
        """A random crop corner ``(u, v)`` for film ``i`` (module RNG, seeded by the engine)."""
        nu, nv = self.data.x.shape[-2:]
        s = self.patch
        box = self.data.boxes[i][0] if self.data.boxes and self.data.boxes[i] else None
        if box is None and self.decoys and np.random.rand() < 0.5:  # noqa: NPY002
            # half the negative crops sit where positives' nodules sit (in the lungs): else
            # "lung in the crop" alone would tell positives from negatives
            box = self.decoys[np.random.randint(len(self.decoys))]  # noqa: NPY002
        lo_u, hi_u, lo_v, hi_v = 0, nu - s, 0, nv - s
        if box is not None:  # keep the whole nodule (and 2 px) inside the crop
            u0, v0, u1, v1 = box
            lo_u, hi_u = (int(np.clip(e, 0, nu - s)) for e in (u1 + 2 - s, u0 - 2))
            lo_v, hi_v = (int(np.clip(e, 0, nv - s)) for e in (v1 + 2 - s, v0 - 2))
        a = np.random.randint(lo_u, max(lo_u, hi_u) + 1)  # noqa: NPY002
        b = np.random.randint(lo_v, max(lo_v, hi_v) + 1)  # noqa: NPY002
        return int(a), int(b)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        from medimg.tasks.diagnose.data import _augment

        a, b = self.offsets(i)
        crop = self.data.x[i][:, a : a + self.patch, b : b + self.patch]
        if self.augment:
            crop = _augment(crop, self.augment)
        return {"x": torch.from_numpy(np.ascontiguousarray(crop, np.float32)),
                "y": torch.as_tensor(self.data.y[i]),
                "present": torch.from_numpy(self.data.present[i].copy())}  # fmt: skip
