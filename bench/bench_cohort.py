"""Cohort inference: throughput of nodule detection over many small studies, one process vs
``--workers 2`` vs a local Ray instance; peak memory per worker; a run killed halfway and resumed.

    python bench/bench_cohort.py --cases 200 [--workdir /tmp/bench_cohort]

The studies are small generated chest-CT-like volumes (the detector's real model, the same
code path as ``medimg detect predict MANIFEST.csv OUT --workers N``); each mode writes its own
folder. The kill check runs the CLI in a child process, SIGKILLs it once a third of the cases
are recorded, reruns the same command, and checks every case is recorded ok exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from medimg.engine.cohort import CohortCase, run_cohort
from medimg.io.api import save
from medimg.io.image import Image

RUNNER = "medimg.tasks.detect.cohort:predict_case"
OPTIONS = {"model": None, "device": "cpu", "flips": False, "figures": False}


def make_studies(folder: Path, n: int, size: int) -> list[CohortCase]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    cases, lines = [], ["case_id,path"]
    for i in range(n):
        f = folder / f"ct{i:04d}.nii.gz"
        if not f.exists():
            vol = -850.0 + rng.normal(0, 25, (1, size, size, size // 2))
            c = rng.integers(15, size // 2 + 15, 3)
            vol[0, c[0] - 3 : c[0] + 3, c[1] - 3 : c[1] + 3, c[2] // 2 - 2 : c[2] // 2 + 2] = 30
            save(Image(vol.astype(np.float32), np.diag([0.8, 0.8, 2.0, 1.0]), modality="CT"), f)
        cases.append(CohortCase(f.stem, str(f)))
        lines.append(f"{f.stem},{f.name}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return cases


def timed(cases, out: Path, **kw) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    s = run_cohort(cases, out, RUNNER, OPTIONS, progress=False, **kw)
    per_worker: dict[int, float] = {}
    for r in s.records:
        per_worker[r["worker"]] = max(per_worker.get(r["worker"], 0.0), r["peak_rss_mb"])
    return {"seconds": s.seconds, "ok": s.ran - s.failed, "failed": s.failed,
            "cases_per_min": s.cases_per_minute,
            "peak_rss_mb_per_worker": max(per_worker.values())}  # fmt: skip


def kill_and_resume(folder: Path, out: Path, n: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "medimg", "detect", "predict", str(folder / "manifest.csv"),
           str(out), "--workers", "2", "--no-figures", "--quiet", "--device", "cpu"]  # fmt: skip
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL)
    done = out / "done.jsonl"
    while proc.poll() is None:
        if done.exists() and len(done.read_text().splitlines()) >= n // 3:
            break
        time.sleep(0.1)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = len(done.read_text().splitlines())
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    recs = [json.loads(x) for x in done.read_text().splitlines()]
    ok = [r["case_id"] for r in recs if r["status"] == "ok"]
    return {"recorded_at_kill": at_kill, "ok_after_resume": len(set(ok)),
            "recorded_twice": len(ok) - len(set(ok)), "cases": n}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--workdir", default="/tmp/bench_cohort")
    ap.add_argument("--size", type=int, default=160, help="in-plane voxels (slices: half)")
    ap.add_argument("--skip-ray", action="store_true")
    a = ap.parse_args()
    work = Path(a.workdir)
    cases = make_studies(work / f"studies{a.size}", a.cases, a.size)
    rows = {"one process": timed(cases, work / "one", threads=1)}
    rows["--workers 2"] = timed(cases, work / "two", workers=2)
    if not a.skip_ray:
        rows["Ray (local, 2 CPUs)"] = timed(cases, work / "ray", ray_address="local")
    base = rows["one process"]["seconds"]
    print(f"{a.cases} studies of {a.size}x{a.size}x{a.size // 2} voxels, detection, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print(
        f"{'mode':22s} {'s':>7s} {'cases/min':>9s} {'x one':>6s} {'peak MB/worker':>14s} ok/failed"
    )
    for name, r in rows.items():
        print(f"{name:22s} {r['seconds']:7.1f} {r['cases_per_min']:9.1f} "
              f"{base / r['seconds']:6.2f} {r['peak_rss_mb_per_worker']:14.0f} "
              f"{r['ok']}/{r['failed']}")  # fmt: skip
    k = kill_and_resume(work / f"studies{a.size}", work / "killed", a.cases)
    print(f"killed at {k['recorded_at_kill']} recorded cases, resumed: {k['ok_after_resume']}/"
          f"{k['cases']} ok, {k['recorded_twice']} recorded twice")  # fmt: skip


if __name__ == "__main__":
    main()
