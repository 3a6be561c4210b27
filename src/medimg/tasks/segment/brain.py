"""The brain MRI model: trained only on images synthesised from a brain label map (SynthSeg).

``medimg segment train --preset brain`` trains it; ``medimg segment predict IMG OUT --model
brain`` uses the shipped copy (:data:`BRAIN_MODEL`). Recipe (:data:`BRAIN_PRESET`):

* **anatomy**: the Colin27 tissue map (:func:`~medimg.phantoms.synth_brain.colin27_labels`:
  CSF, cortical GM, WM, deep GM, and two non-brain head classes) at the plan's spacing, flipped
  left-right at random and deformed (random affine + smooth warp) per sample;
* **appearance**: :func:`~medimg.phantoms.synth.synthesize_image` with per-label intensities
  taken 80 % of the time from a jittered T1/T2/PD/FLAIR/CT-like template
  (:func:`~medimg.phantoms.synth_brain.brain_contrast_means`) and drawn fully at random (SynthSeg)
  otherwise, then bias field, blur, lower resolution, noise and gamma; the head classes get their
  own intensities and then count as background (an unstripped head in, brain tissue out). Fully
  random contrasts alone learned too slowly for a CPU budget (validation Dice 0.19 after 350
  steps);
* **network**: the segmentation task's DynUNet and loss (:mod:`~.train`), an MR plan (z-score
  per image, the same normalisation prediction applies to a whole scan), in 2D: it labels a
  scan slice by slice across the axial axis, trained on several axial slices of each
  synthesised volume (:class:`~medimg.phantoms.synth_dataset.SynthSliceDataset`). Why 2D: the
  first (3D, 32^3 patches) model could overfit one fixed batch, so nothing was broken, but it
  saw 64 mm of context per patch and spent half of each step synthesising volumes of which it
  used 4 %; on the same CPU the 2D network scored higher after 100 steps (validation 0.33) than
  the 3D one after 600 (0.20). ``brain_plan(configuration="3d", ...)`` still gives the 3D plan;
* **validation** (choice of the best checkpoint): the real T1 of
  :func:`~.brain_eval.real_brain_cases` and its T2-/PD-like versions, never trained on; metric
  ``dice`` = mean over contrasts of the mean of GM and WM Dice.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from medimg.engine import Trainer, TrainResult, check_run_dir, seed_everything
from medimg.engine.config import TrainConfig
from medimg.errors import InputError, OutputExistsError
from medimg.io.output import OWNER_MARK, atomic_path, is_owned, mark_owned
from medimg.phantoms.synth import Appearance, Deformation
from medimg.phantoms.synth_dataset import SynthSegDataset, SynthSliceDataset, cat_collate
from medimg.tasks.segment.plan import Normalization, SegPlan, load_plan, save_plan

__all__ = ["BRAIN_MODEL", "BRAIN_PRESET", "brain_dataset", "brain_plan", "resolve_model",
           "train_brain_preset"]  # fmt: skip

#: The shipped brain model folder (``--model brain``).
BRAIN_MODEL = Path(__file__).parent / "brain"
#: What the brain model labels (the head classes of the label map are background).
BRAIN_CLASSES = ["background", "csf", "cortical_gm", "wm", "deep_gm"]
#: ``medimg segment train --preset brain``: the shipped brain model's recipe.
BRAIN_PRESET = {"spacing_mm": 2.0, "configuration": "2d", "patch": (96, 112),
                "base_features": 16, "levels": 5, "batch_size": 2, "slices": 4,
                "margin": 16, "empty_prob": 0.1,
                "max_steps": 450, "val_every": 150, "lr": 5e-3, "seed": 0,
                "samples_per_epoch": 1000, "template_prob": 0.8}  # fmt: skip
#: Appearance ranges: the generator's defaults (SynthSeg-like) with some partial volume at
#: tissue boundaries, as a 2 mm grid resampled from a scan has.
BRAIN_APPEARANCE = Appearance(partial_volume=(0.0, 0.7), background_zero=0.2)
#: Per-sample deformation: up to 15 degrees, 15 % scaling, a smooth warp of up to 3 voxels.
BRAIN_DEFORMATION = Deformation(rotate=15.0, scale=0.15, shear=0.05, warp_std=3.0, warp_grid=8)


def resolve_model(name: str | Path | None) -> str | Path | None:
    """``"brain"`` -> the shipped brain model folder, unless a folder of that name exists here;
    anything else unchanged."""
    if name is not None and str(name) == "brain" and not Path("brain").is_dir():
        return BRAIN_MODEL
    return name


def brain_plan(
    *,
    spacing_mm: float = float(BRAIN_PRESET["spacing_mm"]),
    configuration: str = str(BRAIN_PRESET["configuration"]),
    patch: int | tuple[int, ...] = BRAIN_PRESET["patch"],  # type: ignore[assignment]
    base_features: int = int(BRAIN_PRESET["base_features"]),
    levels: int = int(BRAIN_PRESET["levels"]),
    max_steps: int = int(BRAIN_PRESET["max_steps"]),
    batch_size: int = int(BRAIN_PRESET["batch_size"]),
    val_every: int = int(BRAIN_PRESET["val_every"]),
    lr: float = float(BRAIN_PRESET["lr"]),
    seed: int = int(BRAIN_PRESET["seed"]),
) -> SegPlan:
    """The brain model's plan: MR at isotropic ``spacing_mm``, a ``levels``-level DynUNet of
    ``base_features`` channels doubling per level (at most 256), on ``patch`` patches (an int:
    a cube or square). ``configuration="2d"`` segments a volume slice by slice across its last
    axis (axial, once reoriented to RAS+); ``"3d"`` with 3D patches."""
    if configuration not in ("2d", "3d"):
        raise InputError(f"configuration must be '2d' or '3d', got {configuration!r}")
    dims = 2 if configuration == "2d" else 3
    sizes = [int(patch)] * dims if isinstance(patch, int) else [int(p) for p in patch]
    if len(sizes) != dims or any(p % 2 ** (levels - 1) for p in sizes):
        raise InputError(
            f"patch {patch} must have {dims} sizes divisible by {2 ** (levels - 1)} "
            f"({levels} levels)"
        )
    train = TrainConfig(
        max_steps=max_steps, batch_size=batch_size, lr=lr, weight_decay=3e-5, optimizer="adamw",
        lr_schedule="poly", grad_clip=12.0, amp=True, val_every=val_every, val_metric="dice",
        val_mode="max", checkpoint_every=val_every, seed=seed, log_every=10,
    )  # fmt: skip
    return SegPlan(
        dataset="SynthBrain-Colin27",  # short: the model tag goes into an 80-byte NIfTI field
        modality="MR",
        channel_names=["MR"],
        label_names=list(BRAIN_CLASSES),
        configuration=configuration,  # type: ignore[arg-type]
        target_spacing=[spacing_mm] * 3,
        median_shape=[round(180 / spacing_mm), round(216 / spacing_mm), round(180 / spacing_mm)],
        normalization=[Normalization(scheme="zscore")],
        patch_size=sizes,
        pool_strides=[[2] * dims] * (levels - 1),
        conv_kernels=[[3] * dims] * levels,
        filters=[min(256, base_features * 2**i) for i in range(levels)],
        network="dynunet",
        deep_supervision_heads=min(2, levels - 2),
        foreground_oversample=0.0,
        augment=False,  # the generator is the augmentation
        mirror_axes=[0],  # left-right, as in training
        folds=1,
        postprocessing={},
        train=train,
    )


def _zscore(image: torch.Tensor) -> torch.Tensor:
    """Per-image z-score, as :func:`~.data.normalize` does for an MR plan."""
    return (image - image.mean()) / image.std(unbiased=False).clamp_min(1e-8)


def brain_dataset(
    label_maps: list[torch.Tensor],
    plan: SegPlan,
    *,
    samples_per_epoch: int = 1000,
    slices: int = int(BRAIN_PRESET["slices"]),
    margin: int = int(BRAIN_PRESET["margin"]),
    empty_prob: float = float(BRAIN_PRESET["empty_prob"]),
) -> SynthSegDataset:
    """Synthesised training samples from brain label maps (values of
    :data:`~medimg.phantoms.synth_brain.BRAIN_LABELS`) on the plan's grid: 3D patches, or for a
    2D plan ``slices`` axial slices per synthesised volume, padded by ``margin`` and empty with
    probability ``empty_prob`` (batch them with
    :func:`~medimg.phantoms.synth_dataset.cat_collate`)."""
    from medimg.phantoms.synth_brain import TRAIN_LABELS, brain_contrast_means

    kwargs = dict(
        train_labels=TRAIN_LABELS, samples_per_epoch=samples_per_epoch,
        appearance=BRAIN_APPEARANCE, deformation=BRAIN_DEFORMATION, flip_axes=(0,),
        normalize=_zscore,
        mean_prior=partial(brain_contrast_means, template_prob=float(BRAIN_PRESET["template_prob"])),
    )  # fmt: skip
    if plan.configuration == "2d":
        return SynthSliceDataset(
            label_maps, plan.patch_size, slices=slices, margin=margin, empty_prob=empty_prob,
            **kwargs,
        )  # fmt: skip
    return SynthSegDataset(label_maps, plan.patch_size, **kwargs)


def _validation(plan: SegPlan):  # -> Callable[[nn.Module], dict[str, float]]
    """The validate callback: Dice on the real volumes, each resampled to the plan's grid."""
    from medimg.tasks.segment.brain_eval import brain_dice, real_brain_cases
    from medimg.tasks.segment.data import preprocess_image, preprocess_labels
    from medimg.tasks.segment.predict import sliding_labels

    # reoriented to RAS+ as prediction does (the ITK T1 stores its axes as x, z, y)
    cases = [(c, preprocess_image(c.image.canonical(), plan)[0],
              preprocess_labels(c.reference.canonical(), plan)) for c in real_brain_cases()]  # fmt: skip

    def validate(net: torch.nn.Module) -> dict[str, float]:
        dev = next(net.parameters()).device
        out: dict[str, float] = {}
        scores = []
        for case, x, ref in cases:
            d = brain_dice(
                sliding_labels(x, [net], plan, mirror=False, device=dev, overlap=0.25), ref
            )
            out.update({f"{case.contrast}_{k}": v for k, v in d.items()})
            scores.append((d["gm"] + d["wm"]) / 2)
        return {"dice": float(np.mean(scores)), **out}

    return validate


