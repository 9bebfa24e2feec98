"""volgan: 3D volumetric toolkit for spinal MRI built on MONAI.

One sub-package per stage of the data flow: :mod:`volgan.data` (volumes, datalists, phantoms, loaders, mixing)
→ :mod:`volgan.transforms` (the declared preprocessing and augmentation) → :mod:`volgan.gan` (the conditional
GAN and synthesis) → :mod:`volgan.segcls` (the segmenter-classifier, inference, Grad-CAM) →
:mod:`volgan.evaluation` (metrics, reports, synthetic quality) → :mod:`volgan.study` (the ratio sweep and
augmentation comparison). Shared by all: :mod:`volgan.labels`, :mod:`volgan.errors`, :mod:`volgan.training`
(engine pieces of both bundles) and :mod:`volgan.bundle_runs`; the command line, :mod:`volgan.cli`, is a package
of its own (one module per group of commands).

Label numbers and tumor classes are the contract of docs/design.md and live in :mod:`volgan.labels`.
"""

from volgan.errors import VolganInputError
from volgan.labels import LABELS, TUMOR_TYPES

__all__ = ["LABELS", "TUMOR_TYPES", "VolganInputError"]
__version__ = "0.1.0"

SUBPACKAGES = ("data", "transforms", "gan", "segcls", "evaluation", "study")  # the stages of the data flow, in order
_SUBMODULES = {*SUBPACKAGES, "cli", "errors", "labels", "training"}


def __getattr__(name: str):
    """Import submodules on first use, so ``import volgan`` stays light and ``volgan.data.loader`` works in configs."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"volgan.{name}")
    raise AttributeError(f"module 'volgan' has no attribute {name!r}")
