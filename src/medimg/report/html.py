"""A self-contained HTML report: one section per stage with its table, figures and checks.

Written with the standard library (``html.escape`` and a template string): the page is a few
tables and images, and a templating engine would be a dependency for nothing. Figures are linked
by paths relative to the page, so the folder can be moved or zipped as a whole.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medimg.io.output import atomic_path
from medimg.typing import PathType

__all__ = ["Section", "stage_figures", "write_report"]

Row = dict[str, object]


@dataclass
class Section:
    """One stage of a report: what it checked, its rows (one dict each) and its figures."""

    name: str
    checked: str
    rows: list[Row]
    figures: list[Path] = field(default_factory=list)
    seconds: float | None = None

    @property
    def failed(self) -> int:
        return sum(r.get("status") != "ok" for r in self.rows)


def stage_figures(folder: PathType, limit: int = 4) -> list[Path]:
    """The PNG figures a stage wrote, summaries first: those in an ``evaluation`` folder or at
    the folder's top, then per-case figures, at most ``limit`` in all (a stage may write one
    overlay per case; the page shows a few)."""
    root = Path(folder)
    pngs = sorted(root.rglob("*.png"))

    def rank(p: Path) -> tuple[int, str]:
        rel = p.relative_to(root)
        summary = len(rel.parts) == 1 or "evaluation" in rel.parts
        return (0 if summary else 1, str(rel))

    return sorted(pngs, key=rank)[:limit]


_STYLE = """
body { font-family: DejaVu Sans, Helvetica, Arial, sans-serif; margin: 24px; color: #111; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; }
.summary { font-size: 15px; } .ok { color: #106010; } .fail { color: #b00000; font-weight: bold; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: left; }
th { background: #eee; } tr.fail td { background: #fde0e0; }
.figs { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; } figure img { max-width: 520px; max-height: 420px; border: 1px solid #ccc; }
figcaption { font-size: 12px; color: #444; }
"""


def _table(rows: Sequence[Row]) -> str:
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k != "stage"]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = []
    for r in rows:
        cls = "" if r.get("status") == "ok" else ' class="fail"'
        cells = "".join(f"<td>{html.escape(str(r.get(k, '')))}</td>" for k in keys)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _section(sec: Section, page_dir: Path) -> str:
    status = (
        '<span class="ok">all ok</span>'
        if not sec.failed
        else f'<span class="fail">{sec.failed} failed</span>'
    )
    took = f", {sec.seconds:.1f} s" if sec.seconds is not None else ""
    figs = []
    for f in sec.figures:
        rel = Path(os.path.relpath(f, page_dir)).as_posix()
        figs.append(
            f'<figure><img src="{html.escape(rel)}" alt="{html.escape(f.name)}">'
            f"<figcaption>{html.escape(rel)}</figcaption></figure>"
        )
    return (
        f'<section id="{html.escape(sec.name)}"><h2>{html.escape(sec.name)}</h2>'
        f"<p>{html.escape(sec.checked)} ({len(sec.rows)} checks, {status}{took})</p>"
        f"{_table(sec.rows) if sec.rows else ''}"
        f'<div class="figs">{"".join(figs)}</div></section>'
    )


def write_report(sections: Sequence[Section], path: PathType, title: str = "medimg report") -> Path:
    """Write the page to ``path`` (replacing an earlier one) and return its path."""
    target = Path(path)
    failed = sum(s.failed for s in sections)
    total = sum(len(s.rows) for s in sections)
    verdict = "fail" if failed else "ok"
    toc = " · ".join(
        f'<a href="#{html.escape(s.name)}">{html.escape(s.name)}</a>' for s in sections
    )
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f'<p class="summary {verdict}">{total - failed} of {total} checks ok, {failed} failed</p>'
        f"<p>{toc}</p>" + "".join(_section(s, target.parent) for s in sections) + "</body></html>\n"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target, overwrite=True) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return target
