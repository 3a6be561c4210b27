"""The shipped chest X-ray nodule classifier on a real radiograph with inserted nodules, and its
out-of-distribution safeguard on real non-chest images.

Real-background set (never used in training): pydicom-data's ``RG1_UNCR`` CR chest PA (MIT;
1955 x 1841, MONOCHROME1, 15 bits; its PixelSpacing is 0, so 0.2 mm is assumed, which makes the
film 368 x 391 mm). It is the only real chest film available offline, and it already shows
several round opacities, so "negative" here means "no *inserted* nodule". 60 views: a random
crop of 85-100 % of each side (full resolution, >= 1500 px; the model downsamples to its input size
itself), half of them with one inserted nodule, 10-30 mm (log-uniform), solid / part-solid /
calcified (2:1:1), centred anywhere in the lung fields (drawn by hand on this film, eroded by
the radius; behind ribs, hila and part of the heart included).

Insertion (:func:`medimg.physics.xray.insert_nodule`): line integrals add, so the nodule's
``(mu_nodule - mu_lung) * chord`` at 60 keV is added to the film's log image, times
``(1 - scatter fraction)`` = 0.7 (scatter is barely changed by a small absorber, so it dilutes
the contrast) and blurred by 0.3 mm. The film stores log exposure in grey levels of unknown
gain: the gain is measured as (abdomen - lung) grey difference of the film divided by the same
line-integral difference on radiographs from :mod:`medimg.phantoms.chest_xray` (median of
``--gain-films`` films), so an inserted nodule has the contrast it would have on that film.

Reported: AUC of the raw score (logit ranking) with DeLong 95 % CI, ECE of the calibrated
probability, the saliency peak (LayerCAM; a heat-map detector's own map) inside the nodule's
box (true positives at 0.5), the safeguard's
``ood_score`` and flag rate on the 60 views, on the default preset's phantoms (seed 2), on
``chest-films`` preset films of held-out patients (:func:`medimg.tasks.diagnose.sources.preset_films`
``test``; AUC there too) and on real non-chest images: CR extremity (``RG3_UNCR``, 10 crops), CT (pydicom-data's
512^2 ``693_UNCR``, octave-dicom's ankle CT), MR (pydicom-data's ``MR2_UNCR`` shoulder, dipy's
T1 slice, five slices of the ITK T1 head).

Run: ``MEDIMG_DATA_CACHE=/tmp/rdcache nice -n 5 .venv/bin/python bench/bench_diagnose_real.py``
"""

from __future__ import annotations

import argparse
import glob
import time

import numpy as np
import torch
from scipy import ndimage

from medimg.datasets.real_sources import fetch, real_file
from medimg.io.image import Image
from medimg.metrics.classification import auc_delong_ci, expected_calibration_error
from medimg.physics.xray import from_stored, insert_nodule
from medimg.tasks.diagnose.predict import Diagnoser

PIXEL_MM = 0.2  # assumed: the file's PixelSpacing is 0
SCATTER_FRACTION = 0.3
KINDS = ("solid", "solid", "part_solid", "calcified")


def _film(arr: np.ndarray, pixel_mm: float) -> Image:
    """A film ``(rows, cols)`` as our ``(1, X, Y)`` radiograph image (columns to the left)."""
    a = np.eye(4)
    a[:3, :3] = [[-pixel_mm, 0, 0], [0, 0, 1.0], [0, -pixel_mm, 0]]
    return Image(np.ascontiguousarray(arr.T)[None].astype(np.float32), a, modality="CR")


#: The lung fields of ``RG1`` drawn by hand as (column, row) polygons at 1/4 scale (the film is
#: fixed, and a threshold either took the collimator's dark corners or lost the lungs behind
#: the ribs and heart): apex to costophrenic angle, the left one reaching behind the heart.
RG1_LUNGS = (
    [(95, 45), (175, 40), (200, 120), (195, 250), (185, 330), (150, 345), (60, 360), (45, 300),
     (55, 150)],
    [(265, 40), (350, 40), (410, 120), (420, 250), (410, 340), (380, 370), (330, 330), (290, 300),
     (265, 200), (255, 120)],
)  # fmt: skip


