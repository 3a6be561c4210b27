"""What ``medimg export`` can export: a model name or folder resolved to one network, its
example input, the spatial sizes it accepts, and what ``predict`` needs to run the file alone.

Shipped names: ``segment`` (the default segmentation U-Net), ``redcnn`` and ``wgan`` (the
low-dose CT denoisers), ``diagnose`` (the chest-radiograph classifier), ``register`` (the
registration network with its integration), ``detect`` (the nodule detector) and
``us-learned`` (the learned ultrasound beamformer; these three in :mod:`.targets_more`) and
``mri`` (the unrolled MRI model with its data consistency, :mod:`.mri`). A
folder is recognised by its contents, as ``predict --model`` takes it: ``plan.yaml``
(segmentation model/run folder), ``reg.yaml`` (registration), ``config.yaml`` of a detection
model (its ``model`` a mapping), of a learned beamformer (a list of ``features``), of an MRI
model (its ``model`` a mapping with ``cascades``) or of a CT run (RED-CNN, WGAN), or
``model.yaml`` of a diagnosis model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medimg.errors import InputError

__all__ = ["SHIPPED", "ExportTarget", "resolve_target"]

#: shipped model names ``export`` takes (besides a model folder)
SHIPPED = ("segment", "redcnn", "wgan", "diagnose", "register", "detect", "us-learned", "mri")
#: tasks whose models exist but whose export is not written yet (named in the refusal)
NOT_YET: dict[str, str] = {}


@dataclass
class ExportTarget:
    """One network ready to export, and what a runtime needs beside the file."""

    task: str  # "segment" | "recon-ct" | "diagnose"
    name: str  # model name in the provenance tag
    network: nn.Module  # eval mode, CPU, float32
    example: torch.Tensor  # export-time input (B, C, *spatial)
    multiple_of: list[int]  # each spatial size must be a multiple of these
    min_size: int  # smallest spatial size per axis
    layout: str  # the input in words
    output: str  # the output in words
    tag: str  # provenance tag of the torch weights
    digest: str  # SHA-1 digest of the torch weights (first 8 hex digits)
    settings: dict[str, Any] = field(default_factory=dict)  # plan / config predict needs
    #: inputs per network call in ``predict`` (sliding-window windows, CT slices): latency is
    #: measured at this batch (torch's 3D U-Net takes twice as long per window at batch 1)
    batch: int = 1
    #: ``n`` -> network-ready inputs drawn from the task's generator (calibration, checks)
    sample: Callable[[int, int], list[np.ndarray]] | None = None
    #: registration: the model folder of the stage this network refines (exported beside it)
    coarse: Path | None = None
    #: graph input names, one per tensor of ``example`` (a tuple when there are several)
    input_names: tuple[str, ...] = ("input",)
    #: ``torch.export`` dynamic shapes per input (None: batch and spatial axes of one input)
    dynamic: tuple[dict[int, Any], ...] | None = None
    #: files copied beside the export as ``<file>.<key>`` (e.g. the diagnosis safeguard)
    extra_files: dict[str, Path] = field(default_factory=dict)


class _FoldEnsemble(nn.Module):
    """Several folds as one graph: the log of the fold-averaged softmax, so a softmax of the
    output (what ``predict`` applies) gives the same averaged probabilities as the torch path."""

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([n(x).softmax(1) for n in self.nets]).mean(0)
        return probs.clamp_min(1e-12).log()


def _segment(folder: Path | None) -> ExportTarget:
    from medimg.engine.config import to_dict
    from medimg.engine.provenance import weights_digest
    from medimg.tasks.segment.predict import Segmenter

    seg = Segmenter(folder, device="cpu")
    plan = seg.plan
    net = seg.models[0] if len(seg.models) == 1 else _FoldEnsemble(list(seg.models)).eval()
    patch = list(plan.patch_size)
    multiple = [int(np.prod([s[a] for s in plan.pool_strides])) for a in range(len(patch))]

    def sample(n: int, seed: int) -> list[np.ndarray]:
        return segment_patches(plan, n, seed)

    return ExportTarget(
        task="segment", name="default" if folder is None else seg.root.name, network=net,
        example=torch.zeros(1, len(plan.channel_names), *patch), multiple_of=multiple,
        min_size=max(multiple), output="class logits (B, K, *spatial); softmax = probabilities",
        layout=f"(B, C, {', '.join('XYZ'[: len(patch)])}) float32, resampled to the plan's "
        "spacing and normalised as the plan says",
        tag=seg.tag, digest=weights_digest(seg.models), settings={"plan": to_dict(plan)},
        sample=sample, batch=2,
    )  # fmt: skip


def segment_patches(plan: Any, n: int, seed: int) -> list[np.ndarray]:
    """``n`` preprocessed patch-size crops ``(1, C, *patch)`` at random places in generated
    cases of the plan's modality (CT organs or MR tissues)."""
    from medimg.io.image import Image
    from medimg.phantoms.segmentation import make_case
    from medimg.tasks.segment.data import preprocess_image

    rng = np.random.default_rng(seed)
    kind = "ct" if plan.modality.upper() == "CT" else "mr"
    out = []
    for i in range(n):
        case = make_case(kind, seed + i)
        image = Image(case.image.array, case.image.affine, modality=plan.modality)
        out.append(random_patch(preprocess_image(image, plan)[0], plan, rng))
    return out


