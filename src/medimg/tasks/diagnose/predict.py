"""Inference: probabilities, calibrated probabilities and explanation maps for image files.

A model folder holds ``model.yaml`` and ``model.safetensors`` (a training run folder, or the
shipped ``default/``). Explanation maps are computed at the model's input size and written on
the input image's own grid (same shape and affine) as NIfTI, plus a PNG overlay: LayerCAM
(the default of ``predict``/``explain`` and of :meth:`Diagnoser.predict`, on the shallow layer
``layercam_layer``), Grad-CAM, Grad-CAM++ (both on ``cam_layer``) or occlusion for CNNs, the
per-slice attention for MIL models.

``predictions.csv`` holds, per positive class, the raw probability ``prob_<class>``, the
temperature-scaled probability ``calibrated_<class>`` and the logit ``logit_<class>``, each
written to full float precision (Python's shortest round-trip ``repr``): rounding to a few
decimals makes confident cases tie at ``1.000000`` and loses their ranking. When the model
folder holds a safeguard (:mod:`.safeguard`), each row also holds ``ood_score`` (above 1: the
image lies outside the model's training distribution) and ``ood_flag`` (1 when it does), and
one ``warning:`` line on stderr names how many were flagged.

Inputs: a single-slice volume ``(X, Y, 1)`` is the 2D image it holds (its maps keep the
volume's shape); an RGB(A) image given to a one-channel model is converted to grey (BT.601
luma, :func:`~medimg.tasks.diagnose.data.check_case_image`); complex, NaN and one-pixel
images are refused. Outputs are named by case id: the file name without its extension, or,
where two inputs share a name (``A/p01.nii.gz``, ``B/p01.nii.gz``), their relative paths
(``A__p01``). The output folder is written whole (:mod:`.outputs`): a refusal or an interrupt
leaves nothing, or the earlier output as it was.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medimg.engine import load_weights, resolve_device
from medimg.errors import CheckpointError, InputError
from medimg.explain import heatmap_image, saliency_map, save_overlay_png
from medimg.io.image import Image
from medimg.io.inputs import case_ids
from medimg.io.output import atomic_dir, check_output_dir
from medimg.tasks.diagnose.calibration import probabilities
from medimg.tasks.diagnose.data import load_case_images, prepare_image
from medimg.tasks.diagnose.safeguard import FeatureHooks, Safeguard
from medimg.tasks.diagnose.train import MODEL_WEIGHTS, MODEL_YAML, build_model, load_config
from medimg.typing import PathType

__all__ = ["DEFAULT_MODEL", "CasePrediction", "Diagnoser", "predict_path"]

DEFAULT_MODEL = Path(__file__).with_name("default")
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".dcm")


@dataclass
class CasePrediction:
    """One case's output; ``probs``/``calibrated`` per class name (binary: the positive class)."""

    probs: dict[str, float]
    calibrated: dict[str, float]
    predicted: str
    missing: list[str]
    logits: dict[str, float] = field(default_factory=dict)
    heatmap: Image | None = None
    attention: list[float] = field(default_factory=list)
    ood_score: float | None = None  # None: the model has no safeguard


def _as_2d(image: Image) -> Image:
    """A single-slice volume ``(C, X, Y, 1)`` as a 2D image on the same affine."""
    if image.spatial_ndim == 3 and image.spatial_shape[2] == 1:
        return Image(image.array[..., 0], image.affine, modality=image.modality, meta=image.meta)
    return image


