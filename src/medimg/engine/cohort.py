"""Cohort-scale inference: one task's per-case prediction over many studies.

A cohort run writes into one folder ``OUT``::

    OUT/cases/<case_id>/   each case's outputs, written whole by the task (an atomic folder)
    OUT/cohort.json        what was run: the task's runner and options (a rerun must match)
    OUT/done.jsonl         one line per finished case (ok or failed), appended as cases end
    OUT/summary.csv        every case's status, seconds, worker and peak memory (at the end)

Rules, so that nothing is lost and nothing is done twice:

* only the parent process writes ``done.jsonl`` (one flushed, fsynced line per case);
* a rerun of the same command continues: cases recorded ``ok`` are skipped, failed ones are
  tried again, and a case whose folder is complete but whose line was lost (a kill between the
  two) is recorded as ``ok`` without running it again;
* a failing case is recorded with a one-line reason and the run goes on; a worker process that
  dies (for example killed for memory) fails only the cases it held, and a new pool takes over;
* memory per worker is bounded: each worker process is replaced after a few cases
  (``max_tasks_per_child``), and holds one case at a time.

Parallelism is local worker processes (:class:`concurrent.futures.ProcessPoolExecutor`, spawn)
or Ray tasks on a cluster (``ray_address``; Ray's own scheduler, none of ours). The runner is
named as ``"module:function"`` so that any worker, local or remote, can import it; it is called
as ``function(case_path, case_dir, **options) -> dict`` and writes ``case_dir`` itself.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from medimg.errors import InputError, MedimgError
from medimg.io.output import atomic_path, check_outputs, is_owned, mark_owned
from medimg.typing import PathType

__all__ = [
    "CohortCase",
    "CohortSummary",
    "describe_case",
    "read_manifest",
    "run_cohort",
]

#: Cases a worker process handles before it is replaced (bounds memory that a case leaks; each
#: new worker pays the model load and the first, slower inference again).
TASKS_PER_WORKER = 100
_STATE = "cohort.json"
_DONE = "done.jsonl"
_PATH_COLUMNS = ("path", "image", "input", "file")
_ID_COLUMNS = ("case_id", "id", "seriesuid", "subject")


@dataclass(frozen=True)
class CohortCase:
    """One study of a cohort: a file or folder (a DICOM series) and its unique id."""

    case_id: str
    path: str


@dataclass
class CohortSummary:
    """What a cohort run did: counts, time, and each case's record."""

    out_dir: Path
    ran: int = 0
    skipped: int = 0
    recovered: int = 0
    failed: int = 0
    seconds: float = 0.0
    records: list[dict] = field(default_factory=list)

    @property
    def cases_per_minute(self) -> float:
        return 60.0 * self.ran / self.seconds if self.seconds > 0 else 0.0

    @property
    def peak_rss_mb(self) -> float:
        """The highest peak resident memory any worker reached on a case of this run."""
        return max((r.get("peak_rss_mb", 0.0) for r in self.records), default=0.0)

    def table(self) -> str:
        lines = [
            f"cases ok now   {self.ran - self.failed}",
            f"failed         {self.failed}" + ("  (see summary.csv)" if self.failed else ""),
            f"already done   {self.skipped} (+{self.recovered} recovered from their folders)",
            f"wall time      {self.seconds:.1f} s ({self.cases_per_minute:.1f} cases/min)",
            f"peak memory    {self.peak_rss_mb:.0f} MB in one worker",
        ]
        return "\n".join(lines)


def read_manifest(path: PathType) -> list[CohortCase]:
    """Cases of a manifest CSV: a column ``path`` (or ``image``, ``input``, ``file``) with files
    or folders, relative to the CSV's folder unless absolute; ids from ``case_id`` (or ``id``,
    ``seriesuid``, ``subject``) when present, else from the file names."""
    from medimg.io.inputs import case_ids

    p = Path(path)
    try:
        with open(p, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"cannot read the manifest ({e})", p) from None
    columns = rows[0].keys() if rows else ()
    path_col = next((c for c in _PATH_COLUMNS if c in columns), None)
    if path_col is None:
        raise InputError(f"a manifest needs a column named one of {', '.join(_PATH_COLUMNS)} "
                         "(one study per row)", p)  # fmt: skip
    paths = [Path(r[path_col]) if Path(r[path_col]).is_absolute() else p.parent / r[path_col]
             for r in rows]  # fmt: skip
    missing = [str(q) for q in paths if not q.exists()]
    if missing:
        raise InputError(f"{len(missing)} manifest path(s) do not exist, e.g. {missing[0]}", p)
    id_col = next((c for c in _ID_COLUMNS if c in columns), None)
    ids = [r[id_col] for r in rows] if id_col else case_ids(paths)
    return _checked([CohortCase(str(i), str(q)) for i, q in zip(ids, paths)], p)


