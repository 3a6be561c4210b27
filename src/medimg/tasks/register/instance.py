"""Instance optimisation: refine a field for one pair by gradient descent on its own images.

:func:`choose_start` scores the candidate starting fields (the network's, and the identity or the
affine stage alone) with the similarity the optimisation will use and keeps the better one, so a
network that does worse than doing nothing (e.g. on a contrast it never saw) cannot drag the
result down. :func:`instance_optimise` then runs Adam on a half-resolution correction of that
field under similarity + ``reg_weight`` x smoothness (the refinement that wins Learn2Reg); a
similarity with ``features`` (MIND) is computed once per image and its descriptors warped.

The similarities (see :func:`.losses.similarity`): ``lncc`` (local squared NCC: same contrast,
and also an inverted one), ``mind`` (MIND-SSC descriptors: any contrast, local), ``mi`` (global
mutual information: any contrast, weaker locally), ``mse`` (same contrast and intensity scale
only). :data:`IO_REG_WEIGHT` holds a regulariser weight per similarity, since their scales differ.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from medimg.tasks.register.transform import resize_field, warp

__all__ = ["IO_REG_WEIGHT", "choose_start", "instance_optimise"]

#: Regulariser weight of instance optimisation per similarity (diffusion penalty of the voxel
#: field): ``lncc``'s is the default model's training weight; ``mind``'s was chosen on synthetic
#: 2D brain pairs with an inverted moving image (0.1-1.0 all gave Dice within 0.03 there).
IO_REG_WEIGHT = {"lncc": 1.0, "mind": 0.3, "mi": 1.0, "mse": 1.0}


def choose_start(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    candidates: dict[str, torch.Tensor],
    sim: nn.Module,
) -> tuple[str, dict[str, float]]:
    """The name of the candidate field whose warped moving image is most similar to ``fixed``
    (lowest ``sim``), and every candidate's score."""
    with torch.no_grad():
        scores = {name: float(sim(warp(moving, u), fixed)) for name, u in candidates.items()}
    return min(scores, key=scores.__getitem__), scores


def instance_optimise(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    start: torch.Tensor,
    sim: nn.Module,
    reg: nn.Module,
    *,
    steps: int,
    reg_weight: float = 1.0,
    time_budget_s: float | None = None,
    lr: float = 0.05,
) -> tuple[torch.Tensor, int]:
    """``start + correction`` (voxel field ``(1, nd, *S)``) after at most ``steps`` Adam updates
    of a half-resolution correction (stopped once ``time_budget_s`` has passed), and the number
    of updates made."""
    shape = tuple(fixed.shape[2:])
    half = tuple(max(1, s // 2) for s in shape)
    delta = torch.zeros(1, fixed.ndim - 2, *half, device=fixed.device, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    features = getattr(sim, "features", None)
    if features is not None:  # descriptors (MIND): computed once and warped, as in Learn2Reg's
        with torch.no_grad():  # winners, instead of recomputed on the warped image every step
            moving_f, fixed_f = features(moving), features(fixed)

    def dissimilarity(u: torch.Tensor) -> torch.Tensor:
        if features is None:
            return sim(warp(moving, u), fixed)
        return ((warp(moving_f, u) - fixed_f) ** 2).mean()

    t0, done = time.perf_counter(), 0
    with torch.enable_grad():
        for _ in range(steps):
            if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
                break
            u = start + resize_field(delta, shape)
            loss = dissimilarity(u) + reg_weight * reg(u)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
    with torch.no_grad():
        return start + resize_field(delta, shape), done
