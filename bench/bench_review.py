"""Review page speed in a real browser: load of a 512x512x300 CT case to its first drawn slice,
and the time of one slice change, measured with Playwright driving Debian's headless Chromium.

The case (int16 HU-like volume, a label map with three organs, a float32 uncertainty map) is
written to a temporary review folder; the server runs in this process (``serve_in_thread``), the
browser in its own. *Page load* runs from ``page.goto`` to the canvas showing the case's middle
axial slice, with the server's volume cache cold (the image, labels and uncertainty NIfTI files
are read and decompressed during it). *Slice change* runs from a key press (ArrowUp) to the
canvas showing the next slice and the frame painted, uncertainty overlay on (three slices
fetched), timed inside the page (``performance.now``); median and 95th percentile over
``--changes`` presses per view.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python bench/bench_review.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np


def write_case(root: Path, shape: tuple[int, int, int]) -> None:
    """A CT-like case in the review layout (images/, proposals/, uncertainty/)."""
    from medimg.io.label_table import write_label_table

    rng = np.random.default_rng(0)
    x, y, z = np.ogrid[: shape[0], : shape[1], : shape[2]]
    c = [s / 2 for s in shape]
    body = ((x - c[0]) / (0.45 * shape[0])) ** 2 + ((y - c[1]) / (0.35 * shape[1])) ** 2 < 1
    body = np.broadcast_to(body, shape)
    image = np.where(body, 40, -1000).astype(np.int16)
    labels = np.zeros(shape, np.uint8)
    for k, (cx, cy, r) in enumerate([(0.35, 0.45, 0.12), (0.65, 0.45, 0.08), (0.5, 0.7, 0.06)], 1):
        organ = (
            ((x - cx * shape[0]) ** 2 + (y - cy * shape[1]) ** 2) < (r * shape[0]) ** 2
        ) & (np.abs(z - c[2]) < 0.35 * shape[2])  # fmt: skip
        labels[organ] = k
        image[organ] = 40 + 15 * k
    image += rng.normal(0, 12, shape).astype(np.int16)
    affine = np.diag([0.7, 0.7, 1.0, 1.0])
    for sub in ("images", "proposals", "uncertainty"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, affine), root / "images" / "ct_0000.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), root / "proposals" / "ct.nii.gz")
    write_label_table(root / "proposals" / "ct.tsv", {1: "liver", 2: "spleen", 3: "kidney"})
    from scipy import ndimage

    edge = ndimage.morphological_gradient(labels, size=3) > 0
    unc = ndimage.gaussian_filter(edge.astype(np.float32), 2) * 4
    nib.save(nib.Nifti1Image(np.clip(unc, 0, 1).astype(np.float32), affine),
             root / "uncertainty" / "ct.nii.gz")  # fmt: skip


#: In the page: press ArrowUp, wait until the canvas shows the target slice and the frame is
#: painted; milliseconds (performance.now), without Playwright's round trips.
NEXT_SLICE = """async ([axis, target]) => {
  const canvas = document.getElementById("canvas");
  const t0 = performance.now();
  const shown = new Promise((resolve) => {
    const obs = new MutationObserver(() => {
      if (canvas.dataset.slice === `${axis}:${target}`) { obs.disconnect(); resolve(); }
    });
    obs.observe(canvas, { attributes: true });
  });
  window.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowUp" }));
  await shown;
  await new Promise((resolve) => requestAnimationFrame(() => resolve()));
  return performance.now() - t0;
}"""


def measure(root: Path, mid: int, changes: int, shot: Path | None, warm: bool) -> dict[str, float]:
    """Page load (cold: nothing read yet; warm: the first case read at server start, as
    ``medimg review`` does) and, when warm, slice changes in each view."""
    from playwright.sync_api import sync_playwright

    from medimg.review.folder import ReviewFolder
    from medimg.review.server import serve_in_thread

    folder = ReviewFolder(root)
    if warm:
        folder.prefetch(list(folder.cases)[:1])
    url, stop = serve_in_thread(folder)
    out: dict[str, float] = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                        args=["--no-sandbox"])  # fmt: skip
            # the page forbids eval; the timing script below needs it (this benchmark only)
            page = browser.new_page(viewport={"width": 1100, "height": 900}, bypass_csp=True)
            t0 = time.perf_counter()
            page.goto(url)
            page.wait_for_selector(f"canvas[data-case='ct'][data-slice='2:{mid}']", timeout=60_000)
            out[f"page load to first slice, {'warm' if warm else 'cold'} (s)"] = (
                time.perf_counter() - t0
            )
            if warm:
                page.check("#uncertainty")
                page.wait_for_selector("canvas[data-uncertainty='1']", timeout=60_000)
                for axis, name in ((2, "axial"), (1, "coronal"), (0, "sagittal")):
                    if axis != 2:
                        page.select_option("#view", str(axis))
                    start = int(page.input_value("#slice"))
                    page.wait_for_selector(f"canvas[data-slice='{axis}:{start}']")
                    times = [page.evaluate(NEXT_SLICE, [axis, start + i]) / 1000
                             for i in range(1, changes + 1)]  # fmt: skip
                    out[f"slice change {name}, median (ms)"] = 1000 * statistics.median(times)
                    out[f"slice change {name}, p95 (ms)"] = 1000 * float(np.percentile(times, 95))
            if shot and warm:
                page.select_option("#view", "2")
                page.wait_for_selector(f"canvas[data-slice='2:{mid}']")
                shot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shot))
            browser.close()
    finally:
        stop()
    return out


def _subset(src: Path, cases: list[str], dst: Path) -> Path:
    """An MSD folder holding only ``cases`` of ``src``'s training set (links, not copies)."""
    meta = json.loads((src / "dataset.json").read_text())
    for sub in ("imagesTr", "labelsTr"):
        (dst / sub).mkdir(parents=True)
    for c in cases:
        (dst / "imagesTr" / f"{c}_0000.nii.gz").symlink_to(src / "imagesTr" / f"{c}_0000.nii.gz")
        (dst / "labelsTr" / f"{c}.nii.gz").symlink_to(src / "labelsTr" / f"{c}.nii.gz")
    meta["training"] = [t for t in meta["training"] if Path(t["label"]).name[:-7] in cases]
    meta["numTraining"] = len(cases)
    (dst / "dataset.json").write_text(json.dumps(meta))
    return dst


