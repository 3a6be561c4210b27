"""A safeguard for learned MRI reconstructions: flag slices where the network strays.

A network trained on phantoms can paint its training anatomy onto a scan it has never seen
while still looking plausible. Two reference-free checks per slice catch that:

* ``dc``: the data-consistency residual ``||M F S x - y|| / ||y||`` on the acquired samples
  (``S`` the coil maps the network used, or ACS maps for networks that take maps). A network
  that overrides the measurements where they were acquired is inventing detail.
* ``classical``: the RMS difference between the network's magnitude ``|x|`` and a cheap
  classical reconstruction ``|x_c|`` (CG-SENSE, :data:`CG_ITER` iterations, the same maps),
  relative to the 99th percentile of ``|x_c|`` (a PSNR-like scale, so that images with much or
  little bright tissue score alike). Where the network and plain SENSE disagree far more than
  they do on the training distribution, the learned prior is doing the work.

Both scores grow with the acceleration, so thresholds are calibrated per acceleration on held-out
slices of the model's own training simulation (:func:`calibrate`: the largest score seen times
:data:`MARGIN`) and stored beside the weights as ``safeguard.json``; ``medimg recon mri calibrate
MODEL`` recomputes them. A slice uses the thresholds of the nearest calibrated acceleration and is
flagged when any score exceeds its threshold; ``predict`` then prints one ``warning:`` line, records the
scores in the output's JSON sidecar, and with ``--fallback`` writes the CG-SENSE image instead.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medimg.errors import InputError
from medimg.physics.mri import MultiCoilMRI
from medimg.tasks.reconstruct.mri.baselines import cg_sense

__all__ = ["CG_ITER", "FILE_NAME", "MARGIN", "SafeguardThresholds", "calibrate", "check_slices"]
__all__ += ["load_thresholds", "save_thresholds"]

FILE_NAME = "safeguard.json"
CG_ITER = 10  # a few CG-SENSE iterations: cheap next to the network, stable at 4x-8x
MARGIN = 1.1  # above the worst in-distribution slice: no warning on the training distribution
SCORES = ("dc", "classical")


@dataclasses.dataclass
class SafeguardThresholds:
    """Per-acceleration, per-score thresholds ``{"4": {"dc": .., "classical": ..}, ..}``."""

    thresholds: dict[str, dict[str, float]]
    calibrated_on: str = ""
    slices: int = 0

    def at(self, acceleration: float) -> dict[str, float]:
        """The thresholds of the calibrated acceleration nearest ``acceleration`` (log scale)."""
        keys = sorted(self.thresholds, key=lambda k: abs(np.log(float(k) / acceleration)))
        return self.thresholds[keys[0]]


def _maps(net: nn.Module, y: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor | None):
    """The coil maps the network works with: its own (VarNet) else the given or ACS maps."""
    if mask.ndim == 1:
        mask = mask.expand(y.shape[-2], -1)
    if hasattr(net, "sens"):
        return net.sens(y, mask.to(y.device).float())  # normalised maps, scale-free
    if maps is not None:
        return maps.expand(y.shape[0], *maps.shape[-3:]) if maps.ndim == 3 else maps
    from medimg.tasks.reconstruct.mri.models import acs_maps

    return acs_maps(y, mask.to(y.device).float())


@torch.no_grad()
def check_slices(
    net: nn.Module,
    y: torch.Tensor,
    mask: torch.Tensor,
    x: torch.Tensor,
    maps: torch.Tensor | None = None,
) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """Scores ``{"dc": (B,), "classical": (B,)}`` of the network's complex output ``x``
    ``(B, H, W)`` for k-space ``y`` ``(B, N, H, W)``, and the CG-SENSE image ``(B, H, W)``."""
    m = mask.to(y.device).float()
    m2 = m.expand(y.shape[-2], -1) if m.ndim == 1 else m
    s = _maps(net, y, m2, maps)
    op = MultiCoilMRI(s, m2, check_inputs=False)
    sampled = (m2 != 0).expand_as(y)
    resid = (op.A(x) - y) * sampled
    dc = resid.flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1).clamp_min(1e-20)
    classical = cg_sense(y, m2, s, max_iter=CG_ITER)
    c = classical.abs().flatten(1)
    peak = torch.quantile(c.float(), 0.99, dim=1).clamp_min(1e-20)
    diff = (x.abs().flatten(1) - c).pow(2).mean(1).sqrt() / peak
    return {"dc": dc.float().cpu().numpy(), "classical": diff.float().cpu().numpy()}, classical


def flagged(
    scores: dict[str, np.ndarray], th: SafeguardThresholds, acceleration: float
) -> np.ndarray:
    """Boolean ``(B,)``: slices with any score above its threshold at ``acceleration``."""
    t = th.at(acceleration)
    return np.logical_or(scores["dc"] > t["dc"], scores["classical"] > t["classical"])


def load_thresholds(model_dir: str | Path | None) -> SafeguardThresholds | None:
    """The thresholds stored beside a model's weights (``None``: the shipped default);
    ``None`` when the model has none (then nothing is checked)."""
    from medimg.tasks.reconstruct.mri.train import model_dir as resolve

    path = resolve(model_dir) / FILE_NAME
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        return SafeguardThresholds(**raw)
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"unreadable safeguard thresholds ({exc}); recalibrate with "
            f"'medimg recon mri calibrate {path.parent}'", path,
        ) from None  # fmt: skip


def save_thresholds(th: SafeguardThresholds, model_dir: str | Path) -> Path:
    """Write ``safeguard.json`` into ``model_dir`` (replaced whole)."""
    from medimg.io.output import atomic_path

    path = Path(model_dir) / FILE_NAME
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(dataclasses.asdict(th), indent=2) + "\n")
    return path


def _held_out(cfg, acceleration: float, slices: int):
    """``slices`` held-out samples of the model's training simulation at one acceleration
    (seeds apart from training and validation), with the maps the model is used with."""
    from medimg.tasks.reconstruct.mri.data import PhantomSlices, RealisticSlices
    from medimg.tasks.reconstruct.mri.train import VAL_SEED_BASE

    if cfg.realistic is None:
        held = dataclasses.replace(cfg.data, seed_base=VAL_SEED_BASE + 5000,
                                   accelerations=(acceleration,))  # fmt: skip
        ds = PhantomSlices(held, slices)
        yield from (ds.sample(i, seed=i) for i in range(slices))
        return
    from medimg.physics.coils import espirit_maps
    from medimg.tasks.reconstruct.mri.data import load_real_training

    rc = dataclasses.replace(cfg.realistic, accel_range=(acceleration, acceleration))
    ds = RealisticSlices(rc, slices, load_real_training(), VAL_SEED_BASE + 5000)
    given, i = 0, 0
    while given < slices:
        s, i = ds.draw(i, seed=i)[0], i + 1
        if cfg.model.maps == "espirit":
            try:  # too few ACS lines for ESPIRiT: prediction refuses such data too
                s["maps"] = espirit_maps(s["kspace"][None], s["mask"])[0]
            except InputError:
                continue
        given += 1
        yield s


def _describe(cfg) -> str:
    if cfg.realistic is not None:
        lo, hi = cfg.realistic.size_range
        return (f"realistic slices (real training-side brains and phantoms, {lo}-{hi} px, "
                f"{cfg.realistic.coil_range[0]}-{cfg.realistic.coil_range[1]} coils, "
                f"{', '.join(cfg.realistic.masks)} masks)")  # fmt: skip
    d = cfg.data
    return f"{d.kind}, {d.shape[0]}x{d.shape[1]}, {d.coils} coils, {d.mask}"


def calibrate(
    model_dir: str | Path | None = None,
    slices: int = 24,
    accelerations: tuple[float, ...] | None = None,
    write: bool = True,
) -> tuple[SafeguardThresholds, dict[str, dict[str, np.ndarray]]]:
    """Thresholds from ``slices`` held-out slices per acceleration of the model's own training
    simulation (phantoms or realistic slices, seeds apart from training and validation;
    ``accelerations`` default: the config's, 4x and 8x for realistic training); written to the
    model folder as ``safeguard.json`` when ``write``. Returns them and the scores seen."""
    from medimg.tasks.reconstruct.mri.train import load_model, physics_for
    from medimg.tasks.reconstruct.mri.train import model_dir as resolve

    folder = resolve(model_dir)
    net, cfg = load_model(folder)
    default = cfg.data.accelerations if cfg.realistic is None else (4.0, 8.0)
    accels = tuple(sorted(set(accelerations or default)))
    table: dict[str, dict[str, float]] = {}
    seen_all: dict[str, dict[str, np.ndarray]] = {}
    for a in accels:
        seen: dict[str, list[float]] = {k: [] for k in SCORES}
        with torch.no_grad():
            for s in _held_out(cfg, a, slices):
                y, mask = s["kspace"][None], s["mask"]
                x = net(y, physics_for(net, mask, s["maps"][None]))
                sc, _ = check_slices(net, y, mask, x, s["maps"][None])
                for k in SCORES:
                    seen[k].append(float(sc[k][0]))
        key = f"{a:g}"
        seen_all[key] = {k: np.asarray(v) for k, v in seen.items()}
        table[key] = {k: round(max(v) * MARGIN, 5) for k, v in seen.items()}
    th = SafeguardThresholds(
        table,
        calibrated_on=f"{slices} held-out slices per acceleration of the model's training "
        f"simulation ({_describe(cfg)})",
        slices=slices,
    )
    if write:
        save_thresholds(th, folder)
    return th, seen_all
