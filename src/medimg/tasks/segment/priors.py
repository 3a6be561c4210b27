"""Anatomical prior at prediction: find (and optionally remove) label components that cannot be
anatomy -- a "spleen" in the shoulder, a "liver" the size of a walnut inside a head, a third
"kidney".

Each label named in the prior gets a rule (:class:`OrganRule`): how many separate pieces the
organ has (liver 1, spleen 1, kidneys 2), its plausible volume, the side of the body it lies on
(in the patient's frame, from the image's affine; for paired organs, off the midline; for
retroperitoneal ones, in the posterior half), that it lies inside the body, and that the body
around it is as wide as a trunk (an adult abdomen is wider than any head or neck). Relations
between organs (spleen left of liver, kidneys posterior to the liver) are checked on the
centroids of each organ's largest piece and reported; they remove nothing, because which of the two organs is wrong
is not known. A component cut by the edge of the field of view is exempt from the lower volume
bound (down to 1 mL), so a partly imaged organ is not flagged for being small.

The rules come from a ``prior.yaml`` in the model folder when there is one (a user's own model
and labels), else from :data:`ABDOMEN_PRIOR` for the labels it names. Written here because
neither MONAI nor scikit-image checks anatomy; the component analysis is scipy's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy import ndimage

from medimg.errors import InputError
from medimg.io.image import Image

if TYPE_CHECKING:
    from medimg.tasks.segment.plan import SegPlan

__all__ = [
    "ABDOMEN_PRIOR",
    "PRIOR_MODES",
    "AnatomicalPrior",
    "OrganRule",
    "PriorReport",
    "Relation",
    "apply_prior",
    "check_prior",
    "check_prior_mode",
    "load_prior",
    "model_prior",
    "prior_report_path",
    "resolve_prior",
]

PRIOR_MODES = ("off", "check", "enforce")
Side = Literal["right", "left", "any"]
#: centroid offsets below this (mm) between two organs are not judged
_MARGIN_MM = 10.0
#: a sided organ's centroid (a lateral organ's farthest voxel) lies at least this fraction of
#: the body's half-width off the midline; small, because arms in the field of view widen the
#: body (a brain labelled "liver" in a head CT lies at ~0)
_SIDE_FRACTION = 0.05
#: a component counts as inside the body when at least this fraction of it is
_INSIDE_FRACTION = 0.5
#: a piece cut by the edge of the field of view is exempt from the organ's lower volume bound,
#: but not below this (mL): a speck of a few voxels at the edge is no evidence of an organ
_EDGE_MIN_ML = 1.0


@dataclass(frozen=True)
class OrganRule:
    """What one labelled structure may look like. ``min_ml``/``max_ml``: volume of one
    component (the lower bound is waived for components touching the edge of the volume);
    ``pieces``: how many separate components it has at most; ``side``: the patient side its
    components lie on (``any`` for midline or paired organs); ``lateral``: each component lies
    off the midline (paired organs such as the kidneys); ``posterior``: in the posterior half
    of the body (retroperitoneal organs)."""

    pieces: int = 1
    min_ml: float = 0.0
    max_ml: float = float("inf")
    side: Side = "any"
    lateral: bool = False
    posterior: bool = False


@dataclass(frozen=True)
class Relation:
    """``first`` lies ``direction`` of ``second`` (centroids, patient frame): one of
    left_of, right_of, anterior_to, posterior_to, superior_to, inferior_to."""

    first: str
    direction: str
    second: str


_DIRECTIONS = {  # RAS+ axis and sign for "first is <direction> of second"
    "right_of": (0, 1.0), "left_of": (0, -1.0), "anterior_to": (1, 1.0),
    "posterior_to": (1, -1.0), "superior_to": (2, 1.0), "inferior_to": (2, -1.0),
}  # fmt: skip


@dataclass(frozen=True)
class AnatomicalPrior:
    organs: dict[str, OrganRule]
    relations: tuple[Relation, ...] = ()
    #: intensity above which a voxel is body (HU for CT); an image without air (no voxel below
    #: -500, so not HU: an MR forced through a CT model) is thresholded by Otsu instead; None:
    #: every voxel is body
    body_threshold: float | None = -400.0
    #: the body's left-right extent over the slices an organ spans must reach this (mm); not
    #: judged where the body is cut by the sides of the field of view. 0: no such rule
    min_body_width_mm: float = 0.0


#: Adult abdominal CT (liver, spleen, kidneys): volumes span small adults to organomegaly
#: (liver ~1-2.5 L, spleen ~0.1-0.5 L, kidney ~0.1-0.25 L each in adults) with wide margins;
#: an adult trunk at the level of these organs is 25-40 cm wide, a head 14-17 cm (a model for
#: children needs its own ``prior.yaml`` with a lower ``min_body_width_mm``).
ABDOMEN_PRIOR = AnatomicalPrior(
    organs={
        "liver": OrganRule(pieces=1, min_ml=300.0, max_ml=6000.0, side="right"),
        "spleen": OrganRule(pieces=1, min_ml=20.0, max_ml=2500.0, side="left"),
        "kidney": OrganRule(pieces=2, min_ml=30.0, max_ml=800.0, lateral=True),
    },
    relations=(
        Relation("spleen", "left_of", "liver"),
        Relation("kidney", "posterior_to", "liver"),
    ),
    min_body_width_mm=180.0,
)


@dataclass
class PriorReport:
    """Per flagged component: label, voxels, mL, centroid (RAS mm) and the reasons; relations
    that do not hold; ``removed`` voxels when the prior was enforced."""

    components: list[dict] = field(default_factory=list)
    relations: list[str] = field(default_factory=list)
    removed_voxels: int = 0

    @property
    def ok(self) -> bool:
        return not self.components and not self.relations

    def lines(self) -> list[str]:
        out = [
            f"{c['label']} component of {c['ml']:.1f} mL at RAS {tuple(c['centroid_ras_mm'])}: "
            + "; ".join(c["reasons"])
            for c in self.components
        ]
        return out + self.relations

    def to_json(self, path: Path) -> None:
        from medimg.io.output import atomic_path

        with atomic_path(path, overwrite=True) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")


def load_prior(model_dir: Path | None, label_names: list[str]) -> AnatomicalPrior | None:
    """The model's ``prior.yaml`` if it has one, else the built-in rules for the labels they
    name; ``None`` when no label of the model has a rule."""
    if model_dir is not None and (Path(model_dir) / "prior.yaml").is_file():
        return _read_prior_yaml(Path(model_dir) / "prior.yaml")
    names = {n.lower() for n in label_names}
    organs = {k: v for k, v in ABDOMEN_PRIOR.organs.items() if k in names}
    if not organs:
        return None
    relations = tuple(r for r in ABDOMEN_PRIOR.relations if {r.first, r.second} <= set(organs))
    return AnatomicalPrior(organs, relations, ABDOMEN_PRIOR.body_threshold,
                           ABDOMEN_PRIOR.min_body_width_mm)  # fmt: skip


def _read_prior_yaml(path: Path) -> AnatomicalPrior:
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        organs = {str(k).lower(): OrganRule(**v) for k, v in (raw.get("organs") or {}).items()}
        rels = tuple(Relation(**r) for r in raw.get("relations") or ())
    except (yaml.YAMLError, TypeError) as exc:
        raise InputError(f"prior.yaml is not a valid prior ({exc}); see its documented keys",
                         path) from None  # fmt: skip
    bad = [r.direction for r in rels if r.direction not in _DIRECTIONS]
    if bad:
        raise InputError(f"prior.yaml: unknown direction {bad[0]!r}; use one of "
                         f"{', '.join(_DIRECTIONS)}", path)  # fmt: skip
    return AnatomicalPrior(organs, rels, raw.get("body_threshold", -400.0),
                           float(raw.get("min_body_width_mm", 0.0)))  # fmt: skip


def check_prior(
    labels: Image, prior: AnatomicalPrior, label_names: list[str], image: Image | None = None
) -> PriorReport:
    """Flag the components of ``labels`` (a label map on any grid; names by index) that break
    ``prior``. ``image`` (same grid) gives the body mask and midline; without it the whole
    volume is body and its centre is the midline."""
    lab = np.asarray(labels.array[0])
    if lab.ndim != 3:
        raise InputError("the anatomical prior needs a 3D label map")
    voxel_ml = float(np.prod(labels.spacing)) / 1000.0
    body = _body_mask(image, prior, lab.shape)
    frame = _body_frame(labels, body)
    report = PriorReport()
    centroids: dict[str, np.ndarray] = {}
    structure = ndimage.generate_binary_structure(3, 3)
    for index, name in enumerate(label_names):
        rule = prior.organs.get(name.lower())
        if index == 0 or rule is None:
            continue
        comps, n = ndimage.label(lab == index, structure=structure)
        if n == 0:
            continue
        sizes = np.bincount(comps.ravel())[1:]
        order = np.argsort(-sizes, kind="stable")
        for rank, c in enumerate(order):
            mask = comps == c + 1
            centroid = _centroid_ras(labels, mask)
            if rank == 0:  # relations are judged on each organ's main piece
                centroids[name.lower()] = centroid
            reasons = _component_reasons(mask, sizes[c] * voxel_ml, rank, rule, body,
                                         centroid, frame, labels)  # fmt: skip
            width = _body_width(mask, body, labels) if prior.min_body_width_mm > 0 else None
            if width is not None and width < prior.min_body_width_mm:
                reasons.append(f"in a body {width:.0f} mm wide (a trunk is at least "
                               f"{prior.min_body_width_mm:g} mm)")  # fmt: skip
            if reasons:
                report.components.append({
                    "label": name, "index": index, "component": int(c + 1),
                    "voxels": int(sizes[c]), "ml": round(float(sizes[c] * voxel_ml), 2),
                    "centroid_ras_mm": [round(float(v), 1) for v in centroid],
                    "reasons": reasons,
                })  # fmt: skip
    for rel in prior.relations:
        a, b = centroids.get(rel.first.lower()), centroids.get(rel.second.lower())
        if a is None or b is None:
            continue
        axis, sign = _DIRECTIONS[rel.direction]
        if sign * (a[axis] - b[axis]) < -_MARGIN_MM:
            report.relations.append(
                f"{rel.first} is not {rel.direction.replace('_', ' ')} {rel.second} "
                f"(centroids {sign * (a[axis] - b[axis]):+.0f} mm)"
            )
    return report


def apply_prior(
    labels: Image, prior: AnatomicalPrior, label_names: list[str], image: Image | None = None,
    *, enforce: bool = False,
) -> tuple[Image, PriorReport]:  # fmt: skip
    """:func:`check_prior`, and with ``enforce`` the flagged components set to background."""
    report = check_prior(labels, prior, label_names, image)
    if not enforce or not report.components:
        return labels, report
    lab = labels.array[0].copy()
    structure = ndimage.generate_binary_structure(3, 3)
    for index in {c["index"] for c in report.components}:
        comps, _ = ndimage.label(labels.array[0] == index, structure=structure)
        for c in report.components:
            if c["index"] == index:
                lab[comps == c["component"]] = 0
    report.removed_voxels = int(np.count_nonzero(lab != labels.array[0]))
    return labels.with_array(lab[None]), report


def _component_reasons(
    mask: np.ndarray, ml: float, rank: int, rule: OrganRule, body: np.ndarray,
    centroid: np.ndarray, frame: tuple[np.ndarray, float] | None, labels_image: Image,
) -> list[str]:  # fmt: skip
    reasons = []
    if rank >= rule.pieces:
        reasons.append(f"more pieces than the organ has ({rule.pieces})")
    if ml > rule.max_ml:
        reasons.append(f"larger than {rule.max_ml:g} mL")
    if ml < rule.min_ml and (ml < _EDGE_MIN_ML or not _touches_edge(mask)):
        reasons.append(f"smaller than {rule.min_ml:g} mL")
    inside = np.count_nonzero(mask & body) / max(np.count_nonzero(mask), 1)
    if inside < _INSIDE_FRACTION:
        reasons.append("outside the body")
    if frame is None:
        return reasons
    centre, half_width = frame
    offset = (centroid[0] - centre[0]) / half_width  # RAS+: x grows to the patient's right
    if (rule.side == "right" and offset < _SIDE_FRACTION) or (
        rule.side == "left" and offset > -_SIDE_FRACTION
    ):
        reasons.append(f"not on the {rule.side} side of the body")
    if rule.lateral and _reach(mask, frame, labels_image) < _SIDE_FRACTION:
        # judged on the farthest voxel, not the centroid: a prediction that joins both kidneys
        # across the vessels is centred on the midline but is still the kidneys
        reasons.append("on the midline (the organ lies to one side)")
    if rule.posterior and centroid[1] > centre[1]:
        reasons.append("in the anterior half of the body (the organ lies posterior)")
    return reasons


def _reach(mask: np.ndarray, frame: tuple[np.ndarray, float], image: Image) -> float:
    """How far off the midline the component reaches, in body half-widths."""
    ras_x = image.voxel_to_world(np.argwhere(mask))[:, 0]
    return float(np.abs(ras_x - frame[0][0]).max()) / frame[1]


def _body_frame(labels: Image, body: np.ndarray) -> tuple[np.ndarray, float] | None:
    """(centroid of the body in RAS mm, half its left-right extent in mm), or None."""
    if not body.any():
        return None
    ijk = np.argwhere(body)
    ras = labels.voxel_to_world(ijk[:: max(len(ijk) // 200_000, 1)])  # a sample is enough
    half_width = max(float(np.ptp(ras[:, 0])) / 2.0, 1.0)
    return ras.mean(axis=0), half_width


def _body_width(mask: np.ndarray, body: np.ndarray, image: Image) -> float | None:
    """Left-right extent (mm) of the body over the slices ``mask`` spans along the voxel axis
    nearest the patient's superior axis; None when the body there touches the sides of the
    field of view (its width is then unknown) or there is no body."""
    axis = int(np.argmax(np.abs(image.affine[2, :3])))
    lo, hi = _span(mask, axis)
    slab = np.zeros_like(body)
    index = [slice(None)] * 3
    index[axis] = slice(int(lo), int(hi) + 1)
    slab[tuple(index)] = body[tuple(index)]
    if not slab.any():
        return None
    lateral = int(np.argmax(np.abs(image.affine[0, :3])))
    if np.take(slab, 0, axis=lateral).any() or np.take(slab, -1, axis=lateral).any():
        return None
    ijk = np.argwhere(slab)
    ras_x = image.voxel_to_world(ijk[:: max(len(ijk) // 200_000, 1)])[:, 0]
    return float(np.ptp(ras_x)) + abs(float(image.affine[0, lateral]))


def _span(mask: np.ndarray, axis: int) -> tuple[int, int]:
    present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
    return int(present[0]), int(present[-1])


def _touches_edge(mask: np.ndarray) -> bool:
    return any(np.take(mask, 0, axis=a).any() or np.take(mask, -1, axis=a).any() for a in range(3))


def _body_mask(image: Image | None, prior: AnatomicalPrior, shape: tuple[int, ...]) -> np.ndarray:
    if image is None or prior.body_threshold is None:
        return np.ones(shape, dtype=bool)
    values = np.asarray(image.array[0])
    threshold = prior.body_threshold
    if float(values.min()) > -500.0:  # no air in HU: not a CT in HU (an MR, a rescaled image)
        from skimage.filters import threshold_otsu

        threshold = float(threshold_otsu(values[::2, ::2, ::2]))
    body = values > threshold
    if body.shape != shape:
        raise InputError("the image and its labels are on different grids")
    # the body with its holes (lungs, bowel gas) filled, slice by slice along the last axis
    return np.stack([ndimage.binary_fill_holes(body[..., k]) for k in range(shape[2])], axis=-1)


def _centroid_ras(image: Image, mask: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask).mean(axis=0)
    return image.voxel_to_world(ijk)


def check_prior_mode(mode: str) -> str:
    if mode not in PRIOR_MODES:
        raise InputError(f"prior must be one of {', '.join(PRIOR_MODES)}, got {mode!r}")
    return mode


def model_prior(labels: Image, image: Image, mode: str, *, root: Path, plan: SegPlan) -> Image:
    """A segmentation model's labels with its prior applied (``check`` or ``enforce``; see
    :meth:`medimg.tasks.segment.predict.Segmenter.segment`); the report in ``meta["prior"]``."""
    if check_prior_mode(mode) == "off" or labels.spatial_ndim != 3:
        return labels
    prior = resolve_prior(root, plan)
    out, report = apply_prior(labels, prior, list(plan.label_names), image,
                              enforce=mode == "enforce")  # fmt: skip
    out.meta = {**labels.meta, "prior": report}
    return out


def resolve_prior(root: Path, plan: SegPlan) -> AnatomicalPrior:
    """The prior of the model in ``root`` (its ``prior.yaml`` or the built-in rules for its
    labels); a one-line error when there is none."""
    prior = load_prior(root if Path(root).is_dir() else None, list(plan.label_names))
    if prior is None:
        raise InputError(
            "this model's labels have no anatomical prior; add a prior.yaml to the model "
            "folder or use --prior off", root,
        )  # fmt: skip
    return prior  # an image not in HU gets an Otsu body mask (see AnatomicalPrior)


def prior_report_path(nii: Path) -> Path:
    """``case.nii.gz`` -> ``case.prior.json``: where the anatomical prior's report goes."""
    name = nii.name
    for ending in (".nii.gz", ".nii"):
        if name.lower().endswith(ending):
            name = name[: -len(ending)]
    return nii.with_name(name + ".prior.json")
