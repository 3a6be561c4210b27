"""The review page in a real browser (Playwright driving Debian's headless Chromium): open a
case, draw a stroke on the slice, undo a second one, save, and check that the saved NIfTI
changed exactly under the first stroke. The screenshot stays in runs/review/screenshot.png."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from medimg.io.api import load
from medimg.review.folder import to_display

SHOT = Path(__file__).resolve().parents[2] / "runs" / "review" / "screenshot.png"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser():
    exe = _chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI; .ci/run installs it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    pytest.importorskip("fastapi")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        yield b
        b.close()


def _stroke(page, box, rows, cols, row, col0, col1) -> None:
    """Press at the centre of voxel (row, col0), drag along the row to (row, col1), release."""
    y = box["y"] + (row + 0.5) * box["height"] / rows
    x0 = box["x"] + (col0 + 0.5) * box["width"] / cols
    x1 = box["x"] + (col1 + 0.5) * box["width"] / cols
    page.mouse.move(x0, y)
    page.mouse.down()
    page.mouse.move(x1, y, steps=8)
    page.mouse.up()


def test_draw_a_stroke_and_save_in_chromium(browser, review_dir) -> None:
    from medimg.review.server import serve_in_thread

    url, stop = serve_in_thread(review_dir)
    try:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']", timeout=20_000)
        assert page.locator("#cases li").first.get_attribute("data-case") == "case_b"  # queue order
        page.click("#cases li[data-case='case_a']")
        page.wait_for_selector("canvas[data-case='case_a'][data-slice='2:3']")  # axial, middle
        page.select_option("#label", "2")
        page.fill("#size", "1")  # one voxel per point: the stroke is exactly one row
        page.check("#uncertainty")
        box = page.locator("#canvas").bounding_box()
        rows, cols = 20, 24  # axial display of the 24 x 20 x 6 case: rows y, columns x
        _stroke(page, box, rows, cols, row=2, col0=2, col1=8)
        _stroke(page, box, rows, cols, row=17, col0=10, col1=20)  # a slip...
        page.click("#undo")  # ...taken back
        page.select_option("#status", "accepted")
        page.fill("#note", "stroke test")
        page.click("#save")
        page.wait_for_selector("body[data-saved='1']", timeout=20_000)
        assert "saved reviewed/case_a.nii.gz" in page.text_content("#msg")
        SHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOT))
        assert not errors, errors
    finally:
        stop()
    proposal = load(review_dir / "proposals" / "case_a.nii.gz", is_label=True).canonical()
    saved = load(review_dir / "reviewed" / "case_a.nii.gz", is_label=True).canonical()
    diff = saved.array[0] != proposal.array[0]
    assert diff[:, :, 3].sum() == diff.sum()  # nothing changed off the drawn slice
    changed = np.argwhere(to_display(diff, 2, 3))
    assert sorted(map(tuple, changed)) == [(2, c) for c in range(2, 9)]
    assert (to_display(saved.array[0], 2, 3)[2, 2:9] == 2).all()  # painted with label 2
    assert SHOT.stat().st_size > 10_000


def test_fill_relabels_one_region_in_chromium(browser, review_dir) -> None:
    from medimg.review.server import serve_in_thread

    url, stop = serve_in_thread(review_dir)
    try:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']", timeout=20_000)
        page.click("#cases li[data-case='case_a']")
        page.wait_for_selector("canvas[data-case='case_a'][data-slice='2:3']")
        page.select_option("#tool", "fill")
        page.select_option("#label", "1")
        before = load(review_dir / "proposals" / "case_a.nii.gz", is_label=True).canonical()
        disp = to_display(before.array[0], 2, 3)
        r, c = np.argwhere(disp == 2)[0]  # a voxel of the spleen region
        box = page.locator("#canvas").bounding_box()
        page.mouse.click(box["x"] + (c + 0.5) * box["width"] / disp.shape[1],
                         box["y"] + (r + 0.5) * box["height"] / disp.shape[0])  # fmt: skip
        page.click("#save")
        page.wait_for_selector("body[data-saved='1']", timeout=20_000)
    finally:
        stop()
    after = load(review_dir / "reviewed" / "case_a.nii.gz", is_label=True).canonical()
    diff = after.array[0] != before.array[0]
    assert diff.sum() == (disp == 2).sum() == to_display(diff, 2, 3).sum()  # the region only
    assert (to_display(after.array[0], 2, 3)[disp == 2] == 1).all()
