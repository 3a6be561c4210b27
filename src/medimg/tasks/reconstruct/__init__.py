"""Image reconstruction tasks, one sub-package per modality (``mri``, ``ct``, ...).

Each takes measurements and a forward model from :mod:`medimg.physics` and returns images;
``medimg recon <modality> <verb>`` dispatches to them (:mod:`medimg.tasks.reconstruct.cli`).
"""
