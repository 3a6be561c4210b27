"""Training on real brains under known warps (``medimg register train --preset real-brains``).

Full supervision where the field is known is far more sample-efficient than label Dice alone
(the SynthMorph recipe needs hundreds of thousands of steps; a CPU run has thousands): each step
draws a pair from :class:`~.brain_pairs.BrainWarpDataset` and minimises the end-point error
against the true displacement inside the brain (a tenth of it outside, where the images say
little), plus half the soft Dice of the warped tissue maps and a small diffusion term. The run
folder is a model folder for :class:`~.predict.Registrator`; validation registers fixed pairs
of the training brains (never the real-pair bench's Colin27) and keeps the lowest end-point error.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from medimg.engine import (
    TrainResult,
    check_run_dir,
    to_yaml,
)
from medimg.errors import InputError
from medimg.tasks.register.brain_pairs import (
    BrainSource,
    BrainWarpDataset,
    WarpRanges,
    brain_source,
    fixed_brain_pairs,
)
from medimg.tasks.register.losses import LossConfig, regulariser
from medimg.tasks.register.synth_train import (
    fit_preset,
    present_dice_loss,
    preset_config,
    preset_model,
)
from medimg.tasks.register.transform import warp

__all__ = [
    "REAL_BRAINS_PRESET",
    "chain_stages",
    "field_error",
    "train_real_brains",
    "train_real_brains_preset",
]

#: ``--preset real-brains``: the default's 4 mm network (widths 8-16-16-16-16-16, space-to-depth,
#: symmetric diffeomorphic), started from the shipped 4 mm stage; pairs drawn at 2 mm and
#: averaged to 4 mm; loss = end-point error (brain 1, outside 0.1) + 0.5 x soft Dice + 0.1 x
#: diffusion; AdamW lr 5e-4, cosine schedule.
REAL_BRAINS_PRESET = {"spacing": 4.0, "max_steps": 1600, "val_every": 200, "val_pairs": 6,
                      "val_seed": 10**6, "lr": 5e-4, "dice_weight": 0.5, "reg_weight": 0.1,
                      "outside_weight": 0.1, "channels": (8, 16, 16, 16, 16, 16),
                      "final_channels": (16, 16)}  # fmt: skip


def field_error(
    field: torch.Tensor, true: torch.Tensor, mask: torch.Tensor, outside: float = 0.1
) -> torch.Tensor:
    """Mean end-point error ``|field - true|`` (voxels) weighted 1 inside ``mask`` ``(B, 1, *S)``
    and ``outside`` elsewhere (the zero background carries no information on the motion)."""
    epe = torch.sqrt(((field - true) ** 2).sum(1, keepdim=True) + 1e-6)
    w = mask + outside * (1 - mask)
    return (epe * w).sum() / w.sum()


def _validate(net: torch.nn.Module, items: list[dict], spacing_mm: float) -> dict[str, float]:
    from medimg.metrics.registration import folding_fraction, jacobian_determinant
    from medimg.tasks.register.transform import to_mm

    affine = np.diag([spacing_mm] * 3 + [1.0])
    out: dict[str, list[float]] = {"epe_mm": [], "dice": [], "folding_pct": []}
    net.eval()
    with torch.no_grad():
        for it in items:
            field = net(it["fixed"][None], it["moving"][None])
            mask = it["mask"][0] > 0
            err = torch.sqrt(((field[0] - it["field"]) ** 2).sum(0))[mask].mean()
            out["epe_mm"].append(float(err) * spacing_mm)
            moved = warp(it["moving_label"][None], field)
            out["dice"].append(1 - float(present_dice_loss(moved, it["fixed_label"][None])))
            jac = jacobian_determinant(to_mm(field, affine), affine)
            out["folding_pct"].append(100 * folding_fraction(jac))
    net.train()
    return {k: float(np.mean(v)) for k, v in out.items()}


def train_real_brains(
    sources: Sequence[BrainSource],
    out_dir: str | Path,
    *,
    preset: dict | None = None,
    max_steps: int | None = None,
    init: str | Path | None = None,
    ranges: WarpRanges | None = None,
    device: str | None = None,
    progress: bool = True,
    resume: bool | str = "auto",
    overwrite: bool = False,
    source: str = "real brains under known warps",
) -> TrainResult:
    """Train a registration network on :class:`~.brain_pairs.BrainWarpDataset` pairs of
    ``sources`` into the model folder ``out_dir``; ``preset`` overrides
    :data:`REAL_BRAINS_PRESET` keys; ``init``: a model folder with the same network to start from."""
    t0 = time.perf_counter()
    p = {**REAL_BRAINS_PRESET, **(preset or {})}
    out = Path(out_dir)
    resuming = check_run_dir(out, resume=resume, overwrite=overwrite, whole_folder=True,
                             restart_unstarted=True)  # fmt: skip
    data = BrainWarpDataset(list(sources), ranges)
    # supervised by the known field; lncc stays the similarity instance optimisation uses
    cfg = preset_config(p, dataset=source, num_classes=4, nd=3,
                        loss=LossConfig(mode="supervised", sim_weight=0.0,
                                        reg_weight=float(p["reg_weight"]),
                                        dice_weight=float(p["dice_weight"])),
                        max_steps=max_steps, val_metric="epe_mm", val_mode="min", device=device,
                        progress=progress)  # fmt: skip
    val_items = fixed_brain_pairs(data, int(p["val_pairs"]), int(p["val_seed"]))
    model = preset_model(cfg, init)
    reg = regulariser(cfg.loss.regulariser)
    outside = float(p["outside_weight"])

    def step(net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        field = net(batch["fixed"], batch["moving"])
        epe = field_error(field, batch["field"], batch["mask"], outside)
        dice = present_dice_loss(warp(batch["moving_label"], field), batch["fixed_label"])
        smooth = reg(field)
        total = epe + cfg.loss.dice_weight * dice + cfg.loss.reg_weight * smooth
        return {"loss": total, "epe": epe.detach(), "dice": dice.detach(), "reg": smooth.detach()}

    return fit_preset(model, data, step, cfg, out, resuming=resuming, t0=t0,
                      validate=lambda net: _validate(net, val_items, float(p["spacing"])))  # fmt: skip


def chain_stages(first: str | Path, second: str | Path, dest: str | Path) -> Path:
    """A model folder ``dest`` that runs the single-stage model ``first`` and then ``second`` on
    what it left (``dest/coarse`` = ``first``, ``dest`` = ``second``): a cascade whose stages may
    share one voxel size (:class:`~.predict.Registrator` runs the second because its voxel size
    is not coarser than the pair's). ``chain_stages(m, m, d)`` applies ``m`` twice."""
    from medimg.tasks.register.train import export_model, load_config

    for src in (first, second):
        if load_config(Path(src) / "reg.yaml").coarse:
            raise InputError("chain_stages needs single-stage models (no coarse stage)", src)
    out = Path(dest)
    export_model(first, out / "coarse", overwrite=True)
    export_model(second, out, overwrite=True)
    cfg = load_config(out / "reg.yaml")
    cfg.coarse = "coarse"
    to_yaml(cfg, out / "reg.yaml")  # atomic
    return out


def train_real_brains_preset(
    work_dir: str | Path,
    *,
    max_steps: int | None = None,
    init: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    resume: bool | str = "auto",
    overwrite: bool = False,
) -> TrainResult:
    """``--preset real-brains``: the ITK KmeansTest T1 and its tissue map (fetched into the data
    cache on first use; Colin27 is the bench's validation brain and stays out), then
    :func:`train_real_brains` into ``work_dir/model``, from ``init`` (default: the shipped
    model's 4 mm stage); returns the cascade ``work_dir/cascade`` (``init``, then the trained
    network: what ``--export`` copies)."""
    from medimg.phantoms.synth_brain import itk_t1_labels
    from medimg.tasks.register.predict import DEFAULT_MODEL

    try:
        t1, labels = itk_t1_labels()
    except (OSError, RuntimeError) as exc:  # no network and nothing cached
        raise InputError(f"--preset real-brains needs the ITK example T1: {exc}") from None
    sources = [brain_source(t1, labels, float(REAL_BRAINS_PRESET["spacing"]) / 2)]
    start = Path(init) if init is not None else DEFAULT_MODEL / "coarse"
    res = train_real_brains(sources, Path(work_dir) / "model", max_steps=max_steps, init=start,
                            device=device, progress=progress, resume=resume,
                            overwrite=overwrite,
                            source="real-brains: ITK KmeansTest T1 under known warps")  # fmt: skip
    # the shipped cascade: the starting 4 mm stage, then the trained network on what it left
    cascade = chain_stages(start, res.run_dir, Path(work_dir) / "cascade")
    return dataclasses.replace(res, run_dir=cascade)
