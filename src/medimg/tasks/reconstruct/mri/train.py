"""Training of the learned MRI reconstructions through :mod:`medimg.engine`.

One config dataclass (:class:`MRITrainConfig`) nests the network (:class:`ModelConfig`), the
simulation (:class:`SimConfig`) and the engine's :class:`TrainConfig`; it is written to the run's
``config.yaml``, from which :func:`load_model` rebuilds the network. Presets: ``default`` (the
shipped model: a MoDL on real brains and phantoms; ``realistic`` is its older name),
``phantom-varnet`` and ``finetune-4x`` (the previous default's two stages, kept as the named
model ``phantom-varnet``) and ``tiny`` (a seconds-long run for tests); see :func:`preset`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from medimg.engine import (
    TrainConfig,
    Trainer,
    TrainResult,
    check_run_dir,
    from_yaml,
    load_weights,
    seed_everything,
    to_dict,
)
from medimg.errors import CheckpointError, InputError
from medimg.physics.mri import MultiCoilMRI
from medimg.tasks.reconstruct.mri.data import (
    FastMRISlices,
    PhantomSlices,
    RealisticConfig,
    RealisticSlices,
    SimConfig,
    load_real_training,
)
from medimg.tasks.reconstruct.mri.losses import ssim_l1_loss
from medimg.tasks.reconstruct.mri.models import ModelConfig, build_model

__all__ = ["DEFAULT_DIR", "NAMED_MODELS", "MRITrainConfig", "default_label", "export_model"]
__all__ += ["load_model", "model_dir", "physics_for", "preset", "train_mri", "validation_set"]

#: The shipped default model: ``model.safetensors`` + ``config.yaml`` + ``MODEL_CARD.md``.
DEFAULT_DIR = Path(__file__).with_name("default")
#: Shipped models by name (``--model NAME``, ``load_model(NAME)``): the default, and the
#: previous default, a VarNet trained on phantoms only (kept for comparison; see the card).
NAMED_MODELS = {"default": DEFAULT_DIR, "phantom-varnet": DEFAULT_DIR / "phantom_varnet"}
VAL_SEED_BASE = 100_000  # held-out phantoms: seeds far from the training ones
PRESETS = ("default", "phantom-varnet", "finetune-4x", "realistic", "tiny")


@dataclasses.dataclass
class MRITrainConfig:
    """Everything that determines a training run (``config.yaml``)."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: SimConfig = dataclasses.field(default_factory=SimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    h5_files: list[str] = dataclasses.field(default_factory=list)  # empty: simulate phantoms
    realistic: RealisticConfig | None = None  # set: real brains + phantoms (RealisticSlices)
    virtual_coils: int = 12  # realistic training: more coils are SVD-compressed to this many
    samples_per_epoch: int = 1000
    val_cases: int = 6
    l1_weight: float = 1.0


def preset(name: str = "default", model: str = "varnet") -> MRITrainConfig:
    """A named configuration (``model`` picks the network where the preset allows it).

    * ``phantom-varnet`` then ``finetune-4x``: the previous default, a VarNet trained on
      phantoms only (128x128, 8 coils, 4x and 8x equispaced, then 4x only from ``--init <run>/best``).
      It is not for real scans (see the model card's last section).
    * ``default`` (or ``realistic``): the shipped default since it beat the phantom VarNet on
      real brains. MoDL
      (CG-SENSE start, one shared U-Net denoiser, CG data consistency, ESPIRiT maps at
      prediction, maps phase-aligned so the denoiser sees nearly real images) trained on
      :class:`RealisticSlices` (real training-side brains and phantoms, every acquisition factor
      randomised; matrices 128-256 and more than 12 coils SVD-compressed to 12 to keep a CPU
      step near 1-4 s), batch 1 because matrix sizes differ; 800 steps as the shipped run (see
      its model card).
    * ``tiny``: a seconds-long run for tests and smoke checks.
    """
    if name == "phantom-varnet":  # about 19 min of one CPU thread (0.6 s per step)
        feats = (16, 16, 32, 64, 128, 16) if model == "unet" else (8, 8, 16, 32, 64, 8)
        return MRITrainConfig(  # 4x drawn twice as often as 8x
            model=ModelConfig(model, cascades=5, features=feats),
            data=SimConfig(shape=(128, 128), coils=8, accelerations=(4.0, 4.0, 8.0)),
            train=TrainConfig(max_steps=1800, batch_size=2, lr=1e-3, lr_schedule="cosine",
                              warmup_steps=20, grad_clip=1.0, val_every=150, val_metric="psnr",
                              val_mode="max", checkpoint_every=25, log_every=10),
        )  # fmt: skip
    if name == "finetune-4x":  # stage 2 of the shipped model, from --init <default run>/best
        cfg = preset("phantom-varnet", model)
        cfg.data = dataclasses.replace(cfg.data, accelerations=(4.0,))
        cfg.train = dataclasses.replace(cfg.train, max_steps=280, lr=3e-4, warmup_steps=10,
                                        val_every=70, checkpoint_every=35)  # fmt: skip
        return cfg
    if name in ("default", "realistic"):
        return MRITrainConfig(
            model=ModelConfig("modl", cascades=5, features=(16, 16, 32, 64, 128, 16), cg_iter=6,
                              maps="espirit", init_iter=15),
            realistic=RealisticConfig(size_range=(128, 256)),
            train=TrainConfig(max_steps=800, batch_size=1, lr=1e-3, lr_schedule="cosine",
                              warmup_steps=50, grad_clip=1.0, val_every=100, val_metric="psnr",
                              val_mode="max", checkpoint_every=25, log_every=20, amp=False),
            val_cases=8,
        )  # fmt: skip
    if name == "tiny":
        return MRITrainConfig(
            model=ModelConfig(model, cascades=2, features=(8, 8, 16, 16, 32, 8),
                              sens_features=(4, 4, 4, 8, 8, 4), cg_iter=3),
            data=SimConfig(shape=(32, 32), coils=4, accelerations=(4.0,), center_fraction=0.16,
                           num_phantoms=40),
            train=TrainConfig(max_steps=60, batch_size=2, lr=3e-3, grad_clip=1.0, val_every=60,
                              val_metric="psnr", val_mode="max", checkpoint_every=30,
                              log_every=10, progress=False),
            samples_per_epoch=40, val_cases=4,
        )  # fmt: skip
    raise InputError(f"preset must be one of {', '.join(PRESETS)}, got {name!r}")


