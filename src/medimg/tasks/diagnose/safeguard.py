"""Out-of-distribution safeguard for diagnosis classifiers: flag inputs unlike the training data.

A classifier trained on phantoms still returns a confident probability for a real radiograph,
a CT slice or noise; nothing in the probability says the input lies outside what it learned.
The safeguard measures how far an input's *features* lie from the training distribution:

* features: the spatial mean of every encoder stage's activations (ResNet ``layer1..4``,
  DenseNet dense blocks; all encoders of a per-modality model) and the pooled encoder output,
  read with forward hooks during the same forward pass that gives the logits;
* score: the Mahalanobis distance of those features (standardised per feature, Ledoit-Wolf
  shrunk covariance, scikit-learn) from their mean over training images (Lee et al. 2018,
  without the class-conditional means: one reference distribution suffices to say "not what I
  was trained on");
* threshold: the :data:`QUANTILE` quantile of the distances of *held-out* in-distribution
  images (validation images, not the ones the mean and covariance were fitted on, whose
  distances are biased low), times :data:`MARGIN`.

The reported ``ood_score`` is the distance divided by the threshold: at most 1 inside the
training distribution, above 1 flagged. :func:`calibrate` writes ``safeguard.safetensors``
beside the model's weights (training does it from its own training and validation sets;
``medimg diagnose calibrate`` recomputes it, for the shipped model from its own phantom recipe);
a model folder without it is predicted unchecked. Not available for MIL models.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medimg.errors import CheckpointError, InputError
from medimg.tasks.diagnose.data import CaseArrays

__all__ = ["FILE_NAME", "MARGIN", "QUANTILE", "FeatureHooks", "Safeguard", "calibrate"]

FILE_NAME = "safeguard.safetensors"
QUANTILE = 0.99  # of held-out in-distribution distances
MARGIN = 1.05
_STAGE = re.compile(r"^(encoder|encoders\.\d+)(\.(layer\d|features\.denseblock\d))?$")


class FeatureHooks:
    """Within ``with FeatureHooks(model) as feats:``, each forward pass fills ``feats`` with
    ``(B, F)`` features (module doc); ``feats.clear()`` between passes."""

    def __init__(self, model: nn.Module) -> None:
        self.modules = [(n, m) for n, m in model.named_modules() if _STAGE.match(n)]
        if not self.modules:
            raise InputError("this model has no encoder stages the safeguard can read")
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles: list = []

    def __enter__(self) -> FeatureHooks:
        for name, mod in self.modules:
            self.handles.append(mod.register_forward_hook(self._keep(name)))
        return self

    def _keep(self, name: str):
        def hook(_m: nn.Module, _inp: object, out: torch.Tensor) -> None:
            o = out.detach().float()
            self.outputs[name] = o.flatten(2).mean(2) if o.ndim > 2 else o.flatten(1)

        return hook

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()

    def clear(self) -> None:
        self.outputs.clear()

    def features(self) -> np.ndarray:
        """``(B, F)`` of the last forward pass, stages in model order."""
        return torch.cat([self.outputs[n] for n, _ in self.modules], dim=1).cpu().numpy()


@torch.no_grad()
def _features(model: nn.Module, data: CaseArrays, batch: int = 64) -> np.ndarray:
    dev = next(model.parameters()).device
    model.eval()
    out = []
    with FeatureHooks(model) as hooks:
        for i in range(0, len(data), batch):
            hooks.clear()
            model(torch.from_numpy(data.x[i : i + batch]).to(dev),
                  torch.from_numpy(data.present[i : i + batch]).to(dev))  # fmt: skip
            out.append(hooks.features())
    return np.concatenate(out).astype(np.float64)


@dataclass
class Safeguard:
    """Reference statistics: feature ``mean``/``scale`` (standardisation), ``precision`` of
    the standardised features, and the distance ``threshold``."""

    mean: np.ndarray
    scale: np.ndarray
    precision: np.ndarray
    threshold: float
    info: dict

    def distances(self, feats: np.ndarray) -> np.ndarray:
        """Mahalanobis distances ``(B,)`` of features ``(B, F)``."""
        if feats.shape[1] != self.mean.size:
            raise CheckpointError(
                f"the safeguard holds {self.mean.size} features but the model gives "
                f"{feats.shape[1]}; recalibrate with 'medimg diagnose calibrate'"
            )
        z = (feats - self.mean) / self.scale
        return np.sqrt(np.einsum("bi,ij,bj->b", z, self.precision, z).clip(0, None))

    def scores(self, feats: np.ndarray) -> np.ndarray:
        """``ood_score`` ``(B,)``: distance / threshold (above 1: outside the training data)."""
        return self.distances(feats) / self.threshold

    def save(self, folder: str | Path) -> Path:
        from safetensors.numpy import save_file

        from medimg.io.output import atomic_path

        path = Path(folder) / FILE_NAME
        arrays = {k: np.ascontiguousarray(getattr(self, k), np.float64)
                  for k in ("mean", "scale", "precision")}  # fmt: skip
        meta = {"threshold": repr(self.threshold), "info": json.dumps(self.info)}
        with atomic_path(path, overwrite=True) as tmp:
            save_file(arrays, str(tmp), metadata=meta)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> Safeguard | None:
        """The safeguard beside a model's weights, or ``None`` when it has none."""
        path = Path(folder) / FILE_NAME
        if not path.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as fh:
                meta = fh.metadata() or {}
                arrays = {k: fh.get_tensor(k) for k in ("mean", "scale", "precision")}
            return cls(**arrays, threshold=float(meta["threshold"]),
                       info=json.loads(meta.get("info", "{}")))  # fmt: skip
        except Exception as exc:  # any unreadable file is one refusal
            raise CheckpointError(
                f"unreadable safeguard ({type(exc).__name__}); recalibrate with "
                f"'medimg diagnose calibrate {path.parent}' or delete the file",
                path,
            ) from None


def calibrate(
    model: nn.Module, fit: CaseArrays, held: CaseArrays | None = None, *, seed: int = 0,
    source: str = "",
) -> Safeguard:  # fmt: skip
    """Fit the reference distribution on ``fit`` and the threshold on ``held`` (default: a
    seeded fifth of ``fit``, kept out of the fit); see the module doc."""
    from sklearn.covariance import LedoitWolf

    if held is None:
        order = np.random.default_rng(seed).permutation(len(fit))
        cut = len(fit) // 5
        fit, held = fit.subset(order[cut:]), fit.subset(order[:cut])
    if len(fit) < 8 or len(held) < 4:
        raise InputError(
            f"calibrating the safeguard needs at least 8 fitting and 4 held-out images, got "
            f"{len(fit)} and {len(held)}"
        )
    f = _features(model, fit)
    # a floor under each feature's spread: a unit silent on every training image (a dead
    # ReLU) that wakes up is evidence, but should not outweigh the rest a million-fold
    std = f.std(0)
    mean, scale = f.mean(0), np.maximum(std, 0.05 * float(np.median(std)) + 1e-12)
    lw = LedoitWolf().fit((f - mean) / scale)
    sg = Safeguard(mean, scale, lw.precision_, 1.0, {})
    d = sg.distances(_features(model, held))
    sg.threshold = float(np.quantile(d, QUANTILE) * MARGIN)
    sg.info = {"fit_images": len(fit), "held_out_images": len(held), "quantile": QUANTILE,
               "margin": MARGIN, "features": int(mean.size), "source": source}  # fmt: skip
    return sg
