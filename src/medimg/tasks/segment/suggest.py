"""Active learning: which unlabelled cases a person should annotate (or correct) next.

Per case the model runs once per test-time flip (no flip, then each mirror axis of the plan
alone: ``1 + len(mirror_axes)`` passes, not all ``2**n`` combinations), each pass giving blended
softmax probabilities on the plan's grid. From the ``T`` passes:

* **entropy** ``H(p̄) / log K`` of the mean probabilities (predictive entropy, 0..1);
* **disagreement** ``H(p̄) - mean_t H(p_t)`` (the mutual information between the prediction and
  the flip, BALD's form, also divided by ``log K``): high where flipped views disagree.

A case's score is the mean of both over the voxels where the model sees anything other than
sure background (``p̄_background < 0.99``): averaging over the whole volume would rank cases by
how much air they hold. The queue then mixes uncertainty with diversity, greedily
(farthest-point): each next case maximises ``(1 - λ)·u + λ·d`` with ``u`` the score divided by
the largest and ``d`` its distance to the nearest case already chosen (divided by the largest),
on a cheap embedding (the normalised image zoomed to 8³ plus the predicted class fractions), so
``k`` near-identical uncertain scans do not fill the queue.

Outputs (:func:`suggest`) form a folder that ``medimg review`` opens: ``queue.csv`` and
``queue.json`` (every case, ranked), ``uncertainty/<case>.nii.gz`` (the entropy map on the case's
own grid, every case), and for the ``k`` chosen cases ``images/`` (copies of their files) and
``proposals/<case>.nii.gz`` (the model's labels, with their label table).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medimg.errors import InputError
from medimg.io.image import Image

if TYPE_CHECKING:  # torch and the model code load only when a verb runs
    import argparse

    from medimg.tasks.segment.predict import Segmenter

__all__ = ["CaseUncertainty", "add_suggest_verb", "case_uncertainty", "diverse_ranking", "suggest"]

EMBED_SIZE = 8  # the embedding zooms each image to 8 voxels per axis: cheap, shape-free
SURE_BACKGROUND = 0.99


@dataclass
class CaseUncertainty:
    """One case's scores (``score`` = entropy + disagreement, over the uncertain region)."""

    case: str
    score: float
    entropy: float
    disagreement: float
    uncertain_fraction: float


def _flip_passes(seg: Segmenter, array: np.ndarray, mirror: bool = True) -> list[np.ndarray]:
    """Blended softmax ``(K, *spatial)`` per flip: none, then each mirror axis alone."""
    import torch

    from medimg.tasks.segment.inference import sliding_window_segment
    from medimg.tasks.segment.predict import _predictor

    plan = seg.plan
    patch = list(plan.patch_size)
    if plan.configuration == "2d" and array.ndim == 4:
        patch = [*patch, 1]
    x = torch.from_numpy(np.ascontiguousarray(array))
    axes = [()] + ([(int(a) + 1,) for a in plan.mirror_axes] if mirror else [])
    out = []
    for dims in axes:
        xin = x.flip(dims) if dims else x
        probs = sliding_window_segment(
            xin, _predictor(seg.models, plan), patch_size=tuple(patch),
            num_classes=plan.num_classes, overlap=seg.overlap, batch_size=seg.batch_size,
            device=seg.device, return_probabilities=True, softmax=False,
        )  # fmt: skip
        out.append(np.flip(probs, [d for d in dims]).copy() if dims else probs)
    return out


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=0)


def _to_grid(values: np.ndarray, src_affine: np.ndarray, ref: Image) -> np.ndarray:
    """A float map on ``src_affine``'s grid interpolated (linearly) onto ``ref``'s grid.

    Written here because :func:`~medimg.tasks.segment.resample.resample_labels_like` turns
    floats into an argmax; this is the same world-to-voxel mapping for one continuous map."""
    from scipy import ndimage

    nd = ref.spatial_ndim
    a_src = np.eye(nd + 1)
    a_src[:nd, :nd], a_src[:nd, nd] = src_affine[:nd, :nd], src_affine[:nd, 3]
    a_ref = np.eye(nd + 1)
    a_ref[:nd, :nd], a_ref[:nd, nd] = ref.affine[:nd, :nd], ref.affine[:nd, 3]
    m = np.linalg.inv(a_src) @ a_ref  # ref voxel -> src voxel
    return ndimage.affine_transform(values.astype(np.float32), m[:nd, :nd], m[:nd, nd],
                                    output_shape=ref.spatial_shape, order=1,
                                    mode="nearest")  # fmt: skip


