"""Abdominal CT model: held-out generated abdomens per contrast phase, plus real CT looked at.

1. Held-out abdomens of :func:`medimg.phantoms.abdomen.abdomen_ct_case` (seeds from 5000, never
   used in training: the preset trains on seeds 0-65), ``--per-phase`` cases of EACH phase
   (unenhanced, arterial, portal venous): Dice and HD95 (mm) per organ per phase, as the
   shipped ``medimg segment predict`` runs (the plan's mirroring and post-processing).
2. Real CT from ``medimg.datasets.real_sources`` (no reference labels exist): the pydicom-data
   contrast-enhanced abdomen slice ``explicit_VR-UN`` and the neck CT ``bad_sequence``, each
   one 512x512 slice repeated to 40 mm so the 3D model has a volume to look at; the labels are
   drawn over the image (PNG) and summarised (voxels, side and depth of each organ relative to
   the body) so the description can be checked against the picture.
3. The input contract on real non-abdomen inputs: a brain MR (Colin27 T1) must be refused; a
   head CT (pydicom-data ``693_UNCR``) is CT in HU, so it passes the contract: we report how
   many voxels it labels.

    .venv/bin/python bench/bench_segment_abdomen.py --out runs/bench_abdomen [--model DIR]
        [--against DIR]

``--against`` scores a second model (e.g. the shipped one, ``default``) on the same held-out
cases and reports, per phase and organ, the Dice difference and whether the first model may
replace it: a higher mean Dice over phases and organs and no cell more than 0.02 lower.

Writes ``summary.json``, ``heldout.png`` and ``real_<name>.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HELDOUT_SEED = 5000
ORGANS = {1: "liver", 2: "spleen", 3: "kidney"}


def heldout(seg, per_phase: int) -> tuple[dict, list]:
    from medimg.metrics.segmentation import case_metrics
    from medimg.phantoms.abdomen import PHASES, abdomen_ct_case

    out, shown = {}, []
    for i, phase in enumerate(PHASES):
        rows = []
        for k in range(per_phase):
            case = abdomen_ct_case(HELDOUT_SEED + 100 * i + k, phase=phase)
            pred = seg.segment(case.image).array[0]
            gt = case.labels.array[0]
            m = case_metrics(pred, gt, labels=list(ORGANS), spacing=case.image.spacing)
            rows.append({ORGANS[k]: m[k] for k in ORGANS})
            if k == 0:
                shown.append((phase, case.image.array[0], gt, pred))
        out[phase] = {
            name: {
                "dice": float(np.nanmean([r[name]["dice"] for r in rows])),
                "dice_min": float(np.nanmin([r[name]["dice"] for r in rows])),
                "hd95_mm": float(np.nanmean([r[name]["hd95"] for r in rows])),
            }
            for name in ORGANS.values()
        }
        print(phase, {n: round(v["dice"], 3) for n, v in out[phase].items()}, flush=True)
    return out, shown


def compare(new: dict, old: dict, max_drop: float = 0.02) -> dict:
    """Dice ``new - old`` per phase and organ, both means and whether ``new`` may replace
    ``old`` (higher mean, no phase/organ cell lower by more than ``max_drop``)."""
    delta = {ph: {o: new[ph][o]["dice"] - old[ph][o]["dice"] for o in new[ph]} for ph in new}
    cells = [v for row in delta.values() for v in row.values()]
    mean_new = float(np.mean([new[ph][o]["dice"] for ph in new for o in new[ph]]))
    mean_old = float(np.mean([old[ph][o]["dice"] for ph in old for o in old[ph]]))
    return {"delta": delta, "mean_new": mean_new, "mean_old": mean_old,
            "replaces": bool(mean_new > mean_old and min(cells) >= -max_drop)}  # fmt: skip


def _slice_volume(path: Path, repeat_mm: float = 40.0):
    """One real CT slice as a 3D image: the slice repeated along z to ``repeat_mm``."""
    from medimg.io.api import load
    from medimg.io.image import Image

    im = load(path)
    if im.spatial_ndim == 2:
        im = Image(im.array[..., None], im.affine, modality=im.modality, meta=im.meta)
    n = max(1, round(repeat_mm / float(im.spacing[2])))
    arr = np.repeat(im.array, n, axis=3)
    return Image(arr, im.affine, modality=im.modality, meta=dict(im.meta))


def describe(image, labels) -> dict:
    """Per organ: voxels and where its centroid lies relative to the body's centre (RAS+)."""
    from scipy import ndimage

    img, lab = image.canonical(), labels.canonical()
    hu, lb = img.array[0], lab.array[0]
    body, n = ndimage.label(hu > -300)
    if n:
        sizes = ndimage.sum(np.ones_like(hu), body, range(1, n + 1))
        body = body == (int(np.argmax(sizes)) + 1)
    sp = np.asarray(img.spacing)
    centre = np.argwhere(body).mean(axis=0) * sp if body.any() else np.zeros(3)
    half = (np.ptp(np.argwhere(body), axis=0) + 1) * sp / 2 if body.any() else np.ones(3)
    out = {}
    for k, name in ORGANS.items():
        vox = int((lb == k).sum())
        if not vox:
            out[name] = {"voxels": 0}
            continue
        c = (np.argwhere(lb == k).mean(axis=0) * sp - centre) / half  # -1..1 of the body
        out[name] = {
            "voxels": vox, "ml": round(vox * float(np.prod(sp)) / 1000, 1),
            "side": f"{'patient right' if c[0] > 0 else 'patient left'} ({c[0]:+.2f})",
            "depth": f"{'anterior' if c[1] > 0 else 'posterior'} ({c[1]:+.2f})",
        }  # fmt: skip
    return out


