"""Training: pair list -> registration network, through :class:`medimg.engine.Trainer`.

The run folder is a model folder for :class:`~.predict.Registrator`: ``reg.yaml`` (network and
loss settings), ``best/`` and ``last/`` weights, ``metrics.jsonl``. Validation registers the
validation pairs (``registration_val``, else the last quarter of the training pairs) and reports
``dice`` (mean over labels of the warped moving labels), ``epe_mm`` (with true fields),
``folding_pct`` and ``loss``; the best model is chosen on ``epe_mm`` (supervised), ``dice`` (when
labels exist) or ``loss``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from medimg.engine import (
    TrainConfig,
    Trainer,
    TrainResult,
    check_run_dir,
    find_checkpoint,
    from_yaml,
    load_weights,
    seed_everything,
    to_yaml,
)
from medimg.errors import InputError
from medimg.io.output import atomic_path, check_outputs, copy_files, mark_owned
from medimg.tasks.register.data import Pair, RegDataset, load_pair, read_pairs
from medimg.tasks.register.losses import LossConfig, RegistrationLoss
from medimg.tasks.register.models import ModelConfig, build_model
from medimg.tasks.register.transform import residual_field, to_mm, to_voxels, warp

__all__ = [
    "DEFAULT_PRESET",
    "FINE_PRESET",
    "PRESETS",
    "RegConfig",
    "check_export",
    "export_model",
    "load_config",
    "train_preset",
    "train_registration",
]

MODE_ALIASES = {
    "full": "supervised",
    "fully": "supervised",
    "weakly": "weak",
    "none": "unsupervised",
}


@dataclasses.dataclass
class RegConfig:
    """Everything a registration run needs: data, network, loss, engine settings."""

    dataset: str = ""
    model: ModelConfig = dataclasses.field(default_factory=lambda: ModelConfig(symmetric=True))
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            max_steps=1000,
            batch_size=1,
            lr=1e-3,
            val_every=100,
            checkpoint_every=100,
            grad_clip=10.0,
        )
    )
    num_classes: int = 0  # label values 0..K-1 seen in training (0: no labels)
    #: voxel size (mm per axis) of the training grid; inference resamples other grids to it
    working_spacing_mm: tuple[float, ...] = ()
    #: sub-folder holding the model whose field this one refines (a multi-resolution cascade)
    coarse: str = ""
    #: random training crop (voxels per axis; empty: whole pairs), e.g. to train a fine stage
    crop: tuple[int, ...] = ()


def load_config(path: str | Path) -> RegConfig:
    return from_yaml(RegConfig, path)


def _check_supervision(mode: str, pairs: list[Pair], aux_field: bool = False) -> None:
    needs_field, fix = (
        ("full supervision", "use --mode unsupervised or weak")
        if mode == "supervised"
        else ("aux_field_weight > 0", "set aux_field_weight: 0")
    )
    for p in pairs:
        if mode == "weak" and (p.fixed_label is None or p.moving_label is None):
            raise InputError(
                f"weak supervision needs fixed_label and moving_label for every pair; pair "
                f"'{p.name}' has none (add them to the pair list or use --mode unsupervised)"
            )
        if (mode == "supervised" or aux_field) and p.field is None:
            raise InputError(
                f"{needs_field} needs the true 'field' of every pair; pair '{p.name}' has none "
                f"({fix})"
            )


def _dice_mean(a: np.ndarray, b: np.ndarray, k: int) -> float:
    scores = []
    for c in range(1, k):
        s = int((a == c).sum()) + int((b == c).sum())
        scores.append(1.0 if s == 0 else 2.0 * int(((a == c) & (b == c)).sum()) / s)
    return float(np.mean(scores)) if scores else float("nan")


def validation_metrics(
    net: torch.nn.Module, items: list[dict], affines: list[np.ndarray], k: int
) -> dict[str, float]:
    """Register each validation item; mean Dice / EPE (mm) / folding % / loss-free metrics."""
    from medimg.metrics.registration import folding_fraction, jacobian_determinant

    dev = next(net.parameters()).device
    out: dict[str, list[float]] = {"dice": [], "epe_mm": [], "folding_pct": [], "mse": []}
    for item, affine in zip(items, affines):
        f, m = item["fixed"][None].to(dev), item["moving"][None].to(dev)
        field = net(f, m)
        out["mse"].append(float(((warp(m, field) - f) ** 2).mean()))
        u_mm = to_mm(field, affine)
        out["folding_pct"].append(100 * folding_fraction(jacobian_determinant(u_mm, affine)))
        if "fixed_label" in item and k > 1:
            moved = warp(item["moving_label"][None].float().to(dev), field, mode="nearest")
            out["dice"].append(
                _dice_mean(moved.cpu().numpy(), item["fixed_label"][None].numpy(), k)
            )
        if "field" in item:
            true_mm = to_mm(item["field"], affine)
            out["epe_mm"].append(float(np.sqrt(((u_mm - true_mm) ** 2).sum(0)).mean()))
    return {key: float(np.mean(v)) for key, v in out.items() if v}


def train_registration(
    dataset: str | Path,
    out_dir: str | Path,
    config: RegConfig | None = None,
    *,
    mode: str | None = None,
    max_steps: int | None = None,
    device: str | None = None,
    progress: bool = True,
    resume: bool | str = "auto",
    overwrite: bool = False,
    coarse_model: str | Path | None = None,
    init: str | Path | None = None,
) -> TrainResult:
    """Train on the ``train`` pairs of ``dataset`` into ``out_dir`` (a model folder).

    ``init``: a model or run folder to fine-tune; its network settings (``reg.yaml``) replace
    ``config.model`` so that its weights fit, and a refinement keeps its coarse stage unless
    ``coarse_model`` names another.

    ``coarse_model``: a model folder whose field this network refines. It is copied into
    ``out_dir/coarse``; every pair's moving image and labels are warped by its field first, and
    the network learns the remaining correction; a true field becomes the residual one
    (:func:`.transform.residual_field`), so full and hybrid (``aux_field_weight``) supervision
    train a refinement too.

    ``resume``: ``True`` continues the run in ``out_dir``, ``"auto"`` continues it if it holds a
    checkpoint; an ``out_dir`` holding an earlier run needs ``overwrite`` to start over (see
    :func:`~medimg.engine.state.check_run_dir`); nothing in it changes before that is settled."""
    t0 = time.perf_counter()
    cfg = dataclasses.replace(config or RegConfig())
    cfg.train = dataclasses.replace(cfg.train)
    if mode is not None:
        cfg.loss = dataclasses.replace(cfg.loss, mode=MODE_ALIASES.get(mode, mode))  # type: ignore[arg-type]
    if max_steps is not None:
        cfg.train.max_steps = max_steps
        cfg.train.val_every = cfg.train.checkpoint_every = max(
            1, min(cfg.train.val_every, max_steps)
        )
        cfg.train.warmup_steps = min(cfg.train.warmup_steps, max_steps - 1)
    if device is not None:
        cfg.train.device = device  # type: ignore[assignment]
    cfg.train.progress = progress
    cfg.dataset = str(dataset)
    specs = read_pairs(dataset, "train")
    if not specs:
        raise InputError("the pair list has no training pairs", dataset)
    out = Path(out_dir)
    listing = Path(dataset) / "dataset.json" if Path(dataset).is_dir() else Path(dataset)
    read = [listing, *(p for s in specs for p in dataclasses.astuple(s) if p is not None)]
    models = [Path(m) / f for m in (coarse_model, init) if m is not None
              for f in ("reg.yaml", "model.safetensors", "best", "last")]  # fmt: skip
    resuming = check_run_dir(out, resume=resume, overwrite=overwrite,
                             inputs=read + ([] if resume is True else models), whole_folder=True,
                             restart_unstarted=True)  # fmt: skip
    pairs = [load_pair(s) for s in specs]
    _check_supervision(cfg.loss.mode, pairs, cfg.loss.aux_field_weight > 0)
    val_specs = read_pairs(dataset, "val") if Path(dataset).suffix.lower() not in (".csv",) else []
    if val_specs:
        val = [load_pair(s) for s in val_specs]
    else:
        n_val = len(pairs) // 4
        pairs, val = (pairs[:-n_val], pairs[-n_val:]) if n_val else (pairs, pairs[:1])
    init_cfg = _init_config(Path(init)) if init is not None else None
    if init_cfg is not None and init_cfg.coarse and coarse_model is None:
        coarse_model = Path(init) / init_cfg.coarse  # a refinement keeps refining its coarse stage
    if coarse_model is not None:
        if not (resuming and (out / "coarse" / "reg.yaml").is_file()):  # resumed: keep its own
            out.mkdir(parents=True, exist_ok=True)
            mark_owned(out)
            export_model(coarse_model, out / "coarse", overwrite=True)
        cfg.coarse = "coarse"
        pairs, val = (
            _prewarped(pairs, Path(out_dir) / "coarse"),
            _prewarped(val, Path(out_dir) / "coarse"),
        )
    nd = pairs[0].fixed.spatial_ndim
    cfg.model = dataclasses.replace(cfg.model, spatial_dims=nd)
    cfg.working_spacing_mm = tuple(round(float(s), 4) for s in pairs[0].fixed.spacing[:nd])
    if pairs[0].fixed_label is not None:
        cfg.num_classes = int(max(max(int(p.fixed_label.array.max()), int(p.moving_label.array.max()))
                                  for p in pairs if p.fixed_label is not None and p.moving_label is not None) + 1)  # fmt: skip
    has_field, has_labels = pairs[0].field is not None, cfg.num_classes > 1
    if cfg.loss.mode == "supervised" and has_field:
        cfg.train.val_metric, cfg.train.val_mode = "epe_mm", "min"
    elif has_labels:
        cfg.train.val_metric, cfg.train.val_mode = "dice", "max"
    else:
        cfg.train.val_metric, cfg.train.val_mode = "mse", "min"
    data = RegDataset(pairs, crop=tuple(cfg.crop))
    val_items = RegDataset(val, flip=False).items
    affines = [p.fixed.affine for p in val]
    seed_everything(cfg.train.seed)
    if init_cfg is not None:
        if init_cfg.model.spatial_dims != nd:
            raise InputError(
                f"the --init model is {init_cfg.model.spatial_dims}D but these pairs are {nd}D; "
                "fine-tune a model of the same dimensionality",
                init,
            )
        cfg.model = init_cfg.model
    model = build_model(cfg.model)
    if init is not None:
        load_weights(model, Path(init) / "model.safetensors"
                     if (Path(init) / "model.safetensors").is_file() else init)  # fmt: skip
    loss_fn = RegistrationLoss(cfg.loss, nd, cfg.num_classes)

    def step(net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        total, terms = loss_fn(net(batch["fixed"], batch["moving"]), batch)
        return {"loss": total, **{k: v.detach() for k, v in terms.items()}}

    trainer = Trainer(model, data, step, cfg.train, out, run_config=cfg,
                      validate=lambda net: validation_metrics(net, val_items, affines, cfg.num_classes))  # fmt: skip
    if not resuming:  # first, so an interrupted run is already a model folder
        out.mkdir(parents=True, exist_ok=True)
        mark_owned(out)
        to_yaml(cfg, out / "reg.yaml")
    result = trainer.fit(resume=resuming, overwrite=not resuming)
    to_yaml(cfg, out / "reg.yaml")
    with atomic_path(out / "train_time_s.txt", overwrite=True) as tmp:
        tmp.write_text(f"{time.perf_counter() - t0:.1f}\n")
    return result


#: ``medimg register train --preset default``: the shipped 4 mm stage's recipe (48^3 at 4 mm,
#: T1-like brain pairs, weak supervision: Dice of warped labels + 0.5 x LNCC + diffusion; symmetric
#: velocity network; lr 1e-3, cosine schedule). 48^3 rather than 96^3 so it trains on one CPU
#: thread; 200 pairs (150 to train, 50 to validate) because 18 pairs were too few to generalise.
#: Both stages halve their input by space-to-depth (``downsample: shuffle``) rather than average
#: pooling: validation Dice 0.812 vs 0.804 here, 0.817 vs 0.808 for the refinement.
DEFAULT_PRESET = {"kind": "mr", "n_train": 200, "n_test": 8, "seed": 0, "shape": (48, 48, 48),
                  "spacing": 4.0, "mode": "weak", "max_steps": 4000, "val_every": 250,
                  "channels": (8, 16, 16, 16, 16, 16), "final_channels": (16, 16),
                  "downsample": "shuffle"}  # fmt: skip
#: ``--preset fine-2mm``: a 2 mm refinement of the 4 mm stage (``--coarse``, default: the shipped
#: model's ``coarse/``), trained on random 48^3 crops of 96^3 pairs at 2 mm. It runs on 8x as many
#: voxels, so its full-resolution level keeps 8 channels; the coarser levels are wider (16-32),
#: which costs little there (validation Dice 0.808 vs 0.801 with 8 channels throughout).
FINE_PRESET = {"kind": "mr", "n_train": 64, "n_test": 0, "seed": 300, "shape": (96, 96, 96),
               "spacing": 2.0, "mode": "weak", "max_steps": 3000, "val_every": 250,
               "channels": (8, 16, 32, 32, 32, 8), "final_channels": (8,), "crop": (48, 48, 48),
               "downsample": "shuffle"}  # fmt: skip
PRESETS = {"default": DEFAULT_PRESET, "fine-2mm": FINE_PRESET}


def train_preset(
    work_dir: str | Path,
    *,
    preset: str = "default",
    coarse_model: str | Path | None = None,
    mode: str | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    device: str | None = None,
    init: str | Path | None = None,
    resume: bool | str = "auto",
    overwrite: bool = False,
) -> TrainResult:
    """Write the preset's synthetic pairs into ``work_dir/data`` (if not there yet) and train
    ``work_dir/model`` with its recipe (see :data:`PRESETS`); ``resume`` and ``overwrite`` as
    in :func:`train_registration`, settled before the data is written."""
    from medimg.phantoms.registration import write_pair_dataset
    from medimg.tasks.register.predict import DEFAULT_MODEL

    if preset not in PRESETS:
        raise InputError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    p = PRESETS[preset]
    work = Path(work_dir)
    data = work / "data"
    check_run_dir(work / "model", resume=resume, overwrite=overwrite, whole_folder=True,
                  restart_unstarted=True)  # fmt: skip
    if not (data / "dataset.json").is_file():
        write_pair_dataset(data, str(p["kind"]), n_train=int(p["n_train"]), n_test=int(p["n_test"]),
                           seed=int(p["seed"]), shape=tuple(p["shape"]), spacing=float(p["spacing"]),  # type: ignore[arg-type]
                           overwrite=overwrite)  # fmt: skip
    cfg = RegConfig()
    cfg.model = dataclasses.replace(cfg.model, channels=tuple(p["channels"]),
                                    final_channels=tuple(p["final_channels"]),
                                    downsample=str(p["downsample"]))  # type: ignore[arg-type]  # fmt: skip
    cfg.crop = tuple(p.get("crop", ()))  # type: ignore[arg-type]
    cfg.train.max_steps = int(p["max_steps"])  # type: ignore[call-overload]
    cfg.train.val_every = cfg.train.checkpoint_every = int(p["val_every"])  # type: ignore[call-overload]
    cfg.train.lr_schedule = "cosine"
    cfg.train.warmup_steps = 50
    cfg.loss = dataclasses.replace(cfg.loss, sim_weight=0.5)
    if preset == "fine-2mm" and coarse_model is None:
        coarse_model = (
            DEFAULT_MODEL / "coarse" if (DEFAULT_MODEL / "coarse").is_dir() else DEFAULT_MODEL
        )
    return train_registration(data, work / "model", cfg, mode=mode or str(p["mode"]), max_steps=max_steps,
                              device=device, progress=progress, resume=resume,
                              overwrite=overwrite, coarse_model=coarse_model, init=init)  # fmt: skip


def _init_config(init: Path) -> RegConfig:
    """The settings of the model/run folder ``init`` that a run fine-tunes."""
    if not (init / "reg.yaml").is_file():
        raise InputError("--init needs a registration model or run folder (with reg.yaml)", init)
    return load_config(init / "reg.yaml")


def _prewarped(pairs: list[Pair], coarse_dir: Path) -> list[Pair]:
    """The pairs with moving image and labels warped by the coarse model's field."""
    from medimg.tasks.register.data import normalise
    from medimg.tasks.register.predict import Registrator

    reg, out = Registrator(coarse_dir), []
    for p in pairs:
        f = torch.from_numpy(normalise(p.fixed.array))[None]
        m = torch.from_numpy(normalise(p.moving.array))[None]
        with torch.no_grad():
            u = reg.network_field(f, m, p.fixed)
            moved = warp(torch.from_numpy(p.moving.array.astype(np.float32))[None], u)
            q = dataclasses.replace(p, moving=p.moving.with_array(moved[0].numpy()))
            if p.moving_label is not None:
                lab = torch.from_numpy(p.moving_label.array.astype(np.float32))[None]
                lab = warp(lab, u, mode="nearest")[0].numpy().astype(p.moving_label.array.dtype)
                q.moving_label = p.moving_label.with_array(lab)
            if p.field is not None:
                q.field = to_mm(
                    residual_field(to_voxels(p.field, p.fixed.affine), u), p.fixed.affine
                )
        out.append(q)
    return out


