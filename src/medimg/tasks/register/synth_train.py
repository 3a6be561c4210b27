"""Training on synthesised pairs (``medimg register train --preset synth``), the SynthMorph recipe.

Each step draws a pair from :class:`~.synth_data.SynthPairDataset` (brain tissue maps of the
training subjects and random shapes; random contrast, independent for fixed and moving half of
the time; random affine + smooth warps, bias, noise) and minimises the soft Dice of the moving
label map warped by the network's field against the fixed one, plus a diffusion smoothness
term. No image similarity enters the loss, so nothing ties the network to one contrast.

The run folder is a model folder for :class:`~.predict.Registrator` (``reg.yaml``, ``best/``,
``last/``, ``metrics.jsonl``); validation registers fixed synthetic brain pairs of the training
subjects (never the bench's validation subject) and keeps the best mean Dice.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medimg.engine import (
    Trainer,
    TrainResult,
    check_run_dir,
    load_weights,
    seed_everything,
    to_yaml,
)
from medimg.errors import InputError
from medimg.io.output import atomic_path, mark_owned
from medimg.phantoms.synth import Appearance, Deformation
from medimg.tasks.register.losses import LossConfig, one_hot, regulariser
from medimg.tasks.register.models import ModelConfig, build_model
from medimg.tasks.register.synth_data import SynthPairDataset, brain_label_map, fixed_pairs
from medimg.tasks.register.transform import warp

if TYPE_CHECKING:
    from medimg.tasks.register.train import RegConfig

__all__ = ["SYNTH_PRESET", "present_dice_loss", "train_synth", "train_synth_preset"]

#: ``--preset synth``: the 4 mm stage's network (as the default's coarse stage: widths
#: 8-16-16-16-16-16, space-to-depth, symmetric diffeomorphic), 48^3 pairs at 4 mm, half brain
#: 70 % brain tissue maps (the ITK KmeansTest T1's; Colin27 is the bench's validation brain and
#: stays out), 30 % random shapes with 12 labels (anatomy-free pairs, as SynthMorph, so the
#: network does not learn one brain's shape only); Dice + 1.0 x diffusion; AdamW lr 1e-3, cosine
#: schedule. The brain share is higher than SynthMorph's because a CPU run is thousands, not
#: hundreds of thousands, of steps.
SYNTH_PRESET = {"shape": (48, 48, 48), "spacing": 4.0, "max_steps": 4000, "val_every": 250,
                "val_pairs": 6, "val_seed": 10**6, "shape_labels": 12, "shapes_prob": 0.3,
                "cross_prob": 0.5, "reg_weight": 1.0, "lr": 1e-3,
                "channels": (8, 16, 16, 16, 16, 16), "final_channels": (16, 16)}  # fmt: skip


def present_dice_loss(moved: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over the foreground classes present in either one-hot map
    ``(B, K, *S)``: a brain pair holds 3 of the 11 random-shape classes, and absent classes
    must not count as perfectly aligned (MONAI's ``DiceLoss`` scores empty-vs-empty as 1)."""
    dims = tuple(range(2, moved.ndim))
    inter = (moved * fixed).sum(dims)[:, 1:]
    total = (moved.sum(dims) + fixed.sum(dims))[:, 1:]
    present = (total > 0.5).float()
    dice = 2 * inter / total.clamp_min(1e-5)
    return 1 - (dice * present).sum() / present.sum().clamp_min(1.0)


def _validate(net: torch.nn.Module, items: list[dict], spacing_mm: float) -> dict[str, float]:
    from medimg.tasks.register.train import validation_metrics

    k = max(int(it["fixed_label"].max()) for it in items) + 1
    nd = items[0]["fixed"].ndim - 1
    affine = np.diag([spacing_mm] * nd + [1.0] * (4 - nd))  # 4x4 also in 2D
    net.eval()
    with torch.no_grad():
        out = validation_metrics(net, items, [affine] * len(items), k)
    net.train()
    return out


