"""The ``evaluate`` report: ``metrics.csv``, ``summary.md`` and ``panel.png`` in one folder."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

__all__ = ["save_panel", "write_report"]


def save_panel(path: Path, source: np.ndarray, pred: np.ndarray, ref: np.ndarray | None,
               direction: str, title: str = "") -> None:  # fmt: skip
    """PNG of 2D slices: source, synthetic image, reference and |error| (when there is one).
    CT is shown in a [-200, 1600] HU window, MR from 0 to its 99.5th percentile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def window(img: np.ndarray, is_ct: bool) -> dict:
        if is_ct:
            return {"vmin": -200, "vmax": 1600}
        return {"vmin": 0, "vmax": float(np.percentile(img, 99.5)) or 1.0}

    src_ct = direction == "ct2mr"
    panels = [
        ("source " + ("CT" if src_ct else "MR"), source, window(source, src_ct)),
        ("synthetic " + ("MR" if src_ct else "CT"), pred, window(pred, not src_ct)),
    ]
    if ref is not None:
        panels.append(("reference", ref, window(ref, not src_ct)))
        err = np.abs(pred - ref)
        panels.append(("|error|", err, {"vmin": 0, "vmax": 500 if not src_ct else 0.5}))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    for ax, (name, img, kw) in zip(np.atleast_1d(axes), panels):
        ax.imshow(np.asarray(img).T, origin="lower", cmap="gray", **kw)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(out: str | Path, direction: str, *, model=None, source=None, reference=None,
                 mask=None, anatomy: str = "toy", n: int = 16,
                 overwrite: bool = False) -> Path:  # fmt: skip
    """Score generated heads (no ``source``) or ``source`` against ``reference``; write the
    report folder ``out`` whole."""
    from medimg.io.output import atomic_dir, check_output_dir
    from medimg.tasks.synthesize.evaluate import evaluate_files, evaluate_generated

    inputs = [p for p in (source, reference, mask) if p]
    check_output_dir(out, overwrite, inputs=inputs)
    if source is None:
        rows, summary = evaluate_generated(direction, model, anatomy=anatomy, n=n)
        panel = None
    else:
        scores, pred, ref, _ = evaluate_files(source, reference, direction, model, mask)
        rows, summary = [{"case": Path(source).name, **scores}], dict(scores)
        from medimg.io.api import load

        src = load(source).array[0]
        k = src.shape[-1] // 2
        panel = (src[..., k], pred[..., k], ref[..., k])
    with atomic_dir(out, overwrite, inputs=inputs) as tmp:
        with open(tmp / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        lines = [f"# Synthesis ({direction}) — SynthRAD metrics inside the body", "",
                 "| metric | model | mean-value baseline |", "|---|---|---|"]  # fmt: skip
        for k, v in summary.items():
            if not k.startswith("baseline_"):
                b = summary.get(f"baseline_{k}")
                lines.append(f"| {k} | {v:.4g} | {'' if b is None else f'{b:.4g}'} |")
        (tmp / "summary.md").write_text("\n".join(lines) + "\n")
        if panel is None:
            from medimg.tasks.synthesize.simulate import generated_heads

            mr, ct, _, _ = generated_heads(1, anatomy=anatomy)
            from medimg.tasks.synthesize.predict import synthesize_volume

            src_img = mr if direction == "mr2ct" else ct
            pred = synthesize_volume(src_img, direction, model).array[0, ..., 0]
            ref = (ct if direction == "mr2ct" else mr).array[0, ..., 0]
            panel = (src_img.array[0, ..., 0], pred, ref)
        save_panel(tmp / "panel.png", *[np.asarray(p, dtype=np.float32) for p in panel],
                   direction=direction)  # fmt: skip
    return Path(out)
