"""Demo stage: the shipped nodule detector on a fresh synthetic chest CT (LUNA16 layout)."""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["DEMO_CASE", "DEMO_SEED", "MIN_SENSITIVITY_AT_1FP", "stage"]

#: Held-out seed of the plain generator (the default model trained on varied thoraxes 0-79).
DEMO_SEED = 1000
#: One 184 x 184 x 40 slab at 2 x 2 x 2.5 mm (the default model's 2 mm grid after resampling)
#: with 3-4 isolated nodules (plus 0-2 juxta-pleural ones): seconds to simulate and to scan.
DEMO_CASE = {"shape": (184, 184, 40), "n_nodules": (3, 4)}
#: The check: LUNA16 sensitivity at 1 false positive per scan.
MIN_SENSITIVITY_AT_1FP = 0.5


def stage(out_dir: Path) -> list[dict]:
    """Simulate one scan in the LUNA16 layout, predict with the default model, evaluate (FROC)."""
    import torch

    from medimg.datasets.luna16 import write_luna16
    from medimg.tasks.detect.evaluate import evaluate_candidates
    from medimg.tasks.detect.predict import predict_path

    data = out_dir / "luna16"
    if not (data / "annotations.csv").is_file():
        write_luna16(data, 1, seed=DEMO_SEED, n_subsets=1, progress=False, **DEMO_CASE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared CPU: one thread avoids OpenMP spin-waiting
    try:
        t0 = time.perf_counter()
        predict_path(data, out_dir / "pred", overwrite=True)
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    s = evaluate_candidates(out_dir / "pred" / "candidates.csv", data / "annotations.csv",
                            out_dir / "evaluation", excluded=data / "annotations_excluded.csv",
                            scans=data / "seriesuids.csv", n_resamples=200,
                            overwrite=True)  # fmt: skip
    sens1 = s["froc"]["1"]["value"]
    return [
        {
            "stage": "detect",
            "item": "default model: lung nodules, 1 held-out synthetic CT",
            "nodules": s["n_nodules"],
            "sens@1FP": f"{sens1:.2f}",
            "CPM": f"{s['cpm']['value']:.3f}",
            "predict s": f"{seconds:.1f}",
            "status": "ok" if sens1 >= MIN_SENSITIVITY_AT_1FP else "FAIL",
        }
    ]
