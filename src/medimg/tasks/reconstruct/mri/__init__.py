"""MRI reconstruction from undersampled Cartesian k-space (issue 3).

Classical baselines live in :mod:`medimg.tasks.reconstruct.mri.baselines` (zero-filled RSS,
CG-SENSE, compressed sensing with L1-wavelet and TV priors). The forward models, masks, coil
maps and noise are in :mod:`medimg.physics`, the phantoms in :mod:`medimg.phantoms.mri` and the
fastMRI HDF5 adapter in :mod:`medimg.datasets.fastmri`.
"""
