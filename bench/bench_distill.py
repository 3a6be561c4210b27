"""Small students distilled from the shipped models: size, accuracy and CPU latency.

``seg``: writes the default segmentation preset's synthetic set (``--kind ct`` for the teacher
trained on the ``ct`` kind: 16 training phantoms, seeds 0-15, its own training cases; 6
held-out, seeds 16-21), distils the shipped abdominal
model into a student (``medimg segment train DATA --distill-from default --arch small``) and
scores teacher and student on the held-out ``imagesTs`` (Dice per organ with mirroring and
post-processing, as ``segment predict``), with parameters and CPU latency per case.

``mri``: distils the shipped MRI model into a student (``medimg recon mri train --distill-from
default --arch small``), then scores both on the real-brain slices the MRI model card reports
(``bench/bench_mri_real.py``'s ITK head and nibabel crop, 4x and 8x; needs
``MEDIMG_DATA_CACHE``), with parameters and latency per slice.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python bench/bench_distill.py seg --work runs/distill_seg \
        --max-steps 600
    MEDIMG_DATA_CACHE=/tmp/rdcache OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python \
        bench/bench_distill.py mri --work runs/distill_mri --max-steps 300

A finished student is reused (``--score-only`` skips training altogether); one thread throughout.
The abdominal teacher (trained on the ``abdomen`` kind) is distilled on its own 60 training
abdomens (the preset's data, ``medimg segment train DATA --distill-from default --arch small``)
and both are scored on the held-out abdomens of its model card:

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python bench/bench_distill.py seg \
        --work runs/distill_abd --abdomens 5
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bench_seg(work: Path, max_steps: int, score_only: bool, kind: str | None = None) -> dict:
    from medimg.io.api import load
    from medimg.metrics.segmentation import case_metrics
    from medimg.tasks.segment.distill import distill_segmentation
    from medimg.tasks.segment.models import count_parameters
    from medimg.tasks.segment.predict import DEFAULT_MODEL, Segmenter
    from medimg.tasks.segment.presets import DEFAULT_PRESET as p

    data, student = work / "data", work / "student"
    if not (data / "imagesTs").is_dir():
        from medimg.phantoms.segmentation import write_msd_dataset

        write_msd_dataset(data, kind or str(p["kind"]), n_train=int(p["n_train"]),
                          n_test=int(p["n_test"]), seed=int(p["seed"]))  # fmt: skip
    cpu0, t0 = _cpu_s(), time.perf_counter()
    if not score_only:
        distill_segmentation(data, student, "default", max_steps=max_steps, device="cpu",
                             progress=False, resume="auto")  # fmt: skip
    train = {"cpu_s": round(_cpu_s() - cpu0, 1), "wall_s": round(time.perf_counter() - t0, 1)}
    meta = json.loads((data / "dataset.json").read_text())
    out: dict = {"train (this call)": train, "max_steps": max_steps, "data": meta.get("name"),
                 "training_cases": len(meta.get("training", []))}  # fmt: skip
    for name, folder in (("teacher", DEFAULT_MODEL), ("student", student)):
        seg = Segmenter(folder, device="cpu")
        labels = list(range(1, seg.plan.num_classes))
        cases, times = [], []
        for img in sorted((data / "imagesTs").glob("*_0000.nii.gz")):
            cid = img.name[: -len("_0000.nii.gz")]
            image = load(img, modality="CT")
            gt = load(data / "labelsTs" / f"{cid}.nii.gz", is_label=True)
            t1 = time.perf_counter()
            pred = seg.segment(image)
            times.append(time.perf_counter() - t1)
            cases.append(case_metrics(pred.array[0], gt.array[0], labels=labels,
                                      spacing=image.spacing))  # fmt: skip
        dice = {seg.plan.label_names[k]: round(float(np.mean([c[k]["dice"] for c in cases])), 4)
                for k in labels}  # fmt: skip
        out[name] = {"filters": seg.plan.filters, "parameters": count_parameters(seg.models[0]),
                     "dice": dice, "mean_dice": round(float(np.mean(list(dice.values()))), 4),
                     "latency_s_per_case (mirrored, median)": round(float(np.median(times)), 3),
                     "cases": len(cases)}  # fmt: skip
    t, s = out["teacher"], out["student"]
    out["param_ratio"] = round(t["parameters"] / s["parameters"], 2)
    out["dice_gap (teacher - student)"] = {k: round(t["dice"][k] - s["dice"][k], 4)
                                           for k in t["dice"]}  # fmt: skip
    return out


def score_abdomens(work: Path, per_phase: int) -> dict:
    """Teacher (the shipped abdominal model) and ``work/student`` on the held-out generated
    abdomens of ``bench_segment_abdomen.py`` (seeds from 5000, ``per_phase`` per contrast
    phase), predicted as ``segment predict`` does: Dice per organ per phase, parameters and
    seconds per case (one thread)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_segment_abdomen import heldout
    from medimg.tasks.segment.models import count_parameters
    from medimg.tasks.segment.predict import DEFAULT_MODEL, Segmenter

    out: dict = {"per_phase": per_phase}
    for name, folder in (("teacher", DEFAULT_MODEL), ("student", work / "student")):
        seg = Segmenter(folder, device="cpu")
        t0 = time.perf_counter()
        res, _ = heldout(seg, per_phase)
        secs = (time.perf_counter() - t0) / (3 * per_phase)
        dice = {
            ph: {o: round(v["dice"], 4) for o, v in organs.items()} for ph, organs in res.items()
        }
        worst = {ph: {o: round(v["dice_min"], 4) for o, v in organs.items()}
                 for ph, organs in res.items()}  # fmt: skip
        organ_mean = {o: round(float(np.mean([dice[ph][o] for ph in dice])), 4)
                      for o in next(iter(dice.values()))}  # fmt: skip
        out[name] = {"filters": seg.plan.filters, "parameters": count_parameters(seg.models[0]),
                     "dice": dice, "dice_worst": worst, "dice_per_organ": organ_mean,
                     "mean_dice": round(float(np.mean(list(organ_mean.values()))), 4),
                     "s_per_case (incl. generating it)": round(secs, 2)}  # fmt: skip
    t, s = out["teacher"], out["student"]
    out["param_ratio"] = round(t["parameters"] / s["parameters"], 2)
    out["dice_gap per organ (teacher - student)"] = {
        o: round(t["dice_per_organ"][o] - s["dice_per_organ"][o], 4) for o in t["dice_per_organ"]
    }
    return out


