"""Demo stage: the shipped default model on a fresh generated abdomen (predict + evaluate)."""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["stage"]

#: A seed the default model never saw (its training and held-out seeds are far below this).
DEMO_SEED = 1000


def stage(out_dir: Path) -> list[dict]:
    """Write a generated abdominal CT (:mod:`medimg.phantoms.abdomen`), segment it with the
    default model, score it; one row per organ."""
    from medimg.io.api import save
    from medimg.phantoms.segmentation import make_case
    from medimg.tasks.segment.evaluate import evaluate_folders
    from medimg.tasks.segment.predict import Segmenter

    case = make_case("abdomen", DEMO_SEED)
    for sub in ("images", "labels", "preds"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    save(case.image, out_dir / "images" / "demo_0000.nii.gz", overwrite=True)
    save(case.labels, out_dir / "labels" / "demo.nii.gz", overwrite=True)
    t0 = time.perf_counter()
    seg = Segmenter(device="cpu")
    pred = seg.segment(case.image, mirror=False)
    seconds = time.perf_counter() - t0
    save(pred, out_dir / "preds" / "demo.nii.gz", overwrite=True)
    names = {k: n for k, n in case.names.items() if k}
    res = evaluate_folders(out_dir / "preds", out_dir / "labels", out_dir / "evaluation",
                           labels=names, images_dir=out_dir / "images")  # fmt: skip
    rows = []
    for k, metrics in res["per_case"]["demo"].items():
        rows.append(
            {
                "stage": "segment",
                "item": f"default model: {names[k]}",
                "shape": "x".join(map(str, case.image.spatial_shape)),
                "Dice": f"{metrics['dice']:.3f}",
                "HD95 mm": f"{metrics['hd95']:.1f}",
                "predict s": f"{seconds:.1f}",
                "status": "ok" if metrics["dice"] > 0.7 else "FAIL",
            }
        )
    return rows
