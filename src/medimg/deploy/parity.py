"""The parity report ``export`` writes: torch vs each exported file (ONNX fp32, ONNX int8,
TorchScript) on a check set drawn from the task's generator (seeds apart from calibration).

Per backend: max |Δ| of the network output against torch, the task metric through the same
``predict`` code (Dice over the foreground labels of generated cases for segmentation, PSNR in
the soft-tissue window against full dose for generated low-dose CT slices), size, and CPU
latency of one network call at 1 and 2 threads (median of 3 after a warm-up) on the batch
``predict`` uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medimg.deploy.targets import ExportTarget

__all__ = ["format_report", "load_backend", "parity_report", "weight_bytes"]

CHECK_SEED = 1000  # check cases: seeds apart from the calibration set's (0, 1, ...)
_WHAT = {"segment": "cases", "recon-ct": "low-dose slices", "diagnose": "radiographs (AUC: 16+)",
         "register": "MR pairs", "detect": "thoracic CTs",
         "recon-us": "plane-wave phantoms", "recon-mri": "brain slices"}  # fmt: skip


def load_backend(kind: str, path: Path, threads: int | None = None) -> nn.Module:
    """An exported file as a callable network (ONNX Runtime session or TorchScript)."""
    if kind == "torchscript":
        return torch.jit.load(str(path)).eval()
    from medimg.deploy.runtime import OrtNetwork, make_session

    return OrtNetwork(make_session(path, threads), {"model_tag": kind})


def weight_bytes(net: nn.Module) -> int:
    """Bytes of the torch weights, each shared tensor once (MONAI's DynUNet holds its blocks
    under two names)."""
    seen: dict[int, int] = {}
    for t in net.state_dict().values():
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def _latency_ms(net: Callable[..., torch.Tensor], x: tuple[torch.Tensor, ...]) -> float:
    with torch.no_grad():
        net(*x)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            net(*x)
            times.append(time.perf_counter() - t0)
    return round(1000 * float(np.median(times)), 2)


def _segment_metric(target: ExportTarget, nets: dict[str, nn.Module], n: int) -> dict[str, float]:
    """Mean foreground Dice of each backend on ``n`` generated cases (no mirroring)."""
    from medimg.engine.config import from_yaml
    from medimg.io.image import Image
    from medimg.metrics.segmentation import dice
    from medimg.phantoms.segmentation import make_case
    from medimg.tasks.segment.plan import SegPlan
    from medimg.tasks.segment.predict import Segmenter

    plan = from_yaml(SegPlan, target.settings["plan"])
    kind = "ct" if plan.modality.upper() == "CT" else "mr"
    scores: dict[str, list[float]] = {k: [] for k in nets}
    for i in range(n):
        case = make_case(kind, CHECK_SEED + i)
        image = Image(case.image.array, case.image.affine, modality=plan.modality)
        gt = case.labels.array[0]
        for k, net in nets.items():
            seg = Segmenter.from_networks(plan, [net], tag=k)
            labels = seg.segment(image, mirror=False, force=True).array[0]
            scores[k] += [dice(labels == c, gt == c) for c in range(1, plan.num_classes)]
    return {k: round(float(np.mean(v)), 4) for k, v in scores.items()}


def _ct_metric(target: ExportTarget, nets: dict[str, nn.Module], n: int) -> dict[str, float]:
    """Mean soft-tissue-window PSNR (dB) against full dose on ``n`` generated low-dose slices."""
    from medimg.deploy.targets import ct_low_dose
    from medimg.engine.config import from_yaml
    from medimg.metrics.ct import windowed_psnr
    from medimg.tasks.reconstruct.ct.predict import denoise_slices
    from medimg.tasks.reconstruct.ct.train import CTTrainConfig

    cfg = from_yaml(CTTrainConfig, target.settings["config"])
    low, full = ct_low_dose(cfg, n, CHECK_SEED)
    hu = np.concatenate([x[:, 0] for x in low]) * 1000.0
    out = {}
    for k, net in nets.items():
        den = denoise_slices(net, hu)
        out[k] = round(float(np.mean([windowed_psnr(f, d).value for f, d in zip(full, den)])), 3)
    return out


def _diagnose_metric(target: ExportTarget, nets: dict[str, nn.Module], n: int) -> dict[str, float]:
    """ROC AUC of the positive logit on generated radiographs (at least 16, half with a
    nodule): a like-for-like check between backends, not the model's accuracy on films."""
    from sklearn.metrics import roc_auc_score

    from medimg.deploy.targets import diagnose_inputs
    from medimg.engine.config import from_yaml
    from medimg.tasks.diagnose.train import DiagnoseConfig

    cfg = from_yaml(DiagnoseConfig, target.settings["config"])
    xs, ys = diagnose_inputs(cfg, max(n, 16), CHECK_SEED)
    x = torch.from_numpy(np.concatenate(xs))
    out = {}
    with torch.no_grad():
        for k, net in nets.items():
            logits = net(x).float().numpy()[:, : int(cfg.num_outputs)]  # then the features
            out[k] = round(float(roc_auc_score(ys, logits[:, -1])), 4)
    return out


