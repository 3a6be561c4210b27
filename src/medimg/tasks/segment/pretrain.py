"""Self-supervised pre-training of the segmentation network on unlabelled images
(``segment pretrain``): masked image modelling, then ``segment train --init`` fine-tunes it.

Data: an MSD dataset folder (every image of ``imagesTr``, ``imagesTs`` and ``imagesUnlabelled``;
labels are ignored) or a plain folder of NIfTI/NRRD/MHA images (one channel each; a plain
``images/`` sub-folder is used when there is one). It is planned like supervised training
(fingerprint -> :func:`~.plan.make_plan`) with a two-class dummy label list, the "foreground"
of the fingerprint being the body (CT: above -500 HU; other modalities: every voxel), so the
CT normalisation the fine-tune inherits is the body's.

Task (Models Genesis, Zhou et al. 2019, and SimMIM, Xie et al. 2022, in one): a random
monotonic intensity curve (a gamma on the patch's min-max range) is applied to the whole
patch; then a fraction :data:`MASK_RATIO` of a grid of blocks (a quarter of the patch per
axis) is corrupted, half by in-painting (set to 0, the normalised mean) and half by shuffling
the voxels inside the block. The same DynUNet the plan describes, with one output channel per
image channel (a regression head), restores the original patch; the loss is the L1 error on the
corrupted blocks plus :data:`OUTSIDE_WEIGHT` times the L1 error elsewhere (undoing the intensity
curve), on every deep-supervision head like supervised training.

Validation: the same loss on fixed corrupted patches of the first few images (a progress
monitor; metric ``restore_l1``, lower is better; ``identity_l1`` beside it is the loss of
copying the corrupted input, the baseline a useful encoder beats). The output folder is a run folder and a
model folder: ``plan.yaml`` (the supervised plan, dummy labels, its supervised training
settings, which a fine-tune inherits), ``model.safetensors`` (the best weights) and
``PRETRAINED.md``. Every weight but the output layers matches the DynUNet of that plan with any
number of classes, so ``segment train DATA --init DIR`` loads it
(:func:`~medimg.engine.load_weights` with ``keep_fresh=is_output_layer``).

Corruption is written here (a few tensor lines) because MONAI's ``RandCoarseDropout`` /
``RandCoarseShuffle`` draw from their own generators per sample on the CPU, which the engine's
per-step generator (exact resume) cannot seed, and return no mask for a masked loss.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from medimg.datasets.msd import (
    IMAGE_ENDINGS,
    CaseFiles,
    SegDataset,
    group_channels,
    load_case,
)
from medimg.engine import (
    TrainConfig,
    Trainer,
    TrainResult,
    check_run_dir,
    find_checkpoint,
    seed_everything,
    validation_interval,
)
from medimg.errors import InputError
from medimg.io.image import Image
from medimg.io.output import atomic_path, copy_files, mark_owned
from medimg.tasks.segment.data import PatchDataset, preprocess_image
from medimg.tasks.segment.fingerprint import fingerprint_from_cases
from medimg.tasks.segment.models import build_network
from medimg.tasks.segment.plan import SegPlan, load_plan, make_plan, save_plan
from medimg.tasks.segment.train import deep_supervision_loss

__all__ = ["MASK_RATIO", "PretrainRun", "corrupt", "find_unlabelled", "pretrain_encoder"]
__all__ += ["restoration_loss", "restoration_network"]

#: fraction of the block grid that is in-painted or shuffled
MASK_RATIO = 0.4
#: blocks per axis of a patch
BLOCKS_PER_AXIS = 4
#: weight of the L1 error outside the corrupted blocks (the intensity curve to undo)
OUTSIDE_WEIGHT = 0.1
#: an image with at most this many distinct integer values is a label map, not an intensity image
LABEL_MAP_VALUES = 16
SUBFOLDERS = ("imagesTr", "imagesTs", "imagesUnlabelled")
VAL_IMAGES, VAL_PATCHES = 4, 2
DUMMY_LABELS = ["background", "foreground"]
NOTE = """# Pre-trained encoder (not a segmenter)

This folder holds a network pre-trained by `medimg segment pretrain` on unlabelled images
({n} images of `{data}`, {steps} steps of masked image modelling: restoring masked and
shuffled blocks). It segments nothing: its output layer restores intensities, and the two labels
in `plan.yaml` are placeholders. Fine-tune it on labelled cases:

    medimg segment train DATA --init {folder} --out RUN

