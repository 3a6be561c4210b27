"""Demo stage: the shipped nodule detector on two fresh synthetic chest CTs (LUNA16 layout)."""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["stage"]

#: Held-out seeds: the default model saw seeds 0-29.
DEMO_SEED = 1000


def stage(out_dir: Path) -> list[dict]:
    """Simulate 2 scans in the LUNA16 layout, predict with the default model, evaluate (FROC)."""
    from medimg.datasets.luna16 import write_luna16
    from medimg.tasks.detect.evaluate import evaluate_candidates
    from medimg.tasks.detect.predict import predict_path

    data = out_dir / "luna16"
    if not (data / "annotations.csv").is_file():
        write_luna16(data, 2, seed=DEMO_SEED, n_subsets=1, progress=False)
    t0 = time.perf_counter()
    predict_path(data, out_dir / "pred", overwrite=True)
    seconds = time.perf_counter() - t0
    s = evaluate_candidates(out_dir / "pred" / "candidates.csv", data / "annotations.csv",
                            out_dir / "evaluation", excluded=data / "annotations_excluded.csv",
                            scans=data / "seriesuids.csv", n_resamples=200)  # fmt: skip
    sens1 = s["froc"]["1"]["value"]
    return [
        {
            "stage": "detect",
            "item": "default model: lung nodules, 2 synthetic CTs",
            "nodules": s["n_nodules"],
            "sens@1FP": f"{sens1:.2f}",
            "CPM": f"{s['cpm']['value']:.3f}",
            "predict s": f"{seconds:.1f}",
            # ok = the pipeline ran end to end with a finite FROC; the shipped model is
            # undertrained (see default/MODEL_CARD.md), so its CPM is reported, not required
            "status": "ok" if 0.0 <= s["cpm"]["value"] <= 1.0 else "FAIL",
        }
    ]
