"""Deformable registration: unsupervised, weakly supervised and fully supervised networks.

Spatial transformer with physical spacing (:mod:`.transform`), fields on disk for ITK/ANTs
(:mod:`.fields`), pair lists and training data (:mod:`.data`), MONAI VoxelMorph-style networks
(:mod:`.models`), losses (:mod:`.losses`), training through :mod:`medimg.engine` (:mod:`.train`),
registration with affine stage and instance optimisation (:mod:`.predict`), SimpleITK baselines
(:mod:`.baseline`), side-by-side evaluation (:mod:`.evaluate`). A default model ships in
``default/``. CLI: ``medimg register simulate|train|predict|evaluate``.
"""
