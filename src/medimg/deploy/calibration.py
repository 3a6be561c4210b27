"""Static int8 calibration on the user's own images (``export --calibration FOLDER``) instead
of inputs generated for the task: the activation ranges then come from the data the model will
see. Each image goes through the task's own preprocessing, as in ``predict``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medimg.deploy.targets import ExportTarget
from medimg.errors import InputError

__all__ = ["calibration_inputs"]


def _images(folder: Path) -> list[Path]:
    from medimg.datasets.msd import IMAGE_ENDINGS

    if not folder.is_dir():
        raise InputError("calibration folder not found; give a folder of images", folder)
    files = [p for p in sorted(folder.iterdir()) if p.name.lower().endswith(IMAGE_ENDINGS)]
    if not files:
        raise InputError(
            f"no image files ({', '.join(IMAGE_ENDINGS)}) in the calibration folder", folder
        )
    return files


def calibration_inputs(target: ExportTarget, folder: str | Path, n: int) -> list[np.ndarray]:
    """Up to ``n`` network inputs from the images in ``folder`` (segmentation: a random
    patch of each preprocessed image; CT: axial slices in HU / 1000, evenly spread over the
    files; diagnosis: each image normalised and resized as the model's config says)."""
    from medimg.engine.config import from_yaml
    from medimg.io.api import load

    files = _images(Path(folder))
    rng = np.random.default_rng(0)
    out: list[np.ndarray] = []
    if target.task == "segment":
        from medimg.deploy.targets import random_patch
        from medimg.tasks.segment.data import preprocess_image
        from medimg.tasks.segment.plan import SegPlan
        from medimg.tasks.segment.predict import _load_case

        plan = from_yaml(SegPlan, target.settings["plan"])
        for f in files[:n]:  # the checks of predict (channels, contract) apply here too
            image = _load_case(f.name, [f], plan)
            out.append(random_patch(preprocess_image(image, plan)[0], plan, rng))
    elif target.task == "recon-ct":
        planes = []
        for f in files:
            vol = np.asarray(load(f).array[0], np.float32)
            planes += [vol] if vol.ndim == 2 else list(np.moveaxis(vol, -1, 0))
        pick = np.linspace(0, len(planes) - 1, min(n, len(planes))).round().astype(int)
        from medimg.tasks.reconstruct.ct.data import to_net

        out = [to_net(planes[i])[None, None].numpy() for i in pick]
    else:
        from medimg.tasks.diagnose.data import prepare_image
        from medimg.tasks.diagnose.train import DiagnoseConfig

        cfg = from_yaml(DiagnoseConfig, target.settings["config"])
        for f in files[:n]:
            arr = prepare_image(load(f), cfg.input_size, cfg.windows[0])
            out.append(np.ascontiguousarray(arr[None], dtype=np.float32))
    if target.min_size > 1 and any(min(x.shape[2:]) < target.min_size for x in out):
        raise InputError(f"calibration images smaller than {target.min_size} pixels", folder)
    return out
