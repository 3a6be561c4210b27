"""Knowledge distillation of a segmentation model into a small student (``--distill-from``).

The student's plan is the teacher's plan (spacing, patch, normalisation, levels, labels) with
narrower layers: every width is divided by the smallest factor (2, 2.25, 2.5, ...) that leaves
at least :data:`MIN_RATIO` times fewer parameters (:func:`narrower_widths`). It trains like
``segment train`` (same patches, augmentation, engine, validation and post-processing choice)
on a loss that mixes the ground truth and the teacher::

    (1 - alpha) * DiceCE(student heads, labels) + alpha * T^2 * KL(p_teacher^T || p_student^T)

where ``p^T`` is a softmax at temperature ``T`` (Hinton et al. 2015) and the teacher, frozen in
eval mode without gradients, sees the very augmented patch the student sees. The KL term is on
the student's full-resolution output; the deep-supervision heads learn from the labels only.

The run folder is an ordinary model folder (``plan.yaml`` + ``best/``/``last/``) for ``segment
predict --model`` and ``medimg export``; ``distill.json`` beside it records the teacher and both
parameter counts. ``--arch small`` without a teacher is refused: a narrower network trained on
labels alone is ``segment plan --base-features``' job, and keeping one meaning for ``small``
(a student of a named teacher) keeps the size rule tied to a model the user can compare with.

Written here rather than as a loss option of :func:`~.train.train_segmentation` because that
function fixes its loss; this module reuses its fold split, validation and post-processing.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from medimg.datasets.msd import check_dataset, open_dataset
from medimg.engine import (
    TrainResult,
    check_run_dir,
    load_weights,
    seed_everything,
    validation_interval,
)
from medimg.errors import InputError
from medimg.io.output import atomic_path
from medimg.tasks.segment.data import PatchDataset, preprocess_image, preprocess_labels
from medimg.tasks.segment.models import build_network, count_parameters
from medimg.tasks.segment.plan import SegPlan, load_plan
from medimg.tasks.segment.train import _fold_cases, deep_supervision_loss, fit_model_folder

__all__ = ["MIN_RATIO", "DistillRun", "distill_loss", "distill_segmentation", "kd_kl"]
__all__ += ["narrower_widths", "resolve_teacher", "student_plan"]

#: the student has at least this many times fewer parameters than its teacher
MIN_RATIO = 4.0
ARCHS = ("small",)


@dataclasses.dataclass
class DistillRun:
    """What ``config.yaml`` of a distillation run records."""

    dataset: str
    fold: int
    teacher: str
    temperature: float
    alpha: float
    plan: SegPlan


def narrower_widths(
    widths: Sequence[int], count: Callable[[list[int]], int], min_ratio: float = MIN_RATIO
) -> list[int]:
    """The widest ``widths / d`` (d = 2, 2.25, 2.5, ...; each at least 2) whose network,
    counted by ``count(widths)``, has ``min_ratio`` times fewer parameters than ``widths``'."""
    full = count(list(widths))
    d = 2.0
    while d <= 64:
        small = [max(2, round(w / d)) for w in widths]
        if count(small) * min_ratio <= full:
            return small
        d += 0.25
    raise InputError(f"cannot make a network of widths {list(widths)} {min_ratio:g}x smaller")


def student_plan(teacher: SegPlan, min_ratio: float = MIN_RATIO) -> SegPlan:
    """The teacher's plan with narrower layers (see :func:`narrower_widths`), no
    post-processing yet (training chooses it) and a fresh copy of its training settings."""

    def count(filters: list[int]) -> int:
        return count_parameters(build_network(dataclasses.replace(teacher, filters=filters)))

    return dataclasses.replace(teacher, filters=narrower_widths(teacher.filters, count, min_ratio),
                               postprocessing={}, train=dataclasses.replace(teacher.train))  # fmt: skip


def resolve_teacher(name: str | Path) -> Path:
    """A teacher model folder: ``default`` (the shipped abdominal model), ``brain``, or a
    model/run folder with ``plan.yaml``."""
    from medimg.tasks.segment.brain import resolve_model
    from medimg.tasks.segment.predict import DEFAULT_MODEL

    folder = Path(DEFAULT_MODEL if str(name) == "default" else resolve_model(name))  # type: ignore[arg-type]
    if not (folder / "plan.yaml").is_file():
        raise InputError("--distill-from needs a segmentation model or run folder (plan.yaml), "
                         "or 'default'", folder)  # fmt: skip
    return folder


