"""Where training data comes from: simulated sets on disk, CSV manifests, MedMNIST files; the
default preset; exporting a model folder."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from medimg.engine import TrainConfig, TrainResult
from medimg.errors import InputError
from medimg.io.output import atomic_dir, check_outputs, copy_files
from medimg.tasks.cli_helpers import check_init_preset
from medimg.tasks.diagnose.data import WINDOWS, CaseArrays, load_case_images, prepare_image
from medimg.tasks.diagnose.safeguard import FILE_NAME as SAFEGUARD
from medimg.tasks.diagnose.train import (
    MODEL_WEIGHTS,
    MODEL_YAML,
    DiagnoseConfig,
    train_diagnosis,
)
from medimg.typing import PathType

__all__ = ["check_export", "export_model", "load_manifest_arrays", "preset_films", "train_from_args",
           "train_preset", "write_simulated_set"]  # fmt: skip

CLASSES = ["negative", "positive"]


def write_simulated_set(
    out: PathType, kind: str, *, n_train: int = 200, n_val: int = 50, n_test: int = 100,
    seed: int = 0, overwrite: bool = False,
) -> Path:  # fmt: skip
    """Phantom cases as NIfTI (one file per modality) + ``manifest.csv`` (path[,path2], label,
    patient_id, split) + ``ground_truth.json`` (lesion boxes, per-slice labels, findings).
    ``kind="chest"``: the ``chest-films`` preset's films (:func:`preset_films`; train,
    validation and test splits from its training, validation and held-out patients).

    Cases are made and written one at a time; the folder appears only complete (an earlier
    simulated set is replaced only with ``overwrite``)."""
    from medimg.io.api import save
    from medimg.phantoms.diagnosis import KINDS, iter_cases

    make = _chest_cases if kind == "chest" else iter_cases
    counts = {"train": n_train, "val": n_val, "test": n_test}
    if any(n < 0 for n in counts.values()) or sum(counts.values()) < 1:
        raise InputError(f"need at least 1 case and no negative counts, got {counts}")
    if kind not in (*KINDS, "chest"):
        raise InputError(f"kind must be one of chest, {', '.join(KINDS)}, got {kind!r}")
    root = Path(out)
    rows, truth = [], {}
    with atomic_dir(root, overwrite) as tmp:
        for s, (split, n) in enumerate(counts.items(), start=seed):
            at = (seed, split) if kind == "chest" else s
            for t, case in enumerate(make(kind, n, seed=at) if n else []):  # type: ignore[operator]
                cid = f"{split}{t:04d}"
                paths = []
                for mod, image in case.to_images().items():
                    rel = f"images/{cid}_{mod}.nii.gz"
                    save(image, tmp / rel)
                    paths.append(rel)
                rows.append([*paths, CLASSES[case.label], cid, split])
                truth[cid] = {"label": case.label, "finding": case.finding, "boxes": case.boxes,
                              "instance_labels": None if case.instance_labels is None
                              else case.instance_labels.tolist()}  # fmt: skip
        n_mod = len(rows[0]) - 3
        header = ["path", *[f"path{i}" for i in range(2, n_mod + 1)], "label", "patient_id",
                  "split"]  # fmt: skip
        with open(tmp / "manifest.csv", "w", newline="") as fh:
            csv.writer(fh).writerows([header, *rows])
        (tmp / "ground_truth.json").write_text(json.dumps({"kind": kind, "cases": truth}, indent=1))
    return root


def _chest_cases(kind: str, n: int, seed: tuple[int, str]) -> list:
    """:func:`write_simulated_set`'s cases for ``kind="chest"``: films of :func:`preset_films`
    (``seed`` = (seed, split)) as objects with the phantom cases' attributes."""
    from types import SimpleNamespace

    from medimg.io.image import Image

    base, split = seed
    data = preset_films(split, n, seed=base)
    spacing = np.diag([-1.5, 1.5, 1.5, 1.0])  # about the film's pixel at 256 px
    return [SimpleNamespace(label=int(y), finding="nodule" if y else "none", boxes=b,
                            instance_labels=None,
                            to_images=lambda x=x: {"DX": Image(x.copy(), spacing, modality="DX")})
            for x, y, b in zip(data.x, data.y, data.boxes)]  # fmt: skip


