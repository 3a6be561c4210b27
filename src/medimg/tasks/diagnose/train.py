"""Training under full, weak (MIL) and semi supervision, through :class:`medimg.engine.Trainer`.

- ``full``: image labels; weighted loss for class imbalance (BCE ``pos_weight`` = negatives /
  positives per label, or inverse-frequency class weights for cross-entropy).
- ``mil``: only case labels for a volume; attention MIL over its slices (see ``models``).
- ``semi``: every step takes a labelled batch of ``B`` images and a separate unlabelled batch
  of ``unlabelled_ratio * B`` (the standard recipe: the supervised signal per step is that of
  a labelled-only run; labelled and unlabelled images go through the student in one forward
  pass, one set of BatchNorm batch statistics). An exponential moving average of the student
  (the teacher; weights *and* BatchNorm running statistics averaged) is the model validated
  and saved.

  * ``semi_method: fixmatch`` (default; Sohn et al. 2020): the student's own call on a weakly
    augmented view (no gradient) becomes a hard pseudo-label when its confidence reaches
    ``pseudo_threshold`` (default 0.95), and the student learns it by cross-entropy on a
    *strongly* augmented view of the same image (flip, shift, gamma, blur/sharpen, noise);
    weight ``consistency_weight`` (default 1).
  * ``semi_method: mean_teacher`` (Tarvainen & Valpola 2017): MSE between student and teacher
    probabilities on two independently, weakly augmented views (default weight 10), ramped up
    over ``consistency_rampup`` steps; ``pseudo_threshold`` > 0 adds the teacher's confident
    calls as hard targets.

Validation AUC picks the best step; a temperature is then fitted on the validation logits. The
run folder becomes a model folder: ``model.yaml`` (this config, with the temperature),
``model.safetensors`` (the plain classifier) and ``safeguard.safetensors`` (the
out-of-distribution reference, :mod:`.safeguard`), next to the engine's ``best/`` and ``last/``.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medimg.engine import (
    TrainConfig,
    Trainer,
    TrainResult,
    load_weights,
    resolve_device,
    seed_everything,
)
from medimg.engine.config import from_yaml, to_yaml
from medimg.errors import InputError
from medimg.metrics.classification import roc_auc
from medimg.tasks.diagnose.calibration import fit_temperature, probabilities
from medimg.tasks.diagnose.data import CaseArrays, PairedSemiDataset, SampleDataset
from medimg.tasks.diagnose.models import build_classifier, default_cam_layer

__all__ = ["DiagnoseConfig", "build_model", "load_config", "predict_logits", "train_diagnosis"]

MODEL_YAML, MODEL_WEIGHTS = "model.yaml", "model.safetensors"


@dataclasses.dataclass
class DiagnoseConfig:
    """Everything that defines a diagnosis model; written as ``model.yaml``."""

    supervision: Literal["full", "mil", "semi"] = "full"
    task: Literal["binary", "multiclass", "multilabel"] = "binary"
    classes: list[str] = dataclasses.field(default_factory=lambda: ["negative", "positive"])
    modalities: list[str] = dataclasses.field(default_factory=lambda: ["DX"])
    channels: int = 1  # per modality
    windows: list[list[float] | None] = dataclasses.field(default_factory=lambda: [None])
    input_size: list[int] = dataclasses.field(default_factory=lambda: [64, 64])
    fusion: Literal["early", "late", "intermediate"] = "early"
    arch: Literal["resnet", "densenet", "heatmap"] = "resnet"
    width: int = 16
    pool: Literal["max", "avg"] = "max"  # global pooling of the encoder's last map
    balance_classes: bool = True
    augment: float = 1.0
    modality_dropout: float = 0.2  # fusion models only
    semi_method: Literal["fixmatch", "mean_teacher"] = "fixmatch"  # semi
    unlabelled_ratio: int = 2  # semi: unlabelled images per labelled image in a step
    ema_decay: float = 0.99  # semi: the teacher's EMA decay
    consistency_weight: float | None = None  # semi: fixmatch 1, mean_teacher 10 when unset
    consistency_rampup: int | None = None  # semi: steps to full weight; fixmatch 0, mt 200
    pseudo_threshold: float | None = None  # semi: fixmatch 0.95; mean_teacher 0 (off)
    temperature: float = 1.0  # fitted after training
    cam_layer: str = ""  # Grad-CAM / Grad-CAM++ layer; default: chosen from arch
    layercam_layer: str = ""  # LayerCAM layer (a shallower one); default: chosen from arch
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if len(self.windows) != len(self.modalities):
            raise InputError(
                f"windows ({len(self.windows)}) must give one entry per modality "
                f"({len(self.modalities)}); use null for per-image percentiles"
            )
        k = len(self.classes)
        if k < 2 or (self.task == "binary" and k != 2):
            raise InputError(
                f"{self.task} needs {'2' if self.task == 'binary' else '>= 2'} classes, got {k}"
            )
        if self.supervision == "mil" and (self.task != "binary" or len(self.input_size) != 3):
            raise InputError(
                "mil supervision takes binary labels of 3D volumes (slices = instances)"
            )
        if not self.cam_layer:
            self.cam_layer = default_cam_layer(self.arch)
        if not self.layercam_layer:
            self.layercam_layer = default_cam_layer(self.arch, "layercam")
        if self.semi_method not in ("fixmatch", "mean_teacher"):
            raise InputError(
                f"semi_method must be fixmatch or mean_teacher, got {self.semi_method!r}"
            )
        fm = self.semi_method == "fixmatch"
        if self.consistency_weight is None:
            self.consistency_weight = 1.0 if fm else 10.0
        if self.consistency_rampup is None:
            self.consistency_rampup = 0 if fm else 200
        if self.pseudo_threshold is None:
            self.pseudo_threshold = 0.95 if fm else 0.0
        if self.supervision == "semi" and fm and not 0.5 < self.pseudo_threshold < 1:
            raise InputError(
                f"fixmatch needs pseudo_threshold in (0.5, 1), got {self.pseudo_threshold}"
            )

    @property
    def num_outputs(self) -> int:
        return 1 if self.task == "binary" else len(self.classes)


def load_config(path: str | Path) -> DiagnoseConfig:
    """A ``model.yaml``; older files lack newer fields, which get the values they were trained
    with."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) if p.is_file() else None
    except yaml.YAMLError:
        data = None  # from_yaml reports it
    # written before ``pool`` existed: average pooling; before ``semi_method``: mean teacher
    old = {"pool": "avg", "semi_method": "mean_teacher"}
    if isinstance(data, dict) and any(k not in data for k in old):
        try:
            return from_yaml(
                DiagnoseConfig, {**{k: v for k, v in old.items() if k not in data}, **data}
            )
        except InputError as exc:
            raise InputError(str(exc), path=p) from None
    return from_yaml(DiagnoseConfig, path)


