"""A per-case runner for the cohort tests, importable by spawned workers and runnable as a
script (a cohort run that a test can SIGKILL)::

    python cohort_toy.py CASES_DIR OUT LOG --workers 2 --delay 0.3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from medimg.io.output import atomic_dir


def slow_case(case_path: str, case_dir: Path, *, delay: float = 0.0, fail_on: tuple = (),
              log: str | None = None) -> dict:  # fmt: skip
    """Copy the case file's text into ``case_dir`` after ``delay`` s; fail for names in
    ``fail_on``; append the case name to ``log`` once its folder is complete."""
    name = Path(case_path).stem
    time.sleep(delay)
    if name in fail_on:
        raise ValueError(f"planted failure in {name}")
    with atomic_dir(case_dir) as tmp:
        (tmp / "out.txt").write_text(Path(case_path).read_text())
    if log:
        with open(log, "a") as f:
            f.write(name + "\n")
    return {"chars": len(Path(case_path).read_text())}


def make_cases(folder: Path, n: int) -> list:
    from medimg.engine.cohort import CohortCase

    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for i in range(n):
        f = folder / f"case{i:03d}.txt"
        f.write_text(f"study {i}\n")
        cases.append(CohortCase(f.stem, str(f)))
    return cases


if __name__ == "__main__":
    from medimg.engine.cohort import run_cohort

    ap = argparse.ArgumentParser()
    ap.add_argument("cases")
    ap.add_argument("out")
    ap.add_argument("log")
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--delay", type=float, default=0.0)
    a = ap.parse_args()
    cases = make_cases(Path(a.cases), a.n)
    run_cohort(cases, a.out, "cohort_toy:slow_case", {"delay": a.delay, "log": a.log},
               workers=a.workers, progress=False)  # fmt: skip
