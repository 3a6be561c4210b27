"""Fine-tuning on corrections made in the review page (``segment train --init M --reviewed DIR``).

The accepted reviews of a review folder (:meth:`medimg.review.folder.ReviewFolder.accepted`:
the image and the corrected labels of each case whose latest review is *accepted*) are written
as a small MSD dataset with the model's label names and channel, which
:func:`~medimg.tasks.segment.train.train_segmentation` fine-tunes ``M`` on (every case for
training, ``fold=-1``). The dataset lies beside the run folder, in ``<run>.reviewed-data/``,
rebuilt the same each time, so an interrupted fine-tuning resumes with ``--resume``.
"""

from __future__ import annotations

import json
from pathlib import Path

from medimg.errors import InputError
from medimg.io.output import atomic_dir
from medimg.typing import PathType

__all__ = ["reviewed_data_dir", "reviewed_dataset"]


def reviewed_data_dir(run_dir: PathType) -> Path:
    """Where the dataset of a ``--reviewed`` run lies: beside the run, never inside it."""
    run = Path(run_dir)
    return run.parent / f"{run.name}.reviewed-data"


def reviewed_dataset(review_dir: PathType, model: PathType, run_dir: PathType) -> Path:
    """Write the accepted corrections of ``review_dir`` as an MSD dataset for fine-tuning the
    segmentation model ``model`` into ``run_dir``; returns the dataset folder. Refuses a folder
    without accepted reviews, and corrections with labels the model does not know."""
    import numpy as np

    from medimg.io.api import load, save
    from medimg.review.folder import ReviewFolder
    from medimg.tasks.segment.plan import load_plan

    plan_file = Path(model) / "plan.yaml"
    if not plan_file.is_file():
        raise InputError("--reviewed fine-tunes a segmentation model: give --init with a model "
                         "or run folder holding plan.yaml (the model that made the proposals)",
                         model)  # fmt: skip
    plan = load_plan(plan_file)
    pairs = ReviewFolder(review_dir).accepted()
    if not pairs:
        raise InputError("holds no accepted review; accept the corrected cases in the review "
                         "page (decision: accepted, then Save) first", review_dir)  # fmt: skip
    channels = {str(i): n for i, n in enumerate(plan.channel_names)}
    dest = reviewed_data_dir(run_dir)
    with atomic_dir(dest, overwrite=True, inputs=[review_dir, model]) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        for name, images, labels in pairs:
            if len(images) != len(channels):
                raise InputError(f"case {name!r} has {len(images)} image channel(s), the model "
                                 f"takes {len(channels)}", images[0])  # fmt: skip
            lab = load(labels, is_label=True)
            top = int(np.max(lab.array)) if lab.array.size else 0
            if top >= plan.num_classes:
                raise InputError(f"the correction has label {top}, the model knows 0.."
                                 f"{plan.num_classes - 1}", labels)  # fmt: skip
            save(lab, tmp / "labelsTr" / f"{name}.nii.gz")
            for c, image in enumerate(images):
                save(load(image), tmp / "imagesTr" / f"{name}_{c:04d}.nii.gz")
        meta = {"name": f"reviewed-{Path(review_dir).resolve().name}",
                "labels": {str(i): n for i, n in enumerate(plan.label_names)},
                "channel_names": channels, "file_ending": ".nii.gz",
                "numTraining": len(pairs)}  # fmt: skip
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=1))
    return dest
