"""2.5D lesion detection on CT key slices (universal lesion detection, DeepLesion-style).

A sample is a key slice with ``k`` neighbouring slices on each side stacked as channels (the 3DCE
/ MULAN input, so the 2D network sees a little 3D context), its ground truth the lesions' boxes
``(x1, y1, x2, y2)`` in pixels (x = column). The network is the 3D detector's design in 2D: a
MONAI ``UNet`` plus a 1x1 head with five outputs (heatmap logit, log box width and height, centre
offset), trained with the same penalty-reduced focal loss (:func:`.models.focal_heatmap_loss`)
through :class:`medimg.engine.Trainer`; peaks of the heatmap become boxes, merged by the shared
NMS (:func:`medimg.metrics.detection.nms`). Boxes are rectangles here, not cubes: lesions
across the body (liver, lymph nodes, bone) are not spheres.

Evaluation is DeepLesion's: a detection hits a lesion when box IoU >= 0.5, and the FROC reads
sensitivity at 0.5, 1, 2, 4, 8 and 16 false positives per image (:data:`DEEPLESION_RATES`).

Data: :func:`from_deeplesion` (the public layout, :mod:`medimg.datasets.deeplesion`) or
:func:`synthetic_key_slices` (axial slices through the nodules of
:func:`medimg.phantoms.detection.nodule_ct_case`, boxes from each sphere's cross-section).
Slices are resampled in-plane to the model's ``spacing`` (mm) before they reach the network,
and boxes come back in the input slice's pixels.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn
from torch.utils.data import Dataset

from medimg.engine import TrainConfig, Trainer, TrainResult, seed_everything
from medimg.errors import InputError
from medimg.io.image import LPS_TO_RAS, Image
from medimg.io.inputs import check_allocation
from medimg.metrics.detection import FROCResult, ScanMatch, froc, match_iou, nms
from medimg.tasks.detect.models import focal_heatmap_loss

__all__ = [
    "DEEPLESION_RATES",
    "KeySlice",
    "Lesion2DConfig",
    "build_lesion_detector",
    "detect_key_slice",
    "evaluate_key_slices",
    "from_deeplesion",
    "load_lesion_model",
    "synthetic_key_slices",
    "train_lesion_detector",
]

DEEPLESION_RATES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
HU_WINDOW = (-1000.0, 1000.0)  # lung to bone: lesions anywhere in the body
STRIDE = 8  # the UNet's total down-sampling with three strided levels


@dataclasses.dataclass
class KeySlice:
    """``image``: ``(2k + 1, X, Y)`` HU (channels = neighbouring slices); ``boxes``: ``(N, 4)``
    ``x1, y1, x2, y2`` in its pixels."""

    image: Image
    boxes: np.ndarray
    name: str = ""


@dataclasses.dataclass
class Lesion2DConfig:
    """A 2.5D lesion run, written to ``config.yaml``."""

    neighbours: int = 1
    spacing: float = 2.0  # mm per pixel the network works at
    channels: tuple[int, ...] = (16, 32, 64, 128)
    patch: int = 96
    min_score: float = 0.05
    max_candidates: int = 20
    nms_iou: float = 0.3
    iou_hit: float = 0.5
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            max_steps=400, batch_size=8, lr=2e-3, lr_schedule="cosine", warmup_steps=20,
            val_every=200, val_metric="sens@4", val_mode="max", checkpoint_every=100,
            grad_clip=5.0, weight_decay=1e-4,
        )
    )  # fmt: skip


def build_lesion_detector(
    in_channels: int, channels: tuple[int, ...] = (16, 32, 64, 128)
) -> nn.Module:
    """MONAI 2D ``UNet`` (residual units, instance norm) + a 1x1 head with 5 outputs whose
    heatmap bias starts at logit(0.01), as the 3D detector (see :mod:`.models`)."""
    from monai.networks.nets import UNet

    if len(channels) - 1 != int(math.log2(STRIDE)):
        raise InputError(f"channels needs {int(math.log2(STRIDE)) + 1} levels, got {channels}")
    net = UNet(spatial_dims=2, in_channels=in_channels, out_channels=16, channels=tuple(channels),
               strides=(2,) * (len(channels) - 1), num_res_units=1, norm="instance")  # fmt: skip
    head = nn.Conv2d(16, 5, kernel_size=1)
    with torch.no_grad():
        head.bias.zero_()
        head.bias[0] = math.log(0.01 / 0.99)
    return nn.Sequential(net, head)


def slice_affine(dx: float, dy: float) -> np.ndarray:
    """A key slice's affine: pixel spacing on ITK's default (LPS identity) orientation, as
    :mod:`medimg.datasets.deeplesion` gives slices without patient coordinates."""
    return LPS_TO_RAS @ np.diag([dx, dy, 1.0, 1.0])


def _normalise(hu: np.ndarray) -> np.ndarray:
    lo, hi = HU_WINDOW
    return ((np.clip(hu, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def _resampled(ks: KeySlice, spacing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Network input ``(C, X', Y')`` at ``spacing`` mm, boxes on it, and the pixel scale."""
    if ks.image.spatial_ndim != 2:
        raise InputError(f"{ks.name or 'key slice'}: expected a 2D (channels, X, Y) image, "
                         f"got {ks.image.array.shape}")  # fmt: skip
    scale = np.asarray(ks.image.spacing[:2], dtype=np.float64) / spacing
    shape = (ks.image.num_channels, *np.round(np.asarray(ks.image.spatial_shape) * scale))
    check_allocation(shape, np.float32, copies=3, what=f"the slice resampled to {spacing:g} mm")
    x = ndimage.zoom(np.asarray(ks.image.array, np.float32), (1, *scale), order=1)
    boxes = np.asarray(ks.boxes, np.float64).reshape(-1, 4) * np.tile(scale, 2)
    return _normalise(x), boxes, scale