def build_model(cfg: DiagnoseConfig) -> nn.Module:
    return build_classifier(arch=cfg.arch, spatial_dims=len(cfg.input_size), channels=cfg.channels,
                            modalities=len(cfg.modalities), num_outputs=cfg.num_outputs,
                            fusion=cfg.fusion, mil=cfg.supervision == "mil", width=cfg.width,
                            pool=cfg.pool)  # fmt: skip


def _loss_fn(cfg: DiagnoseConfig, y: np.ndarray):
    """The supervised loss, weighted against class imbalance of the training labels ``y``."""
    if cfg.task == "multiclass":
        counts = np.bincount(y.astype(int), minlength=len(cfg.classes)).astype(np.float64)
        w = counts.sum() / np.maximum(counts, 1) / len(counts) if cfg.balance_classes else None
        weight = None if w is None else torch.tensor(w, dtype=torch.float32)
        return lambda logits, t: F.cross_entropy(
            logits, t.long(), weight=None if weight is None else weight.to(logits.device)
        )
    pos = y.reshape(len(y), -1).mean(axis=0)
    pw = torch.tensor((1 - pos) / np.maximum(pos, 1e-3), dtype=torch.float32)
    pw = pw if cfg.balance_classes else None

    def bce(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.float().reshape(logits.shape)
        return F.binary_cross_entropy_with_logits(
            logits, t, pos_weight=None if pw is None else pw.to(logits.device)
        )

    return bce


class MeanTeacher(nn.Module):
    """A student and its EMA teacher in one module, so checkpoints and resume keep both."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student, self.teacher = student, copy.deepcopy(student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> MeanTeacher:
        self.student.train(mode)
        self.teacher.train(False)  # the teacher always predicts with running BN statistics
        return self

    @torch.no_grad()
    def update_teacher(self, decay: float) -> None:
        for t, s in zip(self.teacher.parameters(), self.student.parameters()):
            t.mul_(decay).add_(s.detach(), alpha=1 - decay)
        for t, s in zip(self.teacher.buffers(), self.student.buffers()):
            if t.is_floating_point():  # BatchNorm running statistics: averaged like the
                t.mul_(decay).add_(s, alpha=1 - decay)  # weights they normalise
            else:
                t.copy_(s)

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        return self.teacher(x, present)


def _calibrate_safeguard(
    cfg: DiagnoseConfig, model: nn.Module, train: CaseArrays, val: CaseArrays, out: Path
) -> None:
    """The out-of-distribution safeguard (:mod:`.safeguard`) from the training images (fit) and
    the validation images (threshold); skipped for MIL and for sets too small to fit it."""
    from medimg.tasks.diagnose.safeguard import FILE_NAME, calibrate

    (out / FILE_NAME).unlink(missing_ok=True)  # a resumed run's old statistics are stale
    held = val if len(val) >= 4 else None
    # a held-out fifth of the training images stands in for too small a validation set
    if cfg.supervision == "mil" or len(train) < (8 if held is not None else 20):
        return
    model.to(resolve_device(cfg.train.device))  # saving moved it to the CPU
    calibrate(model, train, held, source="training images; threshold on validation images"
              if held is not None else "training images").save(out)  # fmt: skip


@torch.no_grad()
def predict_logits(model: nn.Module, data: CaseArrays, batch: int = 64) -> np.ndarray:
    """Logits ``(N, K)`` of ``data`` in eval mode on the model's device."""
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(data), batch):
        x = torch.from_numpy(data.x[i : i + batch]).to(dev)
        present = torch.from_numpy(data.present[i : i + batch]).to(dev)
        out.append(model(x, present).float().cpu().numpy())
    model.train(was)
    return np.concatenate(out)


