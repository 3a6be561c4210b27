"""Registering a pair: network field, optional affine stage and instance optimisation, outputs.

:class:`Registrator` loads a model folder (``reg.yaml`` + ``model.safetensors``; the shipped
``default/`` when none is named) and :meth:`Registrator.register` returns a :class:`RegResult`
on the fixed grid. Steps: moving (and labels) resampled onto the fixed grid in world
coordinates; intensities normalised; if the model records the voxel size it was trained at
(``working_spacing_mm``) and the fixed grid's differs by more than 10 %, the network sees the pair
resampled to that voxel size (its field is resampled back: a smooth deformation needs no finer
grid, and the network only knows structures and displacements at the scale it saw); a model
with a ``coarse`` stage (a multi-resolution cascade) first applies that stage's field and refines
it (:meth:`Registrator.network_field`); optional affine stage (an affine map optimised with the
similarity loss on the half-resolution pair, Adam, 100 steps); the network's field; optional
instance optimisation (``steps`` Adam updates of a half-resolution correction under
similarity + regulariser, stopped early by ``time_budget_s``, the refinement that wins Learn2Reg);
then warping. :func:`write_outputs` writes what other tools read (see :mod:`.fields`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medimg.errors import CheckpointError, InputError
from medimg.io.image import Image
from medimg.tasks.register.data import normalise, to_grid
from medimg.tasks.register.transform import affine_field, compose, resize_field, to_mm, warp

__all__ = ["DEFAULT_MODEL", "OUTPUT_NAMES", "RegResult", "Registrator",
           "check_overlap", "check_pair_image", "write_outputs"]  # fmt: skip

DEFAULT_MODEL = Path(__file__).parent / "default"


@dataclass
class RegResult:
    """``warped`` moving image, ``field`` (RAS+ mm vector image), optional ``warped_labels``,
    ``seconds`` (wall) and ``cpu_seconds`` of the registration, ``info`` (stages, steps)."""

    warped: Image
    field: Image
    warped_labels: Image | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    info: dict = field(default_factory=dict)


#: Fewest voxels per axis a pair may have: the networks halve the grid several times, and the
#: synthetic pairs they learned from have at least this many.
MIN_SIDE = 8


def check_pair_image(image: Image, path: str | Path | None, role: str) -> None:
    """One-line refusals for an image that cannot be registered: complex values, several
    channels (e.g. RGB), not 2D/3D, or fewer than :data:`MIN_SIDE` voxels along an axis."""
    from medimg.io.inputs import check_real

    check_real(image.array, path, what="registration")
    if image.num_channels != 1:
        raise InputError(
            f"the {role} image has {image.num_channels} channels (colour or multi-channel?); "
            "registration takes one-channel greyscale images, pass one channel",
            path,
        )
    if image.spatial_ndim not in (2, 3):
        raise InputError(
            f"the {role} image is {image.spatial_ndim}D; register 2D or 3D images", path
        )
    if min(image.spatial_shape) < MIN_SIDE:
        raise InputError(
            f"the {role} image of shape {'x'.join(map(str, image.spatial_shape))} is too small "
            f"to register (at least {MIN_SIDE} voxels per axis); check that it is the scan you "
            "meant",
            path,
        )


def check_overlap(fixed: np.ndarray, moving: np.ndarray, stage: str) -> None:
    """Refuse a pair whose foregrounds (above the 0.1 level of normalised intensity) share less
    than 5 % of the smaller one: registration would only follow noise."""
    f, m = fixed > 0.1, moving > 0.1
    small = min(int(f.sum()), int(m.sum()))
    if small == 0 or int((f & m).sum()) < 0.05 * small:
        raise InputError(
            f"fixed and moving images do not overlap {stage}; check that both cover the same "
            "anatomy in world coordinates (origin/direction), or pre-align them"
        )


def _affine_stage(fixed: torch.Tensor, moving: torch.Tensor, sim, steps: int = 100) -> torch.Tensor:
    """Voxel affine displacement optimised on the half-resolution pair (matrix about the grid
    centre in normalised coordinates, F.affine_grid convention)."""
    nd = fixed.ndim - 2
    pool = F.avg_pool2d if nd == 2 else F.avg_pool3d
    f, m = pool(fixed, 2), pool(moving, 2)
    theta = torch.eye(nd, nd + 1)[None].requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=0.01)
    flip = list(range(nd))[::-1]  # affine_grid orders coordinates (x=last axis, ...)
    for _ in range(steps):
        grid = F.affine_grid(theta, list(f.shape), align_corners=True)
        loss = sim(F.grid_sample(m, grid, align_corners=True, padding_mode="border"), f)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():  # normalised [-1, 1] (reversed axes) -> voxel matrix on the full grid
        shape = fixed.shape[2:]
        t = theta[0].detach().clone()
        a_n = t[flip][:, flip]
        b_n = t[flip, nd]
        half = torch.tensor([max((s - 1) / 2, 0.5) for s in shape])
        a = torch.diag(half) @ a_n @ torch.diag(1 / half)
        b = half + b_n * half - a @ half
        matrix = torch.cat([a, b[:, None]], 1)[None]
        return affine_field(matrix, tuple(shape))


def _resample(image: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``(B, C, *S)`` image onto a grid of ``shape`` over the same extent (voxel centres as in
    :func:`.transform.resize_field`): area averaging when every axis shrinks (anti-aliased),
    else linear interpolation."""
    if tuple(image.shape[2:]) == tuple(shape):
        return image
    if all(n <= o for n, o in zip(shape, image.shape[2:])):
        return F.interpolate(image, size=shape, mode="area")
    mode = "bilinear" if image.ndim == 4 else "trilinear"
    return F.interpolate(image, size=shape, mode=mode, align_corners=False)


