"""Sanity check for explanations: the model-parameter randomisation test (Adebayo et al. 2018).

An explanation that still looks the same after the model's weights are re-initialised shows
the input (edges, bright structures), not what the model learned. The check compares maps of
the trained and of a randomised copy by Spearman rank correlation per image; a faithful method
gives a low correlation.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from medimg.explain.saliency import saliency_map

__all__ = ["randomisation_check", "randomise_weights"]


def randomise_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every layer re-initialised (``reset_parameters``), seeded."""
    rand = copy.deepcopy(model)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for module in rand.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
    return rand


def randomisation_check(
    model: nn.Module, x: torch.Tensor, *, seed: int = 0, **saliency_kwargs: Any
) -> dict[str, Any]:
    """Maps of the trained and a randomised model for ``x``; returns ``trained``, ``randomised``
    (``(B, *spatial)``), per-image ``spearman`` and their ``mean_spearman``."""
    trained = saliency_map(model, x, **saliency_kwargs)
    randomised = saliency_map(randomise_weights(model, seed), x, **saliency_kwargs)
    rho = []
    for a, b in zip(trained, randomised):
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            rho.append(0.0)  # a constant map carries no ranking at all
        else:
            rho.append(float(stats.spearmanr(a.ravel(), b.ravel())[0]))
    return {"trained": trained, "randomised": randomised, "spearman": rho,
            "mean_spearman": float(np.mean(rho))}  # fmt: skip