def macro_auc(labels: np.ndarray, probs: np.ndarray, task: str) -> float:
    """AUC (binary), or the mean one-vs-rest AUC over classes/labels present in both states."""
    if task == "binary":
        return roc_auc(labels, probs)
    y = np.eye(probs.shape[1])[labels.astype(int)] if task == "multiclass" else labels
    aucs = [
        roc_auc(y[:, k], probs[:, k]) for k in range(probs.shape[1]) if 0 < y[:, k].sum() < len(y)
    ]
    return float(np.mean(aucs)) if aucs else float("nan")


def train_diagnosis(
    cfg: DiagnoseConfig,
    train: CaseArrays,
    val: CaseArrays,
    out_dir: str | Path,
    *,
    unlabelled: CaseArrays | None = None,
    resume: bool | str = "auto",
    overwrite: bool = False,
    dataset: torch.utils.data.Dataset | None = None,
    init: str | Path | None = None,
) -> tuple[TrainResult, dict[str, float]]:
    """Train ``cfg`` on ``train`` (+ ``unlabelled`` for ``semi``), validate on ``val``; returns
    the engine's result and a summary (validation AUC, temperature, NLL before/after).
    ``dataset``: the training samples drawn from ``train`` in another way (e.g. crops of its
    images, full supervision only; ``train`` still weights the loss and fits the safeguard).
    ``init``: a model or run folder whose weights start the network; the classification heads
    start fresh when the number of classes differs (a resumed run uses its own checkpoint)."""
    if cfg.supervision == "semi" and unlabelled is None:
        raise InputError("semi supervision needs unlabelled images (labelled_fraction < 1)")
    if len(val) < 2:
        raise InputError("need at least 2 validation cases for model selection and calibration")
    out = Path(out_dir)
    seed_everything(cfg.train.seed)
    net = build_model(cfg)
    if init is not None:
        load_weights(net, init, keep_fresh=lambda key: key.startswith(("head.", "heads.")))
    loss_fn = _loss_fn(cfg, train.y)
    if cfg.supervision == "semi":
        model: nn.Module = MeanTeacher(net)
        assert unlabelled is not None  # checked above
        strong = cfg.semi_method == "fixmatch"
        data = PairedSemiDataset(train, unlabelled, cfg.augment, cfg.unlabelled_ratio, strong)
    else:
        model = net
        drop = cfg.modality_dropout if len(cfg.modalities) > 1 else 0.0
        data = dataset if dataset is not None else SampleDataset(train, cfg.augment, drop)

    def step(m: nn.Module, batch: dict[str, torch.Tensor], ctx) -> dict[str, torch.Tensor]:
        if cfg.supervision != "semi":
            return {"loss": loss_fn(m(batch["x"], batch.get("present")), batch["y"])}
        mt: MeanTeacher = m.module if hasattr(m, "module") else m  # type: ignore[assignment]
        mt.update_teacher(0.0 if ctx.step == 0 else min(cfg.ema_decay, 1 - 1 / (ctx.step + 1)))
        xl = batch["x"]
        xt, xs = (batch[k].flatten(0, 1) for k in ("xu_teacher", "xu_student"))
        z = mt.student(torch.cat([xl, xs]))  # one BatchNorm batch: labelled + unlabelled
        zl, ps = z[: len(xl)], z[len(xl) :]
        sup = loss_fn(zl, batch["y"])
        with torch.no_grad():  # fixmatch: the student's own call (Sohn et al.), not the
            # lagging teacher, whose confident errors early on the student would learn
            pt = (mt.student if cfg.semi_method == "fixmatch" else mt.teacher)(xt)
        act = (lambda v: v.softmax(1)) if cfg.task == "multiclass" else torch.sigmoid
        rampup = max(cfg.consistency_rampup, 1)
        ramp = (
            float(np.exp(-5 * (1 - min(ctx.step / rampup, 1.0)) ** 2))
            if cfg.consistency_rampup
            else 1.0
        )
        out = {"sup": sup}
        loss = sup
        if cfg.semi_method == "mean_teacher":
            out["cons"] = F.mse_loss(act(ps), act(pt))
            loss = loss + cfg.consistency_weight * ramp * out["cons"]
        if cfg.pseudo_threshold > 0:  # confident calls on the weak view as hard targets
            qt = act(pt)
            if cfg.task == "multiclass":
                conf, hard = qt.max(1)
                keep = (conf >= cfg.pseudo_threshold).float()
                pl = (F.cross_entropy(ps, hard, reduction="none") * keep).sum()
            else:
                keep = ((qt >= cfg.pseudo_threshold) | (qt <= 1 - cfg.pseudo_threshold)).float()
                pl = (F.binary_cross_entropy_with_logits(ps, (qt >= 0.5).float(),
                                                         reduction="none") * keep).sum()  # fmt: skip
            out["pseudo"] = pl / max(len(ps), 1)
            out["pseudo_kept"] = keep.mean()
            w = cfg.consistency_weight if cfg.semi_method == "fixmatch" else 1.0
            loss = loss + w * ramp * out["pseudo"]
        return {"loss": loss, **out}

    def validate(m: nn.Module) -> dict[str, float]:
        p = probabilities(predict_logits(m, val), cfg.task)
        return {"auc": macro_auc(val.y, p, cfg.task)}

    tcfg = dataclasses.replace(cfg.train, val_metric="auc", val_mode="max")
    trainer = Trainer(model, data, step, tcfg, out, validate=validate, run_config=cfg)
    result = trainer.fit(resume=resume, overwrite=overwrite)
    load_weights(model, result.best_checkpoint or result.last_checkpoint)
    final = model.teacher if isinstance(model, MeanTeacher) else model
    logits = predict_logits(final, val)
    cfg = dataclasses.replace(cfg, temperature=fit_temperature(logits, val.y, cfg.task))
    from safetensors.torch import save_model

    save_model(final.cpu(), str(out / MODEL_WEIGHTS))
    to_yaml(cfg, out / MODEL_YAML)
    _calibrate_safeguard(cfg, final, train, val, out)
    from medimg.tasks.diagnose.calibration import nll

    summary = {
        "val_auc": macro_auc(val.y, probabilities(logits, cfg.task), cfg.task),
        "temperature": cfg.temperature,
        "val_nll": nll(logits, val.y, cfg.task),
        "val_nll_calibrated": nll(logits, val.y, cfg.task, cfg.temperature),
    }
    return result, summary
