"""The HTML report: its structure, and what a browser shows of it (headless Chromium)."""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from medimg.report.html import Section, stage_figures, write_report

MAGENTA = (1.0, 0.0, 1.0)


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append((tag, dict(attrs)))


def _png(path: Path, color: tuple[float, float, float], size=(120, 240)) -> Path:
    import matplotlib.image

    path.parent.mkdir(parents=True, exist_ok=True)
    matplotlib.image.imsave(path, np.ones((*size, 3)) * np.array(color))
    return path


def _report(tmp_path: Path) -> Path:
    stage = tmp_path / "seg"
    _png(stage / "evaluation" / "cases.png", MAGENTA)
    for i in range(6):  # per-case overlays: only a few make it onto the page
        _png(stage / "pred" / f"case{i}.png", (0.0, 1.0, 0.0), size=(20, 20))
    rows = [
        {"stage": "seg", "item": "liver", "Dice": "0.950", "status": "ok"},
        {"stage": "seg", "item": "spleen", "Dice": "0.120", "status": "FAIL"},
    ]
    sections = [
        Section("seg", "Segments a phantom <and> scores it.", rows, stage_figures(stage), 1.5),
        Section("io", "Round-trips a volume.", [{"item": "CT", "status": "ok"}]),
    ]
    return write_report(sections, tmp_path / "report.html", title="demo")


def test_report_has_one_section_per_stage_with_tables_and_relative_figures(tmp_path) -> None:
    page = _report(tmp_path)
    text = page.read_text()
    parser = _Collect()
    parser.feed(text)
    sections = [a.get("id") for t, a in parser.tags if t == "section"]
    assert sections == ["seg", "io"]
    imgs = [a["src"] for t, a in parser.tags if t == "img"]
    assert imgs[0] == "seg/evaluation/cases.png"  # the summary figure comes first
    assert len(imgs) == 4  # capped: two of the six overlays are left off
    assert all((tmp_path / src).is_file() for src in imgs)
    assert "2 of 3 checks ok" in text and "1 failed" in text
    assert "&lt;and&gt;" in text  # text is escaped, not injected as markup
    assert text.count('<tr class="fail">') == 1
    assert "<th>stage</th>" not in text  # the section heading names the stage


def test_stage_figures_puts_summaries_before_per_case_figures(tmp_path) -> None:
    _png(tmp_path / "pred" / "a.png", MAGENTA)
    _png(tmp_path / "overview.png", MAGENTA)
    _png(tmp_path / "evaluation" / "roc.png", MAGENTA)
    names = [p.relative_to(tmp_path).as_posix() for p in stage_figures(tmp_path, limit=2)]
    assert names == ["evaluation/roc.png", "overview.png"]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_screenshot_in_headless_chromium(tmp_path) -> None:
    """The page renders: the figure shows (its magenta block is on screen at its size), the
    failing row is tinted red, and there is text. CI installs Debian's chromium (.ci/run)."""
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI; .ci/run installs it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    import matplotlib.image

    page = _report(tmp_path)
    shot = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--screenshot={shot}", "--window-size=1000,1400", page.resolve().as_uri()]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    rgb = matplotlib.image.imread(shot)[..., :3]
    magenta = (rgb[..., 0] > 0.9) & (rgb[..., 1] < 0.1) & (rgb[..., 2] > 0.9)
    assert magenta.sum() > 0.8 * 120 * 240  # the figure loaded at (about) its size
    pink = (np.abs(rgb - np.array([0xFD, 0xE0, 0xE0]) / 255).max(axis=-1) < 0.02).sum()
    assert pink > 500  # the failing row's cells
    dark = (rgb.max(axis=-1) < 0.3).sum()
    assert dark > 1000  # headings and table text were drawn
