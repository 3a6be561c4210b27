"""Knowledge distillation of an MRI reconstruction network into a small student.

``medimg recon mri train --distill-from MODEL --arch small``: the student is the teacher's
network (same kind, iterations/cascades, data consistency, coil maps) with narrower U-Nets:
every width divided by the smallest factor (2, 2.25, ...) that leaves at least 4x fewer
parameters (:func:`~medimg.tasks.segment.distill.narrower_widths`, one rule for both tasks).
Its cascades are kept because they are data consistency, not parameters: the learned part is
the denoiser. It trains on the teacher's own training data and recipe with the loss::

    (1 - SSIM(x, target)) + L1(x, target) / L  +  alpha * [(1 - SSIM(x, x_T)) + L1(x, x_T) / L_T]

where ``x_T`` is the frozen teacher's reconstruction of the same undersampled slice (no
gradient), so the student learns the fully sampled target and, weighted by ``alpha``, to
reproduce what the teacher makes of the same data. The run folder is an ordinary MRI run folder
(``config.yaml`` + ``best/``) for ``predict --model``, with ``distill.json`` (teacher, alpha,
both parameter counts). ``--arch small`` without ``--distill-from`` is refused (see the
segmentation module's doc for why).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from medimg.engine import TrainResult, check_run_dir, to_dict
from medimg.errors import InputError
from medimg.io.output import atomic_path
from medimg.tasks.reconstruct.mri.losses import ssim_l1_loss
from medimg.tasks.reconstruct.mri.models import ModelConfig, build_model
from medimg.tasks.reconstruct.mri.train import MRITrainConfig, load_model, model_dir, train_mri
from medimg.tasks.segment.distill import MIN_RATIO, narrower_widths

__all__ = ["count_parameters", "distill_mri", "student_config"]


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def student_model(teacher: ModelConfig, min_ratio: float = MIN_RATIO) -> ModelConfig:
    """The teacher's architecture with every U-Net width narrowed (see the module doc)."""
    n = len(teacher.features)

    def config(widths: list[int]) -> ModelConfig:
        return dataclasses.replace(teacher, features=tuple(widths[:n]),
                                   sens_features=tuple(widths[n:]))  # fmt: skip

    def count(widths: list[int]) -> int:
        return count_parameters(build_model(config(widths)))

    return config(narrower_widths([*teacher.features, *teacher.sens_features], count, min_ratio))


def student_config(
    teacher: MRITrainConfig, max_steps: int | None = None, progress: bool = True
) -> MRITrainConfig:
    """The student's run config: the teacher's data and recipe, a narrower network and, with
    ``max_steps``, a schedule (warm-up, validation, checkpoints) scaled to that length."""
    train = dataclasses.replace(teacher.train, progress=progress)
    if max_steps is not None:
        every = max(1, min(train.val_every, max_steps // 3))
        train = dataclasses.replace(train, max_steps=max_steps, val_every=every,
                                    checkpoint_every=min(train.checkpoint_every, every),
                                    warmup_steps=min(train.warmup_steps, max_steps // 10))  # fmt: skip
    return dataclasses.replace(teacher, model=student_model(teacher.model), train=train)


def distill_mri(
    teacher: str | Path,
    out_dir: str | Path,
    *,
    arch: str = "small",
    alpha: float = 0.5,
    max_steps: int | None = None,
    device: str | None = None,
    progress: bool = True,
    resume: bool | str = "auto",
    overwrite: bool = False,
) -> TrainResult:
    """Train a small student of ``teacher`` (a model/run folder or a shipped name such as
    ``default``) into ``out_dir``; see the module doc."""
    if arch != "small":
        raise InputError(f"--arch small is the only student size, got {arch!r}")
    if not 0 <= alpha <= 1:
        raise InputError(f"--alpha must be in [0, 1], got {alpha}")
    folder = model_dir(str(teacher))
    if not (folder / "config.yaml").is_file():
        raise InputError("--distill-from needs an MRI model or run folder (config.yaml), or "
                         "'default'", folder)  # fmt: skip
    tnet, tcfg = load_model(folder)
    if tcfg.h5_files:
        raise InputError("the teacher trained on HDF5 files; distil it with a config of your "
                         "own data (not supported yet)", folder)  # fmt: skip
    cfg = student_config(tcfg, max_steps, progress)
    if device is not None:
        cfg.train = dataclasses.replace(cfg.train, device=device)  # type: ignore[arg-type]
    # refuse an earlier run before the teacher is set up or the validation set simulated
    check_run_dir(out_dir, resume=resume, overwrite=overwrite, run_config=to_dict(cfg))
    for p in tnet.parameters():
        p.requires_grad_(False)

    def teacher_term(
        pred: torch.Tensor, batch: dict[str, torch.Tensor], phys: object
    ) -> torch.Tensor:
        with torch.no_grad():
            target = tnet.to(pred.device)(batch["kspace"], phys).abs()
        return alpha * ssim_l1_loss(pred, target, cfg.l1_weight)

    result = train_mri(cfg, out_dir, resume=resume, overwrite=overwrite, extra_loss=teacher_term)
    info = {"teacher": str(folder), "alpha": alpha,
            "teacher_parameters": count_parameters(tnet),
            "student_parameters": count_parameters(build_model(cfg.model))}  # fmt: skip
    info["ratio"] = round(info["teacher_parameters"] / info["student_parameters"], 2)
    with atomic_path(Path(out_dir) / "distill.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(info, indent=1) + "\n")
    return result
