"""Self-supervised fine-tuning of a CT denoiser on a user's low-dose data, without full-dose images.

Two methods, picked by what the data holds (``method="auto"``):

- **Noise2Inverse** (Hendriksen, Pelt & Batenburg, IEEE TCI 2020) when sinograms are given: the
  views are split into ``k`` interleaved disjoint subsets (:func:`split_views`), each is
  reconstructed by FBP, and the network learns to map the mean of ``k - 1`` sub-reconstructions
  to the remaining one, over all ``k`` choices of the held-out subset. The photon noise of
  disjoint views is independent, so the target's noise is independent of the input's and the
  expected loss is the error against the noiseless scan plus a constant: the network learns to
  denoise without ever seeing a clean image. At prediction the network can be applied to the
  full FBP (what ``recon ct predict`` does with the model folder) or, as in the paper, to each
  ``k - 1`` mean with the outputs averaged (:func:`n2i_denoise` ``mode="splits"``); the
  benchmark (``bench/bench_ct_adapt.py``) measures both.
- **Neighbor2Neighbor-style** sub-sampling (Huang et al., CVPR 2021) when only low-dose images
  are given: each ``cell`` x ``cell`` block of a patch gives one pixel to a sub-image ``g1(y)``
  and another to ``g2(y)``, and the loss is ``|f(g1 y) - g2 y|^2 + gamma |f(g1 y) - g2 y -
  (g1 f(y) - g2 f(y))|^2`` with ``f(y)`` the network's (gradient-free) output on the whole patch;
  ``gamma`` ramps linearly from 0 as in the authors' code.

  Limitation: N2N assumes the noise of the two pixels it pairs is independent. After FBP, CT
  noise is spatially correlated, by an amount set by the FBP filter: measured on real CT at 720
  views (``bench/bench_ct_adapt.py``), the correlation between neighbours is about 0.07 with
  the ramp filter, 0.1 Shepp-Logan, 0.4 cosine and 0.6 Hann (under 0.1 two pixels apart). With
  the ramp filter N2N works (+2.4 dB on the shipped model against the noiseless scan); on
  Hann-filtered images it made the shipped model *worse* (-2.1 to -2.3 dB), with 2 x 2 cells and
  also with 4 x 4 cells whose pairs lie 2 pixels apart, where the noise is nearly uncorrelated:
  the sub-sampled training images carry whiter noise than the full-resolution image the network
  is then applied to, so larger cells trade one mismatch for another. ``cell`` therefore keeps
  Huang's 2 (on ramp-filtered data 2 and 4 tie: 30.1 vs 30.0 dB), larger even cells remain
  available (pairs ``cell // 2`` pixels apart), and :func:`adapt` estimates the images'
  neighbour correlation (:func:`noise_correlation`) and warns above 0.3. Sinograms avoid the
  problem altogether: give them and Noise2Inverse is used (it gained on both filters).

The result is a model folder ``recon ct predict --model`` accepts: ``config.yaml`` (the initial
model's :class:`~.train.CTTrainConfig`, with ``init`` naming the model adapted and ``sim``
describing the adaptation data's scanner where it is known), ``model.safetensors`` (the adapted
weights) and the engine run ``adapt_run/`` (its own ``config.yaml`` = :class:`AdaptConfig`,
``metrics.jsonl``, ``last/``) that ``resume`` continues.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from medimg.engine import (
    StepContext,
    TrainConfig,
    Trainer,
    TrainResult,
    seed_everything,
    to_dict,
    to_yaml,
)
from medimg.errors import InputError
from medimg.physics.ct import ParallelBeamGeometry
from medimg.tasks.reconstruct.adapt_folder import RUN_NAME, adapt_train_config, check_adapt_folder
from medimg.tasks.reconstruct.ct import data as D
from medimg.tasks.reconstruct.ct.baselines import fbp_hu

__all__ = [
    "METHODS",
    "RUN_NAME",
    "AdaptConfig",
    "AdaptData",
    "N2IDataset",
    "N2NDataset",
    "adapt",
    "n2i_denoise",
    "neighbour_subsample",
    "noise_correlation",
    "read_adapt_data",
    "split_views",
    "sub_reconstructions",
]

METHODS = ("auto", "n2i", "n2n")
_IMAGE_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr", ".dcm")


def _adapt_train(**kw: Any) -> TrainConfig:
    return adapt_train_config(**{"batch_size": 8, "log_every": 20, "checkpoint_every": 100, **kw})


@dataclasses.dataclass
class AdaptConfig:
    """One adaptation run; written to ``adapt_run/config.yaml`` and compared on resume.

    ``splits``: Noise2Inverse view subsets ``k`` (>= 2); ``cell``: N2N cell size (even, >= 2);
    ``gamma``: N2N regulariser weight reached at the last step; ``patch``: training crop (pixels;
    for N2N the sub-images are ``patch // cell``); ``dose``: which ``sino_low_*`` /
    ``low_*`` scans of a ``recon ct simulate`` folder to use (``None``: all low-dose ones).
    """

    data: str = ""
    init: str = "default"
    method: str = "auto"
    splits: int = 4
    cell: int = 2
    gamma: float = 2.0
    patch: int = 64
    samples_per_epoch: int = 1024
    dose: float | None = None
    train: TrainConfig = dataclasses.field(default_factory=_adapt_train)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.splits < 2:
            raise InputError(f"splits must be >= 2 (one subset is the target), got {self.splits}")
        if self.cell < 2 or self.cell % 2:
            raise InputError(f"cell must be an even integer >= 2, got {self.cell}")
        if not self.gamma >= 0:
            raise InputError(f"gamma must be >= 0, got {self.gamma}")
        if self.patch < 8 or self.patch % self.cell:
            raise InputError(
                f"patch must be >= 8 and a multiple of cell {self.cell}, got {self.patch}"
            )


# ---------------------------------------------------------------- Noise2Inverse


def split_views(n_views: int, k: int) -> list[np.ndarray]:
    """``k`` interleaved disjoint subsets of ``range(n_views)`` (``j, j + k, ...``) that cover
    every view; interleaving keeps each subset spread over the whole half-turn.

    >>> [s.tolist() for s in split_views(7, 3)]
    [[0, 3, 6], [1, 4], [2, 5]]
    """
    if not 2 <= k <= n_views:
        raise InputError(f"splits must be in [2, {n_views}] (the number of views), got {k}")
    return [np.arange(j, n_views, k) for j in range(k)]


def _sub_geometry(g: ParallelBeamGeometry, j: int, k: int) -> ParallelBeamGeometry:
    """The geometry of views ``j, j + k, ...`` of ``g``: still evenly spaced, ``k`` times apart."""
    n = len(range(j, g.n_views, k))
    step = g.angle_range / g.n_views
    return dataclasses.replace(g, n_views=n, start_angle=g.start_angle + j * step,
                               angle_range=n * k * step)  # fmt: skip


def sub_reconstructions(sinograms: torch.Tensor, sim: D.SimConfig, k: int) -> torch.Tensor:
    """FBP (HU) of each of the ``k`` view subsets of ``(N, n_views, n_det)`` line integrals:
    ``(N, k, H, W)``. FBP weights each view by ``pi / n_views``, so every sub-reconstruction is
    an unbiased (noisier) estimate of the image and their mean is the full FBP."""
    g = D.geometry(sim)
    subs = [fbp_hu(sinograms[:, idx], _sub_geometry(g, j, k), filter_name=sim.filter_name)
            for j, idx in enumerate(split_views(g.n_views, k))]  # fmt: skip
    return torch.stack(subs, 1)


def _others_mean(subs: torch.Tensor, j: int) -> torch.Tensor:
    """Mean of the sub-reconstructions other than ``j`` along axis 1 (axis 0 of one slice)."""
    k = subs.shape[-3]
    return (subs.sum(-3) - subs[..., j, :, :]) / (k - 1)


class N2IDataset(Dataset):
    """Noise2Inverse pairs: a random slice, held-out subset ``j`` and crop; input = mean of the
    other ``k - 1`` sub-reconstructions, target = sub-reconstruction ``j`` (network units),
    flipped/rotated at random. Randomness from the global numpy RNG, which the engine seeds per
    ``(seed, step, index)``. Crops centred in air are redrawn up to three times."""

    def __init__(self, subs: torch.Tensor, patch: int, samples_per_epoch: int) -> None:
        if subs.ndim != 4 or subs.shape[0] < 1 or subs.shape[1] < 2:
            raise InputError(
                f"sub-reconstructions must be (N >= 1, k >= 2, H, W), got {tuple(subs.shape)}"
            )
        if not 8 <= patch <= min(subs.shape[-2:]):
            raise InputError(f"patch must be in [8, {min(subs.shape[-2:])}] pixels, got {patch}")
        self.subs = D.to_net(subs.float())
        self.patch, self.n = int(patch), int(samples_per_epoch)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rand = np.random
        n, k, h, w = self.subs.shape
        s, j, p = int(rand.randint(n)), int(rand.randint(k)), self.patch
        for _ in range(4):
            r, c = int(rand.randint(h - p + 1)), int(rand.randint(w - p + 1))
            if self.subs[s, :, r + p // 2, c + p // 2].mean() > -0.9:
                break
        crop = self.subs[s, :, r : r + p, c : c + p]
        pair = torch.stack([_others_mean(crop, j), crop[j]])
        pair = torch.rot90(pair, int(rand.randint(4)), dims=(1, 2))
        if rand.rand() < 0.5:
            pair = pair.flip(2)
        return {"input": pair[0:1].contiguous(), "target": pair[1:2].contiguous()}


def n2i_denoise(
    net: nn.Module, sinograms: torch.Tensor, sim: D.SimConfig, k: int, *, mode: str = "full"
) -> np.ndarray:
    """Denoised HU slices ``(N, H, W)`` of ``(N, n_views, n_det)`` sinograms: ``mode="full"``
    applies ``net`` to the full FBP (what ``recon ct predict`` does); ``"splits"`` averages its
    outputs on the ``k`` means of ``k - 1`` sub-reconstructions (the paper's estimator)."""
    from medimg.tasks.reconstruct.ct.predict import denoise_slices

    if mode == "full":
        full = fbp_hu(sinograms, D.geometry(sim), filter_name=sim.filter_name)
        return denoise_slices(net, full.numpy())
    if mode != "splits":
        raise InputError(f"mode must be 'full' or 'splits', got {mode!r}")
    subs = sub_reconstructions(sinograms, sim, k)
    outs = [denoise_slices(net, _others_mean(subs, j).numpy()) for j in range(k)]
    return np.mean(outs, axis=0).astype(np.float32)


# ---------------------------------------------------------------- Neighbor2Neighbor


def neighbour_subsample(x: torch.Tensor, index: torch.Tensor, cell: int) -> torch.Tensor:
    """Pick pixel ``index`` (row-major in the cell, ``(..., H / cell, W / cell)``) of each
    ``cell`` x ``cell`` block of ``x`` ``(..., H, W)``: the sub-samplers ``g1``/``g2``.

    >>> x = torch.arange(16.0).reshape(4, 4)
    >>> neighbour_subsample(x, torch.tensor([[0, 1], [2, 3]]), 2).tolist()
    [[0.0, 3.0], [12.0, 15.0]]
    """
    *lead, h, w = x.shape
    blocks = x.reshape(*lead, h // cell, cell, w // cell, cell).transpose(-3, -2)
    blocks = blocks.reshape(*lead, h // cell, w // cell, cell * cell)
    return blocks.gather(-1, index.expand(*lead, *index.shape[-2:])[..., None])[..., 0]


def _pair_indices(
    shape: tuple[int, int], cell: int, rand: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random cell positions for ``g1`` and, ``cell // 2`` rows and/or columns away (wrapping in
    the cell), for ``g2``: distinct pixels whose FBP noise is less correlated than neighbours'."""
    h = cell // 2
    r1, c1 = rand.randint(0, cell, size=(2, *shape))
    offsets = np.array([(0, h), (h, 0), (h, h)])[rand.randint(3, size=shape)]
    r2, c2 = (r1 + offsets[..., 0]) % cell, (c1 + offsets[..., 1]) % cell
    return torch.from_numpy(r1 * cell + c1), torch.from_numpy(r2 * cell + c2)


class N2NDataset(Dataset):
    """Neighbor2Neighbor samples: a random crop of a random low-dose slice (network units,
    flipped/rotated) with the cell positions of its two sub-samplers (``i1``, ``i2``), drawn from
    the global numpy RNG the engine seeds per ``(seed, step, index)``."""

    def __init__(
        self, slices: list[np.ndarray], patch: int, cell: int, samples_per_epoch: int
    ) -> None:
        if not slices:
            raise InputError("N2NDataset needs at least one slice")
        small = min(min(s.shape) for s in slices)
        if not 8 <= patch <= small:
            raise InputError(
                f"patch must be in [8, {small}] pixels (the smallest slice), got {patch}"
            )
        self.slices = [D.to_net(s) for s in slices]
        self.patch, self.cell, self.n = int(patch), int(cell), int(samples_per_epoch)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rand, p = np.random, self.patch
        img = self.slices[int(rand.randint(len(self.slices)))]
        for _ in range(4):
            r, c = int(rand.randint(img.shape[0] - p + 1)), int(rand.randint(img.shape[1] - p + 1))
            if img[r + p // 2, c + p // 2] > -0.9:
                break
        crop = torch.rot90(img[r : r + p, c : c + p], int(rand.randint(4)))
        if rand.rand() < 0.5:
            crop = crop.flip(1)
        i1, i2 = _pair_indices((p // self.cell,) * 2, self.cell, rand)
        return {"image": crop[None].contiguous(), "i1": i1[None], "i2": i2[None]}


def noise_correlation(slices: list[np.ndarray]) -> float:
    """Correlation between neighbouring pixels of the fine residual (image minus a Gaussian blur,
    sigma 2 px) in soft tissue (-150..250 HU): on low-dose FBP images, where noise dominates the
    residual, close to the noise's own neighbour correlation (within 0.05 on real CT with ramp,
    Shepp-Logan, cosine and Hann filters); on nearly noise-free images it measures texture."""
    from scipy import ndimage

    num = den = 0.0
    for y in slices:
        y = np.asarray(y, np.float32)
        soft = ndimage.binary_erosion((y > -150) & (y < 250), iterations=3)
        r = y - ndimage.gaussian_filter(y, 2.0)
        for a, b, m in ((r[:-1], r[1:], soft[:-1] & soft[1:]),
                        (r[:, :-1], r[:, 1:], soft[:, :-1] & soft[:, 1:])):  # fmt: skip
            num += float(np.sum(a[m] * b[m]))
            den += float(np.sum(a[m] ** 2))
    return num / den if den > 0 else float("nan")


def _n2n_step(cfg: AdaptConfig):
    def step(
        net: nn.Module, b: dict[str, torch.Tensor], ctx: StepContext
    ) -> dict[str, torch.Tensor]:
        y, cell = b["image"], cfg.cell
        g1, g2 = neighbour_subsample(y, b["i1"], cell), neighbour_subsample(y, b["i2"], cell)
        out = net(g1)
        rec = F.mse_loss(out, g2)
        with torch.no_grad():
            fy = net(y)
        gap = neighbour_subsample(fy, b["i1"], cell) - neighbour_subsample(fy, b["i2"], cell)
        reg = F.mse_loss(out - g2, gap)
        gamma = cfg.gamma * ctx.step / max(1, cfg.train.max_steps - 1)  # linear ramp from 0
        return {"loss": rec + gamma * reg, "rec": rec.detach(), "reg": reg.detach()}

    return step


def _n2i_step(net: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.mse_loss(net(b["input"]), b["target"])


# ---------------------------------------------------------------- data


@dataclasses.dataclass
class AdaptData:
    """What :func:`read_adapt_data` found: ``method`` ``"n2i"`` with ``sinograms`` ``(N, V, D)``
    and their ``sim``; or ``"n2n"`` with HU ``slices`` and their ``pixel_mm`` (median)."""

    method: str
    sources: list[Path]
    sinograms: torch.Tensor | None = None
    sim: D.SimConfig | None = None
    slices: list[np.ndarray] = dataclasses.field(default_factory=list)
    pixel_mm: float | None = None


def _dose_name(dose: float | None) -> str:
    return "*" if dose is None else f"{round(100 * dose):03d}"


def _read_sim(meta_path: Path) -> D.SimConfig:
    from medimg.io.inputs import read_text

    try:
        meta = json.loads(read_text(meta_path))
        sim = dict(meta["sim"])
        sim["regions"] = tuple(sim.get("regions", ("thorax", "abdomen")))
        sim["nodule_mm"] = tuple(sim.get("nodule_mm", (3.0, 30.0)))
        return D.SimConfig(**sim)
    except InputError as exc:
        raise InputError(f"scanner settings under 'sim' are not valid ({exc})", meta_path) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"no readable scanner settings ('sim': image_size, pixel_mm, n_views, filter_name; "
            f"{type(exc).__name__}: {exc}); write it as 'recon ct simulate' does",
            meta_path,
        ) from None


def _read_sinograms(files: list[Path], sim: D.SimConfig) -> torch.Tensor:
    from medimg.tasks.reconstruct.ct.cli import _read_sinogram  # the one checked .npy reader

    g = D.geometry(sim)
    out = []
    for f in files:
        sino = _read_sinogram(f, False, sim.i0)
        if tuple(sino.shape) != g.sinogram_shape:
            raise InputError(
                f"sinogram shape {tuple(sino.shape)} does not match the geometry in cases.json "
                f"(views, detectors) = {g.sinogram_shape}; fix cases.json 'sim'", f
            )  # fmt: skip
        out.append(sino)
    return torch.stack(out)


def _image_files(folder: Path, dose: float | None) -> list[Path]:
    """Low-dose images of a simulate folder (``case_*/low_*``), else the image files in
    ``folder``; an empty list when it holds neither (then it is read as a DICOM series)."""
    low = sorted(folder.glob(f"case_*/low_{'' if dose is None else _dose_name(dose)}*"))
    if low:
        return low
    if (folder / "cases.json").is_file():
        which = "" if dose is None else f" at {dose:.0%} dose"
        raise InputError(
            f"holds no low-dose sinograms (case_*/sino_low_*.npy) and no low-dose images "
            f"(case_*/low_*){which}; check --dose against cases.json 'doses'", folder
        )  # fmt: skip
    files = [f for f in sorted(folder.iterdir()) if f.is_file()]
    return [f for f in files if f.name.lower().endswith(_IMAGE_SUFFIXES)]


def _read_slices(src: Path) -> tuple[list[np.ndarray], float]:
    """Axial HU planes of an image file or DICOM series, checked as ``predict`` checks them."""
    from medimg.io.api import load
    from medimg.io.inputs import check_real
    from medimg.tasks.reconstruct.ct.predict import check_ct_input

    image = load(src)
    check_real(image.array, src, what="CT adaptation")
    if image.num_channels != 1:
        raise InputError(f"expected one channel, got {image.num_channels}", src)
    check_ct_input(image, src)
    vol = image.array[0].astype(np.float32)
    planes = [vol] if vol.ndim == 2 else list(np.moveaxis(vol, -1, 0))
    return planes, float(np.mean(image.spacing[:2]))


def read_adapt_data(
    path: str | Path, *, method: str = "auto", dose: float | None = None
) -> AdaptData:
    """Find the low-dose data in ``path`` (checked, one-line errors).

    Sinograms: a folder with ``cases.json`` (its ``sim`` gives the geometry and FBP filter) and
    ``case_*/sino_low_*.npy``, as ``recon ct simulate`` writes (full-dose ``sino_full.npy`` is
    never used). Images: a CT image file, a DICOM series folder, a folder of image files, or the
    ``case_*/low_*`` images of a simulate folder, in HU."""
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    src = Path(path)
    if not src.exists():
        raise InputError("does not exist; give a folder of sinograms or low-dose CT images", src)
    sinos: list[Path] = []
    if src.is_dir() and method != "n2n":
        sinos = sorted(src.glob(f"case_*/sino_low_{_dose_name(dose)}.npy"))
        if not sinos and any(src.glob("*.npy")):
            raise InputError(
                "holds .npy files but not as case_*/sino_low_*.npy beside a cases.json with their "
                "geometry ('sim': image_size, pixel_mm, n_views, filter_name); lay them out as "
                "'recon ct simulate' does", src
            )  # fmt: skip
    if sinos and method != "n2n":
        if not (src / "cases.json").is_file():
            raise InputError("has case_*/sino_low_*.npy but no cases.json with their geometry", src)
        sim = _read_sim(src / "cases.json")
        D.check_scan_size(sim)
        return AdaptData("n2i", sinos, sinograms=_read_sinograms(sinos, sim), sim=sim)
    if method == "n2i":
        raise InputError(
            "has no low-dose sinograms (cases.json + case_*/sino_low_*.npy) for Noise2Inverse; "
            "give sinograms or use method n2n on images", src
        )  # fmt: skip
    files = _image_files(src, dose) if src.is_dir() else [src]
    if src.is_dir() and not files and not any(f.is_file() for f in src.iterdir()):
        raise InputError(
            "holds no low-dose sinograms (cases.json + case_*/sino_low_*.npy) and no CT images; "
            "give a 'recon ct simulate' folder, an image file or a DICOM series", src
        )  # fmt: skip
    slices, spacing = [], []
    for f in files or [src]:  # no image files: the folder itself is a DICOM series
        planes, pix = _read_slices(f)
        slices += planes
        spacing.append(pix)
    return AdaptData("n2n", files or [src], slices=slices, pixel_mm=float(np.median(spacing)))


# ---------------------------------------------------------------- the run


def _load_init(init: str, device: str) -> tuple[nn.Module, Any]:
    from medimg.tasks.reconstruct.ct.models import REDCNN
    from medimg.tasks.reconstruct.ct.predict import load_model

    net, cfg = load_model(None if init in ("", "default") else init, device=device)
    if not isinstance(net, REDCNN):
        raise InputError(
            f"{init}: a {cfg.model} model is not an image-domain denoiser; adapt a redcnn or "  # type: ignore[attr-defined]
            "wgan model folder"
        )
    return net.train().requires_grad_(True), cfg


def _export(out: Path, run: Path, init_cfg: Any, cfg: AdaptConfig, data: AdaptData) -> None:
    """Model folder for ``predict``: the adapted weights (last: no clean image to pick a best
    by) and the initial config, as a plain RED-CNN (a GAN's generator is one)."""
    from medimg.engine import find_checkpoint
    from medimg.io.output import atomic_path

    ckpt = find_checkpoint(run / "last")
    if ckpt is None:
        raise InputError("the adaptation run has no last/ checkpoint to export", run)
    sim = data.sim if data.sim is not None else init_cfg.sim
    if data.pixel_mm is not None:  # predict compares the input's pixels with this
        sim = dataclasses.replace(sim, pixel_mm=round(data.pixel_mm, 4))
    model_cfg = dataclasses.replace(init_cfg, model="redcnn", init=cfg.init, sim=sim)
    to_yaml(model_cfg, out / "config.yaml")  # written beside and renamed in
    with atomic_path(out / "model.safetensors", overwrite=True) as tmp:  # appears whole
        shutil.copyfile(ckpt / "model.safetensors", tmp)


def adapt(
    data_path: str | Path,
    out_dir: str | Path,
    cfg: AdaptConfig | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> tuple[TrainResult, AdaptData]:
    """Fine-tune ``cfg.init`` (default: the shipped RED-CNN) on the low-dose data in
    ``data_path`` into the model folder ``out_dir``; see the module docstring."""
    cfg = dataclasses.replace(cfg or AdaptConfig(), data=str(Path(data_path).resolve()))
    out = Path(out_dir)
    check_adapt_folder(out, resume, overwrite, to_dict(cfg))  # before reading or reconstructing
    data = read_adapt_data(data_path, method=cfg.method, dose=cfg.dose)
    seed_everything(cfg.train.seed)
    net, init_cfg = _load_init(cfg.init, "cpu")
    need = int(getattr(net, "min_size", 1))
    if data.method == "n2i":
        assert data.sinograms is not None and data.sim is not None
        subs = sub_reconstructions(data.sinograms, data.sim, cfg.splits)
        dataset: Dataset = N2IDataset(subs, cfg.patch, cfg.samples_per_epoch)
        step: Any = _n2i_step
    else:
        if cfg.patch // cfg.cell < need:
            raise InputError(
                f"patch {cfg.patch} / cell {cfg.cell} gives sub-images smaller than the "
                f"{need} pixels this network needs; raise the patch to {need * cfg.cell}"
            )
        dataset, step = (
            N2NDataset(data.slices, cfg.patch, cfg.cell, cfg.samples_per_epoch),
            _n2n_step(cfg),
        )
        corr = noise_correlation(data.slices)
        if corr > 0.3:  # measured: N2N then keeps the noise (see the module docstring)
            print(f"note: neighbouring pixels' noise looks correlated (r = {corr:.2f}, a smooth "
                  "FBP filter?); Neighbor2Neighbor then learns to keep it and may make the model "
                  "worse; give the sinograms (Noise2Inverse) if you have them", file=sys.stderr)  # fmt: skip
    run = out / RUN_NAME
    result = Trainer(net, dataset, step, cfg.train, run, run_config=cfg).fit(
        resume=resume, overwrite=overwrite
    )
    _export(out, run, init_cfg, cfg, data)
    return result, data