def load_manifest_arrays(
    manifest, rows, size: list[int] | None, windows: list
) -> tuple[CaseArrays, list[int]]:
    """Read a manifest's rows into arrays at ``size`` (default: the first image's size)."""
    xs, present = [], []
    channels = None  # the first case's; later RGB images become grey to match a grey first one
    for r in rows:
        images = load_case_images(list(r.paths), manifest.num_modalities, channels)
        ref = next(im for im in images if im is not None)
        channels = channels or ref.num_channels
        size = size or list(ref.spatial_shape)
        if len(size) != ref.spatial_ndim:
            raise InputError(
                f"--input-size gives {len(size)} number(s) but the images are "
                f"{ref.spatial_ndim}D; give one size per axis (e.g. 64 64)",
                r.paths[0],
            )
        chans = [np.zeros((ref.num_channels, *size), np.float32) if im is None
                 else prepare_image(im, size, w) for im, w in zip(images, windows)]  # fmt: skip
        xs.append(np.concatenate(chans))
        present.append([im is not None for im in images])
    if manifest.multilabel:
        y = np.zeros((len(rows), len(manifest.classes)), np.float32)
        for i, r in enumerate(rows):
            y[i, list(r.labels)] = 1
    else:
        y = np.array([r.labels[0] for r in rows], np.float32)
    arrays = CaseArrays(np.stack(xs), y, np.array(present, bool), [r.case_id for r in rows])
    return arrays, list(size)  # type: ignore[arg-type]


_CODES = ("CT", "PT", "MR", "DX", "CR", "US", "NM", "MG")


def _modalities_of(manifest) -> list[str]:
    """Modality per path column: a ``_<CODE>`` file-name suffix (NIfTI stores none), else the
    modality the reader reports (DICOM)."""
    from medimg.io.api import load

    out = []
    for _i, p in enumerate(next(r for r in manifest.rows if all(r.paths)).paths):
        code = p.name.split(".")[0].rsplit("_", 1)[-1].upper()
        out.append(code if code in _CODES else load(p).modality)
    return out


