"""Ultrasound image formation from linear-array channel data.

``data`` (phantoms with ground truth, the channel-data ``.npz``) -> physics
(:mod:`medimg.physics.ultrasound` simulator, :mod:`medimg.physics.ultrasound_das` delay-and-sum)
-> ``predict`` (B-mode as NIfTI, ultrasound DICOM via ``dicom_out``, PNG) -> ``evaluate``
(PICMUS metrics, :mod:`medimg.metrics.ultrasound`) -> ``cli`` (``medimg recon us ...``).
Learned: ``models`` / ``train`` / ``learned`` (3 plane waves -> the 75-angle compound), shipped
in ``default/learned`` with a model card. Channel-data results are simulation-only.
Despeckling of B-mode images (DICOM, PNG, NIfTI; real scanners' images too): ``despeckle``
(inference), ``despeckle_io`` (reading, image region), ``despeckle_data`` (simulated speckle
pairs), ``despeckle_train``, ``despeckle_eval`` (speckle SNR, edge width); shipped in
``despeckle/`` with a model card.

>>> from medimg.tasks.reconstruct.us import make_phantom, plane_waves, simulate, reconstruct
>>> data = simulate(make_phantom("points", scale=0.2), plane_waves(3))  # doctest: +SKIP
>>> rec = reconstruct(data)  # DAS, all 3 compounded  # doctest: +SKIP
>>> from medimg.tasks.reconstruct.us import despeckle_file
>>> folder, notes = despeckle_file("scan.dcm", "scan_despeckled/")  # doctest: +SKIP
"""

from medimg.tasks.reconstruct.us.data import (
    load_channel_data,
    make_phantom,
    plane_waves,
    save_channel_data,
    simulate,
)
from medimg.tasks.reconstruct.us.despeckle import despeckle_array, despeckle_file, load_despeckle
from medimg.tasks.reconstruct.us.predict import bmode_image, predict_file, reconstruct

__all__ = [
    "bmode_image",
    "despeckle_array",
    "despeckle_file",
    "load_channel_data",
    "load_despeckle",
    "make_phantom",
    "plane_waves",
    "predict_file",
    "reconstruct",
    "save_channel_data",
    "simulate",
]
