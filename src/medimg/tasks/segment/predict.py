"""Prediction: a trained model (or the shipped default) on files, folders and DICOM series.

Per image: check the input contract (:mod:`~medimg.tasks.segment.contract`: modality,
intensities, dimensionality), reorient to the closest RAS+ (so a DICOM series, whose slices may
load in the opposite order, and a NIfTI of the same scan give the same labels), resample to the
plan's spacing, normalise, sliding-window inference with Gaussian blending and test-time
mirroring (folds ensembled by averaging probabilities), resample the labels back onto the
original grid, apply the largest-component post-processing the plan chose on validation, write
NIfTI (plus DICOM-SEG for a DICOM series), each naming the model that made the labels.
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
    overlap: float = 0.5,
    batch_size: int = 2,
) -> np.ndarray:
    """uint8 labels of a preprocessed ``(C, *spatial)`` array; ``overlap`` of neighbouring
    windows (nnU-Net's 0.5 by default; 0 is fastest) and ``batch_size`` windows per forward pass.

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
        overlap=overlap, batch_size=batch_size, mirror_axes=mirror_axes, device=device,
        progress=progress,
        softmax=False,
    )  # fmt: skip
    return np.asarray(out, dtype=np.uint8)


class Segmenter:
    """A loaded model folder (``plan.yaml`` + ``model.safetensors`` or ``fold_*/``).

    ``overlap`` and ``batch_size`` set the sliding window (see :func:`sliding_labels`)."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        device: str = "auto",
        overlap: float = 0.5,
        batch_size: int = 2,
        backend: str = "torch",
    ) -> None:
        from medimg.deploy.runtime import check_backend
        from medimg.tasks.segment.inference import check_window_settings

        check_window_settings(overlap, batch_size)
        self.overlap, self.batch_size = overlap, batch_size
        if check_backend(backend) == "onnxruntime" or str(model_dir).lower().endswith(".onnx"):
            self._open_onnx(model_dir, device)
            return
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
        from medimg.tasks.segment.contract import model_tag

        is_default = root.resolve() == DEFAULT_MODEL.resolve()
        #: which model makes the labels (NIfTI descrip, DICOM-SEG header, ``meta["model"]``)
        self.tag = model_tag("default" if is_default else root.name, self.plan, self.models)

    def _open_onnx(self, model: str | Path | None, device: str) -> None:
        """The ONNX Runtime backend: an exported ``.onnx`` (plan from its sidecar), or a model
        folder exported now; the network call is all that changes."""
        from medimg.deploy.runtime import open_onnx
        from medimg.engine.config import from_yaml
        from medimg.tasks.segment.plan import SegPlan

        self.device = resolve_device(device)
        net, side = open_onnx(model, "segment", device=str(self.device))
        self.device = torch.device("cpu")  # ONNX Runtime takes and returns host arrays
        self.plan = from_yaml(SegPlan, side["plan"])
        self.root = Path(str(model)) if model is not None else DEFAULT_MODEL
        self.models, self.tag = [net], net.tag

    @classmethod
    def from_networks(
        cls, plan: SegPlan, networks: Sequence[nn.Module], *, tag: str, overlap: float = 0.5,
        batch_size: int = 2,
    ) -> Segmenter:  # fmt: skip
        """A segmenter around networks already loaded (another backend's, e.g. for a parity
        check): same preprocessing, window and post-processing."""
        seg = cls.__new__(cls)
        seg.overlap, seg.batch_size, seg.plan, seg.tag = overlap, batch_size, plan, tag
        seg.models, seg.device, seg.root = list(networks), torch.device("cpu"), DEFAULT_MODEL
        return seg

    def segment(
        self, image: Image, *, mirror: bool = True, postprocess: bool = True, force: bool = False,
        prior: str = "off",
    ) -> Image:  # fmt: skip
        """Labels ``(1, *spatial)`` uint8 on ``image``'s own grid.

        ``prior``: ``check`` puts the anatomical prior's report (:mod:`~medimg.tasks.segment.
        priors`: components that cannot be the organ they are labelled) in ``meta["prior"]``;
        ``enforce`` also removes those components; ``off`` (default) skips it.

        An image unlike the model's training data (:mod:`~medimg.tasks.segment.contract`; its
        ``modality`` counts as declared unless it is ``OT``/``SC``) raises a one-line
        :class:`InputError` unless ``force``.

        The work is done on the image reoriented to the closest RAS+ (axis flips and
        permutations only, exact), so the result does not depend on the order in which the
        file stores its slices or axes; the labels are then put back in the image's own order.
        """
        if not force:
            from medimg.tasks.segment.contract import check_contract

            where = str(image.meta.get("source") or image.meta.get("case_id") or "image")
            check_contract(image, self.plan, where, declared_modality=image.modality)
        original = image
        image = image.canonical() if image.spatial_ndim == 3 else image
        # geometry to 0.1 µm: a NIfTI header (float32) and a DICOM series (decimal strings) of
        # one scan differ by ~1e-6 mm, enough to flip nearest-neighbour ties when resampling
        image = Image(image.array, np.round(image.affine, 4), modality=image.modality,
                      meta=image.meta)  # fmt: skip
        array, resampled = preprocess_image(image, self.plan)
        with torch.no_grad():
            labels = sliding_labels(
                array, self.models, self.plan, mirror=mirror, device=self.device,
                overlap=self.overlap, batch_size=self.batch_size,
            )  # fmt: skip
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
        if original.spatial_ndim == 3:
            out = Image(_reorient_like(out.array, original), original.affine.copy(),
                        is_label=True)  # fmt: skip
        else:
            out = Image(out.array, original.affine.copy(), is_label=True)
        out.modality, out.meta = (
            "SEG",
            {
                **original.meta,
                "segment_names": dict(enumerate(self.plan.label_names)),
                "model": self.tag,
            },
        )
        if prior == "off":
            return out
        from medimg.tasks.segment.priors import model_prior

        return model_prior(out, original, prior, root=self.root, plan=self.plan)


def _reorient_like(canonical: np.ndarray, original: Image) -> np.ndarray:
    """A ``(C, X, Y, Z)`` array of ``original.canonical()``'s grid back in ``original``'s axis
    order (the exact inverse of the flips and permutations)."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(original.affine)
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), ornt)
    return np.stack([np.asarray(nib.orientations.apply_orientation(c, back)) for c in canonical])


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


def _targets(
    items: list[tuple[str, list[Path], bool]], out: Path, single: bool
) -> list[tuple[Path, Path | None]]:
    """``(NIfTI labels, DICOM-SEG or None)`` per case: what :func:`predict_path` writes."""
    targets = []
    for name, _, is_dicom in items:
        nii = out if single else out / f"{name}.nii.gz"
        dcm = (out.parent if single else out) / f"{name}_seg.dcm" if is_dicom else None
        targets.append((nii, dcm))
    return targets


def check_image(image: Image, plan: SegPlan, path: Path) -> None:
    """One-line refusals for an image the model cannot segment: dimensionality or channel count
    other than the plan's, or a grid too small to convolve (one voxel along an axis the network
    works on)."""
    from medimg.tasks.segment.data import check_input

    check_input(image, plan, str(path))
    axes = image.spatial_shape[:2] if plan.configuration == "2d" else image.spatial_shape
    if min(axes) < 2:
        raise InputError(
            f"image of shape {'x'.join(map(str, image.spatial_shape))} is too small to segment "
            f"(a {plan.configuration.upper()} model needs at least 2 voxels along each axis it "
            "convolves); check that this is the scan you meant",
            path,
        )


def _load_case(
    name: str, files: list[Path], plan: SegPlan, *, force: bool = False,
    notes: list[str] | None = None,
) -> Image:  # fmt: skip
    """The case's channel files as one real float32 image that fits the model's input contract
    (with ``force``, a misfit is a line in ``notes`` instead of a refusal)."""
    from medimg.io.api import load
    from medimg.io.inputs import check_real
    from medimg.tasks.segment.contract import UNDECLARED, check_contract
    from medimg.tasks.segment.data import check_input

    chans = [load(f) for f in files]
    for f, c in zip(files, chans):
        check_real(c.array, f, what="segmentation")
    if len(chans) > 1 and any(c.spatial_shape != chans[0].spatial_shape for c in chans):
        raise InputError(f"channel files of case {name!r} differ in shape; resample them", files[0])
    arr = np.concatenate([c.array.astype(np.float32) for c in chans])
    declared = "" if chans[0].modality in UNDECLARED else chans[0].modality
    image = Image(arr, chans[0].affine, modality=declared or plan.modality,
                  meta={"case_id": name, "declared_modality": declared})  # fmt: skip
    # dimensionality and channels first (--force cannot change them); a modality the header
    # declares next (it explains a single-slice radiograph better than "too small"); the
    # intensity fingerprint of a file without one only once its grid is known to be usable
    check_input(image, plan, str(files[0]))
    if not declared:
        check_image(image, plan, files[0])
    note = check_contract(image, plan, files[0], declared_modality=declared, force=force)
    if note and notes is not None:
        notes.append(note)
    if declared:
        check_image(image, plan, files[0])
    return image


def predict_path(
    source: str | Path,
    out: str | Path,
    *,
    model: str | Path | None = None,
    device: str = "auto",
    mirror: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    notes: list[str] | None = None,
    force: bool = False,
    overlap: float = 0.5,
    batch_size: int = 2,
    backend: str = "torch",
    segmenter: Segmenter | None = None,
    prior: str = "off",
) -> list[Path]:
    """Segment a file, a folder of images (``_0000`` channels grouped) or a DICOM series folder.

    ``out`` is a ``.nii.gz`` file for a single input, else a folder getting ``<case>.nii.gz`` (and
    ``<case>_seg.dcm`` DICOM-SEG for a DICOM series), each NIfTI with its label table
    ``<case>.tsv`` (index, name, colour; :mod:`medimg.io.label_table`). Every output is checked
    against the inputs and existing files before the model runs; a new output folder appears
    only once every case is written. A case where the model finds nothing gets its (all-background) NIfTI and no
    DICOM-SEG (a SEG needs a segment); a line saying so is appended to ``notes``. An image
    unlike the model's training data (another modality, not Hounsfield units for a CT model) is
    refused in one line unless ``force``. Both outputs name the model that made the labels
    (NIfTI ``descrip``; SEG series description and algorithm). Returns the written paths.
    ``backend="onnxruntime"`` runs the network in ONNX Runtime (``model``: an exported
    ``.onnx``, or a model folder exported in memory); everything around it is unchanged.
    ``segmenter``: one already loaded (a cohort worker reuses its own; the model options above
    are then ignored). ``prior`` (``check``/``enforce``): the anatomical prior's report per case
    as ``<case>.prior.json`` and a line in ``notes`` per implausible component (``enforce``
    removes them from the labels); see :mod:`medimg.tasks.segment.priors`.
    """
    from medimg.io.label_table import label_table_path
    from medimg.io.output import atomic_dir, check_outputs
    from medimg.tasks.segment.priors import check_prior_mode, prior_report_path

    check_prior_mode(prior)
    source, out = Path(source), Path(out)
    items = _inputs(source)
    single = len(items) == 1 and out.name.lower().endswith((".nii.gz", ".nii"))
    targets = _targets(items, out, single)
    inputs = [source, *(f for _, files, _ in items for f in files)]
    tables = [label_table_path(nii) for nii, _ in targets]
    tables += [prior_report_path(nii) for nii, _ in targets] if prior != "off" else []
    check_outputs([p for t in targets for p in t if p is not None] + tables, inputs=inputs,
                  overwrite=overwrite)  # fmt: skip
    seg = segmenter or Segmenter(model, device=device, overlap=overlap, batch_size=batch_size,
                                 backend=backend)  # fmt: skip
    if prior != "off":  # a model without one is refused before any case is segmented
        from medimg.tasks.segment.priors import resolve_prior

        resolve_prior(seg.root, seg.plan)
    if single or (out.is_dir() and any(out.iterdir())):
        # files written one by one (each atomically) into a place other outputs may share
        return _predict_cases(seg, items, targets, mirror, overwrite, progress, notes, force,
                              prior)  # fmt: skip
    with atomic_dir(out, overwrite, inputs=inputs) as tmp:  # a new folder: whole or nothing
        staged = [(tmp / nii.name, dcm and tmp / dcm.name) for nii, dcm in targets]
        written = _predict_cases(seg, items, staged, mirror, overwrite, progress, notes, force,
                                 prior)  # fmt: skip
    return [out / p.name for p in written]


def _predict_cases(
    seg: Segmenter,
    items: list[tuple[str, list[Path], bool]],
    targets: list[tuple[Path, Path | None]],
    mirror: bool,
    overwrite: bool,
    progress: bool,
    notes: list[str] | None,
    force: bool,
    prior: str = "off",
) -> list[Path]:
    from tqdm import tqdm

    from medimg.io.label_table import label_table_path, write_label_table
    from medimg.tasks.segment.priors import prior_report_path
    from medimg.tasks.segment.provenance import save_labels_nifti, write_labels_seg

    names = {i: n for i, n in enumerate(seg.plan.label_names) if i}
    written: list[Path] = []
    for (name, files, _), (nii, dcm) in tqdm(
        list(zip(items, targets)), desc="segment", disable=not progress or len(items) < 2
    ):
        image = _load_case(name, files, seg.plan, force=force, notes=notes)
        labels = seg.segment(image, mirror=mirror, force=True, prior=prior)  # checked by _load_case
        written.append(save_labels_nifti(labels, nii, seg.tag, overwrite=overwrite))
        if "prior" in labels.meta:
            report = labels.meta["prior"]
            report.to_json(prior_report_path(nii))
            written.append(prior_report_path(nii))
            if notes is not None:
                verb = "removed" if prior == "enforce" else "implausible"
                notes.extend(f"{name}: {verb}: {line}" for line in report.lines())
        written.append(write_label_table(label_table_path(nii), names, overwrite=overwrite))
        if dcm is None:
            continue
        if not labels.array.any():
            if notes is not None:
                notes.append(
                    f"{name}: the model found no structure, so the labels are all background; "
                    "no DICOM-SEG written (a SEG needs at least one segment)"
                )
            continue
        written.append(write_labels_seg(labels, files[0], dcm, seg.tag, segment_names=names,
                                        overwrite=overwrite))  # fmt: skip
    return written
