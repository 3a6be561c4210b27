"""Image I/O: one image type, readers and writers for NIfTI, NRRD/MHA and DICOM."""

from medimg.io.image import LPS_TO_RAS, Image

__all__ = ["LPS_TO_RAS", "Image"]
