"""Training: plan + dataset fold -> DynUNet weights, through :class:`medimg.engine.Trainer`.

Loss: Dice + cross-entropy (MONAI ``DiceCELoss``) on every deep-supervision head, weighted
1, 1/2, 1/4 (normalised) like nnU-Net. Validation: sliding-window prediction of the fold's
validation cases, metric ``dice`` = mean foreground Dice. After training, largest-connected-
component post-processing is chosen per label on the validation predictions and written into the
run's ``plan.yaml``. The run folder is a model folder for :class:`~.predict.Segmenter`.

With few labels: ``semi=`` adds unlabelled images (:mod:`.semi`, :mod:`.semi_data`) and
``few_shot=True`` fine-tunes ``init`` on a schedule for 1-5 cases (:mod:`.few_shot`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medimg.datasets.msd import check_dataset, open_dataset
from medimg.datasets.splits import kfold_split
from medimg.engine import (
    Trainer,
    TrainResult,
    check_run_dir,
    load_weights,
    seed_everything,
    validation_interval,
)
from medimg.errors import InputError
from medimg.io.output import (
    atomic_path,
    check_outputs,
    copy_files,
    mark_owned,
)
from medimg.tasks.segment.data import PatchDataset, preprocess_image, preprocess_labels
from medimg.tasks.segment.fingerprint import fingerprint_from_cases, save_fingerprint
from medimg.tasks.segment.models import build_network, is_output_layer
from medimg.tasks.segment.plan import SegPlan, load_plan, make_plan, save_plan
from medimg.tasks.segment.predict import sliding_labels

__all__ = ["SegRun", "check_export", "dice_per_class", "export_model", "fit_model_folder",
           "train_segmentation"]  # fmt: skip


@dataclasses.dataclass
class SegRun:
    """What ``config.yaml`` of a segmentation run records: data, fold and the whole plan."""

    dataset: str
    fold: int
    plan: SegPlan


@dataclasses.dataclass
class LabelEfficientRun:
    """``config.yaml`` of a semi-supervised or few-shot run (compared on ``--resume``)."""

    dataset: str
    fold: int
    plan: SegPlan
    semi: str | None
    unlabelled: str | None
    unlabelled_weight: float | None
    few_shot: bool
    init: str | None


def dice_per_class(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> list[float]:
    """Dice of classes 1..K-1 (1.0 when both are empty): the quick validation metric."""
    out = []
    for k in range(1, num_classes):
        p, g = pred == k, gt == k
        denom = int(p.sum()) + int(g.sum())
        out.append(1.0 if denom == 0 else 2.0 * int((p & g).sum()) / denom)
    return out


def deep_supervision_loss(loss_fn: Any, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Weighted loss over the heads of a ``(B, H, K, ...)`` output (a plain ``(B, K, ...)`` too)."""
    if out.ndim == target.ndim:
        return loss_fn(out, target)
    weights = torch.tensor([0.5**i for i in range(out.shape[1])])
    weights = weights / weights.sum()
    return sum(w * loss_fn(out[:, i], target) for i, w in enumerate(weights.tolist()))


def _fold_cases(ids: list[str], fold: int, k: int, seed: int) -> tuple[list[str], list[str]]:
    if fold < 0:  # -1: all cases, validated on a few training cases (final/default models)
        return ids, ids[:4]
    if fold >= k:
        raise InputError(f"--fold must be in 0..{k - 1} (or -1 for all cases), got {fold}")
    return kfold_split(ids, k, seed=seed)[fold]


