"""The brain MRI model on real heads it never saw, in T1 and in T2-/PD-like contrasts.

Real volumes (:func:`medimg.tasks.segment.brain_eval.real_brain_cases`): the ITK KmeansTest T1
(unstripped head, 128x128x62 at 2x2x3 mm; reference: multi-Otsu CSF/GM/WM inside the ITK
skull-strip mask) and pydeface's mean T1 head (1 mm; reference: multi-Otsu inside Colin27's
brain mask registered to it by ANTs SyN). T2- and PD-like versions remap the T1's
intensities inside the brain (:func:`medimg.phantoms.synth_brain.contrast_variant`), so the
reference stays the same. Dice of CSF, all GM (cortical + deep: the reference has no deep grey
class) and WM on the volume's own grid, with CPU seconds per volume; then, as the "before", what
the shipped abdominal CT model makes of the same T1 (refused by its input contract; with
``--force``, the voxels it calls liver/spleen/kidney).

    MEDIMG_DATA_CACHE=/tmp/rdcache OMP_NUM_THREADS=1 nice -n 5 \\
        .venv/bin/python bench/bench_segment_brain.py --threads 1 [--model runs/segment/brain/model]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="brain model folder (default: the shipped brain model)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--subjects", nargs="+", default=["itk_t1", "pydeface_mean"],
                    help="real heads to score (default: both)")  # fmt: skip
    ap.add_argument("--no-mirror", action="store_true", help="skip left-right test-time flip")
    ap.add_argument("--png", help="write a figure (one axial slice per contrast) here")
    ap.add_argument("--synthetic", type=int, default=4,
                    help="also score N synthesised heads of unseen seeds (default: 4)")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from medimg.errors import InputError
    from medimg.tasks.segment.brain import BRAIN_MODEL
    from medimg.tasks.segment.brain_eval import brain_dice, real_brain_cases
    from medimg.tasks.segment.predict import Segmenter

    seg = Segmenter(args.model or BRAIN_MODEL, device="cpu")
    print(f"model: {seg.tag}")
    print("| volume | contrast | CSF | GM (all) | WM | CPU s |")
    print("|---|---|---|---|---|---|")
    rows = []
    for case in real_brain_cases(subjects=tuple(args.subjects)):
        t0 = time.process_time()
        pred = seg.segment(case.image, mirror=not args.no_mirror).array[0]
        cpu = time.process_time() - t0
        d = brain_dice(pred, case.reference.array[0])
        rows.append((case, pred, d))
        print(f"| {case.name} | {case.contrast} | {d['csf']:.3f} | {d['gm']:.3f} | "
              f"{d['wm']:.3f} | {cpu:.1f} |")  # fmt: skip
    if args.synthetic:
        _synthetic_rows(seg, args.synthetic, not args.no_mirror)
    t1 = rows[0][0]
    print("\nbefore: the shipped abdominal CT model on the same T1")
    ct = Segmenter(device="cpu")
    try:
        ct.segment(t1.image, mirror=False)
        print("  accepted without a word")
    except InputError as e:
        print(f"  refused: {str(e).splitlines()[0][:160]}")
    forced = ct.segment(t1.image, mirror=False, force=True).array[0]
    counts = {n: int((forced == k).sum()) for k, n in enumerate(ct.plan.label_names) if k}
    print(f"  with --force: voxels labelled {counts} (a brain holds none of these)")
    if args.png:
        _figure(rows, args.png)
        print(f"wrote {args.png}")


def _synthetic_rows(seg, n: int, mirror: bool) -> None:
    """Dice on whole synthesised Colin27 heads of seeds never drawn in training (the training
    distribution: tells an undertrained model from a gap between synthetic and real images)."""
    from medimg.io.image import Image
    from medimg.phantoms.synth import synth_sample
    from medimg.phantoms.synth_brain import colin27_labels, labels_at_spacing
    from medimg.tasks.segment.brain import brain_dataset
    from medimg.tasks.segment.brain_eval import brain_dice

    spacing = seg.plan.target_spacing[0]
    data = brain_dataset([labels_at_spacing(colin27_labels()[1], spacing)], seg.plan)
    for i in range(n):
        gen = torch.Generator().manual_seed(10**9 + i)
        means = data.mean_prior(gen)
        s = synth_sample(data.maps[0], seed=gen, appearance=data.appearance,
                         deformation=data.deformation)  # fmt: skip
        if means is not None:  # as the dataset does: the prior's means on the same labels
            from medimg.phantoms.synth import synthesize_image

            s.image = synthesize_image(s.labels, seed=gen, appearance=data.appearance,
                                       means=means)  # fmt: skip
        image = Image(s.image[None].numpy(), np.diag([spacing] * 3 + [1.0]), modality="MR")
        pred = seg.segment(image, mirror=mirror, force=True).array[0]
        ref = data.lut[s.labels].numpy()
        d = brain_dice(np.where(pred == 4, 2, pred), np.where(ref == 4, 2, ref))
        kind = "random" if means is None else "template"
        print(f"| synthesised Colin27 {i} | {kind} | {d['csf']:.3f} | {d['gm']:.3f} | "
              f"{d['wm']:.3f} | |")  # fmt: skip


def _figure(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(rows), figsize=(3.2 * len(rows), 6.4))
    for j, (case, pred, d) in enumerate(rows):
        z = case.image.array.shape[-1] // 2
        img = case.image.array[0][:, :, z].T
        axes[0, j].imshow(img, cmap="gray", origin="lower")
        axes[0, j].set_title(f"{case.contrast}: GM {d['gm']:.2f} WM {d['wm']:.2f}")
        axes[1, j].imshow(np.where(pred[:, :, z] > 0, pred[:, :, z], np.nan).T, cmap="tab10",
                          vmin=0, vmax=9, origin="lower", interpolation="nearest")  # fmt: skip
        for ax in axes[:, j]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    main()
