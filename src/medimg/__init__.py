"""medimg: deep learning across the medical-imaging pipeline.

One image type (:class:`medimg.io.Image`), one training engine (:mod:`medimg.engine`) and one CLI
(``medimg``) for reconstruction, detection, segmentation, registration and diagnosis.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medimg")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