def make_targets_2d(shape: tuple[int, int], boxes: np.ndarray) -> dict[str, np.ndarray]:
    """Centre-point targets: ``heatmap`` (1, X, Y), log ``size`` (2, ...) of width/height,
    ``offset`` (2, ...) and ``reg_mask`` (1, ...) near each centre; small boxes win overlaps."""
    heat = np.zeros(shape, np.float32)
    size, offset = np.zeros((2, *shape), np.float32), np.zeros((2, *shape), np.float32)
    mask = np.zeros((1, *shape), np.float32)
    gx, gy = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    for b in sorted(np.asarray(boxes).reshape(-1, 4), key=lambda b: -(b[2] - b[0]) * (b[3] - b[1])):
        c = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
        wh = np.maximum(b[2:] - b[:2], 0.5)
        sigma = max(0.75, float(wh.min()) / 6)
        d = [gx - c[0], gy - c[1]]
        r2 = d[0] ** 2 + d[1] ** 2
        heat = np.maximum(heat, np.exp(-r2 / (2 * sigma**2)))
        near = r2 <= max(2.0, float(wh.min()) / 3) ** 2
        for k in range(2):
            offset[k][near] = -d[k][near]
            size[k][near] = np.log(wh[k])
        mask[0][near] = 1.0
        peak = np.round(c).astype(int)
        if np.all((peak >= 0) & (peak < shape)):
            heat[tuple(peak)] = 1.0
    return {"heatmap": heat[None], "size": size, "offset": offset, "reg_mask": mask}