class Diagnoser:
    """A loaded diagnosis model. ``model``: a model/run folder (default: the shipped model).

    ``backend="onnxruntime"`` (or an exported ``.onnx`` as ``model``): the classifier runs in
    ONNX Runtime (:mod:`medimg.deploy.classifier`); the input preparation, calibration,
    safeguard score and outputs are this same code. Explanation maps there are occlusion only
    (LayerCAM and Grad-CAM need gradients)."""

    def __init__(
        self, model: PathType | None = None, device: str = "auto", backend: str = "torch"
    ) -> None:
        from medimg.deploy.runtime import check_backend

        self.backend = check_backend(backend)
        if self.backend == "onnxruntime" or str(model).lower().endswith(".onnx"):
            from medimg.deploy.classifier import open_classifier

            self.backend, self.device = "onnxruntime", resolve_device(device)
            ort = open_classifier(model, str(self.device))
            self.folder, self.cfg, self.model = ort["folder"], ort["config"], ort["model"]
            self.tag, self.safeguard = ort["tag"], ort["safeguard"]
            return
        folder = Path(model) if model is not None else DEFAULT_MODEL
        if not (folder / MODEL_YAML).is_file() or not (folder / MODEL_WEIGHTS).is_file():
            raise CheckpointError(
                f"not a diagnosis model folder (needs {MODEL_YAML} and {MODEL_WEIGHTS}); "
                "train one with 'medimg diagnose train' or omit --model for the default",
                folder,
            )
        self.folder, self.cfg = folder, load_config(folder / MODEL_YAML)
        self.device = resolve_device(device)
        try:
            if any(int(s) < 1 for s in self.cfg.input_size) or int(self.cfg.channels) < 1:
                raise ValueError("input_size and channels must be positive")
            net = build_model(self.cfg)
        except (ValueError, TypeError, RuntimeError) as exc:  # torch: impossible shapes
            raise CheckpointError(
                f"describes no buildable model ({exc})", folder / MODEL_YAML
            ) from None
        self.model = load_weights(net, folder / MODEL_WEIGHTS).to(self.device)
        self.model.eval()
        from medimg.engine.provenance import model_tag

        #: which model made the predictions (predictions.csv ``model``, heat map NIfTI descrip)
        self.tag = model_tag("diagnose", "default" if model is None else folder.name, [net])
        self.safeguard = None if self.cfg.supervision == "mil" else Safeguard.load(folder)

    @property
    def positive_classes(self) -> list[str]:
        return self.cfg.classes[1:] if self.cfg.task == "binary" else list(self.cfg.classes)

    def _inputs(self, images: list[Image | None]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        cfg = self.cfg
        if len(images) != len(cfg.modalities):
            raise InputError(f"the model takes {len(cfg.modalities)} modalities "
                             f"({', '.join(cfg.modalities)}), got {len(images)}")  # fmt: skip
        present = [im is not None for im in images]
        if not any(present):
            raise InputError("every modality of this case is missing")
        if not all(present) and (len(images) == 1 or cfg.supervision == "mil"):
            raise InputError("this model cannot predict without its input image")
        chans = []
        for im, w in zip(images, cfg.windows):
            if im is None:
                chans.append(np.zeros((cfg.channels, *cfg.input_size), np.float32))
                continue
            if im.num_channels != cfg.channels:
                raise InputError(f"the model takes {cfg.channels}-channel images, "
                                 f"got {im.num_channels} channels")  # fmt: skip
            chans.append(prepare_image(im, cfg.input_size, w))
        x = torch.from_numpy(np.concatenate(chans)[None]).to(self.device)
        missing = [m for m, p in zip(cfg.modalities, present) if not p]
        return x, torch.tensor([present], device=self.device), missing

    def _cam_layer(self, present: torch.Tensor, method: str = "gradcam") -> str:
        layer = self.cfg.layercam_layer if method == "layercam" else self.cfg.cam_layer
        if hasattr(self.model, "encoders"):  # per-modality encoders: explain the first present one
            m = int(torch.nonzero(present[0])[0])
            layer = layer.replace("encoder.", f"encoders.{m}.", 1)
        return layer

    def predict(
        self, images: list[Image | None], explain: str | None = "layercam"
    ) -> CasePrediction:
        """Predict one case from one image per modality (``None`` = missing, flagged)."""
        originals = images
        if len(self.cfg.input_size) == 2:
            images = [None if im is None else _as_2d(im) for im in images]
        x, present, missing = self._inputs(images)
        cfg = self.cfg
        ood = None
        if self.backend == "onnxruntime" and explain not in (None, "occlusion"):
            raise InputError(f"--explain {explain} needs gradients, which ONNX Runtime does not "
                             "give; use --explain occlusion or none with --backend onnxruntime")  # fmt: skip
        with torch.no_grad():
            if self.safeguard is not None and self.backend == "onnxruntime":
                logits = self.model(x, present).float().cpu().numpy()
                feats = self.model.last_features.cpu().numpy()  # type: ignore[union-attr]
                ood = float(self.safeguard.scores(feats.astype(np.float64))[0])
            elif self.safeguard is not None:
                with FeatureHooks(self.model) as hooks:
                    logits = self.model(x, present).float().cpu().numpy()
                ood = float(self.safeguard.scores(hooks.features().astype(np.float64))[0])
            else:
                logits = self.model(x, present).float().cpu().numpy()
        p = probabilities(logits, cfg.task)[0]
        pc = probabilities(logits, cfg.task, cfg.temperature)[0]
        names = self.positive_classes
        probs = dict(zip(names, np.atleast_1d(p).tolist()))
        cal = dict(zip(names, np.atleast_1d(pc).tolist()))
        if cfg.task == "binary":
            predicted = cfg.classes[int(pc >= 0.5)]
            cls = 0
        elif cfg.task == "multiclass":
            predicted = cfg.classes[int(np.argmax(pc))]
            cls = int(np.argmax(pc))
        else:
            predicted = ";".join(n for n, v in cal.items() if v >= 0.5)
            cls = int(np.argmax(pc))
        reference = next(im for im in originals if im is not None)  # maps on the input's grid
        raw = dict(zip(names, np.asarray(logits[0], np.float64).tolist()))
        out = CasePrediction(probs, cal, predicted, missing, logits=raw, ood_score=ood)
        if cfg.supervision == "mil":
            with torch.no_grad():
                att = self.model.attention(x)[0].cpu().numpy()  # type: ignore[operator]
            out.attention = att.tolist()
            grid = np.broadcast_to(att, cfg.input_size).astype(np.float32)  # weight per slice
            out.heatmap = heatmap_image(grid, reference)
        elif explain and hasattr(self.model, "heatmap"):  # a detector's own nodule map
            heat = self.model.heatmap(x)[0].cpu().numpy()
            out.heatmap = heatmap_image(heat, reference)
        elif explain:
            heat = saliency_map(self.model, x, method=explain, target_layer=self._cam_layer(present, explain),
                                class_idx=cls, present=present)[0]  # fmt: skip
            out.heatmap = heatmap_image(heat, reference)
        return out


def _cases(inputs: PathType, modalities: int) -> list[tuple[str, list[Path | None]]]:
    """``(case_id, files)``: one image file, a folder of single-modality files, or a manifest;
    ids unique (module doc)."""
    p = Path(inputs)
    if p.suffix.lower() == ".csv":
        from medimg.datasets.manifest import read_manifest

        m = read_manifest(p, num_modalities=modalities, allow_missing_modality=True,
                          require_labels=False)  # fmt: skip
        return [(r.case_id, list(r.paths)) for r in m.rows]
    if (
        p.is_dir()
        and not any(f.is_dir() for f in p.iterdir())
        and not any(f.name.lower().endswith(IMAGE_SUFFIXES) for f in p.iterdir())
    ):
        files = [p]  # a DICOM series folder with extension-less files
    elif p.is_dir():
        files = sorted(f for f in p.iterdir() if f.name.lower().endswith(IMAGE_SUFFIXES))
    elif p.exists():
        files = [p]
    else:
        raise InputError("input not found; give an image file, a folder or a manifest .csv", p)
    if not files:
        raise InputError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder", p)
    if modalities != 1:
        raise InputError(
            f"the model takes {modalities} modalities per case; list them in a manifest CSV "
            "(path,path2,...)",
            p,
        )
    return [(cid, [f]) for cid, f in zip(case_ids(files, root=p if p.is_dir() else None), files)]


def predict_path(
    inputs: PathType,
    out_dir: PathType,
    *,
    model: PathType | None = None,
    device: str = "auto",
    explain: str | None = "layercam",
    overwrite: bool = False,
    backend: str = "torch",
) -> list[Path]:
    """Predict every case under ``inputs``; writes ``out_dir/predictions.csv`` and, per case,
    ``<case>_heatmap.nii.gz`` (on the input's grid) and ``<case>_overlay.png``. Every output is
    checked before any work; the folder appears only complete (module doc). ``backend``:
    ``torch`` or ``onnxruntime`` (:class:`Diagnoser`)."""
    from tqdm import tqdm

    from medimg.io.api import save

    out = Path(out_dir)
    dx = Diagnoser(model, device, backend=backend)
    if dx.backend == "onnxruntime" and explain not in (None, "occlusion"):
        raise InputError(f"--explain {explain} needs gradients, which ONNX Runtime does not "
                         "give; use --explain occlusion or none with --backend onnxruntime")  # fmt: skip
    n_mod = len(dx.cfg.modalities)
    cases = _cases(inputs, n_mod)
    # the model folder too: replacing an output that holds it would delete the model
    sources = [inputs, dx.folder, *(f for _, files in cases for f in files if f is not None)]
    check_output_dir(out, overwrite, inputs=sources)  # before any work
    rows, written = [], []
    with atomic_dir(out, overwrite, inputs=sources) as tmp:
        for case_id, files in tqdm(cases, desc="diagnose", disable=len(cases) < 5):
            images = load_case_images(files, n_mod, dx.cfg.channels)
            pred = dx.predict(images, explain=explain)
            row: dict[str, object] = {
                "case_id": case_id,
                "files": ";".join(str(f or "") for f in files),
            }
            # repr: the shortest string that reads back as the same float (module doc)
            row.update({f"prob_{k}": repr(float(v)) for k, v in pred.probs.items()})
            row.update({f"calibrated_{k}": repr(float(v)) for k, v in pred.calibrated.items()})
            row.update({f"logit_{k}": repr(float(v)) for k, v in pred.logits.items()})
            row["predicted"] = pred.predicted
            row["model"] = dx.tag
            row["missing_modalities"] = ";".join(pred.missing)
            if pred.ood_score is not None:
                row["ood_score"] = repr(pred.ood_score)
                row["ood_flag"] = int(pred.ood_score > 1.0)
            if pred.attention:
                row["top_slice"] = int(np.argmax(pred.attention))
            if pred.heatmap is not None:
                ref = next(im for im in images if im is not None)
                pred.heatmap.meta["description"] = dx.tag
                nii = save(pred.heatmap, tmp / f"{case_id}_heatmap.nii.gz")
                png = save_overlay_png(ref, pred.heatmap, tmp / f"{case_id}_overlay.png",
                                       title=_overlay_title(case_id, pred))  # fmt: skip
                row["heatmap"] = nii.name
                written += [out / nii.name, out / png.name]
            rows.append(row)
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(tmp / "predictions.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
    _warn_out_of_distribution(rows)
    return [out / "predictions.csv", *written]


def _overlay_title(case_id: str, pred: CasePrediction) -> str:
    """``case: predicted, p(class) = calibrated probability`` (the three likeliest classes), and
    the safeguard's verdict when it flags the image."""
    top = sorted(pred.calibrated.items(), key=lambda kv: -kv[1])[:3]
    probs = ", ".join(f"p({k}) = {v:.3f}" for k, v in top)
    flag = "; outside the training data" if (pred.ood_score or 0.0) > 1.0 else ""
    return f"{case_id}: {pred.predicted}, {probs}{flag}"


def _warn_out_of_distribution(rows: list[dict[str, object]]) -> None:
    """One ``warning:`` line on stderr when the safeguard flagged any case."""
    import sys

    bad = [str(r["case_id"]) for r in rows if r.get("ood_flag") == 1]
    if bad:
        names = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        print(f"warning: {len(bad)} of {len(rows)} image(s) ({names}) lie outside the model's "
              "training distribution (ood_flag=1 in predictions.csv); do not trust their "
              "probabilities", file=sys.stderr)  # fmt: skip
