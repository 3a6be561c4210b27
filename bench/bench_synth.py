"""Speed of the label-map generator (images from label maps, random shapes, random warps).

Times, per 128^3 sample (median of ``--repeats`` seeds after one warm-up), on the device asked
for and ``--threads`` CPU threads, as wall-clock and as CPU seconds of the process (the fair
figure on a shared machine, where wall time counts the other jobs too):

* ``random_shapes``: a 16-label map of random smooth shapes (warped);
* ``random_deformation`` + ``warp`` of the labels (nearest neighbour);
* ``synthesize_image``: Gaussian-mixture contrast, bias, blur/low resolution, noise, gamma;
* ``synth_sample``: deformation + image together, on a real brain label map (Colin27 tissue
  classes, deep grey and head classes at 1.5 mm, cropped/padded to 128^3) when ``--real`` is
  given (fetches ``mricron-data`` into ``$MEDIMG_DATA_CACHE``), else on a random-shape map.

Writes a PNG of a few samples (one slice each) with ``--png``.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python bench/bench_synth.py --threads 1 --real \
        --png /tmp/synth.png
    .venv/bin/python bench/bench_synth.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def _timed(fn, repeats: int, device: torch.device) -> tuple[float, float]:
    """Median (wall seconds, CPU seconds of this process) per call."""
    fn(0)  # warm-up (allocations, kernels)
    wall, cpu = [], []
    for seed in range(1, repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        fn(seed)
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def _real_labels(size: int) -> torch.Tensor:
    """Colin27 labels at 1.5 mm, centred in a ``size``^3 box."""
    from medimg.phantoms.synth_brain import colin27_labels
    from medimg.tasks.segment.resample import resample_to_spacing

    _, labels = colin27_labels()
    lab = resample_to_spacing(labels, (1.5, 1.5, 1.5), order=0).array[0]
    out = np.zeros((size,) * 3, np.uint8)
    src = [
        slice(max(0, (n - size) // 2), max(0, (n - size) // 2) + min(n, size)) for n in lab.shape
    ]
    dst = [
        slice(max(0, (size - n) // 2), max(0, (size - n) // 2) + min(n, size)) for n in lab.shape
    ]
    out[tuple(dst)] = lab[tuple(src)]
    return torch.from_numpy(out.astype(np.int64))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--real", action="store_true", help="time synth_sample on Colin27 labels")
    ap.add_argument("--png", help="write a few samples (mid slice) to this PNG")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from medimg.phantoms.synth import (
        random_deformation,
        random_shapes,
        synth_sample,
        synthesize_image,
        warp,
    )

    dev = torch.device(args.device)
    shape = (args.size,) * 3
    shapes = random_shapes(shape, 16, seed=0, device=dev)
    labels = _real_labels(args.size).to(dev) if args.real else shapes
    rows = {
        "random_shapes (16 labels)": lambda s: random_shapes(shape, 16, seed=s, device=dev),
        "random_deformation": lambda s: random_deformation(shape, seed=s, device=dev),
        "warp labels (nearest)": lambda s: warp(
            labels, random_deformation(shape, seed=s, device=dev), labels=True
        ),
        "synthesize_image": lambda s: synthesize_image(labels, seed=s),
        "synth_sample (warp + image)": lambda s: synth_sample(labels, seed=s),
    }
    where = f"{dev.type}" + (f", {args.threads} thread(s)" if dev.type == "cpu" else "")
    what = "Colin27 labels" if args.real else "random-shape labels"
    print(f"| step ({args.size}^3, {what}, {where}) | wall s | CPU s |")
    print("|---|---|---|")
    for name, fn in rows.items():
        wall, cpu = _timed(fn, args.repeats, dev)
        print(f"| {name} | {wall:.3f} | {cpu:.3f} |")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 4, figsize=(12, 6))
        for i, ax in enumerate(axes[0]):
            s = synth_sample(labels, seed=100 + i)
            ax.imshow(s.image[:, :, args.size // 2].cpu().T, cmap="gray", origin="lower")
            ax.set_title(f"seed {100 + i}")
        for i, ax in enumerate(axes[1]):
            if i == 0:
                ax.imshow(labels[:, :, args.size // 2].cpu().T, cmap="tab20", origin="lower")
                ax.set_title("labels")
                continue
            s = synth_sample(shapes, seed=200 + i)
            ax.imshow(s.image[:, :, args.size // 2].cpu().T, cmap="gray", origin="lower")
            ax.set_title(f"random shapes, seed {200 + i}")
        for ax in axes.ravel():
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(args.png, dpi=70)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
