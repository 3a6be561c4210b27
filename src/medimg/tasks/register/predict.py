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
instance optimisation (:mod:`.instance`: from the better of the network's field and the identity,
``steps`` Adam updates of a half-resolution correction under a chosen similarity + regulariser,
stopped early by ``time_budget_s``, the refinement that wins Learn2Reg); then warping.
:func:`.outputs.write_outputs` writes the chosen files in formats other tools read.
"""

from __future__ import annotations

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

__all__ = ["DEFAULT_MODEL", "RegResult", "Registrator", "check_overlap", "check_pair_image"]

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

    def __init__(
        self, model: str | Path | None = None, device: str = "cpu", backend: str = "torch"
    ) -> None:
        from medimg.deploy.runtime import check_backend
        from medimg.engine import find_checkpoint, load_weights, resolve_device
        from medimg.tasks.register.losses import regulariser, similarity
        from medimg.tasks.register.models import build_model
        from medimg.tasks.register.train import load_config

        if check_backend(backend) == "onnxruntime" or str(model).lower().endswith(".onnx"):
            from medimg.deploy.targets_more import registrator_onnx  # only the networks change

            registrator_onnx(self, model, device)
            return
        t0, c0 = time.perf_counter(), time.process_time()
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
        from medimg.engine.provenance import model_tag

        nets = [self.net, *([self.coarse.net] if self.coarse else [])]
        #: which model registered (written into the outputs: NIfTI descrip, summary.json)
        self.tag = model_tag("register", "default" if model is None else folder.name, nets)
        nd, lc = self.config.model.spatial_dims, self.config.loss
        self.sim = similarity(lc.similarity, nd, lc.lncc_kernel)
        self.reg = regulariser(lc.regulariser)
        #: wall and CPU seconds spent building the networks and reading their weights
        self.load_seconds = time.perf_counter() - t0
        self.load_cpu_seconds = time.process_time() - c0

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

    def _similarity(self, name: str) -> torch.nn.Module:
        from medimg.tasks.register.losses import similarity

        return similarity(name, self.config.model.spatial_dims, self.config.loss.lncc_kernel)

    def _refine(self, f, m, candidates, sim, name, steps, budget, info) -> torch.Tensor:
        """Instance optimisation from the best of the ``candidates`` fields (by ``sim``); which
        one, and the scores, go into ``info``."""
        from medimg.tasks.register.instance import IO_REG_WEIGHT, choose_start, instance_optimise

        name = name or self.config.loss.similarity
        start, scores = choose_start(f, m, candidates, sim)
        weight = IO_REG_WEIGHT.get(name, self.config.loss.reg_weight)
        field, done = instance_optimise(f, m, candidates[start], sim, self.reg, steps=steps,
                                        reg_weight=weight, time_budget_s=budget)  # fmt: skip
        info.update(instance_steps=done, instance_similarity=name, instance_start=start,
                    start_scores={k: round(v, 5) for k, v in scores.items()})  # fmt: skip
        return field

    def register(
        self,
        fixed: Image,
        moving: Image,
        *,
        moving_labels: Image | None = None,
        affine: bool = False,
        instance_steps: int = 0,
        time_budget_s: float | None = None,
        similarity: str | None = None,
        start: str = "auto",
    ) -> RegResult:
        """Register ``moving`` to ``fixed``; see the module docstring. ``similarity`` (see
        :mod:`.instance`) drives the affine stage and instance optimisation; by default the one
        the model was trained with. ``start``: where instance optimisation starts, ``auto`` (the
        better of the network's field and the identity, or the affine stage alone), ``network``
        or ``identity`` (the network is then not run)."""
        if start not in ("auto", "network", "identity"):
            raise InputError(f"start must be auto, network or identity, got {start!r}")
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
        sim = self.sim if similarity is None else self._similarity(similarity)
        with torch.enable_grad():
            pre = _affine_stage(f, m, sim) if affine else None
        if pre is not None:
            check_overlap(f_np, warp(m, pre)[0].cpu().numpy(), "after the affine stage")
        # without the network: the affine stage's field, or the identity
        plain_name = "identity" if pre is None else "affine"
        plain = f.new_zeros(1, nd, *f.shape[2:]) if pre is None else pre
        candidates = {plain_name: plain}
        if instance_steps == 0 or start != "identity":
            with torch.no_grad():
                field = self.network_field(f, m if pre is None else warp(m, pre), fixed, info)
                candidates = {"network": field if pre is None else compose(pre, field)}
                if start == "auto":
                    candidates[plain_name] = plain
        field = candidates.get("network", plain)
        if instance_steps > 0:
            field = self._refine(f, m, candidates, sim, similarity, instance_steps,
                                 time_budget_s, info)  # fmt: skip
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
        if "network" in candidates:
            info["model"] = self.tag
            if wl is not None:
                wl.meta["description"] = self.tag
        made_by = {"description": info["model"]} if "model" in info else {}
        return RegResult(
            warped=Image(warped, fixed.affine.copy(), modality=moving.modality, meta=made_by),
            field=field_image(u_mm, fixed),
            warped_labels=wl,
            seconds=time.perf_counter() - t0,
            cpu_seconds=time.process_time() - c0,
            info=info,
        )
