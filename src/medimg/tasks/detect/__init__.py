"""Lesion detection: 3D lung-nodule candidates in CT with LUNA16-style FROC/CPM evaluation.

``data`` (isotropic resampling, centre-point targets, patches) -> ``models`` (MONAI UNet with a
CenterNet-style head, focal loss) -> ``train`` (engine Trainer, CPM validation) -> ``infer``
(sliding window, peaks, NMS, world mm) -> ``predict`` (files in, CSV/JSON/PNG out) ->
``evaluate`` (FROC table, curve, CPM with bootstrap CIs) -> ``cli``.
"""
