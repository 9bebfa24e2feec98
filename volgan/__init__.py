"""volgan: 3D volumetric toolkit for spinal MRI built on MONAI.

Label numbers and tumor classes are the contract of DESIGN.md and live in :mod:`volgan.labels`.
"""

from volgan.errors import VolganInputError
from volgan.labels import LABELS, TUMOR_TYPES

__all__ = ["LABELS", "TUMOR_TYPES", "VolganInputError"]
__version__ = "0.1.0"
