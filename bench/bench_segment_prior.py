"""The anatomical prior on inputs the abdominal model should never label, and on its own kind.

Out of distribution (every liver/spleen/kidney component found there is impossible): real
heads -- invesalius ``Cranium`` head CT (HU) and pydeface's mean T1 head and the Colin27 T1 (MR,
forced through the CT model's input contract). The shipped abdominal model runs with
``force=True``; the table counts the components it labels and how many the prior removes
(``enforce``). In distribution: generated abdomens of held-out seeds, where the prior should
remove (almost) nothing: Dice per organ with and without it, and the share of true-organ voxels
removed.

    MEDIMG_DATA_CACHE=/tmp/rdcache OMP_NUM_THREADS=1 nice -n 5 \\
        .venv/bin/python bench/bench_segment_prior.py [--model DIR] [--abdomens 6]
"""

from __future__ import annotations

import argparse
import tarfile

import numpy as np
import torch
from scipy import ndimage


def _components(labels: np.ndarray) -> int:
    s = ndimage.generate_binary_structure(3, 3)
    return sum(ndimage.label(labels == k, structure=s)[1] for k in np.unique(labels) if k)


def _ood_images():
    from medimg.datasets.real_sources import real_file
    from medimg.io.api import load
    from medimg.io.image import Image

    src = real_file("invesalius-examples", "Cranium.inv3")
    with tarfile.open(src) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("matrix.dat"))
        raw = tar.extractfile(member).read()  # type: ignore[union-attr]
    vol = np.frombuffer(raw, dtype=np.int16).reshape(108, 256, 256).astype(np.float32)
    # (z, y, x) rows top to bottom: an LPS-like grid; the exact orientation does not matter
    # here, since no abdominal organ is possible anywhere in a head
    affine = np.diag([-0.957, -0.957, 1.5, 1.0])
    yield "head CT (invesalius Cranium)", Image(vol.transpose(2, 1, 0)[None], affine,
                                               modality="CT")  # fmt: skip
    yield "T1 head (pydeface mean)", load(real_file("pydeface", "mean_reg2mean.nii.gz"))
    yield "T1 head (Colin27)", load(real_file("mricron-data", "ch2.nii.gz"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="abdominal model folder (default: the shipped model)")
    ap.add_argument("--abdomens", type=int, default=6, help="held-out generated abdomens")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from medimg.metrics.segmentation import dice
    from medimg.tasks.segment.predict import Segmenter
    from medimg.tasks.segment.priors import model_prior

    seg = Segmenter(args.model, device="cpu")
    print(f"model: {seg.tag}\n")
    print("| input (never abdominal) | components labelled | removed by the prior | share |")
    print("|---|---|---|---|")
    total = removed = 0
    for name, image in _ood_images():
        labels = seg.segment(image, force=True, mirror=False)
        n0 = _components(labels.array[0])
        kept = model_prior(labels, image, "enforce", root=seg.root, plan=seg.plan)
        n1 = _components(kept.array[0])
        total, removed = total + n0, removed + n0 - n1
        print(f"| {name} | {n0} | {n0 - n1} | {(n0 - n1) / max(n0, 1):.0%} |")
    print(f"| all | {total} | {removed} | **{removed / max(total, 1):.0%}** |\n")

    from medimg.phantoms.segmentation import make_case

    names = list(seg.plan.label_names)
    print("| held-out generated abdomen | Dice without prior | Dice with prior | "
          "true-organ voxels removed | components of the true labels flagged |")  # fmt: skip
    print("|---|---|---|---|---|")
    for seed in range(9000, 9000 + args.abdomens):
        case = make_case("abdomen", seed=seed)
        image, truth = case.image, case.labels.array[0]
        labels = seg.segment(image, mirror=False)
        kept = model_prior(labels, image, "enforce", root=seg.root, plan=seg.plan)
        before = [dice(labels.array[0] == k, truth == k) for k in range(1, len(names))]
        after = [dice(kept.array[0] == k, truth == k) for k in range(1, len(names))]
        lost = np.count_nonzero((labels.array[0] != kept.array[0]) & (labels.array[0] == truth))
        share = lost / max(np.count_nonzero(truth), 1)
        flagged = len(model_prior(case.labels, image, "check", root=seg.root,
                                  plan=seg.plan).meta["prior"].components)  # fmt: skip
        print(f"| seed {seed} | {' / '.join(f'{d:.3f}' for d in before)} | "
              f"{' / '.join(f'{d:.3f}' for d in after)} | {share:.2%} | {flagged} |")  # fmt: skip


if __name__ == "__main__":
    main()
