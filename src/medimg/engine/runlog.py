"""``metrics.jsonl`` and the progress bar of a run.

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
from typing import Any

from tqdm.auto import tqdm

__all__ = ["MetricsLog", "progress_bar", "read_metrics"]


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


def progress_bar(total: int, initial: int, enabled: bool) -> tqdm:
    """A step bar on stderr, shown only when asked for and stderr is a terminal."""
    show = enabled and sys.stderr.isatty()
    return tqdm(total=total, initial=initial, disable=not show, unit="step", dynamic_ncols=True)
