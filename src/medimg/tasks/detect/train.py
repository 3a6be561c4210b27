"""Training the nodule detector on a LUNA16-layout folder through :class:`medimg.engine.Trainer`.

Scans of the ``val_subsets`` folders are held out for validation (metric: LUNA16 CPM of the
whole-volume candidates, higher is better; the best checkpoint is kept); the other subsets give
random 40^3 patches (80 mm), 60 % centred near a nodule (positive oversampling), the rest anywhere,
so vessels, bifurcations and the chest wall are the negatives the focal loss learns from.

CPU cost: the scans are resampled once and kept in memory; a patch is a crop of that array plus
its centre-point targets (about 1 ms), so a step is the network's forward/backward (about 0.3 s
for two 40^3 patches on one idle core). Run it on one thread where the CPU is shared
(``--threads 1``): OpenMP threads spin-waiting on an oversubscribed CPU made steps 5-8x slower. The run
folder (``config.yaml`` + ``best/``, ``last/``) is a model folder for ``medimg detect predict``;
``train --resume`` continues a killed run to the same weights (the engine's exact resume).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from medimg.datasets.luna16 import Luna16, open_luna16
from medimg.engine import (
    TrainConfig,
    Trainer,
    TrainResult,
    find_checkpoint,
    load_weights,
    seed_everything,
)
from medimg.errors import InputError
from medimg.io.output import check_outputs, copy_files
from medimg.metrics.detection import ScanMatch, froc, match_luna16
from medimg.tasks.detect.data import PatchDataset, Prepared, prepare, to_voxels
from medimg.tasks.detect.infer import InferenceConfig, detect_prepared
from medimg.tasks.detect.models import build_detector, centernet_loss
from medimg.tasks.detect.simulate import (
    read_hard_negative_kinds,
    read_hard_negatives,
    write_thorax_luna16,
)
from medimg.tasks.detect.strata import read_nodule_types

__all__ = [
    "DEFAULT_PRESET",
    "DEFAULT_STAGES",
    "PLAIN_PHANTOM_MODEL",
    "STAGE2_PRESET",
    "DetectConfig",
    "ModelConfig",
    "export_model",
    "preset_config",
    "train_detector",
    "train_preset",
]  # fmt: skip


@dataclasses.dataclass
class ModelConfig:
    """Network widths and the isotropic grid (mm) it works on."""

    channels: tuple[int, ...] = (12, 24, 48, 96)
    spacing: float = 2.0


@dataclasses.dataclass
class DetectConfig:
    """A detection run, written to ``config.yaml`` (and compared on resume)."""

    dataset: str = ""
    val_subsets: tuple[str, ...] = ("subset0",)
    patch: int = 40
    samples_per_epoch: int = 400
    pos_fraction: float = 0.6
    #: share of patches centred on hard negatives (``hard_negatives.csv`` of the dataset, e.g.
    #: written by ``simulate --varied``; 0 leaves sampling as without them)
    hard_fraction: float = 0.0
    #: patch share per nodule type (``nodule_type`` column of ``annotations.csv``, as written by
    #: ``simulate --varied``): a positive patch picks a nodule in proportion to its type's weight
    #: (types not named weigh 1); empty: every nodule alike
    type_weights: dict[str, float] = dataclasses.field(default_factory=dict)
    #: extra factor on the patch share of nodules under 6 mm (1.5-3 voxels on the 2 mm grid,
    #: the size the detector misses most)
    small_weight: float = 1.0
    #: give each kind of hard negative (``kind`` column of ``hard_negatives.csv``: branch
    #: point, vessel stub, plaque, fissure) an equal share of the hard-negative patches instead
    #: of one in proportion to its count (branch points outnumber the others ~10:1)
    hard_per_kind: bool = False
    #: start from these weights (a model folder, run folder or ``.safetensors``; "": random)
    init_weights: str = ""
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    inference: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            max_steps=1000, batch_size=2, lr=2e-3, lr_schedule="cosine", warmup_steps=40,
            val_every=500, val_metric="cpm", val_mode="max", checkpoint_every=250,
            grad_clip=5.0, weight_decay=1e-4,
        )
    )  # fmt: skip


def _prepare_scans(ds: Luna16, uids: list[str], spacing: float, progress: bool):
    out = []
    for uid in tqdm(uids, desc="prepare scans", disable=not progress):
        image, nod, exc = ds.load(uid)
        out.append((prepare(image, spacing), nod, exc))
    return out


def evaluate_scans(
    model: torch.nn.Module,
    scans: list[tuple[Prepared, np.ndarray, np.ndarray]],
    cfg: InferenceConfig,
    device: torch.device | str = "cpu",
) -> list[ScanMatch]:
    """LUNA16 matches of the model's candidates on prepared scans with RAS+ ground truth."""
    matches = []
    for prep, nod, exc in scans:
        cands = detect_prepared(model, prep, cfg, device)
        xyz = np.asarray([c.center_ras for c in cands]).reshape(-1, 3)
        matches.append(match_luna16(xyz, [c.score for c in cands], nod[:, :3], nod[:, 3],
                                    exc[:, :3], exc[:, 3]))  # fmt: skip
    return matches


