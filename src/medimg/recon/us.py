"""Ultrasound from Python: despeckle a scanner's B-mode (ultrasound DICOM, PNG or 2D NIfTI).

Example::

    import medimg.recon.us
    folder, notes = medimg.recon.us.despeckle("scan.dcm", "scan_despeckled/")

``despeckle_array(image01, net, mask)`` works on an array in [0, 1]; the shipped network was
trained on simulated speckle only (see its model card). Channel-data beamforming stays on the
command line (``medimg recon us simulate|predict|evaluate``).
"""

from medimg.tasks.reconstruct.us.despeckle import despeckle_array, load_despeckle
from medimg.tasks.reconstruct.us.despeckle import despeckle_file as despeckle

__all__ = ["despeckle", "despeckle_array", "load_despeckle"]