def real_checks(seg, out_dir: Path) -> dict:
    from medimg.datasets.real_sources import real_file
    from medimg.errors import InputError
    from medimg.io.api import load

    res = {}
    for name, rel in (("abdomen explicit_VR-UN", "explicit_VR-UN.dcm"),
                      ("neck bad_sequence", "bad_sequence.dcm"),
                      ("head CT 693_UNCR", "693_UNCR.dcm")):  # fmt: skip
        image = _slice_volume(real_file("pydicom-data", rel))
        try:
            labels = seg.segment(image)
        except InputError as e:
            res[name] = {"refused": str(e)}
            continue
        res[name] = describe(image, labels)
        _overlay(image, labels, out_dir / f"real_{rel.split('.')[0]}.png", name)
    try:
        seg.segment(load(real_file("mricron-data", "ch2.nii.gz")))
        res["brain MR Colin27 T1"] = {"refused": False}
    except InputError as e:
        res["brain MR Colin27 T1"] = {"refused": str(e)}
    return res


def _overlay(image, labels, path: Path, title: str) -> None:
    from medimg.report import figures as f

    fig, ax = f.new_figure(2, panel_inches=4.5)
    img = f.axial_slice(image)
    lab = f.axial_slice(labels).astype(float)
    for a in ax[0]:
        a.imshow(img, cmap="gray", vmin=-200, vmax=400)
        a.axis("off")
        f.orientation_letters(a)
    ax[0][1].imshow(np.ma.masked_equal(lab, 0), cmap=f.label_colormap(ORGANS), vmin=0, vmax=3,
                    alpha=0.5, interpolation="nearest")  # fmt: skip
    ax[0][0].set_title("CT [-200, 400] HU")
    ax[0][1].set_title("predicted labels")
    f.label_legend(fig, ORGANS)
    f.save_figure(fig, path, title)


def _heldout_figure(shown: list, path: Path) -> None:
    from medimg.report.figures import label_colormap, label_legend, new_figure, save_figure

    fig, ax = new_figure(2 * len(shown), panel_inches=3.0, rows=2)
    for j, (phase, hu, gt, pred) in enumerate(shown):
        z = int(np.argmax((gt == 3).sum(axis=(0, 1)))) if (gt == 3).any() else hu.shape[2] // 2
        for r, lab in enumerate((gt, pred)):
            a = ax[r][j]
            a.imshow(hu[:, :, z].T[::-1, ::-1], cmap="gray", vmin=-200, vmax=400)
            a.imshow(np.ma.masked_equal(lab[:, :, z].T[::-1, ::-1], 0), cmap=label_colormap(ORGANS),
                     vmin=0, vmax=3, alpha=0.45, interpolation="nearest")  # fmt: skip
            a.set_title(f"{phase}: {'reference' if r == 0 else 'predicted'}")
            a.axis("off")
    label_legend(fig, ORGANS)
    save_figure(fig, path, "held-out generated abdomens (radiological view)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench_abdomen")
    ap.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    ap.add_argument(
        "--against",
        default=None,
        help="a second model scored on the same cases ('default': the shipped one)",
    )
    ap.add_argument("--per-phase", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-real", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from medimg.io.output import atomic_path
    from medimg.tasks.segment.predict import Segmenter

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seg = Segmenter(args.model, device="cpu")
    t0 = time.process_time()
    summary = {"model": seg.tag, "per_phase": args.per_phase, "heldout_seed": HELDOUT_SEED}
    summary["heldout"], shown = heldout(seg, args.per_phase)
    if args.against:
        other = Segmenter(None if args.against == "default" else args.against, device="cpu")
        print("against", other.tag, flush=True)
        old, _ = heldout(other, args.per_phase)
        summary["against"] = {"model": other.tag, "heldout": old,
                              **compare(summary["heldout"], old)}  # fmt: skip
    _heldout_figure(shown, out / "heldout.png")
    if not args.skip_real:
        summary["real"] = real_checks(seg, out)
    summary["cpu_s"] = round(time.process_time() - t0, 1)
    with atomic_path(out / "summary.json", True) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
