"""Held-out nodule detection over many varied thoraxes, every model on each scan prepared once.

The same figures as ``bench_detect_types.py`` (FROC/CPM and sensitivity at 1 FP/scan per nodule
type and size, scan-bootstrap 95 % CIs, CPM per seed block), at about two thirds of its CPU
time when several models are compared: each scan (seeds ``start .. start+scans-1`` of each
``--seeds`` block; training never saw 5000+) is simulated in memory and rounded to int16 HU as
``simulate`` writes it, resampled once, and passed to every model. A scan already written by
``detect simulate --varied`` can be read instead of simulated (``--scans-from``, repeatable;
matched by its SeriesInstanceUID, which the seed decides). Each scan's ground truth and
candidates are kept in ``--data`` as they come, so an interrupted run resumes where it stopped.

    nice -n 5 .venv/bin/python bench/bench_detect_heldout.py --scans 34 \\
        --seeds 5000 6000 7000 --model NEW --model OLD --data /tmp/keep [--scans-from DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ANN_HEADER = "seriesuid,coordX,coordY,coordZ,diameter_mm,nodule_type,margin"


def _thorax_uid(seed: int) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[f"medimg-thorax-{seed}"])  # as simulate names it


def _index_written(folders: list[str]) -> dict[str, tuple[Path, Path]]:
    """``{uid: (.mhd path, dataset root)}`` of the LUNA16-layout folders given."""
    out = {}
    for root in map(Path, folders):
        for mhd in root.glob("subset*/*.mhd"):
            out[mhd.stem] = (mhd, root)
    return out


def _rows_of(root: Path, name: str, uid: str) -> list[str]:
    lines = (root / name).read_text().splitlines()
    return [line for line in lines[1:] if line.split(",")[0] == uid]


def _scan(seed: int, written: dict[str, tuple[Path, Path]]):
    """``(image, annotation rows, excluded rows)`` of the varied thorax of ``seed``."""
    from medimg.datasets.luna16 import lps_to_ras
    from medimg.io.api import load
    from medimg.io.image import Image
    from medimg.phantoms.thorax import thorax_ct_case

    uid = _thorax_uid(seed)
    if uid in written:
        mhd, root = written[uid]
        return (load(mhd), _rows_of(root, "annotations.csv", uid),
                _rows_of(root, "annotations_excluded.csv", uid))  # fmt: skip
    case = thorax_ct_case(seed)
    hu = np.clip(np.rint(case.image.array), -32768, 32767).astype(np.int16)  # as written
    image = Image(hu.astype(np.float32), case.image.affine, modality="CT")
    ann, exc = [], []
    for f in case.findings:
        x, y, z = (round(float(v), 3) for v in lps_to_ras(np.asarray(f.center_ras))[0])
        if f.included:
            ann.append(f"{uid},{x},{y},{z},{round(f.diameter_mm, 4)},{f.kind},{f.margin}")
        else:
            exc.append(f"{uid},{x},{y},{z},{round(f.diameter_mm, 4)}")
    return image, ann, exc


def _run_scans(seeds: list[int], models: list[str | None], data: Path, from_dirs: list[str]):
    """Ground truth and candidates of every scan, one JSON per seed in ``data`` (resumable)."""
    import torch

    from medimg.tasks.detect.data import prepare
    from medimg.tasks.detect.infer import detect_prepared
    from medimg.tasks.detect.predict import Detector

    torch.set_num_threads(1)
    dets = [Detector(m) for m in models]
    keys = [str(m or "default") for m in models]
    written = _index_written(from_dirs)
    cpu = {"prepare": 0.0, **{k: 0.0 for k in keys}}
    n_done = 0
    for seed in seeds:
        f = data / f"seed_{seed}.json"
        rec = json.loads(f.read_text()) if f.is_file() else {}
        todo = [i for i, k in enumerate(keys) if k not in rec.get("candidates", {})]
        if not todo:
            continue
        c0 = time.process_time()
        image, ann, exc = _scan(seed, written)
        spacings = {dets[i].spacing for i in todo}
        preps = {sp: prepare(image, sp) for sp in spacings}
        cpu["prepare"] += time.process_time() - c0
        rec.update(uid=_thorax_uid(seed), annotations=ann, excluded=exc)
        rec.setdefault("candidates", {})
        for i in todo:
            c0, d = time.process_time(), dets[i]
            with torch.inference_mode():
                cands = detect_prepared(d.model, preps[d.spacing], d.inference, d.device)
            cpu[keys[i]] += time.process_time() - c0
            rec["candidates"][keys[i]] = [
                f"{rec['uid']},{x:.3f},{y:.3f},{z:.3f},{c.score:.6f},{c.diameter_mm:.2f}"
                for c in cands
                for x, y, z in [c.center_lps]
            ]
        f.write_text(json.dumps(rec))
        n_done += 1
        print(f"seed {seed}: {len(ann)} nodules; " + ", ".join(
            f"{k} {len(rec['candidates'][k])}" for k in keys), flush=True)  # fmt: skip
    if n_done:
        print(f"CPU per scan over {n_done} new scans: simulate/load + resample "
              f"{cpu['prepare'] / n_done:.1f} s; "
              + ", ".join(f"{k} {cpu[k] / n_done:.1f} s" for k in keys))  # fmt: skip
    return keys


def _write_set(records: list[dict], key: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "annotations.csv").write_text(
        "\n".join([ANN_HEADER, *(r for rec in records for r in rec["annotations"])]) + "\n"
    )
    (out / "annotations_excluded.csv").write_text("\n".join(
        ["seriesuid,coordX,coordY,coordZ,diameter_mm",
         *(r for rec in records for r in rec["excluded"])]) + "\n")  # fmt: skip
    (out / "seriesuids.csv").write_text("\n".join(rec["uid"] for rec in records) + "\n")
    (out / "candidates.csv").write_text("\n".join(
        ["seriesuid,coordX,coordY,coordZ,probability,diameter_mm",
         *(r for rec in records for r in rec["candidates"][key])]) + "\n")  # fmt: skip


def _evaluate(records: list[dict], key: str, out: Path, n_resamples: int) -> dict:
    from medimg.tasks.detect.evaluate import evaluate_candidates

    _write_set(records, key, out / "set")
    s = out / "set"
    return evaluate_candidates(s / "candidates.csv", s / "annotations.csv", out / "evaluation",
                               excluded=s / "annotations_excluded.csv", scans=s / "seriesuids.csv",
                               n_resamples=n_resamples, overwrite=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scans", type=int, default=34, help="scans per seed block")
    ap.add_argument("--seeds", type=int, nargs="+", default=[5000, 6000, 7000],
                    help="first seed of each block (training never saw 5000+)")  # fmt: skip
    ap.add_argument("--model", action="append",
                    help="model folder, repeatable (default: the shipped default model)")  # fmt: skip
    ap.add_argument("--data", required=True, help="keeps each scan's results; resumes from them")
    ap.add_argument(
        "--scans-from",
        action="append",
        default=[],
        help="a 'detect simulate --varied' folder whose scans to read, not simulate",
    )
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    models = args.model or [None]
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    blocks = [list(range(s, s + args.scans)) for s in args.seeds]
    keys = _run_scans([s for b in blocks for s in b], models, data, args.scans_from)
    recs = {s: json.loads((data / f"seed_{s}.json").read_text()) for b in blocks for s in b}
    for i, key in enumerate(keys):
        every = [recs[s] for b in blocks for s in b]
        s = _evaluate(every, key, data / f"m{i}", args.bootstrap)
        per_block = [_evaluate([recs[x] for x in b], key, data / f"m{i}_{b[0]}", 200)["cpm"]
                     for b in blocks]  # fmt: skip
        c = s["cpm"]
        print(f"== model {key}")
        print(f"{s['n_scans']} scans, {s['n_nodules']} nodules")
        print(f"CPM {c['value']:.3f} [{c['low']:.3f}, {c['high']:.3f}]; sensitivity at "
              + ", ".join(f"{r}: {e['value']:.3f}" for r, e in s["froc"].items()))  # fmt: skip
        print("CPM per seed block: " + ", ".join(
            f"{b[0]}: {p['value']:.3f}" for b, p in zip(blocks, per_block)))  # fmt: skip
        op = s["operating_point"]
        print(f"operating point {op['fp_per_scan']:.2f} FPs/scan, threshold {op['threshold']:.3f}")
        for group in ("by_type", "by_size"):
            for name, g in s.get(group, {}).items():
                e = g["sensitivity"]
                print(f"  {name:>16} ({g['n']:>3}): {e['value']:.2f} [{e['low']:.2f}, "
                      f"{e['high']:.2f}]")  # fmt: skip
    print(f"outputs in {data}")


if __name__ == "__main__":
    main()