def train_segmentation(
    dataset: str | Path,
    out_dir: str | Path,
    *,
    fold: int = 0,
    plan: SegPlan | str | Path | None = None,
    max_steps: int | None = None,
    device: str | None = None,
    progress: bool = True,
    resume: bool | str = "auto",
    overwrite: bool = False,
    samples_per_epoch: int = 250,
    init: str | Path | None = None,
    semi: str | None = None,
    unlabelled: str | Path | None = None,
    unlabelled_weight: float | None = None,
    few_shot: bool = False,
) -> TrainResult:
    """Train fold ``fold`` of ``dataset`` into ``out_dir`` (a model folder); see the module doc.

    ``resume``: ``True`` continues the run in ``out_dir``, ``"auto"`` continues it if it holds a
    checkpoint; an ``out_dir`` holding anything else needs ``overwrite`` (see
    :func:`~medimg.engine.state.check_run_dir`). ``init``: a segmentation model or run folder
    to fine-tune (the shipped default, or an earlier run): without ``plan`` its plan is used
    (network, patch, spacing, normalisation) with this dataset's labels; output layers for
    another number of classes start fresh, every other weight must match.

    ``semi``: ``"uamt"``, ``"cps"`` or ``"fixmatch"`` also learns from unlabelled images
    (``unlabelled``: a folder of images; default the dataset's ``imagesUnlabelled/`` and its
    ``imagesTr`` cases without a label), their term weighted by ``unlabelled_weight`` (default
    1); see :mod:`.semi`. ``few_shot``: fine-tune ``init`` on the schedule of
    :mod:`.few_shot` (lower rate, fewer steps, encoder frozen then slow, stronger
    augmentation)."""
    from medimg.tasks.segment.few_shot import check_few_shot

    t0 = time.perf_counter()
    check_few_shot(few_shot, init)
    u_groups: list[list[Path]] = []
    if semi is not None:
        from medimg.tasks.segment.semi import SEMI_METHODS
        from medimg.tasks.segment.semi_data import open_partly_labelled, unlabelled_files

        if semi not in SEMI_METHODS:
            raise InputError(f"--semi must be one of {', '.join(SEMI_METHODS)}, got {semi!r}")
        ds, untagged = open_partly_labelled(dataset)
        u_groups = unlabelled_files(dataset, unlabelled, untagged)
    elif unlabelled is not None:
        raise InputError("--unlabelled images need a method: add --semi uamt|cps|fixmatch")
    else:
        ds = open_dataset(dataset)
    out = Path(out_dir)
    # the plan may be the run's own plan.yaml: it is read before anything is written
    resuming = check_run_dir(out, resume=resume, overwrite=overwrite,
                             inputs=ds.files() + [p for g in u_groups for p in g],
                             whole_folder=True)  # fmt: skip
    cases = check_dataset(ds)
    if init is not None and str(init) == "default":
        from medimg.tasks.segment.predict import DEFAULT_MODEL

        init = DEFAULT_MODEL
    init_plan = _init_plan(Path(init)) if init is not None else None
    if plan is None and init_plan is not None:
        labels = [ds.labels[i] for i in range(len(ds.labels))]
        plan = dataclasses.replace(init_plan, label_names=labels, postprocessing={})
    if plan is None:
        plan = make_plan(fingerprint_from_cases(ds, cases))
    elif not isinstance(plan, SegPlan):
        plan = load_plan(plan)
    plan = dataclasses.replace(plan, train=dataclasses.replace(plan.train))
    if max_steps is not None:
        plan.train.max_steps = max_steps
        plan.train.val_every = plan.train.checkpoint_every = validation_interval(max_steps)
    if device is not None:
        plan.train.device = device  # type: ignore[assignment]
    plan.train.progress = progress
    if few_shot:
        from medimg.tasks.segment.few_shot import few_shot_plan

        plan = few_shot_plan(plan, max_steps)
    if len(ds.labels) != plan.num_classes:
        raise InputError(
            f"dataset has {len(ds.labels)} labels, the plan {plan.num_classes}; re-plan"
        )
    train_ids, val_ids = _fold_cases(sorted(cases), fold, plan.folds, plan.train.seed)
    pre = {cid: (preprocess_image(cases[cid][0], plan)[0], preprocess_labels(cases[cid][1], plan))
           for cid in sorted(set(train_ids) | set(val_ids))}  # fmt: skip
    data = PatchDataset(
        [pre[c][0] for c in train_ids], [pre[c][1] for c in train_ids], plan,
        samples_per_epoch=max(samples_per_epoch, plan.train.batch_size),
    )  # fmt: skip
    if few_shot:
        from medimg.tasks.segment.few_shot import strong_augmentation

        data.transform = strong_augmentation(plan)
    seed_everything(plan.train.seed)
    model = build_network(plan)
    if init is not None and not resuming:  # a resumed run has its own weights
        load_weights(model, _init_weights(Path(init)), keep_fresh=is_output_layer)
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)

    def step(net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Any:
        return deep_supervision_loss(loss_fn, net(batch["image"]), batch["label"])

    shipped = None
    if semi is not None:
        from medimg.tasks.segment.semi import build_semi

        model, data, step, shipped = build_semi(
            semi, model, data, u_groups, ds.modality, plan, weight=unlabelled_weight,
            sup_loss=lambda out, y: deep_supervision_loss(loss_fn, out, y),
            second=None if init is None or resuming else _init_weights(Path(init)),
        )  # fmt: skip
    run: Any = SegRun(str(dataset), fold, plan)
    if semi is not None or few_shot:
        run = LabelEfficientRun(str(dataset), fold, plan, semi,
                                None if unlabelled is None else str(unlabelled),
                                unlabelled_weight, few_shot, None if init is None else str(init))  # fmt: skip
    schedule: Any = contextlib.nullcontext()
    if few_shot:
        from medimg.tasks.segment.few_shot import EncoderSchedule

        schedule = EncoderSchedule(model, plan.train.max_steps)
        step = schedule.wrap(step)
    with schedule:
        return fit_model_folder(model, data, step, plan, out, run, ds=ds, cases=cases, pre=pre,
                                val_ids=val_ids, resuming=resuming, overwrite=overwrite, t0=t0,
                                shipped=shipped)  # fmt: skip


def fit_model_folder(
    model: torch.nn.Module, data: PatchDataset, step: Any, plan: SegPlan, out: Path, run: Any,
    *, ds: Any, cases: dict, pre: dict, val_ids: list[str], resuming: bool, overwrite: bool,
    t0: float, on_fresh: Any = None, shipped: Any = None,
) -> TrainResult:  # fmt: skip
    """Train ``model`` with ``step`` into the model folder ``out`` (validation: mean Dice of
    ``val_ids`` by sliding window), then choose the post-processing and write plan,
    fingerprint and time; shared by plain training and distillation. ``on_fresh(out)`` runs
    once when a fresh run's folder is created. ``shipped(model)``: the network the model
    folder ships when ``model`` holds more than it (a network pair): written, from the best
    weights, to ``out/model.safetensors``, which :class:`~.predict.Segmenter` loads first."""

    def validate(net: torch.nn.Module) -> dict[str, float]:
        dev = next(net.parameters()).device
        scores = [dice_per_class(sliding_labels(pre[c][0], [net], plan, mirror=False, device=dev),
                                 pre[c][1], plan.num_classes) for c in val_ids]  # fmt: skip
        per_class = np.mean(scores, axis=0)
        return {"dice": float(per_class.mean()),
                **{f"dice_{n}": float(v) for n, v in zip(plan.label_names[1:], per_class)}}  # fmt: skip

    trainer = Trainer(model, data, step, plan.train, out, validate=validate, run_config=run)
    if not resuming:  # a fresh run is a model folder from the start: its plan beside its weights
        out.mkdir(parents=True, exist_ok=True)
        mark_owned(out)
        save_plan(plan, out / "plan.yaml", overwrite=True)
        if on_fresh is not None:
            on_fresh(out)
    result = trainer.fit(resume=resuming, overwrite=overwrite and not resuming)
    save_fingerprint(fingerprint_from_cases(ds, cases), out / "fingerprint.json", overwrite=True)
    load_weights(model, result.best_checkpoint or result.last_checkpoint)
    if shipped is not None:
        from safetensors.torch import save_model

        with atomic_path(out / "model.safetensors", overwrite=True) as tmp:
            save_model(shipped(model), str(tmp))
    plan.postprocessing = _choose_postprocessing(model.eval(), plan, [pre[c] for c in val_ids])
    save_plan(plan, out / "plan.yaml", overwrite=True)
    with atomic_path(out / "train_time_s.txt", overwrite=True) as tmp:
        tmp.write_text(f"{time.perf_counter() - t0:.1f}\n")
    return result


def _init_plan(init: Path) -> SegPlan:
    """The plan of the model/run folder ``init`` that a run fine-tunes."""
    if not (init / "plan.yaml").is_file():
        raise InputError("--init needs a segmentation model or run folder (with plan.yaml)", init)
    return load_plan(init / "plan.yaml")


def _init_weights(init: Path) -> Path:
    """A model folder's weights (``model.safetensors``), else a run folder's best/last."""
    return init / "model.safetensors" if (init / "model.safetensors").is_file() else init


def check_export(run_dir: str | Path, dest: str | Path, overwrite: bool = False) -> list[Path]:
    """The files :func:`export_model` writes into ``dest``, checked before training (existing
    ones need ``overwrite``; none may be a file of the run)."""

    out = Path(dest)
    return check_outputs([out / "plan.yaml", out / "model.safetensors"], overwrite=overwrite,
                         inputs=[Path(run_dir) / "plan.yaml", Path(run_dir) / "best",
                                 Path(run_dir) / "last",
                                 Path(run_dir) / "model.safetensors"])  # fmt: skip


def export_model(run_dir: str | Path, dest: str | Path, *, overwrite: bool = True) -> Path:
    """Copy a run's ``plan.yaml`` and best (else last) weights into a model folder ``dest``
    (what ships in ``medimg/tasks/segment/default``); other files there (a model card) stay.
    Each file appears only once complete."""
    from medimg.engine import find_checkpoint

    run, out = Path(run_dir), Path(dest)
    ckpt = find_checkpoint(run / "best") or find_checkpoint(run / "last")
    if ckpt is None or not (run / "plan.yaml").is_file():
        raise InputError("no finished training here (plan.yaml and best/ or last/)", run)
    plan_out, weights_out = check_export(run, out, overwrite)
    # a semi-supervised run's checkpoints hold two networks; its model.safetensors the one
    weights = (
        run / "model.safetensors"
        if (run / "model.safetensors").is_file()
        else ckpt / "model.safetensors"
    )
    copy_files([(run / "plan.yaml", plan_out), (weights, weights_out)],
               overwrite=overwrite)  # fmt: skip
    return out


def _choose_postprocessing(
    model: torch.nn.Module, plan: SegPlan, val: list[tuple[np.ndarray, np.ndarray]]
) -> dict[str, bool]:
    """Per label: keep only the largest component when that raises validation Dice."""
    try:
        from medimg.tasks.segment.postprocess import choose_postprocessing
    except ImportError:
        return {}
    with torch.no_grad():
        preds = [sliding_labels(x, [model], plan, mirror=False) for x, _ in val]
    labels = list(range(1, plan.num_classes))
    chosen = choose_postprocessing(preds, [y for _, y in val], labels, tuple(plan.target_spacing))
    return {plan.label_names[k]: bool(v) for k, v in chosen.items()}
