"""Demo stage: the shipped default model on fresh chest X-ray phantoms (predict + evaluate)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

__all__ = ["stage"]

#: Held-out seed: the default model was trained on seeds 0 (train) and 1 (validation).
DEMO_SEED = 1000


def stage(out_dir: Path) -> list[dict]:
    """Simulate 16 radiographs, predict them with LayerCAM maps, evaluate; one summary row."""
    from medimg.tasks.diagnose.evaluate import evaluate_predictions
    from medimg.tasks.diagnose.predict import predict_path
    from medimg.tasks.diagnose.sources import write_simulated_set

    data = write_simulated_set(out_dir / "data", "xray", n_train=0, n_val=0, n_test=16,
                               seed=DEMO_SEED, overwrite=True)  # fmt: skip
    t0 = time.perf_counter()
    written = predict_path(data / "images", out_dir / "pred", device="cpu", overwrite=True)
    seconds = time.perf_counter() - t0
    res = evaluate_predictions(written[0], data / "manifest.csv", out_dir / "evaluation",
                               overwrite=True)  # fmt: skip
    b = res["binary"]
    maps = len([p for p in written if p.name.endswith("_heatmap.nii.gz")])
    return [
        {
            "stage": "diagnose",
            "item": "default model: chest X-ray nodule",
            "shape": "64x64",
            "AUC": f"{b['auc']:.3f}",
            "ECE (T-scaled)": f"{b['ece_calibrated']:.3f}",
            "maps": maps,
            "predict s": f"{seconds:.1f}",
            "status": "ok" if maps == 16 and np.isfinite(b["auc"]) else "FAIL",
        }
    ]