def _checked(cases: list[CohortCase], source: PathType) -> list[CohortCase]:
    if not cases:
        raise InputError("holds no studies to predict", source)
    seen: set[str] = set()
    for c in cases:
        if c.case_id in seen:
            raise InputError(f"case id {c.case_id!r} appears twice; ids must be unique", source)
        if not c.case_id or "/" in c.case_id or c.case_id.startswith("."):
            raise InputError(f"case id {c.case_id!r} is not a safe folder name", source)
        seen.add(c.case_id)
    return cases


def _resolve(runner: str) -> Callable[..., dict]:
    module, _, name = runner.partition(":")
    return getattr(importlib.import_module(module), name)


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1024 * 1024) if sys.platform == "darwin" else kb / 1024  # bytes on macOS


def run_case(
    runner: str, case: CohortCase, case_dir: str, options: dict, threads: int | None = None
) -> dict:
    """Run one case in this process (``threads``: torch's CPU threads here); never raises: a
    failure is a record with its reason."""
    if threads:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    start = time.perf_counter()
    record = {"case_id": case.case_id, "path": case.path, "worker": os.getpid()}
    try:
        extra = _resolve(runner)(case.path, Path(case_dir), **options) or {}
        record.update(status="ok", **extra)
    except MedimgError as e:
        record.update(status="failed", error=str(e).splitlines()[0])
    except Exception as e:  # one bad study must not stop a cohort: record it and go on
        record.update(status="failed", error=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                      if str(e) else type(e).__name__)  # fmt: skip
    record.update(
        seconds=round(time.perf_counter() - start, 3), peak_rss_mb=round(_peak_rss_mb(), 1)
    )
    return record


def describe_case(case_path: str, case_dir: Path) -> dict:
    """A runner that only reads: ``case_dir/header.txt`` with what ``medimg info`` says of the
    study. A first cohort pass with it finds the studies that do not load, before any model runs."""
    from medimg.io.api import describe
    from medimg.io.output import atomic_dir

    lines = describe(case_path)
    with atomic_dir(case_dir) as tmp:
        (tmp / "header.txt").write_text("\n".join(lines) + "\n")
    return {"series": len(lines)}


def _load_state(out: Path, state: dict, overwrite: bool) -> dict[str, dict]:
    """Earlier records of a run of the same job in ``out`` (empty for a new run); refuses a
    folder that holds something else. ``overwrite`` starts the cohort afresh: the earlier run's
    cases and records are deleted (only in a folder medimg wrote)."""
    import shutil

    state_file = out / _STATE
    if not out.exists() or not any(out.iterdir()):
        return {}
    if not state_file.exists() or not is_owned(out):
        raise InputError("holds files that are not a medimg cohort run; choose a new or empty "
                         "folder", out)  # fmt: skip
    if overwrite:
        shutil.rmtree(out / "cases", ignore_errors=True)
        for name in (_DONE, "summary.csv"):
            (out / name).unlink(missing_ok=True)
        return {}
    if json.loads(state_file.read_text()) != state:
        raise InputError("holds a cohort run with other options (or another task); rerun with the "
                         "same options to continue it, --overwrite to start it afresh, or choose "
                         "a new folder", out)  # fmt: skip
    records: dict[str, dict] = {}
    done = out / _DONE
    if done.exists():
        for line in done.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill: that case runs again
                continue
            records[rec["case_id"]] = rec
    return records