def case_uncertainty(
    seg: Segmenter, image: Image, *, mirror: bool = True
) -> tuple[CaseUncertainty, Image, Image, np.ndarray]:
    """``(scores, entropy map, proposed labels, embedding)`` of one case.

    The maps are on ``image``'s own grid (entropy float32 0..1; labels uint8, the argmax of the
    flip-averaged probabilities, interpolated back as :func:`resample_labels_like` does)."""
    import torch
    from scipy import ndimage

    from medimg.tasks.segment.data import preprocess_image
    from medimg.tasks.segment.resample import resample_labels_like

    work = image.canonical() if image.spatial_ndim == 3 else image
    array, resampled = preprocess_image(work, seg.plan)
    with torch.no_grad():
        passes = _flip_passes(seg, array, mirror)
    mean = np.mean(passes, axis=0)
    k = mean.shape[0]
    norm = math.log(k) if k > 1 else 1.0
    entropy = _entropy(mean) / norm
    disagreement = np.clip(entropy - np.mean([_entropy(p) for p in passes], axis=0) / norm, 0, 1)
    region = mean[0] < SURE_BACKGROUND
    frac = float(region.mean())
    ent = float(entropy[region].mean()) if region.any() else 0.0
    dis = float(disagreement[region].mean()) if region.any() else 0.0
    name = str(image.meta.get("case_id", "case"))
    scores = CaseUncertainty(name, ent + dis, ent, dis, frac)
    emap = image.with_array(_to_grid(entropy, resampled.affine, image)[None], is_label=False)
    emap.modality = "OT"
    probs = Image(mean.astype(np.float32), resampled.affine)
    labels = resample_labels_like(probs, image)
    zoom = [EMBED_SIZE / s for s in array.shape[1:]]
    small = ndimage.zoom(array[0], zoom, order=1, grid_mode=True, mode="nearest")
    fractions = np.bincount(mean.argmax(0).ravel(), minlength=k) / mean[0].size
    embedding = np.concatenate([small.ravel() / math.sqrt(small.size), fractions])
    return scores, emap, labels, embedding


def diverse_ranking(scores: np.ndarray, embeddings: np.ndarray, diversity: float) -> list[int]:
    """Indices of all cases, best first: greedy farthest-point on ``(1-λ)·u + λ·d`` (see the
    module docstring); ``diversity`` = λ in [0, 1]; 0 ranks by uncertainty alone."""
    if not 0 <= diversity <= 1:
        raise InputError(f"diversity must be in [0, 1], got {diversity}")
    n = len(scores)
    if n == 0:
        return []
    u = np.asarray(scores, dtype=np.float64)
    u = u / u.max() if u.max() > 0 else np.zeros(n)
    emb = np.asarray(embeddings, dtype=np.float64)
    dist = np.sqrt(((emb[:, None] - emb[None]) ** 2).sum(-1))
    order = [int(np.argmax(u))]
    nearest = dist[order[0]].copy()
    while len(order) < n:
        d = nearest / nearest.max() if nearest.max() > 0 else np.zeros(n)
        gain = (1 - diversity) * u + diversity * d
        gain[order] = -np.inf
        nxt = int(np.argmax(gain))
        order.append(nxt)
        nearest = np.minimum(nearest, dist[nxt])
    return order


