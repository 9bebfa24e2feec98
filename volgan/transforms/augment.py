"""Random training augmentation (the presets of :data:`AUGMENTATIONS`) and MRI artifacts at fixed severities (the
study's robustness test).
"""

from __future__ import annotations

import numpy as np
import torch
import torchio as tio

from volgan.errors import VolganInputError
from volgan.transforms.fast_torchio import RandomBiasField

AUGMENTATIONS = ("none", "light", "contrast", "classical")
# What the classical preset draws; a study run that augments keys its stage on it, so a new recipe retrains it.
CLASSICAL_RECIPE = "flip, affine p=0.5, one of eight artifacts or deformations p=0.5"


def augmentation(preset: str = "none") -> tio.Transform | None:
    """Random training augmentation, applied after :func:`preprocessing`: the preset as spine_segcls's
    ``configs/train.json`` lists it under ``augmentations`` (instantiated from that file, the one definition).

    Parameters
    ----------
    preset : {"none", "light", "contrast", "classical"}
        ``light``: left-right flip and a small affine (±10% scale, ±10°). ``contrast``: ``light``, a random intensity
        curve (:class:`~volgan.transforms.RandomIntensityCurve`), a new contrast for every presentation, and a random
        field of view (:class:`~volgan.transforms.RandomFieldOfView`), for the contrast-agnostic recipe. ``classical``:
        the augmentation comparison's MRI-artifact and geometry preset: the flip and the affine (p = 0.5), then, for
        half the presentations, one of elastic deformation, anisotropy, bias field, motion, ghosting, spike, blur or
        noise (:data:`CLASSICAL_RECIPE`), renormalised to zero mean and unit standard deviation. One alteration at a
        time, not every one at its own chance: with each applied independently (v1), 2 of 8 quick-profile models trained
        on it ended with one tumor call for every test volume, and the 8 had mean tumor AUC 0.631; one at a time, 0 of
        the same 8 did, with AUC 0.717.

    Returns
    -------
    tio.Transform or None
        The transform, or None for ``none``.
    """
    from volgan.bundle_runs import bundle_object

    check_preset(preset)
    return bundle_object("spine_segcls", "train.json", f"augmentations#{preset}")


def check_preset(preset: str) -> str:
    """``preset`` if it names an augmentation preset (:data:`AUGMENTATIONS`).

    Parameters
    ----------
    preset : str
        the preset's name.

    Returns
    -------
    str
        ``preset``.

    Raises
    ------
    VolganInputError
        for any other name.
    """
    if preset not in AUGMENTATIONS:
        raise VolganInputError(None, f"unknown augmentation preset {preset!r}; expected one of {AUGMENTATIONS}")
    return preset


def chosen_augmentation(augmentations: dict, preset: str) -> tio.Transform | None:
    """The preset ``preset`` of a bundle config's ``augmentations`` (name → transform), checked.

    Parameters
    ----------
    augmentations : dict
        the presets, name → transform or None.
    preset : str
        the one to use (:data:`AUGMENTATIONS`).

    Returns
    -------
    tio.Transform or None
        the preset's transform.
    """
    return augmentations[check_preset(preset)]


# --------------------------------------------------------------------------------------------------------
# MRI artifacts at fixed severities: the study's robustness test (Ainapure et al.'s noise-robustness point).

SEVERITIES = ("clean", "mild", "moderate", "severe")


def artifacts(severity: int) -> tio.Compose | None:
    """Scanner artifacts of a fixed strength for ``severity`` 1 (mild) to 3 (severe); 0 gives None.

    Applied to an image scaled to unit standard deviation: a bias field (polynomial coefficients ±0.2·s),
    rigid motion (s transforms of up to 3·s° and 3·s mm), ghosting (intensity 0.2·s), blur (0.5·s mm) and
    Gaussian noise (std 0.05·s). Only the direction and phase of each artifact are random.

    Parameters
    ----------
    severity : int
        0 to 3.

    Returns
    -------
    tio.Compose | None
        the artifacts' pipeline, or None for 0.
    """
    if severity == 0:
        return None
    if severity not in (1, 2, 3):
        raise ValueError(f"severity must be 0, 1, 2 or 3, got {severity}")
    s = float(severity)
    return tio.Compose([
        RandomBiasField(coefficients=0.2 * s),
        tio.RandomMotion(degrees=3 * s, translation=3 * s, num_transforms=severity),
        tio.RandomGhosting(num_ghosts=(2, 4), intensity=(0.2 * s, 0.2 * s)),
        tio.RandomBlur(std=(0.5 * s, 0.5 * s)),
        tio.RandomNoise(std=(0.05 * s, 0.05 * s)),
    ])


def corrupt(image: np.ndarray, affine: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """``image`` (X, Y, Z) with :func:`artifacts` of ``severity``, reproducible from ``seed``; the artifacts
    act on the image divided by its standard deviation, and the result is scaled back.

    Parameters
    ----------
    image : np.ndarray
        (X, Y, Z) image.
    affine : np.ndarray
        its 4×4 voxel-to-RAS affine (mm).
    severity : int
        0 to 3.
    seed : int
        fixes the artifacts' random draws.

    Returns
    -------
    np.ndarray
        (X, Y, Z) float32 image with the artifacts (``image`` itself, unchanged, at severity 0).
    """
    transform = artifacts(severity)
    if transform is None:
        return image
    scale = float(image.std()) or 1.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = transform(tio.ScalarImage(tensor=torch.from_numpy(image[None] / scale).float(), affine=affine))
    return (out.data[0].numpy() * scale).astype(np.float32)