The fine-tune takes this plan (spacing, patch, normalisation, network) with DATA's labels,
loads every weight but the output layers, and trains as usual.
"""


@dataclasses.dataclass
class PretrainRun:
    """What ``config.yaml`` of a pre-training run records."""

    data: str
    images: int
    mask_ratio: float
    blocks_per_axis: int
    plan: SegPlan
    pretrain: TrainConfig


def _plain_images(folder: Path) -> list[CaseFiles]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and _ending(p.name))
    return [CaseFiles(p.name[: -len(_ending(p.name) or "")], (p,), None) for p in files]


def _ending(name: str) -> str | None:
    return next((e for e in IMAGE_ENDINGS if name.lower().endswith(e)), None)


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(_ending(p.name) for p in folder.iterdir())


def find_unlabelled(data: str | Path) -> SegDataset:
    """The images of ``data`` (see the module doc) as a dataset without labels; one-line errors
    for a folder without images, or with label maps only."""
    root = Path(data)
    if not root.is_dir():
        raise InputError("folder of images not found", root)
    if (root / "dataset.json").is_file():
        try:
            meta = json.loads((root / "dataset.json").read_bytes().decode("utf-8-sig"))
        except (ValueError, OSError) as exc:
            raise InputError(f"cannot be read as JSON ({exc})", root / "dataset.json") from None
        chans = meta.get("channel_names") or meta.get("modality") or {"0": "unknown"}
        channels = {int(k): str(v) for k, v in chans.items()}
        ending = str(meta.get("file_ending", ".nii.gz"))
        cases = []
        for sub in SUBFOLDERS:
            if (root / sub).is_dir():
                grouped = group_channels(root / sub, ending)
                cases += [CaseFiles(f"{sub}/{c}", tuple(f), None) for c, f in grouped.items()]
        if not cases:
            only = "labels only (labelsTr/) and " if _has_images(root / "labelsTr") else ""
            raise InputError(f"holds {only}no images in {', '.join(SUBFOLDERS)}; pre-training "
                             "needs unlabelled images", root)  # fmt: skip
        return SegDataset(root, str(meta.get("name", root.name)), "msd", channels,
                          dict(enumerate(DUMMY_LABELS)), ending, cases)  # fmt: skip
    folder = root / "images" if _has_images(root / "images") else root
    cases = _plain_images(folder)
    if not cases:
        labels = [d for d in ("labels", "labelsTr") if _has_images(root / d)]
        only = f"labels only ({labels[0]}/) and " if labels else ""
        raise InputError(f"holds {only}no NIfTI/NRRD/MHA images ({', '.join(IMAGE_ENDINGS)})",
                         root)  # fmt: skip
    return SegDataset(root, root.name, "folder", {0: "unknown"}, dict(enumerate(DUMMY_LABELS)),
                      _ending(cases[0].images[0].name) or ".nii.gz", cases)  # fmt: skip


def _looks_like_labels(image: Image) -> bool:
    a = image.array
    if not np.array_equal(a, np.round(a)):
        return False
    return len(np.unique(a[:, ::4, ::4])) <= LABEL_MAP_VALUES  # a subsample is plenty


def _load_images(ds: SegDataset) -> dict[str, tuple[Image, Image]]:
    """``{case: (image, body mask)}``: the mask stands in for labels in the fingerprint."""
    out = {}
    for case in ds.cases:
        image, _ = load_case(ds, case)
        out[case.case_id] = (image, None)
    images = [im for im, _ in out.values()]
    if all(_looks_like_labels(im) for im in images):
        raise InputError(f"holds label maps only (integer images with at most {LABEL_MAP_VALUES} "
                         "values); pre-training needs intensity images", ds.root)  # fmt: skip
    if ds.layout == "folder":  # a plain folder does not say: HU have air far below -500
        ds.channel_names = {0: "CT" if float(np.percentile(images[0].array, 1)) < -500 else "MR"}
    ct = ds.modality == "CT"
    for cid, (image, _) in out.items():
        body = image.array[:1] > -500 if ct else np.ones_like(image.array[:1], bool)
        if not body.any():
            body[:] = True
        out[cid] = (image, Image(body.astype(np.uint8), image.affine, is_label=True))
    return out


def restoration_network(plan: SegPlan) -> torch.nn.Module:
    """The plan's network with one output channel per image channel (the regression head)."""
    return build_network(dataclasses.replace(plan, label_names=list(plan.channel_names)))


