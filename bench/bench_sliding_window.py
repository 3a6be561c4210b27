"""Sliding-window inference vs MONAI: equal output, time ratio, and peak RAM on a CT-sized volume.

Usage: ``.venv/bin/python bench/bench_sliding_window.py [--skip-ram]``

1. Equality: a small random 3D conv net on a (2, 61, 53, 47) image, patch (32, 32, 24),
   overlap 0.5: ``sliding_window_logits`` vs ``monai.inferers.sliding_window_inference``
   (mode "gaussian", sigma_scale 0.125); max absolute difference of the blended logits.
2. Time: (1, 256, 224, 160) image, 10 classes, patch 96³, overlap 0.5, batch 2, with a
   pointwise head (a 1x1x1 convolution written as a broadcast multiply-add: oneDNN's Conv3d with
   one input channel costs ~0.3 s per batch here and would hide the machinery being measured).
   Median of 3 alternating runs of: ours logits vs MONAI (like for like); ours labels from
   blended logits (``softmax=False``, streaming uint8 argmax) vs MONAI + ``argmax(0)`` (like for
   like); and ours labels from blended per-window softmax (the default, what mirroring and fold
   ensembles need), which does more work than MONAI + argmax.
3. Peak RAM: a 512×512×400 float32 CT-like volume, 10 classes, patch 96³, **overlap 0.25** (fewer
   windows: the CPU is small and shared), batch 2, each method in a fresh subprocess; peak RSS
   from ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after producing uint8 labels. MONAI's run is
   skipped, and reported as such, if its estimated need exceeds 80% of the available RAM.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

K = 10
PATCH = (96, 96, 96)


class PointwiseHead(nn.Module):
    """``K`` logits per voxel from the first channel: ``w_k · x + b_k`` (a 1x1x1 conv)."""

    def __init__(self, classes: int = K) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(classes, generator=g).view(1, -1, 1, 1, 1))
        self.register_buffer("b", torch.randn(classes, generator=g).view(1, -1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * self.w + self.b


def monai_logits(image: torch.Tensor, net, patch, overlap: float, bs: int) -> torch.Tensor:
    from monai.inferers import sliding_window_inference

    with torch.no_grad():
        return sliding_window_inference(
            image[None], patch, bs, net, overlap=overlap, mode="gaussian", sigma_scale=0.125
        )[0]


def equality() -> None:
    from medimg.tasks.segment.inference import sliding_window_logits

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 4, 3, padding=1))
    image = torch.randn(2, 61, 53, 47)
    patch = (32, 32, 24)
    ours = sliding_window_logits(image, net.eval(), patch_size=patch, overlap=0.5, batch_size=4)
    ref = monai_logits(image, net, patch, 0.5, 4)
    print(f"[equality] conv net, image {tuple(image.shape)}, patch {patch}, overlap 0.5: "
          f"max |ours - MONAI| = {float((ours - ref).abs().max()):.2e} "
          f"(logits up to {float(ref.abs().max()):.2f})")  # fmt: skip


def timing(repeats: int) -> None:
    from medimg.tasks.segment.inference import sliding_window_logits, sliding_window_segment

    net = PointwiseHead()
    image = torch.randn(1, 256, 224, 160, generator=torch.Generator().manual_seed(1))
    kw = {"patch_size": PATCH, "overlap": 0.5, "batch_size": 2}
    runs = {
        "ours logits": lambda: sliding_window_logits(image, net, **kw),
        "MONAI logits": lambda: monai_logits(image, net, PATCH, 0.5, 2),
        "ours labels": lambda: sliding_window_segment(
            image, net, num_classes=K, softmax=False, **kw
        ),
        "MONAI + argmax": lambda: monai_logits(image, net, PATCH, 0.5, 2).argmax(0),
        "ours labels (softmax)": lambda: sliding_window_segment(image, net, num_classes=K, **kw),
    }
    diff = float((runs["ours logits"]() - runs["MONAI logits"]()).abs().max())
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"[time] image {tuple(image.shape)}, {K} classes, patch {PATCH}, overlap 0.5, "
          f"median of {repeats}; max |Δ logits| = {diff:.2e}")  # fmt: skip
    print(f"  logits: ours {med['ours logits']:.2f} s, MONAI {med['MONAI logits']:.2f} s, "
          f"ours/MONAI {med['ours logits'] / med['MONAI logits']:.2f}")  # fmt: skip
    print(f"  labels: ours {med['ours labels']:.2f} s, MONAI+argmax {med['MONAI + argmax']:.2f} s, "
          f"ours/MONAI {med['ours labels'] / med['MONAI + argmax']:.2f}")  # fmt: skip
    soft = med["ours labels (softmax)"]
    print(f"  labels from blended softmax: ours {soft:.2f} s, "
          f"ours/(MONAI+argmax) {soft / med['MONAI + argmax']:.2f}")  # fmt: skip


def child(method: str) -> None:
    """One RAM measurement (run in a fresh process): prints a JSON line."""
    from medimg.tasks.segment.inference import sliding_window_segment

    image = torch.empty(1, 512, 512, 400)
    image.normal_(generator=torch.Generator().manual_seed(2))
    net = PointwiseHead()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if method == "ours":
        labels = sliding_window_segment(
            image, net, patch_size=PATCH, num_classes=K, overlap=0.25, batch_size=2
        )
    else:
        labels = monai_logits(image, net, PATCH, 0.25, 2).argmax(0).to(torch.uint8)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"method": method, "base_kib": base, "peak_kib": peak,
                      "seconds": seconds, "shape": list(labels.shape)}))  # fmt: skip


def peak_ram() -> None:
    import psutil

    gib = 2**30
    voxels = 512 * 512 * 400
    # MONAI: input + K-channel float32 output + count map + int64 argmax + uint8 labels
    monai_need = voxels * (4 + 4 * K + 4 + 8 + 1)
    print(f"[RAM] 512x512x400 float32 ({voxels * 4 / gib:.2f} GiB input), {K} classes, "
          f"patch {PATCH}, overlap 0.25, batch 2; peak RSS of a fresh process")  # fmt: skip
    for method in ("ours", "monai"):
        available = psutil.virtual_memory().available
        if method == "monai" and monai_need > 0.8 * available:
            print(f"  MONAI: skipped, needs ~{monai_need / gib:.1f} GiB, "
                  f"{available / gib:.1f} GiB available")  # fmt: skip
            continue
        proc = subprocess.run(
            [sys.executable, __file__, "--child", method], capture_output=True, text=True
        )
        if proc.returncode != 0:
            print(f"  {method}: failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {method:5s}: peak {r['peak_kib'] / 2**20:.2f} GiB "
              f"(after imports + input {r['base_kib'] / 2**20:.2f} GiB), "
              f"{r['seconds']:.1f} s, labels {r['shape']}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-ram", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=["ours", "monai"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    t0 = time.perf_counter()
    equality()
    timing(args.repeats)
    if not args.skip_ram:
        peak_ram()
    print(f"total {time.perf_counter() - t0:.0f} s, torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
