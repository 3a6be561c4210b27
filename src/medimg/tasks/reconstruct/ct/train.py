"""Training the CT networks through :class:`medimg.engine.Trainer`, and the presets.

- ``redcnn``: MSE on random low/full-dose patch pairs, plus ``window_weight`` times the MSE in
  the soft-tissue window (:func:`soft_tissue_mse`); ``init`` starts it from a trained RED-CNN
  (fine-tuning), and ``focus_fraction`` of the patches may come from a second bank
  (``focus_bank``, :class:`~.data.MixedPatches`).
- ``wgan``: first the perceptual feature extractor (a :class:`PatchAutoencoder`, L1
  reconstruction of full-dose patches, in ``<run>/feature_ae``), then (``critic_steps``) the
  critic alone in ``<run>/critic_warmup``, then generator + critic with
  :func:`~.losses.wgan_losses`; the generator may start from a trained RED-CNN (``init``).
- ``lpd``: whole slices, MSE, the scan's projector inside the network.

Training slices use seeds ``0..n_train-1``, validation ``5000..``, held-out evaluation
``10000..`` (:data:`HELD_OUT_SEED`). ``target``: what the nets learn to output, ``"full"``
(the full-dose FBP, as scanner pairs give) or ``"clean"`` (the noiseless scan, which only a
phantom study has; the default RED-CNN recipe). Validation metric: PSNR in the soft-tissue
window (C=40 W=400 HU) against that target. A run folder (``config.yaml`` + ``best/``) is a model
folder for :func:`~.predict.load_model`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medimg.engine import (
    TrainConfig,
    Trainer,
    TrainResult,
    check_run_dir,
    load_weights,
    seed_everything,
    to_dict,
    unwrap_model,
)
from medimg.errors import InputError
from medimg.metrics.ct import windowed_psnr
from medimg.physics.ct import CTProjector
from medimg.tasks.reconstruct.ct import data as D
from medimg.tasks.reconstruct.ct.losses import (
    GANPair,
    gradient_penalty,
    local_mean_loss,
    wgan_losses,
)
from medimg.tasks.reconstruct.ct.models import MODELS, PatchAutoencoder, build_model

__all__ = ["HELD_OUT_SEED", "CTTrainConfig", "build_for", "export_model", "preset_config",
           "soft_tissue_mse", "train_ct", "train_preset"]  # fmt: skip

VAL_SEED, HELD_OUT_SEED = 5000, 10000
#: The sharp thin-slice corner of the acquisition space (real anatomy only, 0.3-1 mm pixels,
#: ramp / Shepp-Logan filters, 1-2 views per pixel of the side, 40-180 HU of noise: a
#: 512 x 512 head scan at 25 % or 10 % dose), other crops than the main bank's (seed 1).
SHARP_THIN_BANK = D.BankConfig(views_per_side=(1.0, 1.4, 2.0), filters=("ram-lak", "shepp-logan"),
                               slices_per_group=12, levels=2, noise_hu=(40.0, 180.0),
                               real_pixel_mm=(0.3, 1.0), real_fraction=1.0, seed=1)  # fmt: skip
_STAGES = ("feature_ae", "critic_warmup")  # the GAN's first stages, sub-runs of its run folder
_TIMES = ("train_time_s.txt", "train_cpu_s.txt")


@dataclasses.dataclass
class CTTrainConfig:
    """Everything a CT training run depends on; written to the run's ``config.yaml``."""

    model: str = "redcnn"
    sim: D.SimConfig = dataclasses.field(default_factory=D.SimConfig)
    n_train: int = 48
    n_val: int = 4
    patch: int = 48
    samples_per_epoch: int = 1024
    features: int = 32
    kernel: int = 5
    critic_features: int = 32
    ae_features: int = 16
    ae_steps: int = 300
    critic_steps: int = 0  # wgan: critic alone against the initial generator first
    lambda_perc: float = 0.1
    lambda_adv: float = 1e-3
    lambda_gp: float = 10.0
    lambda_mse: float = 1.0
    init: str = ""  # model folder of a RED-CNN whose weights start the net (wgan: generator)
    lpd_iter: int = 5
    window_weight: float = 0.0  # redcnn: extra MSE on both images clipped to C=40 W=400 HU
    target: str = "full"  # "full": full-dose FBP; "clean": the noiseless scan (simulation only)
    tissue_focus: bool = False  # patch centres redrawn unless in the soft-tissue window
    lambda_mean: float = 0.0  # mean-preserving term (local means of pred - target), HU kept
    mean_restore_px: float = 0.0  # redcnn/wgan inference: restore_local_mean with this sigma
    # "phantoms": sim's body-phantom slices; "bank": the acquisition-space bank (real anatomy
    # and phantoms over pixel sizes, filters, views and noise levels; target: noiseless scan)
    data: str = "phantoms"
    bank: D.BankConfig = dataclasses.field(default_factory=D.BankConfig)
    # data "bank": this share of the patches comes from a second bank, ``focus_bank``
    focus_fraction: float = 0.0
    focus_bank: D.BankConfig = dataclasses.field(default_factory=lambda: SHARP_THIN_BANK)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise InputError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.n_train < 1 or self.n_val < 1:
            raise InputError(f"n_train and n_val must be >= 1, got {self.n_train}, {self.n_val}")
        if self.target not in D.TARGETS:
            raise InputError(f"target must be one of {', '.join(D.TARGETS)}, got {self.target!r}")
        if self.data not in ("phantoms", "bank"):
            raise InputError(f"data must be 'phantoms' or 'bank', got {self.data!r}")
        if self.init and self.model == "lpd":
            raise InputError("init starts a RED-CNN or the WGAN's generator; lpd has no init")
        if not 0 <= self.focus_fraction <= 1:
            raise InputError(f"focus_fraction must be in [0, 1], got {self.focus_fraction}")
        if self.data == "bank" and self.model == "lpd":
            raise InputError("the bank holds images of many geometries; lpd needs data: phantoms")


