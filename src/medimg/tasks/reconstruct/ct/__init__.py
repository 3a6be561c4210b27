"""Low-dose CT reconstruction: classical baselines and learned denoisers.

``baselines`` (FBP in HU, PWLS/LS-TV by PDHG) -> ``data`` (simulated full/low-dose slice pairs)
-> ``models`` (RED-CNN, WGAN critic, CT feature autoencoder, learned primal-dual) -> ``losses``
-> ``train`` (through :class:`medimg.engine.Trainer`) -> ``predict`` (NIfTI/DICOM in and out)
-> ``evaluate`` (table with bootstrap CIs, PNG panel) -> ``cli`` (``medimg recon ct ...``).
The default RED-CNN and WGAN-GP generator ship in ``default/`` with a model card.
"""

from medimg.tasks.reconstruct.ct.baselines import fbp_hu, tv_pdhg, tv_reconstruct_hu

__all__ = ["fbp_hu", "tv_pdhg", "tv_reconstruct_hu"]
