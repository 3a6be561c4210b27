"""Reconstruction from Python: :mod:`medimg.recon.mri` (undersampled MRI k-space to images)
and :mod:`medimg.recon.ct` (low-dose CT denoising in HU)."""

from medimg.recon import ct, mri

__all__ = ["ct", "mri"]