def suggest(
    data: str | Path,
    out: str | Path,
    *,
    k: int,
    model: str | Path | None = None,
    device: str = "auto",
    diversity: float = 0.3,
    mirror: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    force: bool = False,
) -> list[dict]:
    """Rank the cases of ``data`` (an image file or folder, as ``segment predict`` takes) for
    annotation and write the review folder ``out`` (see the module docstring). Returns the
    queue rows, best first; the first ``k`` have ``selected`` true."""
    from tqdm import tqdm

    from medimg.io.api import save
    from medimg.io.label_table import label_table_path, write_label_table
    from medimg.io.output import atomic_dir, check_output_dir
    from medimg.tasks.segment.predict import Segmenter, _inputs, _load_case
    from medimg.tasks.segment.provenance import save_labels_nifti

    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    if not 0 <= diversity <= 1:
        raise InputError(f"diversity must be in [0, 1], got {diversity}")
    source, out = Path(data), Path(out)
    items = _inputs(source)
    if any(is_dicom for *_, is_dicom in items):
        raise InputError("holds no image files; suggest takes NIfTI/NRRD/MHA images (a DICOM "
                         "series: medimg convert it first; a dataset: give its imagesTs/ or "
                         "images/ folder)", source)  # fmt: skip
    inputs = [source, *(f for _, files, _ in items for f in files)]
    check_output_dir(out, overwrite, inputs=inputs)
    seg = Segmenter(model, device=device)
    results, embeddings = [], []
    with atomic_dir(out, overwrite, inputs=inputs) as tmp:
        (tmp / "uncertainty").mkdir()
        labels_of: dict[str, Image] = {}
        for name, files, _ in tqdm(items, desc="suggest", disable=not progress or len(items) < 2):
            image = _load_case(name, files, seg.plan, force=force)
            scores, emap, labels, emb = case_uncertainty(seg, image, mirror=mirror)
            scores.case = name
            save(emap, tmp / "uncertainty" / f"{name}.nii.gz")
            results.append(scores)
            embeddings.append(emb)
            labels_of[name] = labels
        order = diverse_ranking(np.array([r.score for r in results]), np.array(embeddings),
                                diversity)  # fmt: skip
        names = {i: n for i, n in enumerate(seg.plan.label_names) if i}
        rows = []
        nearest = np.full(len(results), np.inf)
        emb = np.array(embeddings)
        for rank, i in enumerate(order, 1):
            r = results[i]
            files = next(f for n, f, _ in items if n == r.case)
            row = {"rank": rank, **asdict(r), "selected": rank <= k,
                   "distance": None if rank == 1 else round(float(nearest[i]), 6),
                   "images": [f"images/{f.name}" for f in files] if rank <= k else [],
                   "source": [str(f) for f in files],
                   "uncertainty": f"uncertainty/{r.case}.nii.gz",
                   "proposal": f"proposals/{r.case}.nii.gz" if rank <= k else None}  # fmt: skip
            for key in ("score", "entropy", "disagreement", "uncertain_fraction"):
                row[key] = round(float(row[key]), 6)
            nearest = np.minimum(nearest, np.sqrt(((emb - emb[i]) ** 2).sum(-1)))
            rows.append(row)
            if rank <= k:
                (tmp / "images").mkdir(exist_ok=True)
                (tmp / "proposals").mkdir(exist_ok=True)
                for f in files:
                    shutil.copyfile(f, tmp / "images" / f.name)
                nii = tmp / "proposals" / f"{r.case}.nii.gz"
                save_labels_nifti(labels_of[r.case], nii, seg.tag)
                write_label_table(label_table_path(nii), names)
        settings = {"model": seg.tag, "k": k, "diversity": diversity, "mirror": mirror,
                    "data": str(source)}  # fmt: skip
        (tmp / "queue.json").write_text(json.dumps({"settings": settings, "queue": rows},
                                                   indent=2))  # fmt: skip
        with open(tmp / "queue.csv", "w", newline="") as f:
            cols = ["rank", "case", "score", "entropy", "disagreement", "uncertain_fraction",
                    "distance", "selected", "uncertainty", "proposal"]  # fmt: skip
            w = csv.DictWriter(f, cols, extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
    return rows


def _run(args: argparse.Namespace) -> int:
    from medimg.tasks.cli_helpers import set_threads

    set_threads(args.threads)
    rows = suggest(args.data, args.out, k=args.k, model=args.model, device=args.device,
                   diversity=args.diversity, mirror=not args.no_mirror,
                   overwrite=args.overwrite, progress=not args.quiet, force=args.force)  # fmt: skip
    for row in rows[: args.k]:
        print(f"{row['rank']:>3}  {row['case']}  uncertainty {row['score']:.4f}")
    print(f"wrote {args.out}/queue.csv, queue.json, uncertainty/ ({len(rows)} cases), "
          f"images/ and proposals/ ({min(args.k, len(rows))} to review: medimg review {args.out})")  # fmt: skip
    return 0


def add_suggest_verb(sub: argparse._SubParsersAction) -> None:
    """Register ``medimg segment suggest`` on the segment group's sub-parsers."""
    from medimg.tasks.cli_helpers import (
        add_device,
        add_quiet,
        add_threads,
        add_verb,
        positive_int,
        probability,
    )

    p = add_verb(sub, "suggest", "rank unlabelled cases for annotation by uncertainty and "
                 "diversity; write the queue, uncertainty maps and a folder to review",
                 "medimg segment suggest scans/ --k 5 --out review/\n"
                 "medimg review review/")  # fmt: skip
    p.add_argument("data", help="image file or folder of images (_0000 channels grouped)")
    p.add_argument("--out", required=True, help="output folder (the review folder)")
    p.add_argument("--k", type=positive_int, default=5, help="cases to select (default: 5)")
    p.add_argument("--model", help="model/run folder (default: the shipped default model)")
    p.add_argument("--diversity", type=probability, default=0.3,
                   help="weight of diversity against uncertainty, 0..1 (default: 0.3)")  # fmt: skip
    p.add_argument("--no-mirror", action="store_true",
                   help="no flip passes: entropy only, no disagreement (faster)")  # fmt: skip
    p.add_argument("--force", action="store_true",
                   help="score images unlike the model's training data instead of refusing")  # fmt: skip
    add_device(p)
    add_threads(p)
    add_quiet(p)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier output folder")
    p.set_defaults(func=_run)
