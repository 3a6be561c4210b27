"""Adding structures to a trained segmentation model (``segment train --init MODEL
--add-labels NAME``) from cases labelled only for the new structures.

The data set's ``dataset.json`` names only the new structure(s); its label 0 means "none of
the new structures" (the old organs are in there, unlabelled). The new model is the old plan
with the new labels appended (``old labels + new``); its weights start as the old model's,
output rows of the old classes copied, rows of the new ones fresh (:func:`_copy_old_rows`). The loss (Learning without
Forgetting, Li & Hoiem 2017, with the marginal cross-entropy of Cermelli et al. 2020 for the
partially labelled background)::

    DiceCE(new classes vs "the rest") + w * T^2 * KL(p_old^T || q_old^T)

* the supervised term sees, per voxel, ``P(new structure j)`` and ``P(rest) = sum of the old
  classes' probabilities``, so an unlabelled liver voxel is only told "not the kidney", never
  "background"; on every deep-supervision head like supervised training;
* the distillation term compares, at temperature ``T`` (2), the frozen old model's softmax
  on the same augmented patch with the new model's softmax in which the new classes are merged
  into the background (the old model could not tell them apart): the old structures are kept
  without any of their labels, and a new structure may take the old background but not an old
  organ. Voxels labelled as a new structure are not distilled: there the labels are the
  truth, and the old model, which never saw the structure, may call them an old organ. The
  KL is averaged per class of the old model's prediction, then over the classes
  (:func:`balanced_kd`; ``balanced=False``: LwF's plain voxel mean over the old classes'
  renormalised softmax). On generated abdomens (liver + spleen, kidney added) the plain form
  forgot the spleen (under 1 % of the voxels) entirely; balancing alone kept the spleen among
  the old classes but the kidney took its voxels; both together are the default.

Validation (best model and post-processing choice) scores the new structures against their
labels and the old ones against the old model's own prediction (the only reference there is
in these cases). The output is an ordinary model folder (``plan.yaml`` + ``best/``) that
:class:`~.predict.Segmenter` runs with every label; ``incremental.json`` records the base model
and the labels added.

Written beside :func:`~.train.train_segmentation` (which fixes its loss) and reusing its
fit/validation/post-processing (:func:`~.train.fit_model_folder`) and the distillation term of
:mod:`~.distill`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
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
from medimg.tasks.segment.distill import kd_kl
from medimg.tasks.segment.models import build_network, is_output_layer
from medimg.tasks.segment.plan import SegPlan, load_plan
from medimg.tasks.segment.predict import sliding_labels
from medimg.tasks.segment.train import _fold_cases, deep_supervision_loss, fit_model_folder

__all__ = ["IncrementalRun", "balanced_kd", "extended_plan", "marginal_loss", "train_add_labels"]


@dataclasses.dataclass
class IncrementalRun:
    """What ``config.yaml`` of a run adding labels records."""

    dataset: str
    init: str
    add_labels: list[str]
    temperature: float
    distill_weight: float
    balanced: bool
    plan: SegPlan


def _resolve_init(init: str | Path | None) -> Path:
    if init is None:
        raise InputError("--add-labels needs --init MODEL: the trained model to extend")
    if str(init) == "default":
        from medimg.tasks.segment.predict import DEFAULT_MODEL

        init = DEFAULT_MODEL
    folder = Path(init)
    if not (folder / "plan.yaml").is_file():
        raise InputError("--init: no segmentation model or run folder here (plan.yaml)", folder)
    return folder


def _init_weights(folder: Path) -> Path:
    return folder / "model.safetensors" if (folder / "model.safetensors").is_file() else folder


def extended_plan(old: SegPlan, dataset_labels: list[str], add_labels: list[str]) -> SegPlan:
    """The old plan with ``add_labels`` appended (one-line errors for names the old model has,
    names given twice, and data labels that are not among ``add_labels`` or vice versa)."""
    add = [str(n) for n in add_labels]
    if not add:
        raise InputError("--add-labels: name at least one new structure")
    twice = sorted({n for n in add if add.count(n) > 1})
    if twice:
        raise InputError(f"--add-labels names {twice[0]!r} twice")
    known = [n for n in add if n in old.label_names]
    if known:
        raise InputError(f"the model already segments {known[0]!r} (its labels: "
                         f"{', '.join(old.label_names[1:])}); --add-labels takes new names only")  # fmt: skip
    extra = [n for n in dataset_labels if n not in add]
    if extra:
        raise InputError(f"the dataset's label {extra[0]!r} is not among --add-labels "
                         f"({', '.join(add)}); its cases must be labelled for the new "
                         "structures only")  # fmt: skip
    missing = [n for n in add if n not in dataset_labels]
    if missing:
        raise InputError(f"no case of the dataset is labelled {missing[0]!r} (its labels: "
                         f"{', '.join(dataset_labels)}); add it to dataset.json")  # fmt: skip
    return dataclasses.replace(old, label_names=[*old.label_names, *add], postprocessing={},
                               train=dataclasses.replace(old.train))  # fmt: skip


def marginal_loss(
    logits: torch.Tensor, labels: torch.Tensor, n_old: int, dice: torch.nn.Module
) -> torch.Tensor:
    """Cross-entropy + Dice of the new classes against "the rest" (every old class, the
    background included, merged) on ``(B, K, ...)`` logits; ``labels`` ``(B, 1, ...)`` hold 0
    or the new classes' indices ``n_old..K-1``."""
    logp = F.log_softmax(logits.float(), dim=1)
    merged = torch.cat([torch.logsumexp(logp[:, :n_old], 1, keepdim=True), logp[:, n_old:]], 1)
    target = torch.where(labels > 0, labels - n_old + 1, torch.zeros_like(labels))
    ce = F.nll_loss(merged, target[:, 0])
    return ce + dice(merged.exp(), target)