def seg_call_latency(work: Path, reps: int = 7) -> dict:
    """Median ms of one network call on the batch ``segment predict`` sends (2 windows of the
    plan's patch), teacher and student alternating, one thread (less noisy than whole cases
    on a shared machine)."""
    import torch

    from medimg.tasks.segment.predict import DEFAULT_MODEL, Segmenter

    nets = {k: Segmenter(v, device="cpu") for k, v in
            (("teacher", DEFAULT_MODEL), ("student", work / "student"))}  # fmt: skip
    x = torch.randn(2, 1, *nets["teacher"].plan.patch_size)
    times: dict = {k: [] for k in nets}
    with torch.no_grad():
        for _ in range(reps):
            for k, seg in nets.items():
                t0 = time.perf_counter()
                seg.models[0](x)
                times[k].append(1000 * (time.perf_counter() - t0))
    return {f"{k} call_ms (median of {reps})": round(float(np.median(v)), 1)
            for k, v in times.items()}  # fmt: skip


def score_on_real_brains(models: dict[str, str], quick: bool = False) -> dict:
    """PSNR/SSIM (mean [95 % CI] over slices), parameters and seconds per slice of each model
    on ``bench_mri_real.py``'s held-out real brains (same slices, seeds, coils, noise, masks)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_mri_real import ACCELS, kspace_of, validation_subjects
    from medimg.metrics.image_quality import psnr_slicewise, ssim_slicewise
    from medimg.metrics.stats import bootstrap_ci
    from medimg.tasks.reconstruct.mri.infer import Reconstructor

    subjects = validation_subjects(quick)
    recs = {k: Reconstructor("net", v) for k, v in models.items()}
    out: dict = {k: {"parameters": sum(p.numel() for p in r.net.parameters())}
                 for k, r in recs.items()}  # fmt: skip
    for accel in ACCELS:
        per: dict = {k: {"psnr": [], "ssim": [], "t": []} for k in recs}
        for si, vol in enumerate(subjects.values()):
            cases = [kspace_of(s, accel, 1000 * si + i) for i, s in enumerate(vol)]
            gt = np.stack([c["target"].numpy() for c in cases])
            for k, rec in recs.items():
                preds = []
                for c in cases:
                    t0 = time.perf_counter()
                    preds.append(np.asarray(rec(c["kspace"][None], c["mask"])[0], np.float32))
                    per[k]["t"].append(time.perf_counter() - t0)
                pred = np.stack(preds)
                per[k]["psnr"] += list(psnr_slicewise(gt, pred, data_range=float(gt.max())))
                per[k]["ssim"] += list(ssim_slicewise(gt, pred, data_range=float(gt.max())))
        for k, v in per.items():
            out[k][f"{accel:g}x"] = {"psnr": str(bootstrap_ci(v["psnr"])),
                                     "ssim": str(bootstrap_ci(v["ssim"])),
                                     "psnr_mean": round(float(np.mean(v["psnr"])), 2),
                                     "s_per_slice (median)": round(float(np.median(v["t"])), 3),
                                     "slices": len(v["psnr"])}  # fmt: skip
        if {"teacher", "student"} <= set(per):
            d = np.asarray(per["teacher"]["psnr"]) - np.asarray(per["student"]["psnr"])
            out[f"psnr_gap {accel:g}x (teacher - student, paired)"] = str(bootstrap_ci(list(d)))
    return out


def bench_mri(work: Path, max_steps: int, score_only: bool) -> dict:
    from medimg.tasks.reconstruct.mri.distill import distill_mri

    student = work / "student"
    cpu0, t0 = _cpu_s(), time.perf_counter()
    if not score_only:
        distill_mri("default", student, max_steps=max_steps, progress=False, resume="auto")
    train = {"cpu_s": round(_cpu_s() - cpu0, 1), "wall_s": round(time.perf_counter() - t0, 1)}
    out = {"train (this call)": train, "max_steps": max_steps}
    return {**out, **score_on_real_brains({"teacher": "default", "student": str(student)})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task", choices=("seg", "mri"))
    ap.add_argument("--work", required=True)
    ap.add_argument("--max-steps", type=int, default=600)
    ap.add_argument("--score-only", action="store_true", help="score an existing student")
    ap.add_argument("--latency-only", action="store_true",
                    help="seg: only the network-call latency of teacher and student")  # fmt: skip
    ap.add_argument("--abdomens", type=int, metavar="PER_PHASE",
                    help="seg: score teacher and the existing student on this many held-out "
                         "generated abdomens per phase (bench_segment_abdomen.py's set)")  # fmt: skip
    ap.add_argument("--kind", choices=("ct", "abdomen"),
                    help="seg: the synthetic set (default: the default preset's kind; pick the "
                         "one the shipped teacher was trained on)")  # fmt: skip
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    work = Path(args.work)
    if args.task == "seg" and args.latency_only:
        report = seg_call_latency(work)
    elif args.task == "seg" and args.abdomens:
        report = score_abdomens(work, args.abdomens)
    elif args.task == "seg":
        report = bench_seg(work, args.max_steps, args.score_only, args.kind)
    else:
        report = bench_mri(work, args.max_steps, args.score_only)
    print(json.dumps(report, indent=1))
    work.mkdir(parents=True, exist_ok=True)
    name = "latency" if args.latency_only else "abdomens" if args.abdomens else args.task
    (work / f"bench_distill_{name}.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
