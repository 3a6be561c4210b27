"""Demo stage: four generated heads (offline) -> synthetic CT and synthetic MR with the shipped
models, written as NIfTI and read back, scored with SynthRAD's metrics against the truth."""

from __future__ import annotations

from pathlib import Path

__all__ = ["stage"]

DEMO_HEADS = 4


def stage(out_dir: Path) -> list[dict]:
    """One row per direction: MAE (and bone Dice) vs the mean-value baseline, geometry kept;
    a PNG per direction (source, synthetic, truth, error)."""
    import numpy as np

    from medimg.io.api import load, save
    from medimg.tasks.synthesize.evaluate import ct_metrics, mr_metrics
    from medimg.tasks.synthesize.predict import predict_path
    from medimg.tasks.synthesize.report import save_panel
    from medimg.tasks.synthesize.simulate import generated_heads

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mr, ct, body, _ = generated_heads(DEMO_HEADS, anatomy="toy", seed=123)
    save(mr, out_dir / "mr.nii.gz", overwrite=True)
    save(ct, out_dir / "ct.nii.gz", overwrite=True)
    m = body.array[0] > 0
    rows = []
    for direction, src, ref in (("mr2ct", "mr", ct), ("ct2mr", "ct", mr)):
        dest = out_dir / f"synthetic_{direction}.nii.gz"
        predict_path(out_dir / f"{src}.nii.gz", dest, direction, overwrite=True)
        got = load(dest)
        same = got.array.shape == ref.array.shape and np.allclose(got.affine, ref.affine)
        r, p = ref.array[0].astype(float), got.array[0].astype(float)
        mean = np.where(m, r[m].mean(), r)
        score = ct_metrics if direction == "mr2ct" else mr_metrics
        s, b = score(r, p, m), score(r, mean, m)
        key = "mae_hu" if direction == "mr2ct" else "mae"
        ok = same and s[key] < b[key]
        row = {"stage": "synthesize", "item": f"{direction} (toy heads)",
               "MAE": f"{s[key]:.3g}", "baseline MAE": f"{b[key]:.3g}",
               "SSIM": f"{s['ssim']:.3f}"}  # fmt: skip
        if direction == "mr2ct":
            row["bone Dice"] = f"{s['bone_dice']:.2f}"
        row["status"] = "ok" if ok else "FAIL"
        rows.append(row)
        z = r.shape[2] // 2  # the middle axial slice: source, synthetic, truth, |error|
        save_panel(out_dir / f"{direction}.png", load(out_dir / f"{src}.nii.gz").array[0][..., z],
                   p[..., z], r[..., z], direction, f"{direction}: toy head, middle slice")  # fmt: skip
    return rows
