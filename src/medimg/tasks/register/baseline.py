"""Classical baselines through SimpleITK, returning fields in the same convention as ours.

* ``sitk-demons``: symmetric-forces demons (``FastSymmetricForcesDemonsRegistrationFilter``) on
  histogram-matched, normalised intensities, two resolutions (half, then full), Gaussian field
  smoothing; same-modality pairs only.
* ``sitk-bspline``: cubic B-spline free-form deformation (control points every ~20 mm) optimised
  with L-BFGS-B on Mattes mutual information (so it also handles MR-CT), two resolutions.

Both work on the fixed grid (moving resampled in world coordinates first, as for the network) and
return a :class:`~.predict.RegResult` with the displacement as a RAS+ mm vector image.

* ``ants-syn``: ANTsPy's SyN (``type_of_transform="SyNOnly"``: the pair is already on one grid),
  with the usual same-modality settings instead of ANTsPy's quick defaults (which skip the full
  resolution and score barely above the identity here): cross-correlation metric (radius 2),
  60/40/20 iterations at 1/4, 1/2 and full resolution, fixed random seed. Needs ``antspyx``
  (``pip install 'medimg[ants]'``); its forward transforms (initial translation + warp) are
  composed into one displacement on the fixed grid.
"""

from __future__ import annotations

import time

import numpy as np

from medimg.errors import InputError
from medimg.io.image import LPS_TO_RAS, Image
from medimg.tasks.register.data import normalise, to_grid
from medimg.tasks.register.predict import RegResult, check_overlap

__all__ = ["METHODS", "baseline_register"]

METHODS = ("sitk-demons", "sitk-bspline", "ants-syn")


def _field_from_sitk(disp, grid: Image) -> Image:
    """A SimpleITK displacement image (LPS components) -> RAS+ mm vector Image on ``grid``."""
    arr = Image.from_sitk(disp).array.astype(np.float32)
    nd = grid.spatial_ndim
    flip = np.diag(LPS_TO_RAS)[:nd].reshape(-1, *[1] * nd)
    from medimg.tasks.register.fields import field_image

    return field_image(arr * flip, grid)


def _demons(f, m, iterations: int):
    from medimg.io.image import quiet_sitk

    sitk = quiet_sitk()

    m = sitk.HistogramMatching(m, f, 256, 7, True)
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(iterations)
    demons.SetStandardDeviations(1.5)
    shrink = [2] * f.GetDimension()
    f_half, m_half = sitk.Shrink(f, shrink), sitk.Shrink(m, shrink)
    coarse = demons.Execute(f_half, m_half)
    init = sitk.Resample(coarse, f, sitk.Transform(), sitk.sitkLinear, 0.0, coarse.GetPixelID())
    return demons.Execute(f, m, init)


def _bspline(f, m, iterations: int, spacing_mm: float):
    from medimg.io.image import quiet_sitk

    sitk = quiet_sitk()

    extent = [sz * sp for sz, sp in zip(f.GetSize(), f.GetSpacing())]
    mesh = [max(1, round(e / spacing_mm)) for e in extent]
    tx = sitk.BSplineTransformInitializer(f, mesh, order=3)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.2, seed=0)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=iterations,
                             maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=1000)  # fmt: skip
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1, 0])
    reg.SetInitialTransform(tx, inPlace=True)
    reg.Execute(f, m)
    return sitk.TransformToDisplacementField(tx, sitk.sitkVectorFloat64, f.GetSize(), f.GetOrigin(),
                                             f.GetSpacing(), f.GetDirection())  # fmt: skip