def random_patch(arr: np.ndarray, plan: Any, rng: np.random.Generator) -> np.ndarray:
    """A patch-size crop ``(1, C, *patch)`` at a random place of a preprocessed ``(C, ...)``
    array (zero-padded when smaller; one random slice for a 2D plan)."""
    patch = list(plan.patch_size)
    if plan.configuration == "2d":
        arr = arr[..., int(rng.integers(arr.shape[-1]))]
    pad = [(0, 0)] + [(0, max(0, p - s)) for p, s in zip(patch, arr.shape[1:])]
    arr = np.pad(arr, pad, mode="constant")
    start = [int(rng.integers(0, s - p + 1)) for s, p in zip(arr.shape[1:], patch)]
    crop = arr[(slice(None), *(slice(a, a + p) for a, p in zip(start, patch)))]
    return np.ascontiguousarray(crop[None], dtype=np.float32)


def _ct(folder: str | Path) -> ExportTarget:
    from medimg.engine.config import to_dict
    from medimg.engine.provenance import model_tag, weights_digest
    from medimg.tasks.reconstruct.ct.predict import load_model

    net, cfg = load_model(folder, device="cpu")
    if cfg.model == "lpd":  # type: ignore[attr-defined]
        raise InputError(
            "a learned primal-dual model runs its CT projector inside the loop; its export is "
            "not supported (RED-CNN and WGAN models are)"
        )
    size = int(cfg.sim.image_size)  # type: ignore[attr-defined]

    def sample(n: int, seed: int) -> list[np.ndarray]:
        return ct_low_dose(cfg, n, seed)[0]

    return ExportTarget(
        task="recon-ct", name=str(cfg.model), network=net,  # type: ignore[attr-defined]
        example=torch.zeros(1, 1, size, size), multiple_of=[1, 1],
        min_size=int(getattr(net, "min_size", 1)),
        layout="(B, 1, H, W) float32 axial slices in HU / 1000",
        output="denoised slices (B, 1, H, W) in HU / 1000",
        tag=model_tag("recon-ct", cfg.model, [net]),  # type: ignore[attr-defined]
        digest=weights_digest([net]), settings={"config": to_dict(cfg)}, sample=sample,
        batch=4,
    )  # fmt: skip


