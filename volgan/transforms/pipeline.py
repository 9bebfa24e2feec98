"""The preprocessing every path shares: what a network was trained on (:class:`Preprocessing`), the volume onto
its grid, cropped or padded to its patch, and z-normalised (:func:`preprocessing`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torchio as tio


@dataclass(frozen=True)
class Preprocessing:
    """What a network was trained on: voxel ``spacing`` (mm, RAS grid) and training ``patch`` (voxels)."""

    spacing: tuple[float, float, float] = (1.5, 1.5, 1.5)
    patch: tuple[int, int, int] = (64, 64, 64)


def normalize_intensity() -> tio.Transform:
    """Z-normalisation over the whole volume (mean 0, standard deviation 1).

    Returns
    -------
    tio.Transform
        torchio's ZNormalization over every voxel.
    """
    return tio.ZNormalization()


def preprocessing(prep: Preprocessing = Preprocessing()) -> tio.Compose:
    """The pipeline every training, validation and synthetic volume goes through: spine_segcls's
    ``configs/train.json`` ``preprocessing``, instantiated from that file for ``prep``'s spacing and patch.

    Parameters
    ----------
    prep : Preprocessing
        the spacing (mm) and patch (voxels).

    Returns
    -------
    tio.Compose
        onto the RAS grid of ``prep.spacing`` (:class:`ToModelGrid`), cropped or padded to ``prep.patch`` about the
        centre, z-normalised.
    """
    from volgan.bundle_runs import bundle_object

    return bundle_object("spine_segcls", "train.json", "preprocessing", spacing=[float(s) for s in prep.spacing],
                         patch=[int(n) for n in prep.patch])