def _ants_syn(f, m):
    """SyN displacement (ITK/LPS displacement image on the fixed grid) through ANTsPy."""
    import tempfile
    from pathlib import Path

    from medimg.io.image import quiet_sitk

    sitk = quiet_sitk()

    try:
        import ants
    except ImportError:
        raise InputError(
            "the ants-syn baseline needs ANTsPy: pip install 'medimg[ants]' (antspyx)"
        ) from None
    with tempfile.TemporaryDirectory(prefix="medimg_ants_") as tmp:
        sitk.WriteImage(f, str(Path(tmp) / "f.nii.gz"))
        sitk.WriteImage(m, str(Path(tmp) / "m.nii.gz"))
        out = ants.registration(ants.image_read(str(Path(tmp) / "f.nii.gz")),
                                ants.image_read(str(Path(tmp) / "m.nii.gz")),
                                type_of_transform="SyNOnly", syn_metric="CC", syn_sampling=2,
                                reg_iterations=(60, 40, 20), outprefix=str(Path(tmp) / "syn_"),
                                random_seed=0)  # fmt: skip
        # ANTs' forward list is applied last-first to a fixed point (the centre-of-mass
        # translation it starts from, then the SyN warp), as an ITK composite built in order
        parts = [sitk.DisplacementFieldTransform(sitk.ReadImage(t, sitk.sitkVectorFloat64))
                 if t.endswith((".nii", ".nii.gz")) else sitk.ReadTransform(t)
                 for t in out["fwdtransforms"]]  # fmt: skip
        return sitk.TransformToDisplacementField(
            sitk.CompositeTransform(parts), sitk.sitkVectorFloat64, f.GetSize(), f.GetOrigin(),
            f.GetSpacing(), f.GetDirection(),
        )  # fmt: skip


def baseline_register(
    fixed: Image,
    moving: Image,
    method: str = "sitk-demons",
    *,
    moving_labels: Image | None = None,
    iterations: int | None = None,
    bspline_spacing_mm: float = 20.0,
) -> RegResult:
    """Register with a SimpleITK baseline (see the module docstring); timings include the
    resampling and warping, like the network's."""
    from medimg.io.image import quiet_sitk

    sitk = quiet_sitk()

    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if fixed.spatial_ndim != moving.spatial_ndim:
        raise InputError(
            f"fixed is {fixed.spatial_ndim}D but moving is {moving.spatial_ndim}D; register images "
            "of the same dimensionality"
        )
    t0, c0 = time.perf_counter(), time.process_time()
    on_grid = to_grid(moving, fixed)
    f_np, m_np = normalise(fixed.array), normalise(on_grid.array)
    check_overlap(f_np, m_np, "in world coordinates")
    f = sitk.Cast(fixed.with_array(f_np).to_sitk(), sitk.sitkFloat32)
    m = sitk.Cast(fixed.with_array(m_np).to_sitk(), sitk.sitkFloat32)
    if method == "sitk-demons":
        disp = _demons(f, m, iterations or 60)
    elif method == "ants-syn":
        disp = _ants_syn(f, m)
    else:
        disp = _bspline(f, m, iterations or 50, bspline_spacing_mm)
    disp = sitk.Cast(disp, sitk.sitkVectorFloat64)
    tx = sitk.DisplacementFieldTransform(sitk.Image(disp))
    src = on_grid.to_sitk()
    warped = Image.from_sitk(
        sitk.Resample(src, src, tx, sitk.sitkLinear, float(on_grid.array.min()))
    )
    wl = None
    if moving_labels is not None:
        lab = to_grid(moving_labels, fixed, label=True).to_sitk()
        moved = Image.from_sitk(sitk.Resample(lab, lab, tx, sitk.sitkNearestNeighbor, 0))
        wl = Image(moved.array, fixed.affine.copy(), modality="SEG", is_label=True)
    field = _field_from_sitk(disp, fixed)
    return RegResult(
        warped=Image(
            warped.array.astype(np.float32), fixed.affine.copy(), modality=moving.modality
        ),
        field=field,
        warped_labels=wl,
        seconds=time.perf_counter() - t0,
        cpu_seconds=time.process_time() - c0,
        info={"method": method},
    )
