"""Scores as the SynthRAD challenge reports them, on generated heads or on a pair of files.

Synthetic CT (:func:`ct_metrics`): MAE in HU inside the body mask; PSNR with CT's data range
[-1024, 3000] HU (both images clipped to it) over the body's voxels; SSIM with that data range,
the images set to -1024 outside the body and the SSIM map averaged inside it; Dice of bone
(> 250 HU) inside the body. Synthetic MR (:func:`mr_metrics`): MAE, PSNR and SSIM inside the
body in :func:`~.appearance.normalize_mr` units (data range: the reference's maximum).
Baseline on generated heads: every body voxel given the reference's mean body value (what a
model that learnt nothing but the average would score).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from medimg.errors import InputError
from medimg.metrics.image_quality import psnr
from medimg.metrics.segmentation import dice

__all__ = ["BONE_HU", "body_mask", "ct_metrics", "evaluate_files", "evaluate_generated"]
__all__ += ["mr_metrics"]

BONE_HU = 250.0
CT_RANGE = (-1024.0, 3000.0)


def body_mask(ct_hu: np.ndarray) -> np.ndarray:
    """Body of a CT: voxels above -400 HU, the largest component, holes filled per slice."""
    m = np.asarray(ct_hu) > -400
    lab, n = ndimage.label(m)
    if n > 1:
        m = lab == 1 + int(np.argmax(ndimage.sum_labels(m, lab, range(1, n + 1))))
    if m.ndim == 3:
        return np.stack([ndimage.binary_fill_holes(m[..., k]) for k in range(m.shape[-1])], -1)
    return ndimage.binary_fill_holes(m)


def _masked_ssim(ref: np.ndarray, pred: np.ndarray, mask: np.ndarray, rng: float) -> float:
    """SSIM map (7x7, scikit-image) per axial slice (arrays ``(X, Y)`` or ``(X, Y, Z)``),
    averaged inside ``mask``."""
    from skimage.metrics import structural_similarity

    if ref.ndim == 2:
        ref, pred, mask = ref[..., None], pred[..., None], mask[..., None]
    total, count = 0.0, 0
    for k in range(ref.shape[-1]):
        a, b, m = ref[..., k], pred[..., k], mask[..., k]
        if m.any() and min(a.shape) >= 7:
            _, smap = structural_similarity(a, b, data_range=rng, win_size=7, full=True)
            total += float(smap[m].sum())
            count += int(m.sum())
    return total / max(count, 1)


def _check(ref: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> None:
    if ref.shape != pred.shape or mask.shape != ref.shape:
        raise InputError(f"reference {ref.shape}, prediction {pred.shape} and mask {mask.shape} "
                         "must share one grid")  # fmt: skip
    if not mask.any():
        raise InputError("the body mask is empty")


def ct_metrics(ref_hu, pred_hu, mask=None) -> dict[str, float]:
    """SynthRAD's synthetic-CT scores (module text); ``mask`` defaults to :func:`body_mask`."""
    ref = np.asarray(ref_hu, dtype=np.float64)
    pred = np.asarray(pred_hu, dtype=np.float64)
    mask = body_mask(ref) if mask is None else np.asarray(mask, bool)
    _check(ref, pred, mask)
    lo, hi = CT_RANGE
    r, p = ref.clip(lo, hi), pred.clip(lo, hi)
    rng = hi - lo
    return {
        "mae_hu": float(np.abs(ref - pred)[mask].mean()),
        "psnr_db": psnr(r[mask] - lo, p[mask] - lo, data_range=rng),
        "ssim": _masked_ssim(np.where(mask, r, lo) - lo, np.where(mask, p, lo) - lo, mask, rng),
        "bone_dice": dice((pred > BONE_HU) & mask, (ref > BONE_HU) & mask),
    }