def _block_mask(shape: tuple[int, ...], rand: Callable[..., torch.Tensor]) -> torch.Tensor:
    """``(B, 1, *spatial)`` block ids: 0 untouched, 1 in-painted, 2 shuffled."""
    b, spatial = shape[0], shape[2:]
    grid = rand(b, 1, *[BLOCKS_PER_AXIS] * len(spatial))
    kind = rand(b, 1, *[BLOCKS_PER_AXIS] * len(spatial))
    ids = (grid < MASK_RATIO).long() * (1 + (kind < 0.5).long())
    for axis, n in enumerate(spatial):
        size = math.ceil(n / BLOCKS_PER_AXIS)
        ids = ids.repeat_interleave(size, dim=2 + axis).narrow(2 + axis, 0, n)
    return ids


def _shuffle_blocks(x: torch.Tensor, rand: Callable[..., torch.Tensor]) -> torch.Tensor:
    """``x`` with the voxels of every block of the grid shuffled inside their block."""
    spatial = x.shape[2:]
    sizes = [math.ceil(n / BLOCKS_PER_AXIS) for n in spatial]
    pad = []
    for n, s in zip(reversed(spatial), reversed(sizes)):
        pad += [0, s * BLOCKS_PER_AXIS - n]
    xp = torch.nn.functional.pad(x, pad)
    b, c, d = x.shape[0], x.shape[1], len(spatial)
    view = [b, c] + [v for s in sizes for v in (BLOCKS_PER_AXIS, s)]
    order = [0, 1, *[2 + 2 * i for i in range(d)], *[3 + 2 * i for i in range(d)]]
    blocks = xp.reshape(view).permute(order).reshape(b, c, BLOCKS_PER_AXIS**d, -1)
    perm = rand(b, c, BLOCKS_PER_AXIS**d, blocks.shape[-1]).argsort(-1)
    blocks = blocks.gather(-1, perm)
    back = blocks.reshape([b, c, *[BLOCKS_PER_AXIS] * d, *sizes])
    inverse = [0, 1] + [v for i in range(d) for v in (2 + i, 2 + d + i)]
    out = back.permute(inverse).reshape(xp.shape)
    return out[(slice(None), slice(None), *[slice(0, n) for n in spatial])]