def _train_cfg(**kw: Any) -> TrainConfig:
    base = {"batch_size": 16, "lr": 1e-3, "optimizer": "adam", "lr_schedule": "cosine",
            "val_metric": "psnr", "val_mode": "max", "grad_clip": 1.0, "log_every": 20}  # fmt: skip
    return TrainConfig(**{**base, **kw})


BASE_RUN = "runs/recon/ct/redcnn-base"  # where `train --preset base --model redcnn` writes


def preset_config(model: str = "redcnn", preset: str = "default") -> CTTrainConfig:
    """The recipes. ``default``: the shipped models (both learn the noiseless scan, a phantom
    study's truth). RED-CNN in two stages: ``base`` (from scratch on the bank, ~14 min of one
    CPU thread, into :data:`BASE_RUN`), then ``default`` fine-tunes it (~12 min) with half of
    the patches from the sharp thin-slice bank (:data:`SHARP_THIN_BANK`); the WGAN fine-tunes
    the shipped RED-CNN (~2 min). ``tiny``: 64 x 64 slices at 6 mm for tests (seconds;
    full-dose target)."""
    if preset == "tiny":
        sim = D.SimConfig(image_size=64, pixel_mm=6.0, n_views=96, i0=5e3)
        steps = {"redcnn": 150, "wgan": 60, "lpd": 40}[model] if model in MODELS else 1
        return CTTrainConfig(model=model, sim=sim, n_train=6, n_val=2, patch=32,
                             samples_per_epoch=256, features=16, critic_features=8,
                             ae_features=8, ae_steps=30, critic_steps=20, lpd_iter=2,
                             train=_train_cfg(max_steps=steps, batch_size=2 if model == "lpd" else 8, lr=2e-3,
                                              val_every=steps, checkpoint_every=steps,
                                              progress=False))  # fmt: skip
    if preset not in ("default", "base") or (preset == "base" and model != "redcnn"):
        raise InputError(f"preset must be 'default', 'tiny' or (redcnn) 'base', got {preset!r}")
    redcnn = {"patch": 40, "features": 48, "kernel": 3, "window_weight": 10.0, "target": "clean",
              "lambda_mean": 10.0, "mean_restore_px": 8.0, "data": "bank",
              "samples_per_epoch": 4096}  # fmt: skip
    if model == "redcnn" and preset == "base":  # the bank (~5 min to simulate once)
        return CTTrainConfig(**redcnn, train=_train_cfg(max_steps=2500, lr=2e-3, val_every=500,
                                                        checkpoint_every=500))  # fmt: skip
    if model == "redcnn":  # fine-tunes the base run at a lower rate, half sharp thin-slice patches
        return CTTrainConfig(**redcnn, init=BASE_RUN, focus_fraction=0.5,
                             train=_train_cfg(max_steps=2000, lr=3e-4, val_every=500,
                                              checkpoint_every=500))  # fmt: skip
    if model == "wgan":  # fine-tunes the shipped RED-CNN, as a user would; ~2 min
        return CTTrainConfig(model="wgan", init="default", patch=40, features=48, kernel=3,
                             target="clean", critic_features=16, lambda_mean=10.0, data="bank",
                             mean_restore_px=8.0,
                             ae_steps=150, critic_steps=150, train=_train_cfg(max_steps=200, batch_size=8, lr=1e-4,
                                                            val_every=50, checkpoint_every=50))  # fmt: skip
    return CTTrainConfig(model="lpd", n_train=32, train=_train_cfg(
        max_steps=600, batch_size=2, lr=5e-4, val_every=150, checkpoint_every=150))  # fmt: skip