def _type_weights(
    dataset: Path, uids: list[str], counts: list[int], type_weights: dict[str, float]
) -> list[np.ndarray] | None:
    """Per scan, the sampling weight of each nodule from its ``nodule_type`` (None: no
    weights asked for, or a dataset without types)."""
    if not type_weights:
        return None
    bad = {k: v for k, v in type_weights.items() if not (np.isfinite(v) and v >= 0)}
    if bad:
        raise InputError(f"type weights must be finite numbers >= 0, got {bad}")
    types = read_nodule_types(dataset / "annotations.csv")
    if types is None:
        return None
    out = []
    for uid, n in zip(uids, counts):
        kinds = types.get(uid, [])
        if len(kinds) != n:  # the same rows in the same order as the dataset's loader reads
            raise InputError(f"scan {uid}: {len(kinds)} nodule types for {n} nodules",
                             dataset / "annotations.csv")  # fmt: skip
        out.append(np.array([float(type_weights.get(k, 1.0)) for k in kinds]))
    return out


def _nodule_weights(
    dataset: Path, uids: list[str], nodules_mm: list[np.ndarray], cfg: DetectConfig
) -> list[np.ndarray] | None:
    """Per scan, each nodule's patch weight: its type's (:func:`_type_weights`) times
    ``small_weight`` under 6 mm; None when neither is asked for."""
    sizes = [np.asarray(n).reshape(-1, 4)[:, 3] for n in nodules_mm]
    w = _type_weights(dataset, uids, [len(d) for d in sizes], cfg.type_weights)
    if cfg.small_weight == 1.0:
        return w
    if not (np.isfinite(cfg.small_weight) and cfg.small_weight >= 0):
        raise InputError(f"small_weight must be a finite number >= 0, got {cfg.small_weight}")
    w = w or [np.ones(len(d)) for d in sizes]
    return [a * np.where(d < 6.0, cfg.small_weight, 1.0) for a, d in zip(w, sizes)]


def _hard_kind_weights(dataset: Path, uids: list[str], counts: list[int]) -> list[np.ndarray]:
    """Per scan, each hard negative's weight ``1 / (points of its kind over all scans)``: every
    kind then gets an equal share of the hard-negative patches."""
    kinds = read_hard_negative_kinds(dataset)
    per_scan = [kinds.get(u, [])[:n] + ["unknown"] * max(0, n - len(kinds.get(u, [])))
                for u, n in zip(uids, counts)]  # fmt: skip
    names, totals = np.unique(np.concatenate([np.asarray(k, dtype=str) for k in per_scan] or
                                             [np.zeros(0, str)]), return_counts=True)  # fmt: skip
    share = dict(zip(names.tolist(), (1.0 / totals).tolist()))
    return [np.array([share[k] for k in ks], dtype=float) for ks in per_scan]


