"""Self-supervised fine-tuning of an MRI network on undersampled k-space only (SSDU).

SSDU (Yaman et al., Magn. Reson. Med. 2020): each slice's acquired mask ``Omega`` is split at
random into two disjoint sets, ``Theta`` (the network's input) and ``Lambda`` (the loss), with
``Theta | Lambda = Omega`` (:func:`ssdu_split`). The ACS lines stay in ``Theta`` (the coil maps
are estimated from them); of the other acquired samples a fraction ``rho`` (default 0.4) goes to
``Lambda``, drawn with a Gaussian weight centred on the k-space centre (Yaman's "Gaussian
selection"). The network is fed ``Theta y`` and trained so that its multi-coil k-space
``F S x`` matches the held-back measurements ``Lambda y`` (normalised L1 + L2 loss, as in the
paper), with a new split each time a slice is drawn. No fully sampled reference is used. At
prediction the network gets the whole acquired mask, as any model does.

The data carry no coil maps: the VarNet estimates its own from the input's ACS; networks that
take maps (MoDL, U-Net) get them estimated once per slice from the whole acquired k-space, as at
prediction (ESPIRiT for models used with ESPIRiT maps, ACS maps otherwise), and the loss uses the
same maps. The result is a model folder ``recon mri predict --model`` accepts:
``config.yaml`` (the initial model's :class:`~.train.MRITrainConfig`), ``model.safetensors`` (the
adapted weights, last step: there is no reference to pick a best by), the initial model's
``safeguard.json`` when it has one (recalibrate with ``medimg recon mri calibrate``), and the
engine run ``adapt_run/`` (its :class:`AdaptConfig`, metrics and ``last/``) that ``resume``
continues.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from medimg.engine import TrainConfig, Trainer, TrainResult, seed_everything, to_dict, to_yaml
from medimg.errors import InputError
from medimg.physics.masks import acs_region
from medimg.physics.mri import MultiCoilMRI, fft2c
from medimg.tasks.reconstruct.adapt_folder import RUN_NAME, adapt_train_config, check_adapt_folder

__all__ = ["RUN_NAME", "AcquiredSlice", "AdaptConfig", "SSDUSlices", "adapt", "read_slices"]
__all__ += ["ssdu_loss", "ssdu_split"]


def _adapt_train(**kw: Any) -> TrainConfig:
    # CPU-friendly: one slice per step
    return adapt_train_config(**{"batch_size": 1, "log_every": 10, "checkpoint_every": 50, **kw})


#: learning rate of an adaptation by architecture: at the shared 3e-4 a MoDL lost 6.7 dB on real
#: brains in 300 steps (bench/bench_mri_adapt.py), at 3e-5 it held it; the VarNet gains at 3e-4
ADAPT_LR = {"modl": 3e-5}


def adapt_lr(init: str | Path | None) -> float:
    """The default learning rate for adapting the model ``init`` (a folder or a shipped name)."""
    from medimg.engine import from_yaml
    from medimg.tasks.reconstruct.mri.train import MRITrainConfig, model_dir

    folder = model_dir(init or None)
    name = from_yaml(MRITrainConfig, folder / "config.yaml").model.name
    return ADAPT_LR.get(name, _adapt_train().lr)


@dataclasses.dataclass
class AdaptConfig:
    """One adaptation run; written to ``adapt_run/config.yaml`` and compared on resume.

    ``rho``: fraction of the acquired samples outside the ACS held back for the loss;
    ``sigma``: standard deviation of the Gaussian selection, as a fraction of the k-space
    height and width; ``samples_per_epoch``: slices drawn per pass (0: the slice count).
    """

    data: str = ""
    init: str = "default"
    rho: float = 0.4
    sigma: float = 0.25
    samples_per_epoch: int = 0
    train: TrainConfig = dataclasses.field(default_factory=_adapt_train)

    def __post_init__(self) -> None:
        if not 0 < self.rho < 1:
            raise InputError(f"rho must be in (0, 1), got {self.rho}")
        if not self.sigma > 0:
            raise InputError(f"sigma must be > 0, got {self.sigma}")
        if self.samples_per_epoch < 0:
            raise InputError(f"samples_per_epoch must be >= 0, got {self.samples_per_epoch}")


def ssdu_split(
    mask: torch.Tensor, rho: float = 0.4, sigma: float = 0.25, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint ``(input, loss)`` masks ``(H, W)`` whose union is the acquired ``mask`` (H, W).

    The ACS box (:func:`~medimg.physics.masks.acs_region`) stays in the input; ``rho`` of the
    other acquired samples go to the loss set, drawn without replacement with probability
    proportional to a Gaussian of standard deviation ``sigma * (H, W)`` about the centre.

    Examples
    --------
    >>> from medimg.physics.masks import equispaced_mask
    >>> m = equispaced_mask((32, 32), 4, 0.16)
    >>> inp, loss = ssdu_split(m, seed=1)
    >>> bool(((inp * loss) == 0).all() and ((inp + loss) == (m != 0)).all())
    True
    """
    m = torch.as_tensor(mask) != 0
    if m.ndim != 2:
        raise InputError(f"ssdu_split needs an (H, W) mask, got shape {tuple(m.shape)}")
    h, w = m.shape
    rows, cols = acs_region(m)
    free = m.clone()
    free[rows, cols] = False  # the ACS stays in the input: coil maps come from it
    idx = np.flatnonzero(free.numpy().ravel())
    n = round(rho * idx.size)
    loss = torch.zeros(h * w, dtype=torch.bool)
    if n > 0:
        yy, xx = np.divmod(idx, w)
        wgt = np.exp(
            -0.5 * (((yy - h // 2) / (sigma * h)) ** 2 + ((xx - w // 2) / (sigma * w)) ** 2)
        )
        rng = np.random.default_rng(seed)
        pick = rng.choice(idx, size=n, replace=False, p=wgt / wgt.sum())
        loss[torch.from_numpy(pick)] = True
    loss = loss.view(h, w)
    return (m & ~loss).float(), loss.float()


def ssdu_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Yaman's normalised L1-L2 loss ``||a - b||_2 / ||b||_2 + ||a - b||_1 / ||b||_1`` per item,
    averaged (``pred``, ``target``: complex k-space on the loss set)."""
    d, t = (pred - target).flatten(1), target.flatten(1)
    l2 = d.norm(dim=1) / t.norm(dim=1).clamp_min(1e-20)
    l1 = d.abs().sum(1) / t.abs().sum(1).clamp_min(1e-20)
    return (l2 + l1).mean()


@dataclasses.dataclass
class AcquiredSlice:
    """One slice to adapt on: its file, index, and acquired mask."""

    path: Path
    index: int
    mask: torch.Tensor  # (H, W) acquired


def read_slices(data: str | Path) -> list[AcquiredSlice]:
    """Every slice of the fastMRI-layout ``.h5`` files in ``data`` (a file or a folder), with
    its acquired mask ``(H, W)``. Only the first slice of each file is read here (to check it
    is undersampled, with ACS lines); the k-space is read slice by slice while training, so a
    folder larger than memory adapts too."""
    from medimg.datasets.fastmri import check_fastmri, read_fastmri
    from medimg.tasks.reconstruct.mri.infer import as_kspace, mask_from_kspace

    src = Path(data)
    files = sorted(src.glob("*.h5")) if src.is_dir() else [src]
    if not files or not files[0].is_file():
        raise InputError("no fastMRI .h5 files here; give a file or a folder of them", src)
    out: list[AcquiredSlice] = []
    for f in files:
        shape = check_fastmri(f)
        if len(shape) != 4:
            raise InputError("single-coil k-space; adapt needs multi-coil (S, N, H, W)", f)
        vol = read_fastmri(f, slices=0)
        h, w = shape[-2:]
        if vol.mask is not None:
            mask = torch.as_tensor(np.asarray(vol.mask, np.float32)).expand(h, w)
        else:
            mask = mask_from_kspace(as_kspace(vol.kspace)).expand(h, w)
        if bool((mask != 0).all()):
            raise InputError(
                "is fully sampled; adapt learns from undersampled k-space only (undersample it, "
                "e.g. 'medimg recon mri simulate' without --full, or train with --h5)", f,
            )  # fmt: skip
        rows, cols = acs_region(mask)
        if cols.stop - cols.start < 2 or rows.stop - rows.start < 2:
            raise InputError("the mask has no fully sampled centre (ACS) for the coil maps", f)
        out += [AcquiredSlice(f, i, mask.float().contiguous()) for i in range(shape[0])]
    return out


class SSDUSlices(Dataset):
    """The acquired slices, each drawn with a fresh SSDU split (from the engine-seeded global
    torch generator): ``kspace`` (input set only), ``mask`` (input), ``loss_mask``, ``target``
    (the acquired k-space on the loss set)."""

    def __init__(self, slices: list[AcquiredSlice], cfg: AdaptConfig, maps: str | None = None):
        self.slices, self.cfg, self.maps = slices, cfg, maps  # maps: None, "espirit" or "acs"
        self.n = cfg.samples_per_epoch or len(slices)
        self._maps: dict[int, torch.Tensor] = {}  # estimated once per slice

    def _coil_maps(self, i: int, k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if i not in self._maps:
            from medimg.physics.coils import espirit_maps
            from medimg.tasks.reconstruct.mri.models import acs_maps

            est = espirit_maps if self.maps == "espirit" else acs_maps
            self._maps[i] = est(k[None], mask)[0]
        return self._maps[i]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from medimg.datasets.fastmri import read_fastmri

        sl = self.slices[index % len(self.slices)]
        mask = sl.mask
        k = torch.from_numpy(read_fastmri(sl.path, slices=sl.index).kspace)
        k = k.reshape(k.shape[-3:]) * mask  # (N, H, W)
        seed = int(torch.randint(0, 2**31 - 1, (1,)))
        inp, loss = ssdu_split(mask, self.cfg.rho, self.cfg.sigma, seed)
        out = {"kspace": k * inp, "mask": inp, "loss_mask": loss, "target": k * loss}
        if self.maps is not None:
            out["maps"] = self._coil_maps(index % len(self.slices), k, mask)
        return out


def _step(net: nn.Module, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if "maps" in b:  # MoDL / U-Net: the maps estimated from the whole acquired k-space
        maps = b["maps"]
        x = net(b["kspace"], MultiCoilMRI(maps, b["mask"], check_inputs=False))
    else:  # the VarNet: its own maps from the input's ACS (scale-free)
        x = net(b["kspace"], b["mask"])
        maps = net.sens(b["kspace"], b["mask"])  # type: ignore[operator]
    pred = fft2c(maps * x[:, None]) * b["loss_mask"][:, None]
    return {"loss": ssdu_loss(pred, b["target"])}


def _export(out: Path, run: Path, init_dir: Path, init_cfg: Any) -> None:
    from medimg.engine import find_checkpoint
    from medimg.io.output import atomic_path
    from medimg.tasks.reconstruct.mri.safeguard import FILE_NAME

    ckpt = find_checkpoint(run / "last")
    if ckpt is None:
        raise InputError("the adaptation run has no last/ checkpoint to export", run)
    to_yaml(init_cfg, out / "config.yaml")
    for src, name in ((ckpt / "model.safetensors", "model.safetensors"),
                      (init_dir / FILE_NAME, FILE_NAME)):  # fmt: skip
        if src.is_file():
            with atomic_path(out / name, overwrite=True) as tmp:  # appears whole
                shutil.copyfile(src, tmp)


def adapt(
    data_path: str | Path,
    out_dir: str | Path,
    cfg: AdaptConfig | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    allow_config_change: bool = False,
) -> tuple[TrainResult, int]:
    """Fine-tune ``cfg.init`` (default: the shipped model) by SSDU on the undersampled k-space
    in ``data_path`` into the model folder ``out_dir``; returns the run's result and the number
    of slices adapted on. ``allow_config_change`` resumes with changed settings (e.g. a larger
    ``max_steps``). See the module docstring."""
    from medimg.tasks.reconstruct.mri.train import load_model, model_dir

    cfg = dataclasses.replace(cfg or AdaptConfig(), data=str(Path(data_path).resolve()))
    out = Path(out_dir)
    check_adapt_folder(out, resume, overwrite, to_dict(cfg))  # before reading anything
    slices = read_slices(data_path)
    init_dir = model_dir(cfg.init or None)
    seed_everything(cfg.train.seed)
    net, init_cfg = load_model(init_dir)
    maps = None
    if not hasattr(net, "sens"):  # takes maps: estimate them as prediction does
        maps = "espirit" if getattr(net, "needs_maps", True) else "acs"
    sizes = {tuple(sl.mask.shape) for sl in slices}
    if cfg.train.batch_size > 1 and len(sizes) > 1:
        raise InputError(
            f"the slices have several matrix sizes {sorted(sizes)}; use batch size 1", data_path
        )
    net.train().requires_grad_(True)
    run = out / RUN_NAME
    data = SSDUSlices(slices, cfg, maps)
    result = Trainer(net, data, _step, cfg.train, run, run_config=cfg).fit(
        resume=resume, overwrite=overwrite, allow_config_change=allow_config_change
    )
    _export(out, run, init_dir, init_cfg)
    return result, len(slices)
