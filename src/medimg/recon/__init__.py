"""Reconstruction from Python: :mod:`medimg.recon.mri` (undersampled MRI k-space to images),
:mod:`medimg.recon.ct` (low-dose CT denoising in HU) and :mod:`medimg.recon.us` (ultrasound
B-mode despeckling)."""

from medimg.recon import ct, mri, us

__all__ = ["ct", "mri", "us"]