def lesion_loss(out: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Focal heatmap + L1 offset + L1 log size (offset/size only near centres)."""
    heat = focal_heatmap_loss(out[:, :1].float(), batch["heatmap"])
    m = batch["reg_mask"]
    n = m.sum().clamp(min=1.0)
    size = (F.l1_loss(out[:, 1:3].float(), batch["size"], reduction="none") * m).sum() / n
    off = (F.l1_loss(out[:, 3:5].float(), batch["offset"], reduction="none") * m).sum() / n
    return {"loss": heat + off + size, "heat": heat.detach()}


class KeySliceDataset(Dataset):
    """Random ``patch``-pixel crops (a lesion inside with probability 0.7), flipped along each
    axis with probability 1/2, intensity scaled by up to 5 % (engine-seeded per item)."""

    def __init__(self, slices: list[KeySlice], cfg: Lesion2DConfig, samples: int = 400) -> None:
        if not slices:
            raise InputError("no training key slices")
        self.items = [_resampled(s, cfg.spacing)[:2] for s in slices]
        self.patch, self.n = int(cfg.patch), int(samples)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random  # seeded by the engine for (seed, step, index)
        x, boxes = self.items[rng.randint(len(self.items))]
        p = self.patch
        if len(boxes) and rng.random() < 0.7:
            b = boxes[rng.randint(len(boxes))]
            centre = (b[:2] + b[2:]) / 2 + rng.uniform(-0.3 * p, 0.3 * p, 2)
        else:
            centre = rng.uniform(0, 1, 2) * np.asarray(x.shape[1:])
        start = np.round(centre - p / 2).astype(int)
        crop = np.zeros((x.shape[0], p, p), np.float32)  # air outside the slice
        lo, hi = np.maximum(start, 0), np.minimum(start + p, x.shape[1:])
        if np.all(hi > lo):
            crop[:, lo[0] - start[0] : hi[0] - start[0], lo[1] - start[1] : hi[1] - start[1]] = x[
                :, lo[0] : hi[0], lo[1] : hi[1]
            ]
        bx = boxes - np.tile(start, 2) if len(boxes) else boxes.reshape(0, 4)
        bx = bx[(bx[:, 2] > 0) & (bx[:, 3] > 0) & (bx[:, 0] < p) & (bx[:, 1] < p)]
        for ax in (0, 1):
            if rng.random() < 0.5:
                crop = np.flip(crop, ax + 1)
                bx[:, [ax, ax + 2]] = p - bx[:, [ax + 2, ax]]
        t = make_targets_2d((p, p), bx)
        item = {"image": torch.from_numpy(np.ascontiguousarray(crop) * rng.uniform(0.95, 1.05))}
        return item | {k: torch.from_numpy(v) for k, v in t.items()}


@torch.inference_mode()
def detect_key_slice(
    model: nn.Module, ks: KeySlice, cfg: Lesion2DConfig, device: str | torch.device = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """``(boxes (N, 4) in the input slice's pixels, scores (N,))``, best first, after NMS."""
    x, _, scale = _resampled(ks, cfg.spacing)
    if x.shape[0] != 2 * cfg.neighbours + 1:
        raise InputError(f"{ks.name or 'key slice'}: {x.shape[0]} channel(s) but the model takes "
                         f"the key slice and {cfg.neighbours} neighbour(s) each side "
                         f"({2 * cfg.neighbours + 1})")  # fmt: skip
    from monai.inferers import sliding_window_inference

    # windows of the training patch: instance norm sees the statistics it was trained on
    roi = tuple(min(cfg.patch, -(-s // STRIDE) * STRIDE) for s in x.shape[1:])
    was = model.training
    model.eval()
    try:
        t = torch.from_numpy(x)[None].to(device)
        out = sliding_window_inference(t, roi, 4, model, overlap=0.25, mode="gaussian",
                                       padding_mode="replicate")[0].float().cpu()  # fmt: skip
    finally:
        model.train(was)
    heat = torch.sigmoid(out[0])
    peak = (heat == F.max_pool2d(heat[None, None], 3, 1, 1)[0, 0]) & (heat >= cfg.min_score)
    idx = np.argwhere(peak.numpy())
    if idx.size == 0:
        return np.zeros((0, 4)), np.zeros(0)
    o = out.numpy()
    scores = heat.numpy()[tuple(idx.T)]
    centre = idx + o[3:5][(slice(None), *idx.T)].T
    wh = np.exp(o[1:3][(slice(None), *idx.T)].T)
    boxes = np.c_[centre - wh / 2, centre + wh / 2]
    keep = nms(boxes, scores, cfg.nms_iou, cfg.max_candidates)
    return boxes[keep] / np.tile(scale, 2), scores[keep]


def evaluate_key_slices(
    model: nn.Module, slices: list[KeySlice], cfg: Lesion2DConfig, device: str = "cpu"
) -> FROCResult:
    """DeepLesion's FROC: IoU >= ``cfg.iou_hit`` hits, sensitivity at 0.5-16 FPs per image."""
    matches: list[ScanMatch] = []
    for ks in slices:
        boxes, scores = detect_key_slice(model, ks, cfg, device)
        matches.append(match_iou(boxes, scores, ks.boxes, iou_threshold=cfg.iou_hit))
    return froc(matches, DEEPLESION_RATES)


def synthetic_key_slices(
    n_volumes: int,
    seed: int = 0,
    neighbours: int = 1,
    shape: tuple[int, int, int] = (128, 128, 24),
    spacing: tuple[float, float, float] = (2.5, 2.5, 2.5),
) -> list[KeySlice]:
    """Key slices through the nodules of ``nodule_ct_case(seed + i)`` volumes (one per nodule
    centre slice), with the box of every nodule that crosses that slice."""
    from medimg.phantoms.detection import nodule_ct_case

    out = []
    for i in range(n_volumes):
        case = nodule_ct_case(seed + i, shape=shape, spacing=spacing)
        img = case.image
        hu = img.array[0]
        inv = np.linalg.inv(img.affine)
        cen = [(inv[:3, :3] @ np.asarray(f.center_ras) + inv[:3, 3], f.diameter_mm / 2)
               for f in case.nodules]  # fmt: skip
        for z in sorted({round(c[2]) for c, _ in cen if 0 <= round(c[2]) < hu.shape[2]}):
            boxes = []
            for c, r in cen:
                dz = (z - c[2]) * spacing[2]
                if r * r - dz * dz > (spacing[0] / 2) ** 2:  # a visible cross-section
                    rr = math.sqrt(r * r - dz * dz) / spacing[0]
                    boxes.append([c[0] - rr, c[1] - rr, c[0] + rr, c[1] + rr])
            if not boxes:
                continue
            zs = np.clip(np.arange(z - neighbours, z + neighbours + 1), 0, hu.shape[2] - 1)
            affine = slice_affine(spacing[0], spacing[1])
            out.append(KeySlice(Image(np.moveaxis(hu[:, :, zs], 2, 0), affine, modality="CT"),
                                np.asarray(boxes), f"case{seed + i}_z{z}"))  # fmt: skip
    return out


def from_deeplesion(root, split: str, neighbours: int = 1) -> list[KeySlice]:
    """The key slices of one official split of a DeepLesion root, all lesions of a slice
    together."""
    from medimg.datasets.deeplesion import open_deeplesion

    data = open_deeplesion(root)
    chosen = {x.file_name for x in data.split(split)}
    out = []
    for (series, key), lesions in data.key_slices().items():
        if lesions[0].file_name in chosen:
            out.append(KeySlice(data.load(lesions[0], neighbours),
                                np.array([x.box for x in lesions], np.float64),
                                f"{series}_{key:03d}"))  # fmt: skip
    return out


def train_lesion_detector(
    train: list[KeySlice],
    val: list[KeySlice],
    out_dir: str | Path,
    cfg: Lesion2DConfig | None = None,
    *,
    progress: bool = True,
    resume: bool | str = "auto",
    overwrite: bool = False,
    init: str | Path | None = None,
) -> TrainResult:
    """Train on ``train`` key slices, keeping the best checkpoint by validation sens@4 FPs;
    ``init``: a 2.5D model or run folder whose weights start the network (a resumed run
    continues from its own checkpoint instead)."""
    cfg = cfg or Lesion2DConfig()
    cfg.train = dataclasses.replace(cfg.train, progress=progress)
    resume = False if overwrite else resume
    if not val:
        raise InputError("no validation key slices; hold out some slices (or patients)")
    seed_everything(cfg.train.seed)
    model = build_lesion_detector(2 * cfg.neighbours + 1, cfg.channels)
    if init is not None:  # shapes checked first: another --neighbours is a one-line error
        from medimg.engine import load_weights

        load_weights(model, init)
    data = KeySliceDataset(train, cfg, samples=max(400, cfg.train.batch_size))

    def validate(net: nn.Module) -> dict[str, float]:
        res = evaluate_key_slices(net, val, cfg, str(next(net.parameters()).device))
        return {
            "froc_mean": res.cpm,
            **{f"sens@{r:g}": s for r, s in zip(res.rates, res.sensitivities)},
        }

    trainer = Trainer(model, data, lambda net, b: lesion_loss(net(b["image"]), b), cfg.train,
                      out_dir, validate=validate, run_config=cfg)  # fmt: skip
    return trainer.fit(resume=resume, overwrite=overwrite)


def load_lesion_model(folder: str | Path) -> tuple[nn.Module, Lesion2DConfig]:
    """``(model, config)`` from a run or model folder (``config.yaml`` + best/last weights)."""
    from medimg.engine import find_checkpoint, from_yaml, load_weights
    from medimg.errors import CheckpointError

    f = Path(folder)
    ckpt = f if (f / "model.safetensors").is_file() else None
    ckpt = ckpt or find_checkpoint(f / "best") or find_checkpoint(f / "last")
    if ckpt is None or not (f / "config.yaml").is_file():
        raise CheckpointError("not a 2.5D lesion model folder (config.yaml + weights)", f)
    cfg = from_yaml(Lesion2DConfig, f / "config.yaml")
    try:
        if cfg.neighbours < 0 or not cfg.spacing > 0 or cfg.patch < 1:
            raise ValueError("neighbours must be >= 0, spacing and patch positive")
        model = build_lesion_detector(2 * cfg.neighbours + 1, tuple(cfg.channels))
    except (ValueError, TypeError, RuntimeError) as exc:  # torch's words for impossible shapes
        raise CheckpointError(f"describes no buildable model ({exc})", f / "config.yaml") from None
    load_weights(model, Path(ckpt) / "model.safetensors")
    return model.eval(), cfg


def with_steps(cfg: Lesion2DConfig, steps: int) -> Lesion2DConfig:
    """``cfg`` trained for ``steps``: validation and checkpoints every quarter, warm-up at most
    a quarter."""
    q = max(1, steps // 4)
    train = dataclasses.replace(cfg.train, max_steps=steps, val_every=q, checkpoint_every=q,
                                warmup_steps=min(cfg.train.warmup_steps, steps // 4))  # fmt: skip
    return dataclasses.replace(cfg, train=train)


#: ``medimg detect train2d --preset default``: the shipped 2.5D model's recipe (key slices of
#: phantom chest CTs; seeds 5000-5039 train, 5500-5509 validate; 2000+ are never used).
DEFAULT_PRESET_2D = {"train_seeds": (5000, 40), "val_seeds": (5500, 10), "max_steps": 1200}


def train_lesion_preset(
    out_dir: str | Path, *, max_steps: int | None = None, progress: bool = True
) -> TrainResult:
    """Simulate the preset's key slices and train the default 2.5D model into ``out_dir``."""
    p = DEFAULT_PRESET_2D
    train = synthetic_key_slices(p["train_seeds"][1], seed=p["train_seeds"][0])
    val = synthetic_key_slices(p["val_seeds"][1], seed=p["val_seeds"][0])
    cfg = with_steps(Lesion2DConfig(), int(max_steps or p["max_steps"]))
    return train_lesion_detector(train, val, out_dir, cfg, progress=progress)
