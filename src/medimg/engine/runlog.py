"""``metrics.jsonl`` and the progress of a run: a bar on a terminal, plain log lines otherwise.

One JSON object per line, each with ``step`` and ``kind`` (``train``, ``val`` or ``event``), so a
report or a notebook reads a run with ``pandas.read_json(path, lines=True)``. Only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from tqdm.auto import tqdm

__all__ = ["MetricsLog", "ProgressLines", "progress_bar", "read_metrics"]


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep the line parseable
    return v


class MetricsLog:
    """Appends records to ``metrics.jsonl``; a disabled log (other ranks) writes nothing."""

    def __init__(self, path: str | os.PathLike[str], enabled: bool = True) -> None:
        self.path, self.enabled = Path(path), enabled
        self._t0 = time.monotonic()

    def write(self, kind: str, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, **{k: _jsonable(v) for k, v in values.items()}}
        record["time_s"] = round(time.monotonic() - self._t0, 3)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step``: a resumed run redoes those steps and logs them again."""
        if not self.enabled or not self.path.is_file():
            return
        keep = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
        os.replace(tmp, self.path)


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All complete records of a ``metrics.jsonl`` (a line cut by a kill is skipped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class ProgressLines:
    """Progress as plain lines (``step 40/1000 (4%)  loss 0.1234  12 s, ~290 s left``) for a
    stderr that is not a terminal: a log file, a batch job, CI. tqdm's bar would write carriage
    returns there (or, disabled, nothing at all for a long run). A line comes every ``every``
    steps, at least every ``min_interval_s`` seconds of steps, and at the last step; it has
    the ``update``/``set_postfix``/``close`` methods the trainer calls on a tqdm bar."""

    def __init__(
        self,
        total: int,
        initial: int = 0,
        stream: TextIO | None = None,
        every: int | None = None,
        min_interval_s: float = 60.0,
    ) -> None:
        self.total, self.n = total, initial
        self.every = every or max(1, min(100, total // 20))
        self.min_interval_s = min_interval_s
        self._stream = stream
        self._postfix: dict[str, Any] = {}
        self._t0 = self._last = time.monotonic()
        self._start_n = initial
        self._printed_n = initial

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self._postfix = dict(values)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if (
            self.n % self.every == 0
            or self.n >= self.total
            or now - self._last >= self.min_interval_s
        ):
            self._line(now)

    def close(self) -> None:
        if self.n != self._printed_n:  # stopped early or interrupted: say where
            self._line(time.monotonic())

    def _line(self, now: float) -> None:
        self._last, self._printed_n = now, self.n
        elapsed = now - self._t0
        parts = [f"step {self.n}/{self.total} ({100 * self.n // max(1, self.total)}%)"]
        parts += [f"{k} {v}" for k, v in self._postfix.items()]
        done = self.n - self._start_n
        left = f", ~{elapsed / done * (self.total - self.n):.0f} s left" if done > 0 else ""
        parts.append(f"{elapsed:.0f} s{left}")
        stream = self._stream or sys.stderr  # looked up now: pytest and callers swap stderr
        print("  ".join(parts), file=stream, flush=True)


def progress_bar(
    total: int, initial: int, enabled: bool, stream: TextIO | None = None
) -> tqdm | ProgressLines:
    """Progress on ``stream`` (stderr) when ``enabled``: a tqdm bar on a terminal, else plain
    log lines (:class:`ProgressLines`); disabled, a silent bar."""
    out = stream or sys.stderr
    if enabled and not out.isatty():
        return ProgressLines(total, initial, stream=stream)
    return tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        file=out,
        unit="step",
        dynamic_ncols=True,
    )