def ct_low_dose(cfg: Any, n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` simulated low-dose slices as network inputs ``(1, 1, H, W)`` (HU / 1000) and their
    full-dose references in HU, from the model's own simulation settings."""
    from medimg.tasks.reconstruct.ct import data as D

    pairs = D.simulate_slices(range(seed, seed + n), cfg.sim)
    low = [D.to_net(p.low)[None, None].numpy() for p in pairs]
    return low, [np.asarray(p.full, np.float32) for p in pairs]


def _diagnose(folder: Path | None) -> ExportTarget:
    """The classifier of a single-input diagnosis model (its out-of-distribution safeguard,
    feature statistics read by hooks, is not part of the exported graph)."""
    from medimg.engine.config import to_dict
    from medimg.engine.provenance import weights_digest
    from medimg.tasks.diagnose.predict import Diagnoser

    dx = Diagnoser(folder, device="cpu")
    cfg = dx.cfg
    if len(cfg.modalities) > 1 or cfg.supervision == "mil":
        raise InputError(
            "export of multi-modality and multiple-instance diagnosis models is not supported "
            "yet (single-input classifiers are)"
        )
    size = [int(s) for s in cfg.input_size]

    def sample(n: int, seed: int) -> list[np.ndarray]:
        return diagnose_inputs(cfg, n, seed)[0]

    from medimg.deploy.classifier import SAFEGUARD_SUFFIX, ClassifierGraph, feature_count

    graph = ClassifierGraph(dx.model).eval()
    feature_count(graph, torch.zeros(1, int(cfg.channels), *size), int(cfg.num_outputs))
    feats = f" then the safeguard's {graph.num_features} features" if graph.num_features else ""
    safeguard = dx.folder / "safeguard.safetensors"
    return ExportTarget(
        task="diagnose", name="default" if folder is None else dx.folder.name, network=graph,
        example=torch.zeros(1, int(cfg.channels), *size), multiple_of=[1] * len(size),
        min_size=8, layout=f"(B, {cfg.channels}, {', '.join('HWD'[: len(size)])}) float32, "
        f"normalised and resized to {'x'.join(map(str, size))} as the model's config says",
        output=f"(B, {cfg.num_outputs + graph.num_features}): the {cfg.num_outputs} logits (the "
        f"config's temperature calibrates them){feats}",
        tag=dx.tag, digest=weights_digest([dx.model]),
        settings={"config": to_dict(cfg), "features": graph.num_features}, sample=sample,
        extra_files={SAFEGUARD_SUFFIX: safeguard} if safeguard.is_file() else {},
    )  # fmt: skip


def diagnose_inputs(cfg: Any, n: int, seed: int) -> tuple[list[np.ndarray], list[int]]:
    """``n`` generated chest radiographs (every other one with a nodule) as model inputs
    ``(1, C, *size)``, and their labels."""
    from medimg.phantoms.chest_xray import chest_radiograph
    from medimg.tasks.diagnose.data import prepare_image

    xs, ys = [], []
    for i in range(n):
        film = chest_radiograph(seed + i, 128, nodules=(seed + i) % 2)
        arr = prepare_image(film.to_image(), cfg.input_size, cfg.windows[0])
        xs.append(np.ascontiguousarray(arr[None], dtype=np.float32))
        ys.append((seed + i) % 2)
    return xs, ys


def _is_mri_folder(path: Path) -> bool:
    """An MRI model/run folder: ``config.yaml`` whose ``model`` is a mapping with ``cascades``."""
    import yaml

    try:
        cfg = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(cfg, dict) and isinstance(cfg.get("model"), dict) and (
        "cascades" in cfg["model"])  # fmt: skip


def resolve_target(model: str | Path) -> ExportTarget:
    """The :class:`ExportTarget` of a shipped model name or a model/run folder (one-line
    :class:`InputError` for anything else)."""
    text = str(model)
    if text in NOT_YET:
        raise InputError(f"{NOT_YET[text]}; exportable: {', '.join(SHIPPED)} or their model "
                         "folders")  # fmt: skip
    path = Path(text)
    if text == "segment":
        return _segment(None)
    if text == "diagnose" and not path.exists():
        return _diagnose(None)
    if text == "us-learned" and not path.exists():
        from medimg.deploy.targets_more import us_target

        return us_target(None)
    if text in ("register", "detect") and not path.exists():
        from medimg.deploy.targets_more import detect_target, register_target

        return register_target(None) if text == "register" else detect_target(None)
    if path.is_dir() and (path / "reg.yaml").is_file():
        from medimg.deploy.targets_more import register_target

        return register_target(path)
    if path.is_dir():
        from medimg.deploy.targets_more import detect_target, is_detect_folder

        if is_detect_folder(path):
            return detect_target(path)
        from medimg.deploy.targets_more import is_us_folder, us_target

        if is_us_folder(path):
            return us_target(path)
    if path.is_dir() and (path / "model.yaml").is_file():
        return _diagnose(path)
    if text in ("redcnn", "wgan") and not path.exists():
        return _ct(text)
    if text == "mri" and not path.exists():
        from medimg.deploy.mri import mri_target

        return mri_target(None)
    if path.is_dir() and (path / "plan.yaml").is_file():
        return _segment(path)
    if path.is_dir() and _is_mri_folder(path):
        from medimg.deploy.mri import mri_target

        return mri_target(path)
    if path.is_dir() and (path / "config.yaml").is_file():
        return _ct(path)
    if not path.exists():
        raise InputError(f"unknown model {text!r}; give {', '.join(SHIPPED)} or a model/run folder")
    raise InputError(
        "not an exportable model folder (no plan.yaml of a segmentation model, reg.yaml of a "
        "registration model, config.yaml of a detector, MRI model or CT denoiser, or model.yaml "
        "of a diagnosis model)",
        path,
    )
