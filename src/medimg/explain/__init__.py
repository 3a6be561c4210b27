"""Explanations: saliency maps (Grad-CAM, Grad-CAM++, occlusion), their randomisation sanity
check, and writing them as NIfTI heat maps aligned with the input and PNG overlays."""

from medimg.explain.overlay import heatmap_image, save_overlay_png
from medimg.explain.saliency import METHODS, occlusion_map, saliency_map
from medimg.explain.sanity import randomisation_check, randomise_weights

__all__ = [
    "METHODS",
    "heatmap_image",
    "occlusion_map",
    "randomisation_check",
    "randomise_weights",
    "saliency_map",
    "save_overlay_png",
]