def _labelled_split(train: CaseArrays, fraction: float, seed: int) -> tuple[CaseArrays, CaseArrays]:
    """Keep labels for ``fraction`` of the cases (stratified); the rest become unlabelled."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(train.y if train.y.ndim == 1 else train.y[:, 0]):
        idx = np.nonzero((train.y if train.y.ndim == 1 else train.y[:, 0]) == c)[0]
        keep += rng.permutation(idx)[: max(1, round(fraction * len(idx)))].tolist()
    rest = np.setdiff1d(np.arange(len(train)), keep)
    return train.subset(sorted(keep)), train.subset(rest)


#: training steps of ``diagnose train DATA`` without ``--max-steps``
DEFAULT_STEPS = 600


def _train_cfg(args: argparse.Namespace, steps: int) -> TrainConfig:
    return TrainConfig(max_steps=steps, batch_size=args.batch_size, lr=args.lr, lr_schedule="cosine",
                       val_every=max(steps // 10, 1), checkpoint_every=max(steps // 10, 1),
                       seed=args.seed, device=args.device or "auto",
                       progress=not args.quiet)  # fmt: skip


def train_from_args(args: argparse.Namespace) -> tuple[TrainResult, dict, Path]:
    """``medimg diagnose train``: resolve the data source, build the config, train."""
    check_init_preset(args)
    if args.preset:
        out = Path(args.out or f"runs/diagnose/{args.preset}")
        res, summary = train_preset(out, preset=args.preset,
                                    max_steps=args.max_steps, device=args.device or "auto",
                                    progress=not args.quiet)  # fmt: skip
        return res, summary, out
    if args.data is None:
        raise InputError(
            "train needs DATA (a folder with manifest.csv, a .csv or a .npz), or --preset default"
        )
    src = Path(args.data)
    base = dict(supervision=args.supervision, fusion=args.fusion, arch=args.arch, width=args.width,
                train=_train_cfg(args, args.max_steps or DEFAULT_STEPS))  # fmt: skip
    if src.suffix == ".npz":
        from medimg.datasets.medmnist import load_medmnist

        mm = load_medmnist(src)
        (xtr, ytr), (xva, yva) = mm.splits["train"], mm.splits["val"]
        classes = args.classes or [str(k) for k in range(mm.num_classes)]
        cfg = DiagnoseConfig(task=mm.task, classes=classes, modalities=["OT"], channels=mm.channels,
                             windows=[[0.0, 1.0]], input_size=list(xtr.shape[2:]), **base)  # fmt: skip
        one = lambda x, y: CaseArrays(x, y.astype(np.float32), np.ones((len(x), 1), bool),  # noqa: E731
                                      [f"c{i}" for i in range(len(x))])  # fmt: skip
        train, val = one(xtr, ytr), one(xva, yva)
    else:
        from medimg.datasets.manifest import patient_split, read_manifest

        man = read_manifest(src / "manifest.csv" if src.is_dir() else src, classes=args.classes,
                            allow_missing_modality=args.fusion != "early")  # fmt: skip
        mods = args.modalities or _modalities_of(man)
        if len(mods) != man.num_modalities:
            raise InputError(f"--modalities names {len(mods)} modalities but the manifest has "
                             f"{man.num_modalities} path columns")  # fmt: skip
        windows = [list(WINDOWS[m]) if m in WINDOWS else None for m in mods]
        if man.split("train"):
            tr_rows, va_rows = man.split("train"), man.split("val")
        else:
            tr_rows, va_rows = patient_split(man.rows, 0.2, args.seed)
        train, size = load_manifest_arrays(man, tr_rows, args.input_size, windows)
        val, _ = load_manifest_arrays(man, va_rows, size, windows)
        cfg = DiagnoseConfig(task="multilabel" if man.multilabel else ("binary" if len(man.classes) == 2 else "multiclass"),
                             classes=man.classes, modalities=mods, windows=windows, input_size=size, **base)  # fmt: skip
    unlabelled = None
    if args.supervision == "semi":
        if not 0 < args.labelled_fraction < 1:
            raise InputError(
                "semi supervision needs --labelled-fraction between 0 and 1 (e.g. 0.1)"
            )
        train, unlabelled = _labelled_split(train, args.labelled_fraction, args.seed)
    out = Path(args.out or f"runs/diagnose/{src.stem}_{args.supervision}")
    init = args.init
    if init == "default":
        from medimg.tasks.diagnose.predict import DEFAULT_MODEL

        init = DEFAULT_MODEL
    res, summary = train_diagnosis(
        cfg, train, val, out, unlabelled=unlabelled, overwrite=args.overwrite,
        resume=True if args.resume else "auto", init=init,
    )  # fmt: skip
    return res, summary, out


#: ``medimg diagnose train --preset default``: the shipped model's recipe (chest X-ray nodules).
DEFAULT_PRESET = {"kind": "xray", "n_train": 2400, "n_val": 300, "seed": 0, "max_steps": 1000,
                  "width": 16, "batch_size": 32, "lr": 2e-3}  # fmt: skip
#: ``--preset chest-films``: nodules on films of projected 3D thoraxes (:mod:`.chest_films`),
#: training patients 0-35, validation patients 1000-1005 (held apart; best step and
#: temperature), 256^2 input, trained on 96 px crops. Not yet good enough to ship (model card).
CHEST_FILMS_PRESET = {"train_patients": list(range(36)), "val_patients": list(range(1000, 1006)),
                      "n_train": 3000, "n_val": 400, "seed": 0, "max_steps": 1600, "width": 8,
                      "batch_size": 64, "patch": 96, "lr": 2e-3, "input_size": 256,
                      "detector": 384, "voxel_mm": 3.0}  # fmt: skip
PRESETS = ("default", "chest-films", "chest-heatmap")
#: Patients kept out of training and validation, for in-distribution checks (bench, safeguard).
TEST_PATIENTS = list(range(2000, 2006))


def preset_films(
    split: str, n: int | None = None, progress: bool = False, seed: int | None = None
) -> CaseArrays:
    """The ``chest-films`` preset's ``train``, ``val`` or ``test`` films (backgrounds rendered or
    read from the cache; ``n`` films, default the preset's count; ``seed`` default the
    preset's)."""
    from medimg.tasks.diagnose.chest_films import FilmRecipe, film_arrays, load_backgrounds

    p = CHEST_FILMS_PRESET
    patients = {"train": p["train_patients"], "val": p["val_patients"], "test": TEST_PATIENTS}
    count = {"train": p["n_train"], "val": p["n_val"], "test": 300}
    if split not in patients:
        raise InputError(f"split must be train, val or test, got {split!r}")
    recipe = FilmRecipe(detector=int(p["detector"]), voxel_mm=float(p["voxel_mm"]),  # type: ignore[call-overload]
                        input_size=int(p["input_size"]))  # type: ignore[call-overload]  # fmt: skip
    bgs = load_backgrounds(patients[split], recipe, progress=progress)  # type: ignore[arg-type]
    base = int(p["seed"]) if seed is None else seed  # type: ignore[call-overload]
    rng_seed = base + ("train", "val", "test").index(split)
    return film_arrays(bgs, int(n or count[split]), rng_seed, recipe, prefix=split)  # type: ignore[call-overload]