def train_brain_preset(
    work_dir: str | Path,
    *,
    max_steps: int | None = None,
    progress: bool = True,
    device: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    label_maps: list[torch.Tensor] | None = None,
    plan: SegPlan | None = None,
    validate: bool = True,
) -> TrainResult:
    """Train the brain model into ``work_dir/model`` (a model folder: ``plan.yaml``, ``best/``,
    ``last/``). ``label_maps``, ``plan`` and ``validate=False`` are for tests (tiny maps, no
    real data); by default the Colin27 map is fetched and the real volumes validate.

    An existing run is continued with ``resume`` or, with ``overwrite``, started over if medimg
    wrote it; otherwise it is refused untouched."""
    from medimg.tasks.segment.train import SegRun, deep_supervision_loss

    t0 = time.perf_counter()
    work = Path(work_dir)
    run = work / "model"
    if resume:
        check_run_dir(run, resume=True, overwrite=False, whole_folder=True)
        plan = load_plan(run / "plan.yaml")
    else:
        busy = work.is_dir() and any(q.name != OWNER_MARK for q in work.iterdir())
        if busy and not overwrite:
            raise OutputExistsError(
                "already holds a preset run; pass --resume to continue it, --overwrite to start "
                "it over, or choose another --out",
                work,
            )
        if busy and not is_owned(work):
            raise InputError("holds files medimg did not write; choose a new or empty folder", work)
        check_run_dir(run, resume=False, overwrite=overwrite, whole_folder=True)
        plan = plan or brain_plan()
    if max_steps is not None:
        plan.train.max_steps = max_steps
    if device is not None:
        plan.train.device = device  # type: ignore[assignment]
    plan.train.progress = progress
    if label_maps is None:
        from medimg.phantoms.synth_brain import colin27_labels, labels_at_spacing

        label_maps = [labels_at_spacing(colin27_labels()[1], plan.target_spacing[0])]
    data = brain_dataset(label_maps, plan, samples_per_epoch=int(BRAIN_PRESET["samples_per_epoch"]))
    seed_everything(plan.train.seed)
    from medimg.tasks.segment.models import build_network

    model = build_network(plan)
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)

    def step(net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return deep_supervision_loss(loss_fn, net(batch["image"]), batch["label"])

    if not validate:
        plan.train.val_metric, plan.train.val_mode = "loss", "min"
    check = _validation(plan) if validate else None
    trainer = Trainer(model, data, step, plan.train, run, validate=check,
                      run_config=SegRun("synth:colin27", -1, plan),
                      collate_fn=cat_collate if plan.configuration == "2d" else None)  # fmt: skip
    if not resume:
        work.mkdir(parents=True, exist_ok=True)
        mark_owned(work)
        run.mkdir(parents=True, exist_ok=True)
        mark_owned(run)
        save_plan(plan, run / "plan.yaml", overwrite=True)
    result = trainer.fit(resume=resume, overwrite=overwrite and not resume)
    with atomic_path(run / "train_time_s.txt", overwrite=True) as tmp:
        tmp.write_text(f"{time.perf_counter() - t0:.1f}\n")
    return result