def _more(name: str) -> Callable[..., dict[str, float]]:
    def run(*args: Any) -> dict[str, float]:
        from medimg.deploy import targets_more

        return getattr(targets_more, name)(*args)

    return run


def _mri_metric(*args: Any) -> dict[str, float]:
    from medimg.deploy.mri import mri_metric

    return mri_metric(*args)


_METRICS = {"segment": (_segment_metric, "dice"), "recon-ct": (_ct_metric, "psnr_db"),
            "diagnose": (_diagnose_metric, "auc"),
            "register": (_more("register_metric"), "dice"),
            "detect": (_more("detect_metric"), "sensitivity"),
            "recon-us": (_more("us_metric"), "l1_db"),
            "recon-mri": (_mri_metric, "psnr_db")}  # fmt: skip


def parity_report(target: ExportTarget, files: dict[str, Path], *, samples: int = 2) -> dict:
    """The report (a JSON-ready dict) for ``files`` (backend name -> exported file)."""
    assert target.sample is not None
    inputs = [tuple(torch.from_numpy(a) for a in (x if isinstance(x, tuple) else (x,)))
              for x in target.sample(samples, CHECK_SEED)]  # fmt: skip
    nets: dict[str, nn.Module] = {"torch fp32": target.network}
    for k, p in files.items():
        nets[k] = load_backend("torchscript" if k == "torchscript" else "onnx", p)
    with torch.no_grad():
        ref = [target.network(*x) for x in inputs]
        max_diff = {
            k: float(max((net(*x) - r).abs().max() for x, r in zip(inputs, ref)))
            for k, net in nets.items()
        }
    scale = float(max(r.abs().max() for r in ref)) or 1.0  # max |Δ| relative to the outputs
    metric_fn, metric_name = _METRICS[target.task]
    metric = metric_fn(target, nets, samples)
    torch_bytes = weight_bytes(target.network)
    sizes = {"torch fp32": torch_bytes, **{k: p.stat().st_size for k, p in files.items()}}
    x_lat = tuple(t.expand(target.batch, *t.shape[1:]).contiguous() for t in inputs[0])
    latency: dict[str, dict[str, float]] = {k: {} for k in nets}
    before = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            for k in nets:
                net = nets[k] if k == "torch fp32" or k == "torchscript" else (
                    load_backend("onnx", files[k], t))  # fmt: skip
                latency[k][f"{t} thread{'s' if t > 1 else ''}"] = _latency_ms(net, x_lat)
    finally:
        torch.set_num_threads(before)
    return {
        "task": target.task,
        "check_set": f"{samples} generated {_WHAT[target.task]} (seeds from {CHECK_SEED})",
        "latency_input": [list(t.shape) for t in x_lat] if len(x_lat) > 1 else list(x_lat[0].shape),
        "metric": metric_name,
        "backends": {
            k: {
                "max_abs_diff": max_diff[k],
                "max_rel_diff": max_diff[k] / scale,
                metric_name: metric[k],
                "size_bytes": sizes[k],
                "latency_ms": latency[k],
            }
            for k in nets
        },
    }


def format_report(report: dict[str, Any]) -> list[str]:
    """A short table of the report, one line per backend."""
    m = report["metric"]
    lines = [f"{'backend':<20} {'max|Δ|':>9} {m:>8} {'size':>9} {'ms@1t':>8} {'ms@2t':>8}"]
    for k, row in report["backends"].items():
        lat = list(row["latency_ms"].values())
        lines.append(f"{k:<20} {row['max_abs_diff']:>9.2e} {row[m]:>8.4g} "
                     f"{row['size_bytes'] / 1e6:>7.2f}MB {lat[0]:>8.1f} {lat[1]:>8.1f}")  # fmt: skip
    return lines