def physics_for(
    model: torch.nn.Module, mask: torch.Tensor, maps: torch.Tensor | None
) -> MultiCoilMRI | torch.Tensor:
    """What ``model(y, physics)`` needs: the mask for the VarNet, else the SENSE operator."""
    if not getattr(model, "needs_maps", True):
        return mask
    if maps is None:
        raise InputError("this model needs coil maps; pass maps (e.g. espirit_maps) or use varnet")
    return MultiCoilMRI(maps, mask, check_inputs=False)


def _psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-item PSNR in dB with fastMRI's data range (the target's maximum)."""
    mse = ((pred - target) ** 2).flatten(1).mean(1).clamp_min(1e-20)
    return 10 * torch.log10(target.flatten(1).amax(1) ** 2 / mse)


def validation_set(cfg: MRITrainConfig) -> list[dict[str, torch.Tensor]]:
    """``val_cases`` held-out slices with fixed seeds (never seen in training): phantoms, or
    realistic slices drawn from seeds far from the training ones, with ESPIRiT maps when the
    model is used with them (as at prediction)."""
    if cfg.realistic is None:
        held = dataclasses.replace(cfg.data, seed_base=VAL_SEED_BASE)
        ds = PhantomSlices(held, cfg.val_cases)
        return [ds.sample(i, seed=i) for i in range(cfg.val_cases)]
    from medimg.physics.coils import espirit_maps

    real = RealisticSlices(cfg.realistic, cfg.val_cases, load_real_training(), VAL_SEED_BASE)
    out = []
    for i in range(cfg.val_cases):
        s = real.draw(i, seed=i)[0]
        if cfg.model.maps == "espirit":
            s["maps"] = espirit_maps(s["kspace"][None], s["mask"])[0]
        out.append(s)
    return out


def support_maps(sample: dict[str, torch.Tensor], margin: int = 3) -> dict[str, torch.Tensor]:
    """The sample with its true coil maps zeroed outside the object (filled, dilated by
    ``margin`` px), as ESPIRiT's eigenvalue crop zeroes them at prediction. Training on true
    maps spares ESPIRiT's 0.2-7 s per sample; the crop keeps the two alike."""
    from scipy import ndimage

    t = sample["target"].numpy()
    fg = ndimage.binary_fill_holes(t > 0.02 * max(float(t.max()), 1e-12))
    fg = ndimage.binary_dilation(fg, iterations=margin)
    return {**sample, "maps": sample["maps"] * torch.from_numpy(fg)}


def compress_coils(sample: dict[str, torch.Tensor], virtual: int) -> dict[str, torch.Tensor]:
    """The sample with its coils compressed to at most ``virtual`` virtual coils (SVD coil
    compression, Buehrer et al. 2007): ``y' = U^H y``, ``S' = U^H S`` with ``U`` the leading
    left singular vectors of the maps, so ``y' = M F S' x + U^H n`` holds exactly. A 32-coil
    256x256 step costs about four times a 8-coil one; compressed, the network still sees every
    array geometry through ``S'``."""
    maps = sample["maps"]
    n = maps.shape[0]
    if n <= virtual:
        return sample
    u = torch.linalg.svd(maps.reshape(n, -1), full_matrices=False)[0][:, :virtual]
    uh = u.conj().T
    k = (uh @ sample["kspace"].reshape(n, -1)).reshape(virtual, *maps.shape[1:])
    s = (uh @ maps.reshape(n, -1)).reshape(virtual, *maps.shape[1:])
    return {**sample, "kspace": k * (sample["mask"] != 0), "maps": s}


#: ``extra_loss(pred magnitude, batch, physics) -> scalar`` of :func:`train_mri`
ExtraLoss = Callable[[torch.Tensor, dict[str, torch.Tensor], object], torch.Tensor]