def _test_dice(model: Path, data: Path) -> float:
    """Mean Dice over the organs and the held-out cases (imagesTs/labelsTs)."""
    from medimg.io.api import load
    from medimg.metrics.segmentation import dice
    from medimg.tasks.segment.predict import Segmenter

    seg = Segmenter(model, device="cpu")
    scores = []
    for img in sorted((data / "imagesTs").glob("*_0000.nii.gz")):
        gt = load(data / "labelsTs" / img.name.replace("_0000", ""), is_label=True).array[0]
        pred = seg.segment(load(img, modality="CT"), mirror=False, force=True).array[0]
        scores += [dice(pred == k, gt == k) for k in range(1, 4)]
    return float(np.mean(scores))


def active_learning(work: Path, seeds: int, pool: int, start: int, add: int, rounds: int,
                    steps: int, steps_round: int) -> list[dict]:  # fmt: skip
    """Simulated annotation: from ``start`` labelled cases, ``rounds`` times add ``add`` cases
    chosen by ``segment suggest`` or at random, fine-tune (``init``: the previous round's
    model) and score Dice on held-out cases. Both arms share each seed's first model."""
    from medimg.cli import main as medimg
    from medimg.phantoms.segmentation import write_msd_dataset
    from medimg.tasks.segment.suggest import suggest
    from medimg.tasks.segment.train import train_segmentation

    rows = []
    for seed in range(seeds):
        data = write_msd_dataset(work / f"data{seed}", "ct", n_train=pool, n_test=3,
                                 seed=100 * seed, shape=(48, 48, 12), spacing=(8.0, 8.0, 10.0))  # fmt: skip
        assert medimg(["segment", "plan", str(data), "--memory-mb", "64",
                       "--base-features", "8"]) == 0  # fmt: skip
        plan = data / "plan.yaml"
        names = sorted(p.name[:-12] for p in (data / "imagesTr").glob("*_0000.nii.gz"))
        rng = np.random.default_rng(seed)
        first = [str(n) for n in rng.choice(names, start, replace=False)]
        m0 = work / f"s{seed}_round0"
        train_segmentation(_subset(data, first, work / f"s{seed}_sub0"), m0, fold=-1, plan=plan,
                           max_steps=steps, device="cpu", progress=False)  # fmt: skip
        d0 = _test_dice(m0, data)
        for arm in ("suggest", "random"):
            labelled, model = list(first), m0
            rows.append({"seed": seed, "arm": arm, "labelled": len(labelled), "dice": d0})
            for r in range(1, rounds + 1):
                rest = [n for n in names if n not in labelled]
                if arm == "random":
                    new = [str(n) for n in rng.choice(rest, add, replace=False)]
                else:
                    cand = work / f"s{seed}_{arm}_pool{r}"
                    cand.mkdir()
                    for n in rest:
                        (cand / f"{n}_0000.nii.gz").symlink_to(
                            data / "imagesTr" / f"{n}_0000.nii.gz"
                        )
                    queue = suggest(cand, work / f"s{seed}_{arm}_q{r}", k=add, model=model,
                                    device="cpu", progress=False)  # fmt: skip
                    new = [q["case"] for q in queue[:add]]
                labelled += new
                sub = _subset(data, labelled, work / f"s{seed}_{arm}_sub{r}")
                nxt = work / f"s{seed}_{arm}_round{r}"
                train_segmentation(sub, nxt, fold=-1, plan=plan, max_steps=steps_round,
                                   device="cpu", progress=False, init=model)  # fmt: skip
                model = nxt
                rows.append({"seed": seed, "arm": arm, "labelled": len(labelled),
                             "dice": _test_dice(model, data)})  # fmt: skip
                print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300])
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--screenshot", type=Path, help="save the page after the run here")
    ap.add_argument("--active-learning", action="store_true",
                    help="run the simulated annotation loop (suggest vs random) instead")  # fmt: skip
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60, help="first model's training steps")
    ap.add_argument("--steps-round", type=int, default=30, help="fine-tuning steps per round")
    args = ap.parse_args()
    if args.active_learning:
        import torch

        torch.set_num_threads(1)
        with tempfile.TemporaryDirectory() as tmp:
            rows = active_learning(Path(tmp), args.seeds, pool=10, start=2, add=2, rounds=3,
                                   steps=args.steps, steps_round=args.steps_round)  # fmt: skip
        print("| labelled cases | suggest: mean Dice (per seed) | random: mean Dice (per seed) |")
        print("|---|---|---|")
        for n in sorted({r["labelled"] for r in rows}):
            cells = []
            for arm in ("suggest", "random"):
                d = [r["dice"] for r in rows if r["arm"] == arm and r["labelled"] == n]
                cells.append(f"{np.mean(d):.3f} ({', '.join(f'{x:.3f}' for x in d)})")
            print(f"| {n} | {cells[0]} | {cells[1]} |")
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "review"
        t = time.perf_counter()
        write_case(root, tuple(args.shape))
        print(f"wrote a {'x'.join(map(str, args.shape))} case in {time.perf_counter() - t:.1f} s")
        for warm in (False, True):
            res = measure(root, args.shape[2] // 2, args.changes, args.screenshot, warm)
            for k, v in res.items():
                print(f"{k}: {v:.3f}" if "(s)" in k else f"{k}: {v:.1f}", flush=True)


if __name__ == "__main__":
    main()