def _teacher_weights(folder: Path) -> Path:
    return folder / "model.safetensors" if (folder / "model.safetensors").is_file() else folder


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))`` averaged over voxels (classes on
    axis 1); ``T^2`` keeps its gradient on the scale of a hard-label loss."""
    log_s = F.log_softmax(student_logits / t, dim=1)
    log_t = F.log_softmax(teacher_logits / t, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(1)
    return kl.mean() * t * t


def distill_loss(
    hard_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    student_out: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
) -> dict[str, torch.Tensor]:
    """The mixed loss of the module doc, with its two terms for the training log."""
    hard = deep_supervision_loss(hard_loss, student_out, labels)
    main = student_out[:, 0] if student_out.ndim == labels.ndim + 1 else student_out
    soft = kd_kl(main, teacher_logits, temperature)
    return {"loss": (1 - alpha) * hard + alpha * soft, "hard": hard.detach(), "kd": soft.detach()}


def _check_teacher(teacher: SegPlan, labels: list[str], channels: int) -> None:
    if list(teacher.label_names) != labels:
        raise InputError(f"the teacher's labels {teacher.label_names} differ from the dataset's "
                         f"{labels}; distill on a dataset with the teacher's labels")  # fmt: skip
    if len(teacher.channel_names) != channels:
        raise InputError(f"the teacher takes {len(teacher.channel_names)} channel(s), the "
                         f"dataset has {channels}")  # fmt: skip


def _check_settings(temperature: float, alpha: float, arch: str) -> None:
    if arch not in ARCHS:
        raise InputError(f"--arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    if not temperature > 0:
        raise InputError(f"--temperature must be > 0, got {temperature}")
    if not 0 <= alpha <= 1:
        raise InputError(f"--alpha must be in [0, 1], got {alpha}")


def distill_segmentation(
    dataset: str | Path,
    out_dir: str | Path,
    teacher: str | Path,
    *,
    arch: str = "small",
    temperature: float = 2.0,
    alpha: float = 0.5,
    fold: int = -1,
    max_steps: int | None = None,
    device: str | None = None,
    progress: bool = True,
    resume: bool | str = "auto",
    overwrite: bool = False,
    samples_per_epoch: int = 250,
) -> TrainResult:
    """Train a small student of ``teacher`` on fold ``fold`` of ``dataset`` (-1: every
    labelled case) into ``out_dir``; see the module doc. ``resume``/``overwrite`` as for
    :func:`~.train.train_segmentation`."""
    t0 = time.perf_counter()
    _check_settings(temperature, alpha, arch)
    ds = open_dataset(dataset)
    out = Path(out_dir)
    resuming = check_run_dir(out, resume=resume, overwrite=overwrite, inputs=ds.files(),
                             whole_folder=True)  # fmt: skip
    teacher_dir = resolve_teacher(teacher)
    t_plan = load_plan(teacher_dir)
    cases = check_dataset(ds)
    _check_teacher(t_plan, [ds.labels[i] for i in range(len(ds.labels))],
                   len(ds.channel_names))  # fmt: skip
    plan = student_plan(t_plan)
    plan.dataset = f"{t_plan.dataset} (student)"
    if max_steps is not None:
        plan.train.max_steps = max_steps
        plan.train.val_every = plan.train.checkpoint_every = validation_interval(max_steps)
    if device is not None:
        plan.train.device = device  # type: ignore[assignment]
    plan.train.progress = progress
    train_ids, val_ids = _fold_cases(sorted(cases), fold, plan.folds, plan.train.seed)
    pre = {cid: (preprocess_image(cases[cid][0], plan)[0], preprocess_labels(cases[cid][1], plan))
           for cid in sorted(set(train_ids) | set(val_ids))}  # fmt: skip
    data = PatchDataset([pre[c][0] for c in train_ids], [pre[c][1] for c in train_ids], plan,
                        samples_per_epoch=max(samples_per_epoch, plan.train.batch_size))  # fmt: skip
    seed_everything(plan.train.seed)
    model = build_network(plan)
    tnet = load_weights(build_network(t_plan), _teacher_weights(teacher_dir)).eval()
    for p in tnet.parameters():
        p.requires_grad_(False)
    from monai.losses import DiceCELoss

    hard = DiceCELoss(to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)

    def step(net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["image"]
        with torch.no_grad():
            t_logits = tnet.to(x.device)(x).float()
        return distill_loss(hard, net(x), t_logits, batch["label"], temperature=temperature,
                            alpha=alpha)  # fmt: skip

    run = DistillRun(str(dataset), fold, str(teacher_dir), temperature, alpha, plan)
    n_teacher, n_student = count_parameters(tnet), count_parameters(model)
    return fit_model_folder(
        model, data, step, plan, out, run, ds=ds, cases=cases, pre=pre, val_ids=val_ids,
        resuming=resuming, overwrite=overwrite, t0=t0,
        on_fresh=lambda folder: _write_sizes(folder, teacher_dir, n_teacher, n_student),
    )  # fmt: skip


def _write_sizes(out: Path, teacher: Path, n_teacher: int, n_student: int) -> None:
    info = {"teacher": str(teacher), "teacher_parameters": n_teacher,
            "student_parameters": n_student, "ratio": round(n_teacher / n_student, 2)}  # fmt: skip
    with atomic_path(out / "distill.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(info, indent=1) + "\n")
