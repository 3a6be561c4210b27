"""Low-dose CT reconstruction: classical baselines (FBP, TV/PWLS iterative); networks to come."""

from medimg.tasks.reconstruct.ct.baselines import fbp_hu, tv_pdhg, tv_reconstruct_hu

__all__ = ["fbp_hu", "tv_pdhg", "tv_reconstruct_hu"]