def corrupt(
    x: torch.Tensor, rand: Callable[..., torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(corrupted x, mask of corrupted voxels (B, 1, ...))`` of a ``(B, C, ...)`` batch;
    ``rand(*shape)`` draws uniform noise on ``x``'s device (see the module doc)."""
    b, dims = x.shape[0], x.ndim - 2
    lo = x.amin(dim=tuple(range(1, x.ndim)), keepdim=True)
    hi = x.amax(dim=tuple(range(1, x.ndim)), keepdim=True)
    unit = ((x - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)
    gamma = torch.exp((rand(b, *[1] * (dims + 1)) - 0.5) * 2 * math.log(2.0))  # 1/2 .. 2
    curved = unit**gamma * (hi - lo) + lo
    ids = _block_mask(tuple(x.shape), rand)
    out = torch.where(ids == 2, _shuffle_blocks(curved, rand), curved)
    out = torch.where(ids == 1, torch.zeros_like(out), out)
    return out, (ids > 0).to(x.dtype)


def restoration_loss(
    restored: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mean L1 error on the corrupted voxels + :data:`OUTSIDE_WEIGHT` x the mean elsewhere."""
    err = (restored.float() - target.float()).abs()
    inside = (err * mask).sum() / (mask.sum() * err.shape[1]).clamp_min(1.0)
    outside = (err * (1 - mask)).sum() / ((1 - mask).sum() * err.shape[1]).clamp_min(1.0)
    return inside + OUTSIDE_WEIGHT * outside


def _validation_batch(arrays: list[np.ndarray], plan: SegPlan) -> tuple[torch.Tensor, ...]:
    """Fixed corrupted patches of the first images: ``(clean, corrupted, mask)``."""
    data = PatchDataset(arrays[:VAL_IMAGES], [np.zeros(a.shape[1:], np.uint8)
                        for a in arrays[:VAL_IMAGES]], plan, samples_per_epoch=1, augment=False)  # fmt: skip
    np.random.seed(12345)  # noqa: NPY002 - the dataset draws from numpy's global generator
    clean = torch.stack([data[i]["image"] for i in range(min(len(arrays), VAL_IMAGES)
                                                           * VAL_PATCHES)])  # fmt: skip
    gen = torch.Generator().manual_seed(12345)
    x, mask = corrupt(clean, lambda *s: torch.rand(s, generator=gen))
    return clean, x, mask


def pretrain_encoder(
    data: str | Path,
    out: str | Path,
    *,
    max_steps: int | None = None,
    device: str | None = None,
    progress: bool = True,
    resume: bool | str = "auto",
    overwrite: bool = False,
    plan: SegPlan | str | Path | None = None,
    samples_per_epoch: int = 250,
) -> TrainResult:
    """Pre-train the segmentation network of ``data``'s plan by masked image modelling into the
    model folder ``out`` (see the module doc). ``plan``: a plan to use instead of planning
    ``data`` (its labels are replaced by the dummy pair). ``resume``/``overwrite`` as for
    :func:`~.train.train_segmentation`."""
    t0 = time.perf_counter()
    ds = find_unlabelled(data)
    out_dir = Path(out)
    resuming = check_run_dir(out_dir, resume=resume, overwrite=overwrite, inputs=ds.files(),
                             whole_folder=True)  # fmt: skip
    loaded = _load_images(ds)
    if plan is None:
        plan = make_plan(fingerprint_from_cases(ds, loaded))
    elif not isinstance(plan, SegPlan):
        plan = load_plan(plan)
    plan = dataclasses.replace(plan, label_names=list(DUMMY_LABELS), postprocessing={},
                               train=dataclasses.replace(plan.train))  # fmt: skip
    steps = plan.train.max_steps if max_steps is None else max_steps
    cfg = dataclasses.replace(plan.train, max_steps=steps, val_metric="restore_l1",
                              val_mode="min", early_stop_patience=None, progress=progress,
                              val_every=validation_interval(steps),
                              checkpoint_every=validation_interval(steps))  # fmt: skip
    if device is not None:
        cfg.device = device
    arrays = [preprocess_image(image, plan)[0] for image, _ in loaded.values()]
    train_data = PatchDataset(arrays, [np.zeros(a.shape[1:], np.uint8) for a in arrays], plan,
                              samples_per_epoch=max(samples_per_epoch, cfg.batch_size))  # fmt: skip
    val_clean, val_x, val_mask = _validation_batch(arrays, plan)
    identity = float(restoration_loss(val_x, val_clean, val_mask))  # copying the input
    seed_everything(cfg.seed)
    model = restoration_network(plan)

    def step(net: torch.nn.Module, batch: dict[str, torch.Tensor], ctx) -> dict[str, torch.Tensor]:
        clean = batch["image"]
        x, mask = corrupt(clean, ctx.rand)
        pred = net(x)
        loss = deep_supervision_loss(lambda o, t: restoration_loss(o, t, mask), pred, clean)
        return {"loss": loss}

    def validate(net: torch.nn.Module) -> dict[str, float]:
        dev = next(net.parameters()).device
        pred = net(val_x.to(dev)).cpu()
        return {"restore_l1": float(restoration_loss(pred, val_clean, val_mask)),
                "identity_l1": identity}  # fmt: skip

    run = PretrainRun(str(data), len(arrays), MASK_RATIO, BLOCKS_PER_AXIS, plan, cfg)
    trainer = Trainer(model, train_data, step, cfg, out_dir, validate=validate, run_config=run)
    if not resuming:
        out_dir.mkdir(parents=True, exist_ok=True)
        mark_owned(out_dir)
    result = trainer.fit(resume=resuming, overwrite=overwrite and not resuming)
    ckpt = result.best_checkpoint or find_checkpoint(out_dir / "last")
    save_plan(plan, out_dir / "plan.yaml", overwrite=True)
    copy_files([(ckpt / "model.safetensors", out_dir / "model.safetensors")], overwrite=True)
    with atomic_path(out_dir / "PRETRAINED.md", overwrite=True) as tmp:
        tmp.write_text(NOTE.format(n=len(arrays), data=Path(data).name, steps=result.last_step,
                                   folder=out_dir))  # fmt: skip
    with atomic_path(out_dir / "train_time_s.txt", overwrite=True) as tmp:
        tmp.write_text(f"{time.perf_counter() - t0:.1f}\n")
    return result
