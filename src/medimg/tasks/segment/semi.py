"""Semi-supervised segmentation: labelled patches plus unlabelled ones in every step.

Three methods, chosen with ``train_segmentation(..., semi=...)`` / ``segment train --semi``:

* ``uamt`` -- uncertainty-aware mean teacher (Yu et al., MICCAI 2019). The teacher is an
  exponential moving average (decay 0.99) of the student. It sees the unlabelled patch under
  ``T = 4`` draws of small Gaussian input noise; the mean of its softmax is the target and the
  entropy of that mean the uncertainty. The consistency term is the mean squared error between
  the student's softmax and the target, counted only where the entropy is below a threshold
  that rises from 0.75 ln K to ln K over the ramp.
* ``cps`` -- cross pseudo supervision (Chen et al., CVPR 2021): two networks with different
  initialisations; each one's hard (argmax) prediction is the cross-entropy target of the
  other, on the unlabelled and the labelled patches.
* ``fixmatch`` -- FixMatch-style confident pseudo-labels (Sohn et al., NeurIPS 2020): a weak
  view (random mirroring, a small intensity scale) gives pseudo-labels where the top class
  probability exceeds 0.9; a strong view of it (contrast, gamma, noise, cut-out) is trained to
  them with cross-entropy.

The unsupervised weight ramps up with ``exp(-5 (1 - t)^2)`` (``t`` = step / half the run) for
``uamt`` and ``cps``; FixMatch's confidence threshold does that job, so its weight is constant.
The engine's trainer has no after-update hook: the mean teacher is updated at the *start* of
each step from the student's weights after the previous update (the same sequence, one call
later). The pair of networks is one module (:class:`NetworkPair`) whose forward is the first
network, so checkpoints hold both (``--resume`` restores teacher / second network) and the
model folder ships the first alone (``model.safetensors``, what ``Segmenter`` loads).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from medimg.engine import StepContext, load_weights, unwrap_model
from medimg.errors import InputError
from medimg.tasks.segment.data import PatchDataset, preprocess_image
from medimg.tasks.segment.plan import SegPlan

__all__ = [
    "DEFAULT_WEIGHT",
    "SEMI_METHODS",
    "NetworkPair",
    "SemiPatches",
    "build_semi",
    "cps_loss",
    "ema_update",
    "fixmatch_loss",
    "make_semi_step",
    "rampup",
    "uamt_consistency",
]  # fmt: skip

SEMI_METHODS = ("uamt", "cps", "fixmatch")
#: unsupervised weight per method (``--unlabelled-weight`` overrides it)
DEFAULT_WEIGHT = {"uamt": 1.0, "cps": 1.0, "fixmatch": 1.0}
EMA_DECAY = 0.99
UNCERTAINTY_PASSES = 4
TEACHER_NOISE = 0.1  # std of the teacher's input noise, clipped at 2 std (as in UA-MT)
FIXMATCH_TAU = 0.9


class NetworkPair(nn.Module):
    """Two networks as one module: ``forward`` is the first (``net``); ``forward(x, both=True)``
    returns both outputs (CPS, so data-parallel training sees every parameter in one call).
    ``other`` is the mean teacher (UA-MT, no gradients) or the second network (CPS)."""

    def __init__(self, net: nn.Module, other: nn.Module, *, teacher: bool) -> None:
        super().__init__()
        self.net, self.other = net, other
        if teacher:
            for p in other.parameters():
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor, both: bool = False) -> Any:
        if both:
            return self.net(x), self.other(x)
        return self.net(x)


class SemiPatches(Dataset):
    """A labelled patch (``image``, ``label``) and an unlabelled one (``u_image``) per item,
    each drawn by its own :class:`PatchDataset` from the engine-seeded generator."""

    def __init__(self, labelled: PatchDataset, unlabelled: PatchDataset) -> None:
        self.labelled, self.unlabelled = labelled, unlabelled

    def __len__(self) -> int:
        return len(self.labelled)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.labelled[index]
        item["u_image"] = self.unlabelled[index]["image"]
        return item


def unlabelled_patches(
    images: list[np.ndarray], plan: SegPlan, n: int, augment: bool
) -> PatchDataset:
    """Random patches of unlabelled preprocessed images (an all-background label map stands in
    for the missing labels, so patches are drawn anywhere)."""
    empty = [np.zeros(im.shape[1:], np.uint8) for im in images]
    return PatchDataset(images, empty, plan, samples_per_epoch=n, augment=augment)


def rampup(step: int, length: int) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = min(1, step / length)`` (Laine & Aila's sigmoid ramp)."""
    t = min(1.0, max(0.0, step / max(1, length)))
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """``teacher <- alpha * teacher + (1 - alpha) * student`` for every parameter and buffer."""
    for t, s in zip(teacher.state_dict().values(), student.state_dict().values()):
        if t.dtype.is_floating_point:
            t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
        else:
            t.copy_(s)


