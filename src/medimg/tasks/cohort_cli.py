"""The cohort flags of the ``predict`` verbs: ``--workers N`` and ``--ray ADDRESS``.

A ``predict`` runs as a cohort (:mod:`medimg.engine.cohort`: resumable, failures recorded per
case, a summary table) when its input is a manifest ``.csv`` or either flag is given; otherwise
it keeps its one-process behaviour.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from medimg.tasks.cli_helpers import positive_int
from medimg.typing import PathType

if TYPE_CHECKING:  # the engine imports torch: only when a cohort runs
    from medimg.engine.cohort import CohortCase, CohortSummary

__all__ = ["add_cohort_flags", "cohort_cases", "run_cohort_verb", "wants_cohort"]


def add_cohort_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cohort (many studies; resumable: rerun the same command to continue)")
    g.add_argument("--workers", type=positive_int, metavar="N",
                   help="worker processes (1: one process, still resumable); each case goes to "
                        "OUTPUT/cases/<id>/, with done.jsonl and summary.csv")  # fmt: skip
    g.add_argument("--ray", metavar="ADDRESS",
                   help="run the cases as Ray tasks on the cluster at ADDRESS ('auto' for the "
                        "cluster this machine belongs to, 'local' to start one here)")  # fmt: skip


def wants_cohort(args: argparse.Namespace, input_path: PathType) -> bool:
    return bool(args.workers or args.ray) or str(input_path).lower().endswith(".csv")


def cohort_cases(
    source: PathType, finder: Callable[[PathType], list[tuple[str, Path]]]
) -> list[CohortCase]:
    """A manifest ``.csv``'s cases, or those ``finder`` lists under a folder."""
    from medimg.engine.cohort import CohortCase, read_manifest

    if str(source).lower().endswith(".csv"):
        return read_manifest(source)
    return [CohortCase(cid, str(Path(p).resolve())) for cid, p in finder(source)]


def run_cohort_verb(
    args: argparse.Namespace, cases: list[CohortCase], out: PathType, runner: str, options: dict
) -> CohortSummary:
    """Run, print the summary table, and return it (the verb adds its task's merged outputs)."""
    from medimg.engine.cohort import run_cohort

    summary = run_cohort(cases, out, runner, options, workers=args.workers or 1,
                         ray_address=args.ray, threads=getattr(args, "threads", None),
                         overwrite=getattr(args, "overwrite", False),
                         progress=not getattr(args, "quiet", False))  # fmt: skip
    print(summary.table())
    return summary