def train_detector(
    dataset: str | Path,
    out_dir: str | Path,
    config: DetectConfig | None = None,
    *,
    max_steps: int | None = None,
    device: str | None = None,
    progress: bool = True,
    resume: bool | str = "auto",
    overwrite: bool = False,
) -> TrainResult:
    """Train on ``dataset`` (LUNA16 layout) into ``out_dir``; see the module doc."""
    t0, c0 = time.perf_counter(), time.process_time()
    cfg = dataclasses.replace(config or DetectConfig(), dataset=str(dataset))
    levels = len(cfg.model.channels) - 1  # the UNet halves the grid this often
    if cfg.patch < 2 ** (levels + 1):
        raise InputError(
            f"patch {cfg.patch} is too small: the network downsamples {2**levels}x and needs "
            f"at least {2 ** (levels + 1)} voxels a side (default 40)"
        )
    cfg.train = dataclasses.replace(cfg.train, progress=progress)
    if max_steps is not None:  # validate halfway and at the end (a validation costs ~10 steps)
        every = max(1, max_steps // 2)
        cfg.train = dataclasses.replace(cfg.train, max_steps=max_steps, val_every=every,
                                        checkpoint_every=max(1, max_steps // 4),
                                        warmup_steps=min(cfg.train.warmup_steps, max_steps // 4))  # fmt: skip
    if device is not None:
        cfg.train = dataclasses.replace(cfg.train, device=device)  # type: ignore[arg-type]
    ds = open_luna16(dataset)
    val_ids = ds.uids(list(cfg.val_subsets))
    train_ids = [u for u in ds.uids() if u not in val_ids]
    if not train_ids or not val_ids:
        raise InputError(
            f"need scans both in the validation subsets {list(cfg.val_subsets)} and in others; "
            f"found {len(val_ids)} and {len(train_ids)} (see the subset* folders)",
            dataset,
        )
    sp = cfg.model.spacing
    train_scans = _prepare_scans(ds, train_ids, sp, progress)
    val_scans = _prepare_scans(ds, val_ids, sp, progress)
    hard = read_hard_negatives(dataset)
    empty = np.zeros((0, 4))
    weights = _nodule_weights(Path(dataset), train_ids, [n for _, n, _ in train_scans], cfg)
    hard_rows = [hard.get(u, empty) for u in train_ids]
    hard_w = (_hard_kind_weights(Path(dataset), train_ids, [len(h) for h in hard_rows])
              if cfg.hard_per_kind and hard else None)  # fmt: skip
    data = PatchDataset([p for p, _, _ in train_scans], [to_voxels(p, n) for p, n, _ in train_scans],
                        cfg.patch, max(cfg.samples_per_epoch, cfg.train.batch_size),
                        cfg.pos_fraction,
                        [to_voxels(p, h) for (p, _, _), h in zip(train_scans, hard_rows)],
                        cfg.hard_fraction, weights, hard_w)  # fmt: skip
    seed_everything(cfg.train.seed)
    model = build_detector(cfg.model.channels)
    if cfg.init_weights:  # fine-tuning (a resumed run then restores its own checkpoint)
        load_weights(model, cfg.init_weights)

    def step(net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return centernet_loss(net(batch["image"]), batch)

    def validate(net: torch.nn.Module) -> dict[str, float]:
        dev = next(net.parameters()).device
        res = froc(evaluate_scans(net, val_scans, cfg.inference, dev))
        return {"cpm": res.cpm, **{f"sens@{r:g}": s for r, s in zip(res.rates, res.sensitivities)}}

    trainer = Trainer(model, data, step, cfg.train, out_dir, validate=validate, run_config=cfg)
    result = trainer.fit(resume=resume, overwrite=overwrite)
    # wall seconds (first line, like the other tasks), then this process's CPU seconds (all
    # threads; one with --threads 1) spent in this call: preparing scans, steps, validations
    (Path(out_dir) / "train_time_s.txt").write_text(
        f"{time.perf_counter() - t0:.1f}\ncpu {time.process_time() - c0:.1f}\n"
    )
    return result


#: The plain-phantom detector (``medimg.phantoms.detection`` scans, 3000 steps from scratch; the
#: shipped default until it was fine-tuned on varied thoraxes): the preset's starting weights.
PLAIN_PHANTOM_MODEL = Path(__file__).parent / "default" / "plain_phantoms"

#: ``medimg detect train --preset default``: the shipped model's recipe, in two stages on one
#: simulated set. Seeds 0..79 of the varied thorax generator (``simulate --varied``: every nodule
#: type, thorax variety, hard negatives) round-robin into 8 subsets; subset0 (10 scans)
#: validates, the other 70 train; seeds 5000+ are held out (bench/bench_detect_types.py).
#: Stage 1 fine-tunes :data:`PLAIN_PHANTOM_MODEL` (a shared CPU gives ~0.5-1 step/s). Batch 4
#: of 40^3 patches: 55 % near a nodule (juxtapleural, vessel-attached and perifissural nodules
#: twice as often, ground-glass and part-solid 1.5x: the types the plain-phantom model missed),
#: 25 % on a hard negative (vessel stub, branch point, plaque, fissure), 20 % anywhere; 1000
#: steps, validation every 500.
DEFAULT_PRESET = {"n_cases": 80, "n_subsets": 8, "seed": 0, "max_steps": 1000, "batch_size": 4,
                  "val_every": 500, "pos_fraction": 0.55, "hard_fraction": 0.25,
                  "type_weights": {"juxtapleural": 2.0, "vessel_attached": 2.0,
                                   "perifissural": 2.0, "ground_glass": 1.5, "part_solid": 1.5}}  # fmt: skip

#: Stage 2 continues from stage 1's best weights, longer and aimed at what stage 1 missed:
#: perifissural and ground-glass nodules (sensitivity 0.06 and 0.25 at 1 FP/scan after stage 1)
#: three and 2.5 times as often, nodules under 6 mm twice as often, each kind of hard negative
#: an equal share (stage 1's were 85 % branch points); 500 steps at a lower peak rate.
STAGE2_PRESET = {"max_steps": 500, "val_every": 250, "lr": 1.5e-3, "pos_fraction": 0.6,
                 "hard_fraction": 0.25, "small_weight": 2.0, "hard_per_kind": True,
                 "type_weights": {"perifissural": 3.0, "ground_glass": 2.5, "part_solid": 2.0,
                                  "juxtapleural": 2.0, "vessel_attached": 1.5,
                                  "calcified": 0.75}}  # fmt: skip


def preset_config(stage: int = 1, init: str | Path = PLAIN_PHANTOM_MODEL) -> DetectConfig:
    """The preset's ``stage`` (1: :data:`DEFAULT_PRESET`, 2: :data:`STAGE2_PRESET`) as a
    :class:`DetectConfig` starting from ``init`` (dataset not set)."""
    p = DEFAULT_PRESET
    cfg = DetectConfig(pos_fraction=p["pos_fraction"], hard_fraction=p["hard_fraction"],
                       type_weights=dict(p["type_weights"]), init_weights=str(init))  # fmt: skip
    cfg.train = dataclasses.replace(cfg.train, batch_size=p["batch_size"], max_steps=p["max_steps"],
                                    val_every=p["val_every"], checkpoint_every=p["val_every"] // 2)  # fmt: skip
    if stage == 1:
        return cfg
    q = STAGE2_PRESET
    cfg = dataclasses.replace(cfg, pos_fraction=q["pos_fraction"], hard_fraction=q["hard_fraction"],
                              type_weights=dict(q["type_weights"]), small_weight=q["small_weight"],
                              hard_per_kind=q["hard_per_kind"])  # fmt: skip
    cfg.train = dataclasses.replace(cfg.train, max_steps=q["max_steps"], lr=q["lr"],
                                    val_every=q["val_every"], checkpoint_every=q["val_every"] // 2)  # fmt: skip
    return cfg


#: Stages ``--preset default`` trains: both; the shipped model is stage 2's best checkpoint
#: (``work_dir/model2``), which beat stage 1's on the held-out scans (bench/RESULTS.md).
DEFAULT_STAGES = 2


def train_preset(
    work_dir: str | Path,
    *,
    stages: int = DEFAULT_STAGES,
    max_steps: int | None = None,
    progress: bool = True,
    device: str | None = None,
    resume: bool | str = "auto",
) -> TrainResult:
    """Simulate the preset's varied LUNA16-layout set into ``work_dir/data`` (once) and train
    stage 1 into ``work_dir/model``; with ``stages=2`` then stage 2 from stage 1's best weights
    into ``work_dir/model2`` (a finished stage 1 is not trained again). ``max_steps`` shortens
    each stage (validation halfway and at the end)."""
    if stages not in (1, 2):
        raise InputError(f"the detection preset has 1 or 2 stages, not {stages}")
    p, work = DEFAULT_PRESET, Path(work_dir)
    data = work / "data"
    if not (data / "annotations.csv").is_file():
        if data.exists():
            shutil.rmtree(data)  # a half-written simulation of ours
        write_thorax_luna16(data, p["n_cases"], seed=p["seed"], n_subsets=p["n_subsets"],
                            progress=progress)  # fmt: skip
    stage1 = work / "model"
    run = dict(max_steps=max_steps, progress=progress, device=device, resume=resume)
    # train_time_s.txt is written once a run has finished
    if stages == 1 or not (
        (stage1 / "train_time_s.txt").is_file() and find_checkpoint(stage1 / "best")
    ):
        res = train_detector(data, stage1, preset_config(1), **run)  # type: ignore[arg-type]
        if stages == 1:
            return res
    best1 = find_checkpoint(stage1 / "best") or find_checkpoint(stage1 / "last")
    init = best1 / "model.safetensors"  # type: ignore[operator]
    return train_detector(data, work / "model2", preset_config(2, init=init), **run)  # type: ignore[arg-type]


#: What :func:`export_model` copies into a model folder.
EXPORTED = ("config.yaml", "model.safetensors", "train_time_s.txt")


def check_export(dest: str | Path, overwrite: bool = False) -> None:
    """Refuse, before training, an export folder whose model files exist (without
    ``overwrite``)."""
    check_outputs([Path(dest) / name for name in EXPORTED], overwrite=overwrite)


def export_model(run_dir: str | Path, dest: str | Path, overwrite: bool = False) -> Path:
    """Copy a run's ``config.yaml``, best (else last) weights and ``train_time_s.txt`` (if
    any) into a model folder ``dest``; existing model files there are replaced only with
    ``overwrite``, each file appearing whole."""
    run, out = Path(run_dir), Path(dest)
    ckpt = find_checkpoint(run / "best") or find_checkpoint(run / "last")
    if ckpt is None or not (run / "config.yaml").is_file():
        raise InputError("no finished training here (config.yaml and best/ or last/)", run)
    check_export(out, overwrite)
    sources = {"config.yaml": run / "config.yaml", "model.safetensors": ckpt / "model.safetensors",
               "train_time_s.txt": run / "train_time_s.txt"}  # fmt: skip
    copy_files(
        [(sources[n], out / n) for n in EXPORTED if sources[n].is_file()], overwrite=overwrite
    )
    return out