def mr_metrics(ref, pred, mask) -> dict[str, float]:
    """MAE, PSNR and SSIM of a synthetic MR inside ``mask`` (data range: the reference max)."""
    ref, pred = np.asarray(ref, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    mask = np.asarray(mask, bool)
    _check(ref, pred, mask)
    rng = float(ref[mask].max() - min(0.0, float(ref.min())))
    return {
        "mae": float(np.abs(ref - pred)[mask].mean()),
        "psnr_db": psnr(ref[mask], pred[mask], data_range=rng),
        "ssim": _masked_ssim(np.where(mask, ref, 0), np.where(mask, pred, 0), mask, rng),
    }


def evaluate_generated(
    direction: str = "mr2ct", model=None, *, anatomy: str = "toy", n: int = 16,
    seed: int | None = None,
) -> tuple[list[dict], dict]:  # fmt: skip
    """Score ``model`` (folder, loaded generator or None: the shipped default) on ``n`` held-out
    generated heads (slices and deformation seeds never trained on). Returns per-head rows and
    a summary (mean per metric, for the model and for the mean-value baseline)."""
    from medimg.tasks.synthesize.data import BENCH_SEED, make_sample, net_to_ct
    from medimg.tasks.synthesize.predict import load_model, translate
    from medimg.tasks.synthesize.train import head_slices

    net = model if isinstance(model, torch.nn.Module) else load_model(model, direction)[0]
    src = head_slices(anatomy, "test", 0.0 if anatomy == "colin27" else 1.0)
    base = BENCH_SEED if seed is None else seed
    rows = []
    for i in range(n):
        contrast = "t1" if direction == "ct2mr" or i % 4 else "t2"
        s = make_sample(src, base + i, contrast if direction == "mr2ct" else "t1",
                        canonical_mr=direction == "ct2mr")  # fmt: skip
        body = s.body.numpy()
        with torch.no_grad():
            if direction == "mr2ct":
                out = net_to_ct(translate(net, s.mr[None, None]))[0, 0].numpy()
                ref = s.ct.numpy()
                m = ct_metrics(ref, out, body)
                mean = np.where(body, ref[body].mean(), ref)
                b = ct_metrics(ref, mean, body)
            else:
                from medimg.tasks.synthesize.data import ct_to_net

                out = translate(net, ct_to_net(s.ct)[None, None])[0, 0].clamp_min(0).numpy()
                ref = s.mr.numpy()
                m = mr_metrics(ref, out, body)
                b = mr_metrics(ref, np.where(body, ref[body].mean(), ref), body)
        rows.append({"head": i, "contrast": contrast if direction == "mr2ct" else "ct", **m,
                     **{f"baseline_{k}": v for k, v in b.items()}})  # fmt: skip
    keys = [k for k in rows[0] if k not in ("head", "contrast")]
    summary = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    return rows, summary


def evaluate_files(
    source: str | Path, reference: str | Path, direction: str = "mr2ct", model=None,
    mask: str | Path | None = None,
) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Synthesise ``source`` and score it against ``reference`` (same grid). ``mask``: a body
    mask file (default: :func:`body_mask` of the CT side). Returns ``(scores, prediction,
    reference, mask)`` arrays."""
    from medimg.io.api import load
    from medimg.tasks.synthesize.appearance import normalize_mr
    from medimg.tasks.synthesize.predict import synthesize_volume

    src, ref = load(source), load(reference)
    if src.array.shape != ref.array.shape or not np.allclose(src.affine, ref.affine, atol=1e-3):
        raise InputError("source and reference are not on one grid (shape and affine)", reference)
    pred = synthesize_volume(src, direction, model).array[0].astype(np.float64)
    r = ref.array[0].astype(np.float64)
    if mask is not None:
        body = load(mask, is_label=True).array[0] > 0
        if body.shape != r.shape:
            raise InputError(f"mask {body.shape} and reference {r.shape} differ", mask)
    else:
        body = body_mask(r if direction == "mr2ct" else src.array[0])
    if direction == "mr2ct":
        return ct_metrics(r, pred, body), pred, r, body
    # the reference MR in the model's units, slice by slice as predict scales its input
    r = np.stack([normalize_mr(r[..., k]).numpy() for k in range(r.shape[-1])], -1)
    return mr_metrics(r, pred, body), pred, r, body
