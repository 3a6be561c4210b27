"""Export targets of the registration network and the nodule detector, their parity metrics,
and the ONNX Runtime side of ``register pair`` / ``detect predict --backend onnxruntime``.

Registration: one ONNX graph per stage (the network with its half-resolution step, symmetric
velocity and scaling-and-squaring integration inside), taking the pair as one input
``(B, 2, *S)`` (fixed, moving) and giving the displacement in voxels. A model with a coarse
stage is exported as two files (``reg.onnx`` and ``reg.coarse.onnx``); the working-grid
resampling and composition of stages between them stay the Python code of
:meth:`~medimg.tasks.register.predict.Registrator.network_field`. The graph takes sizes that
are multiples of the network's total stride (at least two of it); :class:`OrtPairNetwork` pads
the pair to that as the network itself does (edge values) and crops the field back.

Detection: the U-Net with its heatmap / size / offset head, one window ``(B, 1, *S)`` (each
size a multiple of 16) -> ``(B, 5, *S)`` logits; the sliding window, flips, peak decoding and
NMS stay :mod:`medimg.tasks.detect.infer`.

Learned ultrasound beamformer: the residual U-Net on the 3-angle features ``(B, 2, X, Z)``
(sizes multiples of 16; :class:`OrtBeamformer` pads as the network does) -> ``(B, 1, X, Z)``;
the delay-and-sum before it stays :func:`medimg.tasks.reconstruct.us.learned.learned_bmode`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medimg.deploy.targets import ExportTarget
from medimg.errors import InputError

__all__ = ["OrtBeamformer", "OrtPairNetwork", "detect_metric", "detect_target",
           "is_detect_folder", "is_us_folder", "register_metric", "register_target",
           "registrator_onnx", "us_metric", "us_target"]  # fmt: skip


class PairInput(nn.Module):
    """``RegistrationNet(fixed, moving)`` behind one input ``(B, 2, *S)`` (fixed, moving)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x[:, :1], x[:, 1:])


def _pair_samples(kind: str, n: int, seed: int, side: int) -> list[dict[str, Any]]:
    """``n`` generated pairs (cube of ``side`` voxels at 4 mm) from the registration phantom."""
    from medimg.phantoms.registration import make_pair

    return [make_pair(kind, seed + i, shape=(side,) * 3, spacing=4.0) for i in range(n)]


def register_target(folder: Path | None) -> ExportTarget:
    """The network of a registration model folder (``reg.yaml``; None: the shipped default).
    Its ``coarse`` stage, if any, is exported beside it as a second file (``settings``)."""
    from medimg.engine.config import to_dict
    from medimg.engine.provenance import weights_digest
    from medimg.tasks.register.data import normalise
    from medimg.tasks.register.predict import DEFAULT_MODEL, Registrator

    root = folder or DEFAULT_MODEL
    reg = Registrator(root, device="cpu")
    net = reg.net
    net.fast_precision = False  # the graph is float32; bfloat16 is a torch-CPU speed-up
    nd, m = reg.config.model.spatial_dims, net.multiple
    if nd != 3:
        raise InputError("export of 2D registration models is not supported yet (3D ones are)")

    def sample(n: int, seed: int) -> list[np.ndarray]:
        out = []
        for p in _pair_samples("mr", n, seed, 2 * m):
            pair = np.stack([normalise(p.fixed.array)[0], normalise(p.moving.array)[0]])
            out.append(np.ascontiguousarray(pair[None], dtype=np.float32))
        return out

    target = ExportTarget(
        task="register", name="default" if folder is None else root.name,
        network=PairInput(net).eval(), example=torch.zeros(1, 2, *[2 * m] * nd),
        multiple_of=[m] * nd, min_size=2 * m,
        layout=f"(B, 2, X, Y, Z) float32: fixed and moving on the fixed grid, intensities "
        f"normalised as register predict does; each size a multiple of {m}, at least {2 * m}",
        output="displacement (B, 3, X, Y, Z) in voxels of the input grid (array-axis order)",
        tag=reg.tag, digest=weights_digest([net]), settings={"config": to_dict(reg.config)},
        sample=sample,
    )  # fmt: skip
    if reg.config.coarse:
        target.coarse = root / reg.config.coarse
    return target


def register_metric(target: ExportTarget, nets: dict[str, nn.Module], n: int) -> dict[str, float]:
    """Mean Dice of the moving labels warped onto the fixed ones on ``n`` generated pairs,
    through the same warp as ``register pair`` (this stage's network alone, at the pair's
    grid)."""
    from medimg.metrics.segmentation import dice
    from medimg.tasks.register.data import normalise
    from medimg.tasks.register.transform import warp

    from .parity import CHECK_SEED

    side = 2 * target.multiple_of[0]
    out: dict[str, list[float]] = {k: [] for k in nets}
    for p in _pair_samples("mr", n, CHECK_SEED, side):
        x = np.stack([normalise(p.fixed.array)[0], normalise(p.moving.array)[0]])[None]
        lab = torch.from_numpy(p.moving_labels.array.astype(np.float32))[None]
        ref = p.fixed_labels.array[0]
        for k, net in nets.items():
            with torch.no_grad():
                field = net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
                moved = warp(lab, field, mode="nearest")[0, 0].numpy().astype(ref.dtype)
            out[k] += [dice(moved == c, ref == c) for c in np.unique(ref) if c]
    return {k: round(float(np.mean(v)), 4) for k, v in out.items()}