class _TrainingSlices(Dataset):
    """Realistic slices as the training step takes them: coils compressed, maps cropped."""

    def __init__(self, base: Dataset, virtual_coils: int) -> None:
        self.base, self.virtual = base, virtual_coils

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return support_maps(compress_coils(self.base[i], self.virtual))


def _training_data(cfg: MRITrainConfig) -> Dataset:
    if cfg.h5_files:
        if cfg.model.name != "varnet":
            raise InputError("training on HDF5 files needs learned coil maps: use --model varnet")
        accel = cfg.data.accelerations[0]
        return FastMRISlices(cfg.h5_files, cfg.data.mask, accel, cfg.data.center_fraction)
    if cfg.realistic is not None:
        data = RealisticSlices(cfg.realistic, cfg.samples_per_epoch, load_real_training())
        return _TrainingSlices(data, cfg.virtual_coils)
    return PhantomSlices(cfg.data, cfg.samples_per_epoch)


def train_mri(
    cfg: MRITrainConfig,
    run_dir: str | Path,
    resume: bool | str = "auto",
    overwrite: bool = False,
    init: str | Path | None = None,
    allow_config_change: bool = False,
    extra_loss: ExtraLoss | None = None,
) -> TrainResult:
    """Train ``cfg.model`` into ``run_dir`` (resumable); ``init`` fine-tunes from a model;
    ``allow_config_change`` resumes a run with a changed config (e.g. more ``max_steps``);
    ``extra_loss(pred, batch, physics)`` adds a term to the loss (distillation's teacher term)."""
    # an earlier run in run_dir is refused before the data and validation set are prepared
    check_run_dir(run_dir, resume=resume, overwrite=overwrite, run_config=to_dict(cfg))
    seed_everything(cfg.train.seed)
    model = build_model(cfg.model)
    if init is not None:
        load_weights(model, init)
    val = validation_set(cfg)

    def step(net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        phys = physics_for(model, batch["mask"], batch.get("maps"))
        pred = net(batch["kspace"], phys).abs()
        loss = ssim_l1_loss(pred, batch["target"], cfg.l1_weight)
        if extra_loss is None:
            return {"loss": loss}
        extra = extra_loss(pred, batch, phys)
        return {"loss": loss + extra, "extra": extra.detach()}

    def validate(net: torch.nn.Module) -> dict[str, float]:
        scores = []
        for s in val:
            phys = physics_for(net, s["mask"], s["maps"][None])
            pred = net(s["kspace"][None], phys).abs()
            scores.append(float(_psnr(pred, s["target"][None])))
        return {"psnr": sum(scores) / len(scores)}

    trainer = Trainer(model, _training_data(cfg), step, cfg.train, run_dir, validate=validate,
                      run_config=cfg)  # fmt: skip
    return trainer.fit(resume=resume, overwrite=overwrite, allow_config_change=allow_config_change)  # type: ignore[arg-type]


def model_dir(path: str | Path | None) -> Path:
    """The folder of a model: ``None`` is the shipped default, a name of :data:`NAMED_MODELS`
    (unless a folder of that name exists here) a shipped model, anything else a path."""
    if path is None:
        return DEFAULT_DIR
    if isinstance(path, str) and path in NAMED_MODELS and not Path(path).exists():
        return NAMED_MODELS[path]
    return Path(path)


def default_label() -> str:
    """How ``evaluate`` names the shipped default network, e.g. ``"modl (default)"``."""
    return f"{from_yaml(MRITrainConfig, DEFAULT_DIR / 'config.yaml').model.name} (default)"


def load_model(path: str | Path | None = None) -> tuple[torch.nn.Module, MRITrainConfig]:
    """A trained network in eval mode and its config: a run folder (``best/`` else ``last/``),
    a folder with ``config.yaml`` + ``model.safetensors`` or a name of :data:`NAMED_MODELS`;
    ``None`` = the shipped default."""
    folder = model_dir(path)
    if not (folder / "config.yaml").is_file():
        raise CheckpointError("no config.yaml here; give a run folder from 'train'", folder)
    cfg = from_yaml(MRITrainConfig, folder / "config.yaml")
    model = build_model(cfg.model)
    load_weights(model, folder)
    return model.eval(), cfg


def export_model(run_dir: str | Path, dest: str | Path, overwrite: bool = False) -> Path:
    """Copy a run's ``config.yaml`` and best (else last) weights into a model folder ``dest``
    (what ships in ``medimg/tasks/reconstruct/mri/default``)."""
    from medimg.engine import find_checkpoint
    from medimg.io.output import copy_files

    run, out = Path(run_dir), Path(dest)
    ckpt = find_checkpoint(run / "best") or find_checkpoint(run / "last")
    if ckpt is None or not (run / "config.yaml").is_file():
        raise CheckpointError("no finished training here (config.yaml and best/ or last/)", run)
    copy_files([(run / "config.yaml", out / "config.yaml"),
                (ckpt / "model.safetensors", out / "model.safetensors")], overwrite=overwrite)  # fmt: skip
    return out