def soft_tissue_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE of both images (``HU / 1000``) clipped to the soft-tissue window [-160, 240] HU.

    Whole-range MSE is dominated by lung, bone and air edges, which the soft-tissue window (where
    low-dose noise hides low-contrast lesions) clips away; this term puts weight back there."""
    lo, hi = -0.16, 0.24
    return F.mse_loss(pred.clamp(lo, hi), target.clamp(lo, hi))


def build_for(cfg: CTTrainConfig) -> torch.nn.Module:
    """The untrained network a config describes (a :class:`GANPair` for ``wgan``)."""
    if cfg.model == "wgan":
        return GANPair(cfg.features, cfg.critic_features, cfg.ae_features, cfg.kernel,
                       cfg.mean_restore_px)  # fmt: skip
    if cfg.model == "lpd":
        return build_model("lpd", n_iter=cfg.lpd_iter, features=cfg.features)
    return build_model("redcnn", features=cfg.features, kernel=cfg.kernel,
                       mean_restore_px=cfg.mean_restore_px)  # fmt: skip


def _psnr_slices(pred: list[np.ndarray], pairs: list[D.SlicePair], target: str = "full") -> float:
    return float(np.mean([windowed_psnr(getattr(p, target), x).value for x, p in zip(pred, pairs)]))


def _denoise_all(net: torch.nn.Module, pairs: list[D.SlicePair]) -> list[np.ndarray]:
    dev = next(net.parameters()).device
    with torch.no_grad():
        return [D.from_net(net(D.to_net(p.low)[None, None].to(dev)))[0, 0].cpu().numpy()
                for p in pairs]  # fmt: skip


def _train_extractor(
    cfg: CTTrainConfig, pairs: list[D.SlicePair], out: Path, resume: Any
) -> PatchAutoencoder:
    """Stage 1 of the GAN: the autoencoder whose features define the perceptual loss."""
    seed_everything(cfg.train.seed)
    ae = PatchAutoencoder(cfg.ae_features)
    same = [dataclasses.replace(p, low=getattr(p, cfg.target)) for p in pairs]  # input = target
    ds = D.PatchDataset(same, cfg.patch, cfg.samples_per_epoch, target=cfg.target)
    tc = dataclasses.replace(cfg.train, max_steps=cfg.ae_steps, lr=1e-3, val_metric="loss",
                             val_mode="min", val_every=cfg.ae_steps, checkpoint_every=cfg.ae_steps)  # fmt: skip

    def step(net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.l1_loss(net(batch["target"]), batch["target"])

    res = Trainer(ae, ds, step, tc, out / _STAGES[0]).fit(resume=resume, overwrite=True)
    load_weights(ae, res.last_checkpoint)
    return ae


def _warm_up_critic(
    cfg: CTTrainConfig, pair: GANPair, dataset: D.PatchDataset, out: Path, resume: Any
) -> None:
    """Stage 2 of the GAN: the critic alone (lr 1e-3) against the frozen initial generator, so
    that the adversarial term has a gradient to give from the first joint step (a flat critic
    gives none, and the joint stage's small lr would take thousands of steps to shape one)."""
    pair.generator.requires_grad_(False)
    tc = dataclasses.replace(cfg.train, max_steps=cfg.critic_steps, lr=1e-3,
                             val_every=cfg.critic_steps, checkpoint_every=cfg.critic_steps)  # fmt: skip

    def step(net: torch.nn.Module, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        gan = unwrap_model(net)
        fake = gan.generator(b["input"]).detach()
        wdist = gan.critic(b["target"]).mean() - gan.critic(fake).mean()
        gp = gradient_penalty(gan.critic, b["target"], fake)
        return {"loss": -wdist + cfg.lambda_gp * gp, "wdist": wdist, "gp": gp}

    res = Trainer(pair, dataset, step, tc, out / _STAGES[1]).fit(resume=resume, overwrite=True)
    load_weights(pair, res.last_checkpoint)
    pair.generator.requires_grad_(True)


def train_ct(
    cfg: CTTrainConfig, out_dir: str | Path, *, resume: bool | str = False, overwrite: bool = False
) -> TrainResult:
    """Simulate the slices, train ``cfg.model`` into ``out_dir`` and return the engine's result.

    Writes ``train_time_s.txt`` (wall seconds) and ``train_cpu_s.txt`` (CPU seconds of this
    process, all threads: with one torch thread, the single-thread training time), both
    including the simulation and summed over resumed runs."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = Path(out_dir)
    # refuse an earlier run before minutes of simulation; the GAN's stages live in the run too
    check_run_dir(out, resume=resume, overwrite=overwrite, run_config=to_dict(cfg),
                  extra=_STAGES + tuple(_TIMES))  # fmt: skip
    stage_resume = "auto" if resume else False  # a resumed run's stages finished before it
    bank = None
    if cfg.data == "bank":
        bank = D.build_bank(cfg.bank, progress=cfg.train.progress)
        train_pairs = _bank_pairs(bank)  # the GAN's feature extractor learns the clean scans
        val_pairs = _bank_pairs(D.build_bank(_val_bank(cfg.bank)), cfg.n_val * 4)
        if cfg.focus_fraction > 0:  # validated on both parts of the mix
            focus_bank = D.build_bank(cfg.focus_bank, progress=cfg.train.progress)
            val_pairs += _bank_pairs(D.build_bank(_val_bank(cfg.focus_bank)), cfg.n_val * 4)
    else:
        train_pairs = D.simulate_slices(range(cfg.n_train), cfg.sim)
        val_pairs = D.simulate_slices(range(VAL_SEED, VAL_SEED + cfg.n_val), cfg.sim)
    seed_everything(cfg.train.seed)
    model = build_for(cfg)
    if cfg.model == "redcnn" and cfg.init:  # fine-tuning: start from a trained RED-CNN
        _load_init(model, cfg.init)
    if cfg.model == "lpd":
        op = CTProjector(D.geometry(cfg.sim))
        model.calibrate(op, (cfg.sim.image_size,) * 2)  # type: ignore[operator]
        dataset: Any = D.SliceDataset(train_pairs, target=cfg.target)

        def step(net: torch.nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
            return F.mse_loss(net(b["sino"], op.to(b["sino"].device), b["input"]), b["target"])

        def validate(net: torch.nn.Module) -> dict[str, float]:
            dev = next(net.parameters()).device
            preds = [D.from_net(net(torch.from_numpy(p.sino_low)[None, None].to(dev), op.to(dev),
                                    D.to_net(p.low)[None, None].to(dev)))[0, 0].cpu().numpy()
                     for p in val_pairs]  # fmt: skip
            return {"psnr": _psnr_slices(preds, val_pairs, cfg.target)}
    else:
        if bank is not None:
            dataset = D.PatchDataset.from_bank(bank, cfg.patch, cfg.samples_per_epoch,
                                               tissue_focus=cfg.tissue_focus)  # fmt: skip
            if cfg.focus_fraction > 0:
                focus = D.PatchDataset.from_bank(focus_bank, cfg.patch, cfg.samples_per_epoch,
                                                 tissue_focus=cfg.tissue_focus)  # fmt: skip
                dataset = D.MixedPatches(dataset, focus, cfg.focus_fraction)
        else:
            dataset = D.PatchDataset(train_pairs, cfg.patch, cfg.samples_per_epoch,
                                     target=cfg.target, tissue_focus=cfg.tissue_focus)  # fmt: skip
        if cfg.model == "wgan":
            ae = _train_extractor(cfg, train_pairs, out, stage_resume)
            model.extractor.load_state_dict(ae.state_dict())  # type: ignore[union-attr]
            if cfg.init:
                _load_init(model.generator, cfg.init)  # type: ignore[union-attr]
            if cfg.critic_steps > 0:
                _warm_up_critic(cfg, model, dataset, out, stage_resume)  # type: ignore[arg-type]
            weights = {k: getattr(cfg, k) for k in
                       ("lambda_perc", "lambda_adv", "lambda_gp", "lambda_mse", "lambda_mean")}  # fmt: skip

            def step(net: torch.nn.Module, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
                return wgan_losses(net, b["input"], b["target"], **weights)  # type: ignore[arg-type]
        else:

            def step(net: torch.nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
                pred = net(b["input"])
                loss = F.mse_loss(pred, b["target"])
                if cfg.window_weight > 0:
                    loss = loss + cfg.window_weight * soft_tissue_mse(pred, b["target"])
                if cfg.lambda_mean > 0:
                    loss = loss + cfg.lambda_mean * local_mean_loss(pred, b["target"])
                return loss

        def validate(net: torch.nn.Module) -> dict[str, float]:
            return {"psnr": _psnr_slices(_denoise_all(net, val_pairs), val_pairs, cfg.target)}

    trainer = Trainer(model, dataset, step, cfg.train, out, validate=validate, run_config=cfg)
    result = trainer.fit(resume=resume, overwrite=overwrite)
    spent = dict(zip(_TIMES, (time.perf_counter() - t0, time.process_time() - c0)))
    for name, seconds in spent.items():  # a resumed run adds to the time already spent
        before = _read(out / name).strip() if resume else ""
        (out / name).write_text(f"{seconds + (float(before) if before else 0.0):.1f}\n")
    return result


def _init_weights(init: str) -> dict[str, torch.Tensor]:
    """Weights of the RED-CNN in model folder ``init`` (``"default"``: the shipped one)."""
    from medimg.tasks.reconstruct.ct.predict import load_model

    net, init_cfg = load_model(None if init == "default" else init)
    if getattr(init_cfg, "model", "") not in ("redcnn", "wgan"):
        raise InputError(f"init must be a RED-CNN (or WGAN) model folder, got a "
                         f"{getattr(init_cfg, 'model', '?')} model", init)  # fmt: skip
    return net.state_dict()


def _load_init(net: torch.nn.Module, init: str) -> None:
    try:
        net.load_state_dict(_init_weights(init))
    except RuntimeError as e:  # another width or kernel than this config's
        raise InputError(f"its RED-CNN does not match this config's features/kernel "
                         f"({str(e).splitlines()[0]})", init) from None  # fmt: skip


def _val_bank(cfg: D.BankConfig) -> D.BankConfig:
    """Validation bank: other seeds, one anatomy and one noise level per (views, filter)."""
    return dataclasses.replace(cfg, slices_per_group=1, levels=1, seed=cfg.seed + VAL_SEED)


def _bank_pairs(bank: dict[str, Any], limit: int | None = None) -> list[D.SlicePair]:
    """Bank images as :class:`~.data.SlicePair` s (``low``; ``clean`` = ``full`` = the
    noiseless scan; no phantom or sinograms), for validation and the GAN's extractor."""
    n = len(bank["low"]) if limit is None else min(limit, len(bank["low"]))
    step = max(1, len(bank["low"]) // n)
    out = []
    for i in range(0, step * n, step):
        c = bank["clean"][int(bank["clean_index"][i])].astype(np.float32)
        e = np.zeros((0, 0), np.float32)
        out.append(D.SlicePair(i, "bank", e, e, c, bank["low"][i].astype(np.float32), e, e,
                               np.eye(4), [], c))  # fmt: skip
    return out


def _read(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def export_model(run_dir: str | Path, dest: str | Path, *, overwrite: bool = False) -> Path:
    """Copy a run's ``config.yaml``, best (GAN: last) weights and training time into the model
    folder ``dest`` (what ships in ``medimg/tasks/reconstruct/ct/default/<model>``); existing
    files there are replaced only with ``overwrite``."""
    from medimg.engine import find_checkpoint
    from medimg.io.output import copy_files

    run, out = Path(run_dir), Path(dest)
    # a GAN ships its last weights: the best-PSNR checkpoint is the most over-smoothed one
    order = ("last", "best") if "model: wgan" in _read(run / "config.yaml") else ("best", "last")
    ckpt = find_checkpoint(run / order[0]) or find_checkpoint(run / order[1])
    if ckpt is None or not (run / "config.yaml").is_file():
        raise InputError("no finished training here (config.yaml and best/ or last/)", run)
    pairs = [(run / "config.yaml", out / "config.yaml"),
             (ckpt / "model.safetensors", out / "model.safetensors")]  # fmt: skip
    pairs += [(run / n, out / n) for n in ("train_time_s.txt", "train_cpu_s.txt")
              if (run / n).is_file()]  # fmt: skip
    copy_files(pairs, overwrite=overwrite)
    return out


def train_preset(
    model: str,
    out_dir: str | Path,
    *,
    resume: bool | str = False,
    overwrite: bool = False,
    max_steps: int | None = None,
    device: str | None = None,
    progress: bool = True,
    preset: str = "default",
) -> TrainResult:
    """Train the ``preset`` recipe of ``model`` into ``out_dir`` (see :func:`preset_config`)."""
    cfg = preset_config(model, preset)
    changes: dict[str, Any] = {"progress": progress}
    if max_steps is not None:
        changes["max_steps"] = int(max_steps)
    if device is not None:
        changes["device"] = device
    cfg.train = dataclasses.replace(cfg.train, **changes)
    return train_ct(cfg, out_dir, resume=resume, overwrite=overwrite)