def _phantom_sets(n_fit: int, n_held: int) -> tuple[CaseArrays, CaseArrays]:
    """The default preset's phantoms: training seed and validation seed."""
    from medimg.phantoms.diagnosis import make_cases
    from medimg.tasks.diagnose.data import from_phantoms

    kind, seed = str(DEFAULT_PRESET["kind"]), int(DEFAULT_PRESET["seed"])  # type: ignore[call-overload]
    return (from_phantoms(make_cases(kind, n_fit, seed=seed)),
            from_phantoms(make_cases(kind, n_held, seed=seed + 1)))  # fmt: skip


def train_preset(
    out: PathType, *, preset: str = "default", max_steps: int | None = None,
    device: str = "auto", progress: bool = True,
) -> tuple[TrainResult, dict]:  # fmt: skip
    """Train a preset: ``default`` (the shipped model: fresh phantoms, seeds 0/1; held-out
    figures use seed 2) or ``chest-films`` (crops of films of the preset's patients,
    :func:`preset_films`, :class:`~medimg.tasks.diagnose.chest_films.PatchDataset`; best step and
    temperature chosen on whole films of the validation patients)."""
    if preset not in PRESETS:
        raise InputError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if preset == "chest-heatmap":
        return _train_heatmap_preset(out, max_steps, device, progress)
    p = DEFAULT_PRESET if preset == "default" else CHEST_FILMS_PRESET
    if preset == "default":
        train, val = _phantom_sets(int(p["n_train"]), int(p["n_val"]))  # type: ignore[call-overload]
    else:
        train, val = (
            preset_films("train", progress=progress),
            preset_films("val", progress=progress),
        )
    steps = int(max_steps or p["max_steps"])  # type: ignore[call-overload]
    tcfg = TrainConfig(max_steps=steps, batch_size=int(p["batch_size"]), lr=float(p["lr"]),
                       lr_schedule="cosine", val_every=max(steps // 10, 1),
                       checkpoint_every=max(steps // 10, 1), device=device, progress=progress)  # type: ignore[call-overload]  # fmt: skip
    cfg = DiagnoseConfig(classes=["normal", "nodule"], modalities=["DX"], windows=[None],
                         input_size=list(train.x.shape[2:]), width=int(p["width"]), train=tcfg)  # type: ignore[call-overload]  # fmt: skip
    patches = None
    if preset == "chest-films":
        from medimg.tasks.diagnose.chest_films import PatchDataset

        patches = PatchDataset(train, int(p["patch"]), cfg.augment)  # type: ignore[call-overload]
    return train_diagnosis(cfg, train, val, out, overwrite=True, resume=False, dataset=patches)


def _train_heatmap_preset(
    out: PathType, max_steps: int | None, device: str, progress: bool
) -> tuple[TrainResult, dict]:  # fmt: skip
    """The heat-map detector's recipe (:mod:`.heatmap_train`), reported like an engine run."""
    from medimg.tasks.diagnose.heatmap_train import train_heatmap

    run = Path(out)
    s = train_heatmap(run, max_steps=max_steps, progress=progress, device=device)
    res = TrainResult(run_dir=run, last_step=s["last_step"], best_metric=s["best_val_auc_10mm"],
                      best_step=s["best_step"], stopped_early=False,
                      last_checkpoint=run / MODEL_WEIGHTS, best_checkpoint=run / MODEL_WEIGHTS,
                      metrics_path=run / "heatmap_summary.json", config_path=run / MODEL_YAML)  # fmt: skip
    return res, s


def check_export(dest: PathType, overwrite: bool = False, run_dir: PathType | None = None) -> None:
    """Refuse, before training, an ``--export`` folder whose model files exist (without
    ``overwrite``) or that is or holds the run folder."""
    out = Path(dest)
    check_outputs([out / MODEL_YAML, out / MODEL_WEIGHTS, out / SAFEGUARD], overwrite=overwrite,
                  inputs=[run_dir] if run_dir is not None else [])  # fmt: skip


def export_model(run_dir: PathType, dest: PathType, overwrite: bool = False) -> Path:
    """Copy ``model.yaml``, ``model.safetensors`` and the safeguard of a finished run into
    ``dest`` (existing model files there are replaced only with ``overwrite``; each file
    appears whole)."""

    run, out = Path(run_dir), Path(dest)
    if not (run / MODEL_YAML).is_file() or not (run / MODEL_WEIGHTS).is_file():
        raise InputError(f"no finished training here ({MODEL_YAML} and {MODEL_WEIGHTS})", run)
    if out.resolve() == run.resolve():
        return out  # the run folder already is a model folder
    check_export(out, overwrite)
    names = [MODEL_YAML, MODEL_WEIGHTS] + [SAFEGUARD] * (run / SAFEGUARD).is_file()
    copy_files([(run / n, out / n) for n in names], overwrite=overwrite)
    if not (run / SAFEGUARD).is_file():
        (out / SAFEGUARD).unlink(missing_ok=True)  # never keep another model's statistics
    return out


def calibrate_model(
    model: PathType | None = None, data: PathType | None = None, cases: int = 600,
    preset: str | None = None,
) -> Path:  # fmt: skip
    """``medimg diagnose calibrate``: recompute a model's out-of-distribution safeguard and
    write it beside its weights. ``data``: in-distribution images (a manifest .csv or a folder
    with ``manifest.csv``; a fifth held out for the threshold); else the images of ``preset``'s
    recipe (default for the shipped model: ``default``): ``cases`` of its training seed or
    patients to fit, ``cases // 2`` of its validation ones for the threshold."""
    from medimg.tasks.diagnose.predict import Diagnoser
    from medimg.tasks.diagnose.safeguard import calibrate

    dx = Diagnoser(model, device="cpu")
    if dx.cfg.supervision == "mil":
        raise InputError("MIL models have no safeguard (their instances are slices)")
    if data is None:
        if model is not None and preset is None:
            raise InputError("give --data (in-distribution images of this model, its manifest) "
                             "or --preset (the recipe it was trained with)")  # fmt: skip
        preset = preset or "default"
        if preset not in PRESETS:
            raise InputError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        if preset == "default":
            fit, held = _phantom_sets(cases, max(cases // 2, 4))
            source = f"{cases} xray phantoms of the training recipe; threshold on {len(held)} more"
        else:  # chest-films and chest-heatmap: films of the same patients and recipe
            fit, held = preset_films("train", cases), preset_films("val", max(cases // 2, 4))
            source = (f"{cases} chest films of the training patients; threshold on {len(held)} "
                      "films of the validation patients")  # fmt: skip
    else:
        from medimg.datasets.manifest import read_manifest

        src = Path(data)
        man = read_manifest(src / "manifest.csv" if src.is_dir() else src,
                            allow_missing_modality=True, require_labels=False)  # fmt: skip
        fit, _ = load_manifest_arrays(man, man.rows, list(dx.cfg.input_size), dx.cfg.windows)
        held, source = None, f"{len(man.rows)} images of {src.name}"
    return calibrate(dx.model, fit, held, source=source).save(dx.folder)