def _spacing_ratio(image: Image, spacing_mm: tuple[float, ...]) -> np.ndarray:
    """``image``'s voxel size over the model's, per axis."""
    own = np.asarray(image.spacing[: image.spatial_ndim], dtype=float)
    return own / np.resize(np.asarray(spacing_mm, dtype=float), own.shape)


def working_shape(image: Image, spacing_mm: tuple[float, ...]) -> tuple[int, ...] | None:
    """The grid over ``image``'s extent at the model's voxel size, or ``None`` when the image's
    spacing is within 10 % of it on every axis (or the model records none)."""
    if not spacing_mm:
        return None
    ratio = _spacing_ratio(image, spacing_mm)
    if np.all(np.abs(ratio - 1) <= 0.1):
        return None
    return tuple(max(8, round(float(n * r))) for n, r in zip(image.spatial_shape, ratio))


class Registrator:
    """A trained registration network ready to register pairs."""

    def __init__(self, model: str | Path | None = None, device: str = "cpu") -> None:
        from medimg.engine import find_checkpoint, load_weights, resolve_device
        from medimg.tasks.register.losses import regulariser, similarity
        from medimg.tasks.register.models import build_model
        from medimg.tasks.register.train import load_config

        folder = Path(model) if model else DEFAULT_MODEL
        if not (folder / "reg.yaml").is_file():
            raise CheckpointError(
                "not a registration model folder (no reg.yaml); pass a run folder of "
                "'medimg register train' or omit --model for the default model",
                folder,
            )
        weights = folder / "model.safetensors"
        if not weights.is_file():
            found = find_checkpoint(folder / "best") or find_checkpoint(folder / "last")
            if found is None:
                raise CheckpointError("no weights (model.safetensors, best/ or last/)", folder)
            weights = found
        self.config = load_config(folder / "reg.yaml")
        #: the stage whose field this network refines (``reg.yaml``'s ``coarse`` sub-folder)
        self.coarse = (
            Registrator(folder / self.config.coarse, device) if self.config.coarse else None
        )
        self.device = resolve_device(device)
        self.net = build_model(self.config.model).eval().to(self.device)
        load_weights(self.net, weights)
        self.net.fast_precision = True
        nd, lc = self.config.model.spatial_dims, self.config.loss
        self.sim = similarity(lc.similarity, nd, lc.lncc_kernel)
        self.reg = regulariser(lc.regulariser)

    def network_field(
        self, f: torch.Tensor, m: torch.Tensor, fixed: Image, info: dict | None = None
    ) -> torch.Tensor:
        """Voxel field ``(1, nd, *S)`` on ``fixed``'s grid for normalised ``f``/``m`` there: the
        coarse stage's field (if the model has one), refined by this network at its working grid.
        A refinement stage is skipped on images coarser than the voxel size it was trained at
        (by > 10 %): it would only see them upsampled."""
        info = {} if info is None else info
        base = None
        if self.coarse is not None:
            base = self.coarse.network_field(f, m, fixed, info)
            mine = tuple(self.config.working_spacing_mm)
            if np.any(_spacing_ratio(fixed, mine) > 1.1):
                info["stages"] = [*info.get("stages", []), f"skipped refinement at {mine} mm"]
                return base
            m = warp(m, base)
        work = working_shape(fixed, tuple(self.config.working_spacing_mm))
        grid = list(work or fixed.spatial_shape)
        info["stages"] = [*info.get("stages", []), f"network on {'x'.join(map(str, grid))}"]
        if work is None:
            field = self.net(f, m)
        else:
            field = resize_field(self.net(_resample(f, work), _resample(m, work)),
                                 tuple(fixed.spatial_shape))  # fmt: skip
        return field if base is None else compose(base, field)

    def _instance_opt(self, f, m, field, steps, budget, reg_weight) -> tuple[torch.Tensor, int]:
        half = tuple(max(1, s // 2) for s in f.shape[2:])
        delta = torch.zeros(1, f.ndim - 2, *half, device=f.device, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=0.05)
        t0, done = time.perf_counter(), 0
        for _ in range(steps):
            if budget is not None and time.perf_counter() - t0 > budget:
                break
            u = field + resize_field(delta, tuple(f.shape[2:]))
            loss = self.sim(warp(m, u), f) + reg_weight * self.reg(u)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
        with torch.no_grad():
            return field + resize_field(delta, tuple(f.shape[2:])), done

    def register(
        self,
        fixed: Image,
        moving: Image,
        *,
        moving_labels: Image | None = None,
        affine: bool = False,
        instance_steps: int = 0,
        time_budget_s: float | None = None,
    ) -> RegResult:
        """Register ``moving`` to ``fixed``; see the module docstring."""
        t0, c0 = time.perf_counter(), time.process_time()
        nd = self.config.model.spatial_dims
        for name, img in (("fixed", fixed), ("moving", moving)):
            check_pair_image(img, img.meta.get("source"), name)
        if fixed.spatial_ndim != moving.spatial_ndim:
            raise InputError(
                f"fixed is {fixed.spatial_ndim}D but moving is {moving.spatial_ndim}D; register "
                "images of the same dimensionality"
            )
        if fixed.spatial_ndim != nd:
            raise InputError(
                f"this model registers {nd}D images, the pair is {fixed.spatial_ndim}D"
            )
        on_grid = to_grid(moving, fixed)
        f_np, m_np = normalise(fixed.array), normalise(on_grid.array)
        check_overlap(f_np, m_np, "in world coordinates")
        f = torch.from_numpy(f_np)[None].to(self.device)
        m = torch.from_numpy(m_np)[None].to(self.device)
        info: dict = {"affine": affine, "instance_steps": 0}
        with torch.enable_grad():
            pre = _affine_stage(f, m, self.sim) if affine else None
        if pre is not None:
            check_overlap(f_np, warp(m, pre)[0].cpu().numpy(), "after the affine stage")
        with torch.no_grad():
            field = self.network_field(f, m if pre is None else warp(m, pre), fixed, info)
            if pre is not None:
                field = compose(pre, field)
        if instance_steps > 0:
            with torch.enable_grad():
                field, done = self._instance_opt(f, m, field, instance_steps, time_budget_s,
                                                 self.config.loss.reg_weight)  # fmt: skip
            info["instance_steps"] = done
        with torch.no_grad():
            src = torch.from_numpy(on_grid.array.astype(np.float32))[None].to(self.device)
            warped = warp(src, field)[0].cpu().numpy()
            wl = None
            if moving_labels is not None:
                lab = to_grid(moving_labels, fixed, label=True)
                moved = warp(torch.from_numpy(lab.array.astype(np.float32))[None].to(self.device),
                             field, mode="nearest")  # fmt: skip
                wl = Image(moved[0].cpu().numpy().astype(lab.array.dtype), fixed.affine.copy(),
                           modality="SEG", is_label=True)  # fmt: skip
        from medimg.tasks.register.fields import field_image

        u_mm = to_mm(field, fixed.affine)
        return RegResult(
            warped=Image(warped, fixed.affine.copy(), modality=moving.modality),
            field=field_image(u_mm, fixed),
            warped_labels=wl,
            seconds=time.perf_counter() - t0,
            cpu_seconds=time.process_time() - c0,
            info=info,
        )


#: The files :func:`write_outputs` writes (``warped_labels`` only with moving labels).
OUTPUT_NAMES = ("warped.nii.gz", "field.nii.gz", "transform.h5", "jacobian.nii.gz",
                "warped_labels.nii.gz", "summary.json", "overview.png")  # fmt: skip


def write_outputs(
    result: RegResult,
    fixed: Image,
    moving: Image,
    out_dir: str | Path,
    *,
    fixed_labels: Image | None = None,
    overwrite: bool = False,
    inputs: list = (),
) -> list[Path]:
    """Write ``warped.nii.gz``, ``field.nii.gz`` (ITK/ANTs LPS displacement), ``transform.h5``,
    ``jacobian.nii.gz``, ``warped_labels.nii.gz`` (if any), ``summary.json`` and
    ``overview.png`` into ``out_dir``; returns the paths.

    The folder appears whole once every file is written (an earlier output folder is replaced
    only with ``overwrite``: one with the mark or only :data:`OUTPUT_NAMES`); ``inputs`` are the
    files read, which the folder must not be, lie in, or hold."""
    from medimg.io.output import atomic_dir, is_owned

    with atomic_dir(
        out_dir, overwrite, inputs=inputs, owned=is_owned(out_dir, OUTPUT_NAMES)
    ) as tmp:
        names = _write_all(result, fixed, moving, tmp, fixed_labels)
    return [Path(out_dir) / n for n in names]


def _write_all(
    result: RegResult, fixed: Image, moving: Image, out: Path, fixed_labels: Image | None
) -> list[str]:
    from medimg.io.api import save
    from medimg.metrics.registration import folding_fraction, jacobian_determinant, label_overlap
    from medimg.tasks.register.fields import save_field, save_transform
    from medimg.tasks.register.figures import overview_png

    jac = jacobian_determinant(result.field.array, fixed.affine)
    save(result.warped, out / "warped.nii.gz")
    save_field(result.field, out / "field.nii.gz")
    save_transform(result.field, out / "transform.h5")
    save(Image(jac[None].astype(np.float32), fixed.affine), out / "jacobian.nii.gz")
    names = ["warped.nii.gz", "field.nii.gz", "transform.h5", "jacobian.nii.gz"]
    summary = {"seconds": round(result.seconds, 3), "cpu_seconds": round(result.cpu_seconds, 3),
               "folding_pct": 100 * folding_fraction(jac), **result.info}  # fmt: skip
    if result.warped_labels is not None:
        save(result.warped_labels, out / "warped_labels.nii.gz")
        names.append("warped_labels.nii.gz")
        if fixed_labels is not None:
            fl = to_grid(fixed_labels, fixed, label=True)
            labels = [int(v) for v in np.unique(fl.array) if v]
            scores = label_overlap(result.warped_labels.array, fl.array, labels, fixed.spacing)
            summary["dice"] = {str(k): round(v["dice"], 4) for k, v in scores.items()}
            summary["hd95_mm"] = {str(k): round(v["hd95"], 2) if np.isfinite(v["hd95"]) else None
                                  for k, v in scores.items()}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    overview_png(fixed, to_grid(moving, fixed), result.warped, result.field, jac,
                 out / "overview.png")  # fmt: skip
    return [*names, "summary.json", "overview.png"]