def check_export(src: str | Path, dest: str | Path, overwrite: bool = False) -> None:
    """Refuse, before training, an export :func:`export_model` could not write: its files
    (``reg.yaml``, ``model.safetensors``) exist without ``overwrite``, or ``dest`` is, lies in
    or holds the run's own files."""
    run, out = Path(src), Path(dest)
    check_outputs([out / "reg.yaml", out / "model.safetensors"], overwrite=overwrite,
                  inputs=[run / "reg.yaml", run / "model.safetensors", run / "best", run / "last",
                          run / "coarse"])  # fmt: skip


def export_model(src: str | Path, dest: str | Path, *, overwrite: bool = True) -> Path:
    """Copy a run or model folder's ``reg.yaml`` and best (else last, else its own) weights into
    a model folder ``dest``, with its coarse stage if it has one; other files there (a model
    card) stay. Each file appears only once complete."""
    run, out = Path(src), Path(dest)
    ckpt = find_checkpoint(run / "best") or find_checkpoint(run / "last")
    weights = ckpt / "model.safetensors" if ckpt else run / "model.safetensors"
    if not weights.is_file() or not (run / "reg.yaml").is_file():
        raise InputError(
            "no finished training here (reg.yaml and best/, last/ or model.safetensors)", run
        )
    check_export(run, out, overwrite)
    copy_files([(run / "reg.yaml", out / "reg.yaml"), (weights, out / "model.safetensors")],
               overwrite=overwrite)  # fmt: skip
    coarse = load_config(run / "reg.yaml").coarse
    if coarse:
        export_model(run / coarse, out / coarse, overwrite=overwrite)
    return out
