"""Prediction: a trained model (or the shipped default) on files, folders and DICOM series.

Per image: check the input contract, resample to the plan's spacing, normalise, sliding-window
inference with Gaussian blending and test-time mirroring (folds ensembled by averaging
probabilities), resample the labels back onto the original grid, apply the largest-component
post-processing the plan chose on validation, write NIfTI (plus DICOM-SEG for a DICOM series).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medimg.datasets.msd import IMAGE_ENDINGS, _stem, group_channels
from medimg.engine import load_weights, resolve_device
from medimg.errors import InputError
from medimg.io.image import Image
from medimg.tasks.segment.data import preprocess_image
from medimg.tasks.segment.models import build_network
from medimg.tasks.segment.plan import SegPlan, load_plan

__all__ = ["DEFAULT_MODEL", "Segmenter", "predict_path", "sliding_labels"]

DEFAULT_MODEL = Path(__file__).parent / "default"


def _predictor(
    models: Sequence[nn.Module], plan: SegPlan
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Batch -> fold-averaged softmax probabilities (a 2D plan runs on (X, Y, 1) windows)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        flat = plan.configuration == "2d" and x.ndim == 5
        xin = x[..., 0] if flat else x
        out = models[0](xin).softmax(1)
        for m in models[1:]:
            out += m(xin).softmax(1)
        out = out.div_(len(models)) if len(models) > 1 else out
        return out[..., None] if flat else out

    return run


def sliding_labels(
    array: np.ndarray,
    models: Sequence[nn.Module],
    plan: SegPlan,
    *,
    mirror: bool = True,
    device: torch.device | None = None,
    progress: bool = False,
) -> np.ndarray:
    """uint8 labels of a preprocessed ``(C, *spatial)`` array.

    The predictor already returns probabilities, so windows and mirror flips blend them as they
    are (``softmax=False``): the same result as blending per-window softmax, without a second
    softmax per window.
    """
    from medimg.tasks.segment.inference import sliding_window_segment

    patch = list(plan.patch_size)
    if plan.configuration == "2d" and array.ndim == 4:
        patch = [*patch, 1]
    mirror_axes = tuple(plan.mirror_axes) if mirror else ()
    x = torch.from_numpy(np.ascontiguousarray(array))
    out = sliding_window_segment(
        x, _predictor(models, plan), patch_size=tuple(patch), num_classes=plan.num_classes,
        overlap=0.5, batch_size=2, mirror_axes=mirror_axes, device=device, progress=progress,
        softmax=False,
    )  # fmt: skip
    return np.asarray(out, dtype=np.uint8)


class Segmenter:
    """A loaded model folder (``plan.yaml`` + ``model.safetensors`` or ``fold_*/``)."""

    def __init__(self, model_dir: str | Path | None = None, *, device: str = "auto") -> None:
        root = Path(model_dir) if model_dir else DEFAULT_MODEL
        if not (root / "plan.yaml").is_file():
            raise InputError(
                "not a segmentation model folder (no plan.yaml); train one first", root
            )
        self.root, self.plan = root, load_plan(root)
        self.device = resolve_device(device)
        weights = [root / "model.safetensors"] if (root / "model.safetensors").is_file() else []
        weights += sorted(root.glob("fold_*/best")) or sorted(root.glob("fold_*/last"))
        if not weights and (root / "best").is_dir():
            weights = [root / "best"]
        if not weights:
            raise InputError(
                "no weights (model.safetensors, best/ or fold_*/) in the model folder", root
            )
        self.models = []
        for w in weights:
            net = load_weights(build_network(self.plan), w).to(self.device).eval()
            self.models.append(net)

    def segment(self, image: Image, *, mirror: bool = True, postprocess: bool = True) -> Image:
        """Labels ``(1, *spatial)`` uint8 on ``image``'s own grid."""
        array, resampled = preprocess_image(image, self.plan)
        with torch.no_grad():
            labels = sliding_labels(
                array, self.models, self.plan, mirror=mirror, device=self.device
            )
        out = Image(labels[None], resampled.affine, modality="SEG", is_label=True)
        if out.spatial_shape != image.spatial_shape or not np.allclose(out.affine, image.affine):
            from medimg.tasks.segment.resample import resample_labels_like

            back = resample_labels_like(out, image)
            out = (
                back
                if isinstance(back, Image)
                else image.with_array(np.asarray(back), is_label=True)
            )
        if postprocess and any(self.plan.postprocessing.values()):
            from medimg.tasks.segment.postprocess import keep_largest_component

            ids = [
                self.plan.label_names.index(n) for n, on in self.plan.postprocessing.items() if on
            ]
            out = out.with_array(keep_largest_component(out.array[0], ids)[None])
        out.modality, out.meta = (
            "SEG",
            {**image.meta, "segment_names": dict(enumerate(self.plan.label_names))},
        )
        return out


def _inputs(path: Path) -> list[tuple[str, list[Path], bool]]:
    """``(case name, channel files, is_dicom)`` for a file, an image folder or a DICOM folder."""
    if path.is_file():
        return [(_stem(path), [path], False)]
    if not path.is_dir():
        raise InputError(
            "input not found; give an image file, a folder of images or a DICOM series", path
        )
    files = [
        p for p in sorted(path.iterdir()) if any(p.name.lower().endswith(e) for e in IMAGE_ENDINGS)
    ]
    if not files:
        return [(path.name, [path], True)]
    grouped = group_channels(path)
    out = [(c, fs, False) for c, fs in grouped.items()]
    grouped_files = {f for fs in grouped.values() for f in fs}
    out += [(_stem(p), [p], False) for p in files if p not in grouped_files]
    return sorted(out)


def predict_path(
    source: str | Path,
    out: str | Path,
    *,
    model: str | Path | None = None,
    device: str = "auto",
    mirror: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Segment a file, a folder of images (``_0000`` channels grouped) or a DICOM series folder.

    ``out`` is a ``.nii.gz`` file for a single input, else a folder getting ``<case>.nii.gz`` (and
    ``<case>_seg.dcm`` DICOM-SEG for a DICOM series). Returns the written paths.
    """
    from medimg.io.api import load, save

    source, out = Path(source), Path(out)
    seg = Segmenter(model, device=device)
    items = _inputs(source)
    single = len(items) == 1 and out.name.lower().endswith((".nii.gz", ".nii"))
    written: list[Path] = []
    from tqdm import tqdm

    for name, files, is_dicom in tqdm(
        items, desc="segment", disable=not progress or len(items) < 2
    ):
        chans = [load(f, modality=seg.plan.modality) for f in files]
        if len(chans) > 1 and any(c.spatial_shape != chans[0].spatial_shape for c in chans):
            raise InputError(
                f"channel files of case {name!r} differ in shape; resample them", files[0]
            )
        arr = np.concatenate([c.array.astype(np.float32) for c in chans])
        image = Image(arr, chans[0].affine, modality=chans[0].modality, meta={"case_id": name})
        labels = seg.segment(image, mirror=mirror)
        target = out if single else out / f"{name}.nii.gz"
        written.append(save(labels, target, overwrite=overwrite))
        if is_dicom:
            from medimg.io.dicom.seg import write_dicom_seg

            names = {i: n for i, n in enumerate(seg.plan.label_names) if i}
            dcm = (out.parent if single else out) / f"{name}_seg.dcm"
            written.append(
                write_dicom_seg(labels, files[0], dcm, segment_names=names, overwrite=overwrite)
            )
    return written