def _regions(grey: np.ndarray, lungs: tuple | None = RG1_LUNGS) -> tuple[np.ndarray, np.ndarray]:
    """``(lung, abdomen)`` masks of a film ``(rows, cols)``: the lung polygons (``None``: the
    darkest 30 % of the smoothed central field), abdomen = the bottom 8 % of rows, central
    columns."""
    from skimage.draw import polygon

    h, w = grey.shape
    lung = np.zeros_like(grey, bool)
    if lungs is not None:
        for poly in lungs:
            cols, rows = (np.array(c, float) * 4 for c in zip(*poly))
            rr, cc = polygon(rows, cols, shape=grey.shape)
            lung[rr, cc] = True
    else:
        smooth = ndimage.uniform_filter(grey, 15)
        field = np.zeros_like(grey, bool)
        field[int(0.08 * h) : int(0.85 * h), int(0.1 * w) : int(0.9 * w)] = True
        lung = field & (smooth < np.percentile(smooth[field], 30))
    abdomen = np.zeros_like(grey, bool)
    abdomen[int(0.9 * h) : int(0.98 * h), int(0.25 * w) : int(0.75 * w)] = True
    return lung, abdomen


def _reference_contrast(n: int) -> float:
    """Median (abdomen - lung) line-integral difference on generated chest radiographs."""
    from medimg.phantoms.chest_xray import chest_radiograph

    diffs = []
    for seed in range(n):
        film = chest_radiograph(100 + seed, 256, voxel_mm=6.0, nodules=0)
        grey = film.log.T  # (rows, cols)
        _, abdomen = _regions(grey, None)
        diffs.append(float(np.median(grey[abdomen]) - np.median(grey[film.lung.T])))
    return float(np.median(diffs))


def real_background_set(n: int, seed: int, gain: float, grey: np.ndarray) -> list[dict]:
    rng = np.random.default_rng(seed)
    lung, _ = _regions(grey)
    cases = []
    for i in range(n):
        h, w = grey.shape
        ch, cw = (int(s * rng.uniform(0.85, 1.0)) for s in (h, w))
        r0, c0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = grey[r0 : r0 + ch, c0 : c0 + cw].astype(np.float64)
        case = {"label": i % 2, "crop": crop}
        if case["label"]:
            dia = float(np.exp(rng.uniform(np.log(10), np.log(30))))
            r_px = dia / 2 / PIXEL_MM
            room = ndimage.binary_erosion(lung[r0 : r0 + ch, c0 : c0 + cw], iterations=int(r_px))
            pts = np.argwhere(room)
            rr, cc = pts[rng.integers(len(pts))]
            kind = str(rng.choice(KINDS))
            log = torch.from_numpy(crop.T.copy())  # (X=cols, Y=rows)
            log = insert_nodule(log, (PIXEL_MM, PIXEL_MM), (float(cc), float(rr)), dia, kind,
                                blur_sigma_mm=0.3, gain=gain * (1 - SCATTER_FRACTION))  # fmt: skip
            case["crop"] = log.numpy().T
            case.update(diameter=dia, kind=kind, center_xy=(int(cc), int(rr)), r_px=r_px)
        cases.append(case)
    return cases


def _scores(dx: Diagnoser, images: list[Image]) -> np.ndarray:
    return np.array([dx.predict([im], explain=None).ood_score for im in images])


