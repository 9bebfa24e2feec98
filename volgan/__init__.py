"""volgan: 3D volumetric toolkit for spinal MRI built on MONAI.

Label numbers and tumor classes are the contract of docs/design.md and live in :mod:`volgan.labels`.
"""

from volgan.errors import VolganInputError
from volgan.labels import LABELS, TUMOR_TYPES

__all__ = ["LABELS", "TUMOR_TYPES", "VolganInputError"]
__version__ = "0.1.0"

_SUBMODULES = {"cli", "datalist", "errors", "gradcam", "inference", "io", "labels", "loader", "metrics",
               "network", "phantom", "report", "summary", "train", "transforms", "gan", "synth",
               "quality"}


def __getattr__(name: str):
    """Import submodules on first use, so ``import volgan`` stays light and ``volgan.loader`` works in configs."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"volgan.{name}")
    raise AttributeError(f"module 'volgan' has no attribute {name!r}")
