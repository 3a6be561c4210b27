"""Cohort runs: every case done once, failures recorded without stopping, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cohort_toy import make_cases

from medimg.engine.cohort import read_manifest, run_cohort
from medimg.errors import InputError

RUNNER = "cohort_toy:slow_case"
SCRIPT = Path(__file__).with_name("cohort_toy.py")


def _done(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "done.jsonl").read_text().splitlines()]


def test_failures_are_recorded_and_the_rest_finish_then_a_rerun_retries_only_them(tmp_path):
    cases = make_cases(tmp_path / "in", 5)
    log, out = tmp_path / "log.txt", tmp_path / "out"
    opts = {"fail_on": ["case002"], "log": str(log)}
    s = run_cohort(cases, out, RUNNER, opts, progress=False)
    assert (s.ran, s.failed) == (5, 1)
    rec = {r["case_id"]: r for r in _done(out)}
    assert rec["case002"]["status"] == "failed" and "planted failure" in rec["case002"]["error"]
    assert sorted(p.name for p in (out / "cases").iterdir()) == [
        c.case_id for c in cases if c.case_id != "case002"
    ]
    # the same command again: the four ok cases are skipped, the failed one runs again
    s2 = run_cohort(cases, out, RUNNER, opts, progress=False)
    assert (s2.ran, s2.skipped, s2.failed) == (1, 4, 1)
    assert log.read_text().split() == [c.case_id for c in cases if c.case_id != "case002"]
    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 6 and "case002,failed" in summary[3]


def test_a_case_whose_record_was_lost_is_recovered_not_rerun(tmp_path):
    cases = make_cases(tmp_path / "in", 3)
    log, out = tmp_path / "log.txt", tmp_path / "out"
    run_cohort(cases, out, RUNNER, {"log": str(log)}, progress=False)
    lines = (out / "done.jsonl").read_text().splitlines()
    (out / "done.jsonl").write_text("\n".join(lines[:1]) + "\n" + lines[1][:10])  # cut by a kill
    s = run_cohort(cases, out, RUNNER, {"log": str(log)}, progress=False)
    assert (s.ran, s.skipped, s.recovered) == (0, 1, 2)
    assert log.read_text().split() == [c.case_id for c in cases]  # each ran once


def test_other_options_or_a_foreign_folder_are_refused(tmp_path):
    cases = make_cases(tmp_path / "in", 2)
    out = tmp_path / "out"
    run_cohort(cases, out, RUNNER, {"delay": 0.0}, progress=False)
    with pytest.raises(InputError, match="other options"):
        run_cohort(cases, out, RUNNER, {"delay": 0.1}, progress=False)
    s = run_cohort(cases, out, RUNNER, {"delay": 0.1}, overwrite=True, progress=False)
    assert (s.ran, s.skipped) == (2, 0)  # --overwrite starts afresh
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a medimg cohort run"):
        run_cohort(cases, foreign, RUNNER, {}, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_two_worker_processes_do_every_case_once(tmp_path):
    cases = make_cases(tmp_path / "in", 6)
    log, out = tmp_path / "log.txt", tmp_path / "out"
    s = run_cohort(cases, out, RUNNER, {"log": str(log)}, workers=2, progress=False)
    assert (s.ran, s.failed) == (6, 0)
    assert sorted(log.read_text().split()) == [c.case_id for c in cases]
    assert len({r["worker"] for r in _done(out)} - {os.getpid()}) >= 1  # ran in other processes


def test_killed_run_resumes_and_finishes_every_case_exactly_once(tmp_path):
    n = 12
    args = [sys.executable, str(SCRIPT), str(tmp_path / "in"), str(tmp_path / "out"),
            str(tmp_path / "log.txt"), "--n", str(n), "--workers", "2"]  # fmt: skip
    args += ["--delay", "0.4"]
    proc = subprocess.Popen(args, start_new_session=True)
    done = tmp_path / "out" / "done.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if done.exists() and len(done.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its workers, mid-cohort
    proc.wait()
    first = len(done.read_text().splitlines())
    assert 3 <= first < n
    subprocess.run(args, check=True, timeout=120)  # the same command continues the run
    records = _done(tmp_path / "out")
    ok = [r["case_id"] for r in records if r["status"] == "ok"]
    assert sorted(ok) == [f"case{i:03d}" for i in range(n)]  # none lost, none recorded twice
    ran = (tmp_path / "log.txt").read_text().split()
    assert len(ran) == len(set(ran))  # no case whose folder was complete ran again
    for i in range(n):
        assert (
            tmp_path / "out" / "cases" / f"case{i:03d}" / "out.txt"
        ).read_text() == f"study {i}\n"


def test_manifest_paths_are_relative_to_it_and_ids_must_be_unique(tmp_path):
    make_cases(tmp_path / "in", 2)
    m = tmp_path / "in" / "manifest.csv"
    m.write_text("case_id,path\na,case000.txt\nb,case001.txt\n")
    cases = read_manifest(m)
    assert [c.case_id for c in cases] == ["a", "b"] and Path(cases[1].path).exists()
    m.write_text("case_id,path\na,case000.txt\na,case001.txt\n")
    with pytest.raises(InputError, match="appears twice"):
        read_manifest(m)
    m.write_text("name\ncase000.txt\n")
    with pytest.raises(InputError, match="column"):
        read_manifest(m)
    m.write_text("path\nmissing.nii.gz\n")
    with pytest.raises(InputError, match="do not exist"):
        read_manifest(m)


def _tiny_volumes(folder: Path, n: int) -> list:
    import numpy as np

    from medimg.engine.cohort import CohortCase
    from medimg.io.api import save
    from medimg.io.image import Image

    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for i in range(n):
        f = folder / f"vol{i}.nii.gz"
        save(Image(np.full((1, 8, 9, 10), float(i), np.float32), np.diag([1.0, 1.0, 2.0, 1.0])), f)
        cases.append(CohortCase(f"vol{i}", str(f)))
    return cases


def test_ray_tasks_on_a_local_instance_do_every_case_once(tmp_path):
    pytest.importorskip("ray", reason="the cohort extra (ray) is not installed")
    cases = _tiny_volumes(tmp_path / "in", 3)
    bad = tmp_path / "in" / "broken.nii.gz"
    bad.write_bytes(b"not an image")
    from medimg.engine.cohort import CohortCase

    cases.append(CohortCase("broken", str(bad)))
    out = tmp_path / "out"
    s = run_cohort(cases, out, "medimg.engine.cohort:describe_case", ray_address="local",
                   progress=False)  # fmt: skip
    assert (s.ran, s.failed) == (4, 1)
    rec = {r["case_id"]: r for r in _done(out)}
    assert rec["broken"]["status"] == "failed" and "\n" not in rec["broken"]["error"]
    assert all(r["worker"] != os.getpid() for r in rec.values())  # Ray workers did the work
    assert "8" in (out / "cases" / "vol2" / "header.txt").read_text()
