"""The transforms volgan's pipelines are made of. The pipelines themselves are listed once per bundle, in
spine_segcls's ``configs/train.json`` (``preprocessing``, ``augmentations``) and ``configs/inference.json``
(``model_input``); :func:`preprocessing` and :func:`augmentation` instantiate those entries, so real and synthetic
volumes, training and inference go through what the configs declare.

Geometry: a volume is resampled onto a RAS grid of ``spacing`` mm that covers its voxel centres
(:func:`model_grid`), with :func:`resample` (trilinear for images and probabilities, nearest for label
maps). Inference maps its output back with the same function and the inverse direction, so masks come
out in the input's own shape and affine. Intensity: z-normalisation over the whole volume.
Training crops or pads the resampled volume to ``patch`` voxels about its centre. The bundles' inference configs
list the MONAI twins (:class:`ToModelGridd`, :class:`ZNormalized`), which call the same functions.
"""

from volgan.transforms.augment import (
    AUGMENTATIONS,
    CLASSICAL_RECIPE,
    SEVERITIES,
    artifacts,
    augmentation,
    check_preset,
    chosen_augmentation,
    corrupt,
)
from volgan.transforms.dictionary import ToModelGridd, ZNormalized
from volgan.transforms.domain import RandomFieldOfView, RandomIntensityCurve, intensity_curve
from volgan.transforms.fast_torchio import (
    BiasField,
    ElasticDeformation,
    RandomBiasField,
    RandomElasticDeformation,
    base_arguments,
    bspline_displacement,
    bspline_weights,
)
from volgan.transforms.grid import ToModelGrid, axis_permutation, field_about_foreground, model_grid, resample
from volgan.transforms.pipeline import Preprocessing, normalize_intensity, preprocessing

__all__ = ["AUGMENTATIONS", "BiasField", "CLASSICAL_RECIPE", "ElasticDeformation", "Preprocessing", "RandomBiasField",
           "RandomElasticDeformation", "RandomFieldOfView", "RandomIntensityCurve", "SEVERITIES", "ToModelGrid",
           "ToModelGridd", "ZNormalized", "artifacts", "augmentation", "axis_permutation", "base_arguments",
           "bspline_displacement", "bspline_weights", "check_preset", "chosen_augmentation", "corrupt",
           "field_about_foreground", "intensity_curve", "model_grid",
           "normalize_intensity", "preprocessing", "resample"]