def main_head(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The full-resolution logits of a ``(B, H, K, ...)`` deep-supervision output."""
    return out[:, 0] if out.ndim == x.ndim + 1 else out


def uamt_consistency(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked softmax MSE of UA-MT and the fraction of voxels it counted. ``teacher_probs``:
    the mean teacher softmax over the noisy passes; voxels whose entropy reaches
    ``threshold`` (nats) are left out."""
    entropy = -(teacher_probs * torch.log(teacher_probs + 1e-6)).sum(1, keepdim=True)
    mask = (entropy < threshold).float()
    dist = (torch.softmax(student_logits, 1) - teacher_probs) ** 2
    loss = (mask * dist).sum() / (2.0 * mask.sum() + 1e-6)
    return loss, mask.mean()


def cps_loss(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Each network's cross-entropy to the other's hard (argmax) prediction."""
    return F.cross_entropy(logits_a, logits_b.argmax(1).detach()) + F.cross_entropy(
        logits_b, logits_a.argmax(1).detach()
    )


def fixmatch_loss(
    strong_logits: torch.Tensor, weak_probs: torch.Tensor, tau: float = FIXMATCH_TAU
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the strong view to the weak view's confident argmax (mean over every
    voxel, as FixMatch), and the fraction of confident voxels."""
    conf, target = weak_probs.max(1)
    mask = (conf > tau).float()
    ce = F.cross_entropy(strong_logits, target, reduction="none")
    return (ce * mask).mean(), mask.mean()


def _per_sample(ctx: StepContext, n: int, lo: float, hi: float, ndim: int) -> torch.Tensor:
    """``n`` uniform draws in ``[lo, hi)`` shaped to broadcast over ``(n, C, ...)``."""
    return (lo + (hi - lo) * ctx.rand(n)).view(n, *([1] * (ndim - 1)))


def weak_view(u: torch.Tensor, ctx: StepContext, mirror_axes: list[int]) -> torch.Tensor:
    """Random mirroring per sample along the plan's mirror axes and an intensity scale 0.9-1.1."""
    out = u.clone()
    for a in mirror_axes:
        flip = ctx.rand(u.shape[0]) < 0.5
        if bool(flip.any()):
            out[flip] = torch.flip(out[flip], dims=[a + 2])  # (B, C, *spatial)
    return out * _per_sample(ctx, u.shape[0], 0.9, 1.1, u.ndim)


def strong_view(u: torch.Tensor, ctx: StepContext) -> torch.Tensor:
    """Contrast 0.65-1.5, gamma 0.7-1.5 (on the per-sample range), Gaussian noise up to 0.15
    std and one cut-out box (a quarter to half of each side) per sample."""
    n, nd, dims = u.shape[0], u.ndim, tuple(range(1, u.ndim))
    mean = u.mean(dims, keepdim=True)
    x = (u - mean) * _per_sample(ctx, n, 0.65, 1.5, nd) + mean
    lo, hi = x.amin(dims, keepdim=True), x.amax(dims, keepdim=True)
    span = (hi - lo).clamp_min(1e-6)
    x = ((x - lo) / span).clamp(0, 1) ** _per_sample(ctx, n, 0.7, 1.5, nd) * span + lo
    x = x + ctx.randn(*u.shape) * _per_sample(ctx, n, 0.0, 0.15, nd)
    keep = torch.ones_like(x)
    for i in range(n):
        box = []
        for s in u.shape[2:]:
            side = max(1, int(s * float(0.25 + 0.25 * ctx.rand(1))))
            start = int(float(ctx.rand(1)) * (s - side + 1))
            box.append(slice(start, start + side))
        keep[(i, slice(None), *box)] = 0.0
    return x * keep + mean * (1 - keep)


def make_semi_step(
    method: str,
    sup_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    plan: SegPlan,
    weight: float,
) -> Callable[..., dict[str, torch.Tensor]]:
    """The ``step(net, batch, ctx)`` of ``method``; returns ``loss``, ``sup``, ``unsup`` (the
    unweighted unsupervised term) and ``mask`` (the fraction of voxels it counted)."""
    ramp_len = max(1, plan.train.max_steps // 2)
    log_k = math.log(plan.num_classes)

    def uamt(net: nn.Module, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict:
        pair = unwrap_model(net)
        # no after-update hook in the trainer: fold in the previous update now
        ema_update(pair.other, pair.net, min(1.0 - 1.0 / (ctx.step + 1), EMA_DECAY))
        x, y, u = batch["image"], batch["label"], batch["u_image"]
        b = x.shape[0]
        out = net(torch.cat([x, u]))
        sup = sup_loss(out[:b], y)
        with torch.no_grad():
            pair.other.eval()  # one full-resolution output, no deep-supervision heads
            probs = 0.0
            for _ in range(UNCERTAINTY_PASSES):
                noise = (ctx.randn(*u.shape) * TEACHER_NOISE).clamp(-2 * TEACHER_NOISE,
                                                                    2 * TEACHER_NOISE)  # fmt: skip
                probs = probs + torch.softmax(pair.other(u + noise).float(), 1)
            pair.other.train()
            probs = probs / UNCERTAINTY_PASSES
        ramp = rampup(ctx.step, ramp_len)
        cons, mask = uamt_consistency(main_head(out, x)[b:].float(), probs,
                                      (0.75 + 0.25 * ramp) * log_k)  # fmt: skip
        return {"loss": sup + weight * ramp * cons, "sup": sup.detach(), "unsup": cons.detach(),
                "mask": mask}  # fmt: skip

    def cps(net: nn.Module, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict:
        x, y, u = batch["image"], batch["label"], batch["u_image"]
        b = x.shape[0]
        out_a, out_b = net(torch.cat([x, u]), both=True)
        sup = sup_loss(out_a[:b], y) + sup_loss(out_b[:b], y)
        unsup = cps_loss(main_head(out_a, x).float(), main_head(out_b, x).float())
        ramp = rampup(ctx.step, ramp_len)
        return {"loss": sup + weight * ramp * unsup, "sup": sup.detach(),
                "unsup": unsup.detach()}  # fmt: skip

    def fixmatch(net: nn.Module, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict:
        x, y, u = batch["image"], batch["label"], batch["u_image"]
        b = x.shape[0]
        weak = weak_view(u, ctx, list(plan.mirror_axes))
        with torch.no_grad():
            weak_probs = torch.softmax(main_head(net(weak), weak).float(), 1)
        out = net(torch.cat([x, strong_view(weak, ctx)]))
        sup = sup_loss(out[:b], y)
        unsup, mask = fixmatch_loss(main_head(out, x)[b:].float(), weak_probs)
        return {"loss": sup + weight * unsup, "sup": sup.detach(), "unsup": unsup.detach(),
                "mask": mask}  # fmt: skip

    return {"uamt": uamt, "cps": cps, "fixmatch": fixmatch}[method]


def build_semi(
    method: str,
    net: nn.Module,
    data: PatchDataset,
    unlabelled: list[list[Path]],
    modality: str,
    plan: SegPlan,
    *,
    weight: float | None,
    sup_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    second: Path | None = None,
) -> tuple[nn.Module, Dataset, Callable[..., dict], Callable[[nn.Module], nn.Module] | None]:
    """What :func:`~.train.train_segmentation` trains for ``method``: the model (``net``, or a
    :class:`NetworkPair` built around it), the dataset with unlabelled patches, the step, and
    the function that picks the shipped network out of the model (``None``: the model itself).
    ``second``: weights for CPS's second network (a fine-tune's ``--init``)."""
    from medimg.tasks.segment.models import build_network, is_output_layer
    from medimg.tasks.segment.semi_data import load_unlabelled

    w = DEFAULT_WEIGHT[method] if weight is None else float(weight)
    if not (math.isfinite(w) and w >= 0):
        raise InputError(f"--unlabelled-weight must be a number >= 0, got {weight}")
    images = [preprocess_image(im, plan)[0] for im in load_unlabelled(unlabelled, modality)]
    # FixMatch makes its own weak and strong views; the others take the plan's augmentation
    u_data = unlabelled_patches(images, plan, len(data), plan.augment and method != "fixmatch")
    step = make_semi_step(method, sup_loss, plan, w)
    if method == "fixmatch":
        return net, SemiPatches(data, u_data), step, None
    if method == "uamt":
        model = NetworkPair(net, copy.deepcopy(net), teacher=True)
    else:
        torch.manual_seed(plan.train.seed + 1)  # CPS: a differently initialised second network
        other = build_network(plan)
        if second is not None:
            load_weights(other, second, keep_fresh=is_output_layer)
        model = NetworkPair(net, other, teacher=False)
    return model, SemiPatches(data, u_data), step, lambda m: unwrap_model(m).net
