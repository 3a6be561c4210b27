"""Super-resolution: thin slices from thick ones (MRI through-plane, CT slices, HU kept).

``degrade`` (slice-profile blur + decimation, and the affines of both grids) -> ``baselines``
(cubic, sinc) -> ``models`` / ``train`` (a small residual 2D network, supervised on isotropic
volumes or SMORE-style on the anisotropic volume itself) -> ``predict`` (NIfTI out, world extent
kept) -> ``evaluate`` (degrade a reference, restore, PSNR/SSIM whole and in the head mask) ->
``cli`` (``medimg superres ...``). The shipped 4x model is ``default/`` (see its MODEL_CARD.md).

>>> from medimg.tasks.superres import predict_volume
>>> thin = predict_volume("t1_4mm.nii.gz")  # 4 mm slices -> 1 mm  # doctest: +SKIP
>>> thin = predict_volume("ct_3mm.nii.gz", method="smore")  # self-supervised  # doctest: +SKIP
"""

from medimg.tasks.superres.baselines import cubic_upsample, sinc_upsample
from medimg.tasks.superres.degrade import degrade, thick_affine, thin_affine
from medimg.tasks.superres.predict import load_model, predict_file, predict_volume, restore

__all__ = [
    "cubic_upsample",
    "degrade",
    "load_model",
    "predict_file",
    "predict_volume",
    "restore",
    "sinc_upsample",
    "thick_affine",
    "thin_affine",
]