def preset_config(
    p: dict, *, dataset: str, num_classes: int, nd: int, loss: LossConfig,
    max_steps: int | None, val_metric: str, val_mode: str, device: str | None, progress: bool,
) -> RegConfig:  # fmt: skip
    """The run config of a preset that trains on pairs made on the fly: the preset's network
    (symmetric, space-to-depth), grid, rate and cosine schedule, validated on ``val_metric``."""
    from medimg.tasks.register.train import RegConfig

    cfg = RegConfig(dataset=dataset, num_classes=num_classes)
    cfg.model = ModelConfig(spatial_dims=nd, channels=tuple(p["channels"]),
                            final_channels=tuple(p["final_channels"]), symmetric=True,
                            downsample="shuffle")  # fmt: skip
    cfg.loss = loss
    cfg.working_spacing_mm = (float(p["spacing"]),) * nd
    steps = int(max_steps or p["max_steps"])
    cfg.train = dataclasses.replace(cfg.train, max_steps=steps, lr=float(p["lr"]),
                                    lr_schedule="cosine", warmup_steps=min(50, steps // 10),
                                    val_metric=val_metric, val_mode=val_mode,
                                    val_every=min(int(p["val_every"]), steps),
                                    checkpoint_every=min(int(p["val_every"]), steps))  # fmt: skip
    if device is not None:
        cfg.train.device = device
    cfg.train.progress = progress
    return cfg


def preset_model(cfg: RegConfig, init: str | Path | None) -> torch.nn.Module:
    """The network of ``cfg``, seeded; with the weights of the model folder (or checkpoint)
    ``init`` when given."""
    seed_everything(cfg.train.seed)
    model = build_model(cfg.model)
    if init is not None:
        weights = Path(init) / "model.safetensors"
        load_weights(model, weights if weights.is_file() else init)
    return model


def fit_preset(
    model: torch.nn.Module, data: Any, step: Any, cfg: RegConfig, out: Path, *,
    validate: Any, resuming: bool, t0: float,
) -> TrainResult:  # fmt: skip
    """Train into the model folder ``out`` (its ``reg.yaml`` written first, so an interrupted
    run is already a model folder) and record the training time."""
    trainer = Trainer(model, data, step, cfg.train, out, run_config=cfg, validate=validate)
    if not resuming:
        out.mkdir(parents=True, exist_ok=True)
        mark_owned(out)
        to_yaml(cfg, out / "reg.yaml")
    result = trainer.fit(resume=resuming, overwrite=not resuming)
    with atomic_path(out / "train_time_s.txt", overwrite=True) as tmp:
        tmp.write_text(f"{time.perf_counter() - t0:.1f}\n")
    return result


def train_synth(
    brain_maps: Sequence[torch.Tensor],
    out_dir: str | Path,
    *,
    preset: dict | None = None,
    max_steps: int | None = None,
    init: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    resume: bool | str = "auto",
    overwrite: bool = False,
    source: str = "synthesised pairs",
    appearance: Appearance | None = None,
    deformation: Deformation | None = None,
) -> TrainResult:
    """Train a registration network on pairs synthesised from ``brain_maps`` (long tensors of
    the preset's shape, values 0-3, e.g. from :func:`.synth_data.brain_label_map`) and random
    shapes, into the model folder ``out_dir``. ``preset`` overrides :data:`SYNTH_PRESET` keys;
    ``init``: a model folder with the same network settings to start from; ``appearance`` and
    ``deformation``: the generator's ranges (default :data:`.synth_data.PAIR_APPEARANCE`,
    :data:`.synth_data.PAIR_DEFORMATION`)."""
    t0 = time.perf_counter()
    p = {**SYNTH_PRESET, **(preset or {})}
    out = Path(out_dir)
    resuming = check_run_dir(out, resume=resume, overwrite=overwrite, whole_folder=True,
                             restart_unstarted=True)  # fmt: skip
    data = SynthPairDataset(brain_maps, p["shape"], shape_labels=int(p["shape_labels"]),
                            shapes_prob=float(p["shapes_prob"]),
                            cross_prob=float(p["cross_prob"]), appearance=appearance,
                            deformation=deformation)  # fmt: skip
    # weak supervision by labels only; lncc stays the similarity instance optimisation uses
    cfg = preset_config(p, dataset=source, num_classes=data.num_classes, nd=len(p["shape"]),
                        loss=LossConfig(mode="weak", sim_weight=0.0,
                                        reg_weight=float(p["reg_weight"])),
                        max_steps=max_steps, val_metric="dice", val_mode="max", device=device,
                        progress=progress)  # fmt: skip
    val_items = fixed_pairs(data, int(p["val_pairs"]), int(p["val_seed"]))
    model = preset_model(cfg, init)
    reg, k = regulariser(cfg.loss.regulariser), cfg.num_classes

    def step(net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        field = net(batch["fixed"], batch["moving"])
        moved = warp(one_hot(batch["moving_label"], k), field)
        dice = present_dice_loss(moved, one_hot(batch["fixed_label"], k))
        smooth = reg(field)
        return {"loss": dice + cfg.loss.reg_weight * smooth, "dice": dice.detach(),
                "reg": smooth.detach()}  # fmt: skip

    return fit_preset(model, data, step, cfg, out, resuming=resuming, t0=t0,
                      validate=lambda net: _validate(net, val_items, float(p["spacing"])))  # fmt: skip


def train_synth_preset(
    work_dir: str | Path,
    *,
    max_steps: int | None = None,
    init: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    resume: bool | str = "auto",
    overwrite: bool = False,
) -> TrainResult:
    """``--preset synth``: brain tissue maps of the ITK KmeansTest T1 (fetched into the data
    cache on first use) at the preset's grid, then :func:`train_synth` into ``work_dir/model``."""
    from medimg.phantoms.synth_brain import itk_t1_labels

    p = SYNTH_PRESET
    try:
        _, labels = itk_t1_labels()
    except (OSError, RuntimeError) as exc:  # no network and nothing cached
        raise InputError(f"--preset synth needs the ITK example T1 (itk-examples): {exc}") from None
    maps = [brain_label_map(labels, float(p["spacing"]), p["shape"])]
    return train_synth(maps, Path(work_dir) / "model", max_steps=max_steps, init=init,
                       device=device, progress=progress, resume=resume, overwrite=overwrite,
                       source="synth: ITK KmeansTest T1 tissue maps + random shapes")  # fmt: skip