def non_chest_images() -> dict[str, list[Image]]:
    import pydicom

    root = fetch("pydicom-data")
    out: dict[str, list[Image]] = {}
    ext = pydicom.dcmread(root / "RG3_UNCR.dcm")
    g = from_stored(torch.from_numpy(ext.pixel_array.astype(np.float32)), "MONOCHROME1",
                    int(ext.BitsStored)).numpy()  # fmt: skip
    rng = np.random.default_rng(3)
    crops = []
    for _ in range(10):
        s = int(g.shape[0] * rng.uniform(0.6, 1.0))
        r, c = rng.integers(0, g.shape[0] - s + 1), rng.integers(0, g.shape[1] - s + 1)
        crops.append(_film(g[r : r + s, c : c + s], 0.2))
    out["CR extremity (RG3, 10 crops)"] = crops
    ct = [pydicom.dcmread(root / f).pixel_array.astype(np.float32) for f in ("693_UNCR.dcm",)]
    try:
        ankle_dir = fetch("octave-dicom")
        for f in sorted(glob.glob(str(ankle_dir / "**" / "*.dcm"), recursive=True)):
            ds = pydicom.dcmread(f)
            if ds.get("Modality") == "CT" and "PixelData" in ds:
                ct.append(ds.pixel_array.astype(np.float32))
    except Exception as exc:  # an optional source: report and go on
        print(f"octave-dicom skipped ({exc})")
    out[f"CT slices ({len(ct)})"] = [_film(a, 0.7) for a in ct]
    mr = [pydicom.dcmread(root / "MR2_UNCR.dcm").pixel_array.astype(np.float32)]
    mr.append(np.load(real_file("dipy", "t1_coronal_slice.npy")).astype(np.float32))
    import nibabel as nib

    t1 = np.asarray(nib.load(real_file("itk-examples", "KmeansTest_T1UCharRaw.nii.gz")).dataobj)
    mr += [t1[:, :, k].astype(np.float32) for k in range(14, 54, 8)]
    out[f"MR slices ({len(mr)})"] = [_film(a, 1.0) for a in mr]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gain-films", type=int, default=4)
    ap.add_argument("--test-films", type=int, default=300)
    ap.add_argument("--model", help="model folder (default: the shipped model)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.process_time()
    import pydicom

    ds = pydicom.dcmread(fetch("pydicom-data") / "RG1_UNCR.dcm")
    grey = from_stored(torch.from_numpy(ds.pixel_array.astype(np.float32)), "MONOCHROME1",
                       int(ds.BitsStored)).numpy()  # fmt: skip
    lung, abdomen = _regions(grey)
    ref = _reference_contrast(args.gain_films)
    gain = float(np.median(grey[abdomen]) - np.median(grey[lung])) / ref
    print(f"reference abdomen-lung line-integral difference {ref:.2f}; film gain {gain:.0f} "
          f"grey levels per unit line integral")  # fmt: skip
    dx = Diagnoser(args.model, device="cpu")
    cases = real_background_set(args.cases, args.seed, gain, grey)
    z, pc, ood, hits, tps = [], [], [], 0, 0
    for c in cases:
        im = _film(c["crop"], PIXEL_MM)
        pred = dx.predict([im], explain="layercam" if c["label"] else None)
        z.append(pred.logits["nodule"])
        pc.append(pred.calibrated["nodule"])
        ood.append(pred.ood_score)
        if c["label"] and pred.calibrated["nodule"] >= 0.5 and pred.heatmap is not None:
            tps += 1
            hm = pred.heatmap.array[0]
            i, j = np.unravel_index(int(np.argmax(hm)), hm.shape)
            (u, v), r = c["center_xy"], c["r_px"]
            hits += int(abs(i - u) <= r and abs(j - v) <= r)
    y = np.array([c["label"] for c in cases])
    ci = auc_delong_ci(y, np.array(z))
    ece = expected_calibration_error(np.array(pc), y)
    ood_a = np.array(ood)
    print(f"real-background set ({len(cases)} views of RG1, {y.sum()} with a 10-30 mm nodule): "
          f"AUC (raw logit) {ci.value:.3f} [{ci.low:.3f}, {ci.high:.3f}]; ECE (temperature-"
          f"scaled) {ece:.3f}; mean calibrated p {np.mean(pc):.3f}; logits "
          f"{np.min(z):.1f}..{np.max(z):.1f}; saliency peak in box {hits}/{tps} TPs; "
          f"safeguard flags {np.mean(ood_a > 1):.0%} (ood_score median {np.median(ood_a):.1f})")  # fmt: skip
    from medimg.metrics.classification import roc_auc
    from medimg.phantoms.diagnosis import make_cases
    from medimg.tasks.diagnose.sources import TEST_PATIENTS, preset_films

    phantoms = [c.to_images()["DX"] for c in make_cases("xray", 300, seed=2)]
    s = _scores(dx, phantoms)
    print(f"default-preset phantoms (300, seed 2): safeguard flags {np.mean(s > 1):.1%} "
          f"(ood_score median {np.median(s):.2f})")  # fmt: skip

    held = preset_films("test", args.test_films)  # patients never used in training
    films = [Image(x, np.eye(4), modality="DX") for x in held.x]
    preds = [dx.predict([im], explain=None) for im in films]
    s = np.array([p.ood_score for p in preds])
    auc_in = roc_auc(held.y, np.array([p.logits["nodule"] for p in preds]))
    print(f"chest-films preset films ({len(films)} of held-out patients {TEST_PATIENTS[0]}-"
          f"{TEST_PATIENTS[-1]}, 6-30 mm nodules): AUC {auc_in:.3f}; safeguard flags "
          f"{np.mean(s > 1):.1%} (ood_score median {np.median(s):.2f})")  # fmt: skip
    for name, images in non_chest_images().items():
        s = _scores(dx, images)
        print(f"{name}: safeguard flags {np.mean(s > 1):.0%} (ood_score min {s.min():.1f}, "
              f"median {np.median(s):.1f})")  # fmt: skip
    print(f"CPU {time.process_time() - t0:.0f} s")


if __name__ == "__main__":
    main()