class OrtPairNetwork(nn.Module):
    """An exported registration stage as the ``net(fixed, moving)`` of a Registrator: pads the
    pair (edge values) to the sizes the graph takes, exactly as the network pads itself, and
    crops the field back."""

    def __init__(self, ort_net: nn.Module, multiple: int) -> None:
        super().__init__()
        self.ort_net, self.multiple = ort_net, multiple

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        shape, m = tuple(fixed.shape[2:]), self.multiple
        pad = [max(2 * m, -(-s // m) * m) - s for s in shape]
        x = torch.cat([fixed, moving], dim=1).float()
        if any(pad):
            x = F.pad(x, [p for q in reversed(pad) for p in (0, q)], mode="replicate")
        field = self.ort_net(x)
        return field[(slice(None), slice(None), *[slice(0, s) for s in shape])]


def registrator_onnx(reg: Any, model: str | Path | None, device: str) -> None:
    """Fill the Registrator ``reg`` from an exported ``.onnx`` (its sidecar's config; its
    coarse stage from the file the sidecar names) or from a model folder exported now."""
    import time

    from medimg.deploy.runtime import open_onnx
    from medimg.engine.config import from_yaml
    from medimg.tasks.register.losses import regulariser, similarity
    from medimg.tasks.register.train import RegConfig

    t0, c0 = time.perf_counter(), time.process_time()
    net, side = open_onnx(model, "register", device=device)
    reg.config = from_yaml(RegConfig, side["config"])
    reg.device = torch.device("cpu")  # ONNX Runtime takes and returns host arrays
    multiple = int(side["input"]["multiple_of"][0])
    reg.net, reg.tag = OrtPairNetwork(net, multiple), net.tag
    reg.coarse = None
    if reg.config.coarse:
        if side.get("coarse"):  # an exported file: its coarse stage lies beside it
            stage: str | Path = Path(str(model)).with_name(side["coarse"])
        else:  # a model folder (None: the shipped one) exported in memory
            from medimg.tasks.register.predict import DEFAULT_MODEL

            stage = Path(model or DEFAULT_MODEL) / reg.config.coarse
        reg.coarse = type(reg)(stage, device=device, backend="onnxruntime")
    nd, lc = reg.config.model.spatial_dims, reg.config.loss
    reg.sim, reg.reg = similarity(lc.similarity, nd, lc.lncc_kernel), regulariser(lc.regulariser)
    reg.load_seconds = time.perf_counter() - t0
    reg.load_cpu_seconds = time.process_time() - c0


def is_detect_folder(path: Path) -> bool:
    """A detection model folder: ``config.yaml`` whose ``model`` is a mapping with channels."""
    import yaml

    cfg_path = path / "config.yaml"
    if not cfg_path.is_file():
        return False
    try:
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return False
    return (
        isinstance(cfg, dict)
        and isinstance(cfg.get("model"), dict)
        and ("channels" in cfg["model"])
    )


def _nodule_scans(n: int, seed: int) -> list[Any]:
    from medimg.phantoms.detection import nodule_ct_case

    return [nodule_ct_case(seed + i, shape=(96, 96, 40), spacing=(2.0, 2.0, 2.5),
                           n_nodules=(2, 4)) for i in range(n)]  # fmt: skip


def detect_target(folder: Path | None) -> ExportTarget:
    """The detector of a detection model folder (None: the shipped default)."""
    from medimg.engine.provenance import weights_digest
    from medimg.tasks.detect.data import prepare
    from medimg.tasks.detect.predict import Detector

    det = Detector(folder, device="cpu")
    window = int(det.inference.window)

    def sample(n: int, seed: int) -> list[np.ndarray]:
        out = []
        for case in _nodule_scans(n, seed):
            x = prepare(case.image, det.spacing).x
            crop = [slice(0, min(s // 16 * 16, 64)) for s in x.shape]
            out.append(np.ascontiguousarray(x[tuple(crop)][None, None], dtype=np.float32))
        return out

    import dataclasses

    return ExportTarget(
        task="detect", name="default" if folder is None else Path(folder).name,
        network=det.model.eval(), example=torch.zeros(1, 1, 32, 32, 32), multiple_of=[16] * 3,
        min_size=16, layout=f"(B, 1, X, Y, Z) float32 windows of the CT resampled to "
        f"{det.spacing} mm isotropic and scaled as detect predict does (windows up to {window})",
        output="(B, 5, X, Y, Z): heatmap logit, log diameter (voxels), offset x/y/z (voxels)",
        tag=det.tag, digest=weights_digest([det.model]),
        settings={"config": {"model": {"channels": _channels(det.model),
                                       "spacing": det.spacing},
                             "inference": dataclasses.asdict(det.inference)}},
        sample=sample,
    )  # fmt: skip


def _channels(model: nn.Module) -> list[int]:
    unet = model[0]  # nn.Sequential(UNet, head): see medimg.tasks.detect.models
    return [int(c) for c in unet.channels]


def detect_metric(target: ExportTarget, nets: dict[str, nn.Module], n: int) -> dict[str, float]:
    """Fraction of the nodules of ``n`` generated thoracic CTs that some candidate's centre
    falls within (half a diameter, at least 3 mm), through the same detect code per backend."""
    from medimg.tasks.detect.infer import InferenceConfig, detect_volume

    from .parity import CHECK_SEED

    cfg = target.settings["config"]
    inf = InferenceConfig(**cfg["inference"])
    hits: dict[str, list[bool]] = {k: [] for k in nets}
    for case in _nodule_scans(n, CHECK_SEED):
        for k, net in nets.items():
            found = detect_volume(net, case.image, float(cfg["model"]["spacing"]), inf)
            centres = np.array([c.center_ras for c in found]).reshape(-1, 3)
            for nod in case.findings:
                d = np.linalg.norm(centres - np.asarray(nod.center_ras), axis=1)
                hits[k].append(bool(d.size and d.min() <= max(nod.diameter_mm / 2, 3.0)))
    return {k: round(float(np.mean(v)), 4) if v else float("nan") for k, v in hits.items()}


def is_us_folder(path: Path) -> bool:
    """A learned-beamformer folder: ``config.yaml`` with a list of U-Net ``features`` (a CT
    run's ``features`` is one width)."""
    import yaml

    try:
        cfg = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(cfg, dict) and isinstance(cfg.get("features"), list) and "crop" in cfg


def _us_pairs(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` simulated phantoms: network input ``(1, 2, X, Z)`` cropped to multiples of 16 and
    the 75-angle compound's relative dB / 40 ``(1, 1, X, Z)``."""
    from medimg.tasks.reconstruct.us.train import make_pairs

    out = []
    for i in range(n):
        x, y = make_pairs(seed + i)
        crop = (slice(None), slice(0, x.shape[1] // 16 * 16), slice(0, x.shape[2] // 16 * 16))
        out.append((np.ascontiguousarray(x[crop][None]), np.ascontiguousarray(y[crop][None])))
    return out


def us_target(folder: Path | None) -> ExportTarget:
    """The learned ultrasound beamformer (3 plane waves -> a many-angle-like envelope); the
    delay-and-sum beamforming before it and the dB-to-envelope step after stay Python."""
    from medimg.engine import from_yaml
    from medimg.engine.config import to_dict
    from medimg.engine.provenance import model_tag, weights_digest
    from medimg.tasks.reconstruct.us.learned import DEFAULT_MODEL, load_learned
    from medimg.tasks.reconstruct.us.train import LearnedConfig

    root = Path(folder) if folder is not None else DEFAULT_MODEL
    net = load_learned(root)
    name = "default" if folder is None else root.name
    cfg = from_yaml(LearnedConfig, root / "config.yaml")

    def sample(n: int, seed: int) -> list[np.ndarray]:
        return [x for x, _ in _us_pairs(n, seed)]

    return ExportTarget(
        task="recon-us", name=name, network=net, example=torch.zeros(1, 2, 64, 64),
        multiple_of=[16, 16], min_size=16,
        layout="(B, 2, X, Z) float32: compounded 3-angle envelope in dB over its speckle "
        "median / 40, and the coherence factor; each size a multiple of 16",
        output="(B, 1, X, Z): the many-angle-like envelope in dB over the speckle median / 40",
        tag=model_tag("recon-us", f"learned {name}", [net]), digest=weights_digest([net]),
        settings={"config": to_dict(cfg)}, sample=sample,
    )  # fmt: skip


def us_metric(target: ExportTarget, nets: dict[str, nn.Module], n: int) -> dict[str, float]:
    """Mean |dB| error against the 75-angle compound on ``n`` simulated phantoms."""
    from medimg.tasks.reconstruct.us.models import DB_SCALE

    from .parity import CHECK_SEED

    out: dict[str, list[float]] = {k: [] for k in nets}
    for x, y in _us_pairs(n, CHECK_SEED):
        for k, net in nets.items():
            with torch.no_grad():
                pred = net(torch.from_numpy(x)).numpy()
            out[k].append(float(np.abs(pred - y).mean() * DB_SCALE))
    return {k: round(float(np.mean(v)), 3) for k, v in out.items()}


class OrtBeamformer(nn.Module):
    """An exported beamformer as the ``net(x)`` of ``learned_bmode``: pads to multiples of 16
    (edge values) as the network itself does, and crops back."""

    def __init__(self, ort_net: nn.Module) -> None:
        super().__init__()
        self.ort_net = ort_net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 16, (-w) % 16
        xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
        return self.ort_net(xp)[..., :h, :w]