class _Log:
    """``done.jsonl``, appended one durable line per finished case."""

    def __init__(self, path: Path):
        self.file = open(path, "a")

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def _worker_context(runner: str):
    """Worker processes forked from a server that imported the runner's module (torch and the
    task) once, so a new or replaced worker starts in a fraction of a second; where fork is not
    available (Windows, macOS default), spawned ones that import it themselves."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return get_context("spawn")
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload([runner.partition(":")[0]])
    return ctx


def _run_local(todo, submit_args, workers: int, on_done, runner: str) -> None:
    """Cases through a pool of ``workers`` processes, at most ``workers`` in flight (so a dead
    worker fails only the cases it held); a broken pool is replaced."""
    ctx = _worker_context(runner)
    queue = list(todo)
    while queue:
        broken = False
        with ProcessPoolExecutor(workers, mp_context=ctx,
                                 max_tasks_per_child=TASKS_PER_WORKER) as pool:  # fmt: skip
            running: dict[Future, CohortCase] = {}
            while queue or running:
                while queue and len(running) < workers:
                    case = queue.pop(0)
                    running[pool.submit(run_case, *submit_args(case))] = case
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    case = running.pop(fut)
                    try:
                        on_done(fut.result())
                    except BrokenProcessPool:
                        broken = True
                        on_done({"case_id": case.case_id, "path": case.path, "status": "failed",
                                 "error": "its worker process died (out of memory?)"})  # fmt: skip
                if broken:
                    for fut, case in running.items():  # the others were lost with the pool
                        fut.cancel()
                        queue.insert(0, case)
                    break
        if not broken:
            return


def _run_ray(todo, submit_args, address: str, on_done) -> None:
    """Cases as Ray tasks (one CPU each) on the cluster at ``address`` (``"local"`` starts one
    on this machine); the parent keeps a bounded number in flight and records each as it ends."""
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'ray>=2.9' (the cohort extra)") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False, logging_level="ERROR")  # fmt: skip
    try:
        remote = ray.remote(num_cpus=1, max_retries=1)(run_case)
        limit = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        queue, running = list(todo), {}
        while queue or running:
            while queue and len(running) < limit:
                case = queue.pop(0)
                running[remote.remote(*submit_args(case))] = case
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                case = running.pop(ref)
                try:
                    on_done(ray.get(ref))
                except Exception as e:  # a task that could not run at all (node lost)
                    on_done({"case_id": case.case_id, "path": case.path, "status": "failed",
                             "error": f"Ray task failed: {type(e).__name__}"})  # fmt: skip
    finally:
        if started:
            ray.shutdown()


def run_cohort(
    cases: Sequence[CohortCase],
    out_dir: PathType,
    runner: str,
    options: dict | None = None,
    *,
    workers: int = 1,
    ray_address: str | None = None,
    threads: int | None = None,
    inputs: Iterable[PathType] = (),
    overwrite: bool = False,
    progress: bool = True,
) -> CohortSummary:
    """Run ``runner`` (``"module:function"``) on every case into ``out_dir/cases/<case_id>``;
    resumable and failure-tolerant as the module doc says. ``workers == 1`` without
    ``ray_address`` runs in this process. ``threads``: torch CPU threads per worker (default 1
    with several workers or Ray, so they do not oversubscribe the cores). ``inputs`` are paths
    no output may land on."""
    from tqdm import tqdm

    options = dict(options or {})
    cases = _checked(list(cases), "the cohort")
    out = check_outputs([out_dir], inputs=[*inputs, *(c.path for c in cases)], overwrite=True)[0]
    if workers < 1:
        raise InputError(f"--workers {workers}: give 1 or more")
    state = {"runner": runner, "options": options}
    records = _load_state(out, state, overwrite)
    (out / "cases").mkdir(parents=True, exist_ok=True)
    mark_owned(out)
    (out / _STATE).write_text(json.dumps(state, indent=1))
    summary = CohortSummary(out)
    parallel = bool(ray_address) or workers > 1
    per_worker = threads or (1 if parallel else None)
    todo = []
    log = _Log(out / _DONE)
    try:
        for case in cases:
            rec = records.get(case.case_id)
            if rec and rec.get("status") == "ok":
                summary.skipped += 1
            elif (out / "cases" / case.case_id).is_dir():  # done, but its line was lost
                rec = {"case_id": case.case_id, "path": case.path, "status": "ok",
                       "recovered": True}  # fmt: skip
                log.write(rec)
                records[case.case_id] = rec
                summary.recovered += 1
            else:
                todo.append(case)
        bar = tqdm(total=len(todo), desc="cohort", unit="case", disable=not progress or not todo)

        def on_done(rec: dict) -> None:
            log.write(rec)
            records[rec["case_id"]] = rec
            summary.records.append(rec)
            summary.ran += 1
            summary.failed += rec["status"] != "ok"
            bar.update()

        def submit_args(case: CohortCase) -> tuple:
            return runner, case, str(out / "cases" / case.case_id), options, per_worker

        start = time.perf_counter()
        if ray_address:
            _run_ray(todo, submit_args, ray_address, on_done)
        elif workers > 1 and len(todo) > 1:
            _run_local(todo, submit_args, workers, on_done, runner)
        else:
            for case in todo:
                on_done(run_case(*submit_args(case)))
        summary.seconds = time.perf_counter() - start
        bar.close()
    finally:
        log.close()
    _write_summary(out, [records[c.case_id] for c in cases if c.case_id in records])
    return summary


def _write_summary(out: Path, records: list[dict]) -> None:
    keys = ["case_id", "status", "seconds", "worker", "peak_rss_mb", "error", "path"]
    with atomic_path(out / "summary.csv", overwrite=True) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(records)
