"""Every preprocessing and augmentation definition of volgan, so that real and synthetic volumes, training
and inference go through one declared pipeline.

Geometry: a volume is resampled onto a RAS grid of ``spacing`` mm that covers its voxel centres
(:func:`model_grid`), with :func:`resample` (trilinear for images and probabilities, nearest for label
maps). Inference maps its output back with the same function and the inverse direction, so masks come
out in the input's own shape and affine. Intensity: z-normalisation over the whole volume.
Training crops or pads the resampled volume to ``patch`` voxels about its centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchio as tio


@dataclass(frozen=True)
class Preprocessing:
    """What a network was trained on: voxel ``spacing`` (mm, RAS grid) and training ``patch`` (voxels)."""

    spacing: tuple[float, float, float] = (1.5, 1.5, 1.5)
    patch: tuple[int, int, int] = (64, 64, 64)


def model_grid(affine: np.ndarray, shape: tuple[int, ...], spacing) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The RAS grid of ``spacing`` mm whose voxel centres span those of the grid (``affine``, ``shape``).

    Returns its affine (4×4) and shape. A RAS grid of that spacing maps onto itself.
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)])
    world = (affine @ corners.T)[:3]
    low, high = world.min(axis=1), world.max(axis=1)
    out_shape = tuple(int(n) for n in np.floor((high - low) / spacing + 1e-3).astype(int) + 1)
    out_affine = np.diag([*spacing, 1.0])
    out_affine[:3, 3] = low
    return out_affine, out_shape


def resample(data: torch.Tensor, src_affine: np.ndarray, dst_affine: np.ndarray, dst_shape: tuple[int, ...],
             mode: str = "bilinear") -> torch.Tensor:
    """Resample ``data`` (C, X, Y, Z) from the grid ``src_affine`` onto (``dst_affine``, ``dst_shape``).

    ``mode`` is ``"bilinear"`` (trilinear in 3D) or ``"nearest"``; outside the source the value is 0.
    Identical grids return ``data`` unchanged.
    """
    src_shape = tuple(data.shape[1:])
    if src_shape == tuple(dst_shape) and np.allclose(src_affine, dst_affine, atol=1e-5):
        return data
    # voxel index in dst -> voxel index in src
    index_map = np.linalg.inv(src_affine) @ dst_affine
    # normalised coordinates (align_corners=True): n = 2 i / (size - 1) - 1, axes in reversed order for grid_sample
    def to_norm(size):
        size = np.asarray(size, dtype=np.float64)
        m = np.eye(4)
        m[:3, :3] = np.diag(2.0 / np.maximum(size - 1, 1))
        m[:3, 3] = -1.0
        return m

    theta = to_norm(src_shape) @ index_map @ np.linalg.inv(to_norm(dst_shape))
    flip = np.eye(4)[[2, 1, 0, 3]]
    theta = (flip @ theta @ flip)[:3]
    work = data.float() if not data.is_floating_point() else data
    theta_t = torch.as_tensor(theta, dtype=work.dtype, device=work.device)[None]
    grid = F.affine_grid(theta_t, [1, work.shape[0], *dst_shape], align_corners=True)
    out = F.grid_sample(work[None], grid, mode=mode, padding_mode="zeros", align_corners=True)[0]
    return out.to(data.dtype) if not data.is_floating_point() else out


class ToModelGrid(tio.SpatialTransform):
    """torchio transform: every image of a subject onto the RAS grid of ``spacing`` mm (:func:`model_grid`).

    Images are interpolated trilinearly, label maps by nearest neighbour, through :func:`resample`.
    """

    def __init__(self, spacing=(1.5, 1.5, 1.5), **kwargs):
        super().__init__(**kwargs)
        self.spacing = tuple(float(s) for s in spacing)
        self.args_names = ["spacing"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        reference = next(iter(subject.get_images(intensity_only=False)))
        affine, shape = model_grid(reference.affine, reference.spatial_shape, self.spacing)
        for image in subject.get_images(intensity_only=False):
            mode = "nearest" if isinstance(image, tio.LabelMap) else "bilinear"
            image.set_data(resample(image.data, image.affine, affine, shape, mode))
            image.affine = affine
        return subject


def normalize_intensity() -> tio.Transform:
    """Z-normalisation over the whole volume (mean 0, standard deviation 1)."""
    return tio.ZNormalization()


def preprocessing(prep: Preprocessing = Preprocessing()) -> tio.Compose:
    """The pipeline every training, validation and synthetic volume goes through."""
    return tio.Compose([ToModelGrid(prep.spacing), tio.CropOrPad(prep.patch), normalize_intensity()])


AUGMENTATIONS = ("none", "light", "classical")


def augmentation(preset: str = "none") -> tio.Transform | None:
    """Random training augmentation, applied after :func:`preprocessing`.

    ``light``: left-right flip and a small affine (±10% scale, ±10°). ``classical``: the MRI-artifact and
    geometry preset of the augmentation comparison (bias field, motion, ghosting, spike, noise, blur,
    anisotropy, affine, elastic).
    """
    if preset == "none":
        return None
    if preset == "light":
        return tio.Compose([tio.RandomFlip(axes=("LR",)), tio.RandomAffine(scales=0.1, degrees=10, p=0.5)])
    if preset == "classical":
        return tio.Compose([
            tio.RandomFlip(axes=("LR",)),
            tio.RandomAffine(scales=0.1, degrees=10, p=0.5),
            tio.RandomElasticDeformation(num_control_points=5, max_displacement=4, p=0.2),
            tio.RandomAnisotropy(downsampling=(1.5, 3), p=0.2),
            tio.RandomBiasField(coefficients=0.4, p=0.3),
            tio.OneOf({tio.RandomMotion(num_transforms=2): 1, tio.RandomGhosting(): 1, tio.RandomSpike(): 1}, p=0.3),
            tio.RandomBlur(std=(0, 1), p=0.2),
            tio.RandomNoise(std=(0, 0.1), p=0.3),
            normalize_intensity(),
        ])
    raise ValueError(f"unknown augmentation preset {preset!r}; expected one of {AUGMENTATIONS}")
