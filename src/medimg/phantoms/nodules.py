"""Lung nodules as LUNA16/LIDC readers annotate them, painted into a CT volume (seeded).

Types (``Finding.kind``) and where each one is put:

* ``solid`` (10-90 HU), ``ground_glass`` (-650..-350 HU), ``part_solid`` (ground glass with a
  solid core of 40-60 % of the diameter), ``calcified`` (300-900 HU, 3-12 mm): free in the lung,
  at least 2 mm from its wall;
* ``juxtapleural``: centred on the pleura (a lung voxel touching the chest wall or
  mediastinum), so about half of it lies in the wall;
* ``perifissural``: centred on a fissure, flattened along it (lentiform, 3-12 mm);
* ``vessel_attached``: centred on a vessel voxel, the vessel running through it.

Sizes are log-uniform in 3-30 mm (diameter of the sphere of the same mean radius); margins
(``Finding.margin``) are ``smooth``, ``lobulated`` (a few broad bumps), ``irregular`` (finer,
stronger bumps) or ``spiculated`` (thin tapering spikes into the lung). Shapes are drawn on the
volume's own grid (partial-volume edges one voxel wide), so they stay sharp at fine spacing.
Written here rather than with a library: no imaging library paints annotated lesions into a
phantom.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DENSITY_HU", "MARGINS", "NODULE_TYPES", "NoduleSpec", "draw_spec", "paint_nodule"]

#: Nodule types, as recorded in ``Finding.kind``.
NODULE_TYPES = ("solid", "part_solid", "ground_glass", "calcified", "juxtapleural",
                "perifissural", "vessel_attached")  # fmt: skip
#: Margins, as recorded in ``Finding.margin``.
MARGINS = ("smooth", "lobulated", "irregular", "spiculated")
#: Mean HU range of each density (the located types are solid).
DENSITY_HU = {"solid": (10.0, 90.0), "ground_glass": (-650.0, -350.0),
              "calcified": (300.0, 900.0)}  # fmt: skip
_DIAMETER_MM = {"calcified": (3.0, 12.0), "perifissural": (3.0, 12.0)}


@dataclass
class NoduleSpec:
    """One nodule to paint: type, margin, mean diameter (mm), mean HU (core HU for part-solid),
    bump field and spikes (drawn once so painting is deterministic)."""

    kind: str
    margin: str
    diameter_mm: float
    hu: float
    core_hu: float = 0.0
    core_fraction: float = 0.0
    flatten: np.ndarray | None = None  # unit normal of a lentiform nodule (perifissural)
    bumps: tuple = ()
    spikes: tuple = ()


def draw_spec(rng: np.random.Generator, kind: str, diameter_range=(3.0, 30.0)) -> NoduleSpec:
    """A random nodule of ``kind`` (diameter log-uniform within ``diameter_range`` and the
    type's own range, margin uniform over :data:`MARGINS`)."""
    lo, hi = _DIAMETER_MM.get(kind, (3.0, 30.0))
    lo, hi = max(lo, diameter_range[0]), max(min(hi, diameter_range[1]), max(lo, diameter_range[0]))
    dia = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    margin = str(rng.choice(MARGINS if kind != "calcified" else ("smooth", "lobulated")))
    density = {"ground_glass": "ground_glass", "part_solid": "ground_glass",
               "calcified": "calcified"}.get(kind, "solid")  # fmt: skip
    spec = NoduleSpec(kind, margin, dia, float(rng.uniform(*DENSITY_HU[density])))
    if kind == "part_solid":
        spec.core_hu, spec.core_fraction = float(rng.uniform(10, 60)), float(rng.uniform(0.4, 0.6))
    amp, freq = {"lobulated": (0.12, 1.5), "irregular": (0.2, 3.5)}.get(margin, (0.0, 0.0))
    if margin == "spiculated":
        amp, freq = 0.08, 1.5
        n = int(rng.integers(6, 15))
        dirs = rng.standard_normal((n, 3))
        spikes = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        spec.spikes = tuple((d, float(rng.uniform(0.4, 1.1))) for d in spikes)
    if amp:
        k = rng.standard_normal((5, 3))
        spec.bumps = tuple((v / np.linalg.norm(v), amp * float(rng.uniform(0.5, 1)),
                            freq * float(rng.uniform(0.7, 1.3)), float(rng.uniform(0, 2 * np.pi)))
                           for v in k)  # fmt: skip
    return spec


def _radius(spec: NoduleSpec, unit: np.ndarray, r0: float) -> np.ndarray:
    """Radius (mm) along unit directions ``(..., 3)``: ``r0`` times a smooth bump field."""
    f = np.ones(unit.shape[:-1])
    for axis, amp, freq, phase in spec.bumps:
        f += amp * np.cos(np.pi * freq * (unit @ axis) + phase) / np.sqrt(len(spec.bumps))
    return r0 * np.clip(f, 0.6, 1.5)


def paint_nodule(
    hu: np.ndarray,
    centre: np.ndarray,
    spacing: np.ndarray,
    spec: NoduleSpec,
    rng: np.random.Generator,
    allowed: np.ndarray | None = None,
) -> None:
    """Blend ``spec`` into ``hu`` (array axes in mm ``spacing``) at voxel ``centre``, in place.
    Spikes are painted only where ``allowed`` (the lung) when given."""
    sp = np.asarray(spacing, dtype=np.float64)
    r0 = spec.diameter_mm / 2
    reach = r0 * (2.2 if spec.spikes else 1.6) + 2 * sp.max()
    lo = np.maximum(np.floor(centre - reach / sp).astype(int), 0)
    hi = np.minimum(np.ceil(centre + reach / sp).astype(int) + 1, hu.shape)
    if np.any(hi <= lo):
        return
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    g = np.stack(np.meshgrid(*[(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, centre, sp)],
                             indexing="ij"), axis=-1)  # fmt: skip
    if spec.flatten is not None:  # lentiform: squash along the fissure normal
        n = spec.flatten
        g = g + np.multiply.outer(g @ n, n)  # the normal component counts twice
    dist = np.linalg.norm(g, axis=-1)
    unit = g / np.maximum(dist, 1e-6)[..., None]
    edge = sp.min()
    m = np.clip(0.5 - (dist - _radius(spec, unit, r0)) / edge, 0.0, 1.0)
    value = np.full(m.shape, spec.hu)
    if spec.core_fraction:
        core = np.clip(0.5 - (dist - spec.core_fraction * r0) / edge, 0.0, 1.0)
        value = value * (1 - core) + core * spec.core_hu
    spike = np.zeros_like(m)
    for direction, length in spec.spikes:  # thin cones from the surface into the lung
        t = np.clip(g @ direction, 0.5 * r0, r0 * (1 + length))  # from inside the surface out
        off = np.linalg.norm(g - t[..., None] * direction, axis=-1)
        width = 1.2 * (1 - t / (r0 * (1 + length))) + 0.3  # mm, tapering
        spike = np.maximum(spike, np.clip(0.5 - (off - width) / edge, 0.0, 1.0))
    if allowed is not None:
        spike = spike * allowed[box]
    m = np.maximum(m, spike * 0.9)  # spikes: thin strands of the nodule's own density
    grain = 8.0 * rng.standard_normal(m.shape)
    hu[box] = hu[box] * (1 - m) + m * (value + grain)