def balanced_kd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    t: float,
    n_old: int | None = None,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || q)`` averaged per class of the teacher's prediction,
    then over those classes: a small organ's voxels weigh as much as the background's (a plain
    voxel mean, :func:`~.distill.kd_kl`, let the spleen be forgotten on generated abdomens).

    ``q``: the student's softmax at ``T`` over its old classes; with ``n_old`` (the student has
    more classes than the teacher) the "unbiased" form of Cermelli et al. 2020: the student's
    full softmax with its new classes merged into the background, which the old model could not
    tell them from, so a new class may take the old background but not an old structure.
    ``keep``: ``(B, ...)`` voxels to distil (others, labelled as a new structure, are not)."""
    log_t = F.log_softmax(teacher_logits / t, dim=1)
    if n_old is None:
        log_s = F.log_softmax(student_logits / t, dim=1)
    else:
        full = F.log_softmax(student_logits / t, dim=1)
        merged = torch.logsumexp(torch.cat([full[:, :1], full[:, n_old:]], 1), 1, keepdim=True)
        log_s = torch.cat([merged, full[:, 1:n_old]], 1)
    kl = (log_t.exp() * (log_t - log_s)).sum(1)
    cls = teacher_logits.argmax(1)
    if keep is not None:
        cls = torch.where(keep, cls, torch.full_like(cls, -1))
    per_class = [kl[cls == k].mean() for k in range(teacher_logits.shape[1]) if (cls == k).any()]
    if not per_class:
        return kl.sum() * 0.0
    return torch.stack(per_class).mean() * t * t


def _copy_old_rows(model: torch.nn.Module, old_weights: dict[str, torch.Tensor]) -> None:
    """The old classes' output rows into the new (larger) output layers; the new classes'
    rows keep their fresh initial values (a copy of the background's row, as Cermelli et al.
    2020 start them, left the new structure unlearnt after a short run on the tiny test task:
    it starts below the background everywhere)."""
    state = model.state_dict()
    with torch.no_grad():
        for key, value in old_weights.items():
            if is_output_layer(key) and key in state and state[key].shape[1:] == value.shape[1:]:
                state[key][: value.shape[0]] = value


def train_add_labels(
    dataset: str | Path,
    out: str | Path,
    *,
    init: str | Path | None,
    add_labels: list[str],
    max_steps: int | None = None,
    device: str | None = None,
    progress: bool = True,
    resume: bool | str = "auto",
    overwrite: bool = False,
    temperature: float = 2.0,
    distill_weight: float = 1.0,
    fold: int = -1,
    samples_per_epoch: int = 250,
    lr: float | None = None,
    balanced: bool = True,
) -> TrainResult:
    """Extend the model ``init`` with ``add_labels`` learnt from ``dataset`` (cases labelled
    for those only) into the model folder ``out``; see the module doc. ``fold`` -1: every case
    trains (validation on a few of them), else that fold of the plan's split.
    ``resume``/``overwrite`` as for :func:`~.train.train_segmentation`."""
    t0 = time.perf_counter()
    init_dir = _resolve_init(init)
    if not temperature > 0:
        raise InputError(f"temperature must be > 0, got {temperature}")
    ds = open_dataset(dataset)
    out_dir = Path(out)
    resuming = check_run_dir(out_dir, resume=resume, overwrite=overwrite,
                             inputs=[*ds.files(), init_dir], whole_folder=True)  # fmt: skip
    old_plan = load_plan(init_dir)
    plan = extended_plan(old_plan, [ds.labels[k] for k in sorted(ds.labels) if k], add_labels)
    if len(ds.channel_names) != len(old_plan.channel_names):
        raise InputError(f"the model takes {len(old_plan.channel_names)} channel(s), the "
                         f"dataset has {len(ds.channel_names)}")  # fmt: skip
    cases = check_dataset(ds)
    if max_steps is not None:
        plan.train.max_steps = max_steps
        plan.train.val_every = plan.train.checkpoint_every = validation_interval(max_steps)
    if device is not None:
        plan.train.device = device  # type: ignore[assignment]
    plan.train.progress = progress
    if lr is not None:
        plan.train.lr = lr
    n_old = old_plan.num_classes
    lut = np.zeros(max(ds.labels) + 1, np.uint8)  # dataset value -> index in the new model
    for value, name in ds.labels.items():
        lut[value] = plan.label_names.index(name) if value else 0
    train_ids, val_ids = _fold_cases(sorted(cases), fold, plan.folds, plan.train.seed)
    pre = {cid: (preprocess_image(cases[cid][0], plan)[0],
                 lut[preprocess_labels(cases[cid][1], plan)])
           for cid in sorted(set(train_ids) | set(val_ids))}  # fmt: skip
    data = PatchDataset([pre[c][0] for c in train_ids], [pre[c][1] for c in train_ids], plan,
                        samples_per_epoch=max(samples_per_epoch, plan.train.batch_size))  # fmt: skip
    old_net = load_weights(build_network(old_plan), _init_weights(init_dir)).eval()
    for p in old_net.parameters():
        p.requires_grad_(False)
    # validation reference: the new structures' labels over the old model's prediction
    val_pre = {}
    for c in val_ids:
        old_pred = sliding_labels(pre[c][0], [old_net], old_plan, mirror=False)
        val_pre[c] = (pre[c][0], np.where(pre[c][1] > 0, pre[c][1], old_pred).astype(np.uint8))
    seed_everything(plan.train.seed)
    model = build_network(plan)
    if not resuming:  # a resumed run has its own weights
        load_weights(model, _init_weights(init_dir), keep_fresh=is_output_layer)
        _copy_old_rows(model, old_net.state_dict())
    from monai.losses import DiceLoss

    dice = DiceLoss(to_onehot_y=True, include_background=False, batch=True, smooth_nr=1e-5,
                    smooth_dr=1e-5)  # fmt: skip

    def step(net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch["image"], batch["label"]
        with torch.no_grad():
            old_logits = old_net.to(x.device)(x).float()
        out = net(x)
        sup = deep_supervision_loss(lambda o, t: marginal_loss(o, t, n_old, dice), out, y)
        main = out[:, 0] if out.ndim == y.ndim + 1 else out
        if balanced:
            kd = balanced_kd(main.float(), old_logits, temperature, n_old, keep=y[:, 0] == 0)
        else:
            kd = kd_kl(main[:, :n_old].float(), old_logits, temperature)
        return {"loss": sup + distill_weight * kd, "new": sup.detach(), "kd": kd.detach()}

    run = IncrementalRun(str(dataset), str(init_dir), list(add_labels), temperature,
                         distill_weight, balanced, plan)  # fmt: skip
    return fit_model_folder(
        model, data, step, plan, out_dir, run, ds=ds, cases=cases, pre={**pre, **val_pre},
        val_ids=val_ids, resuming=resuming, overwrite=overwrite, t0=t0,
        on_fresh=lambda folder: _write_info(folder, init_dir, old_plan, list(add_labels)),
    )  # fmt: skip


def _write_info(out: Path, init: Path, old: SegPlan, added: list[str]) -> None:
    info = {"base_model": str(init), "base_labels": old.label_names, "added_labels": added}
    with atomic_path(out / "incremental.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(info, indent=1) + "\n")
