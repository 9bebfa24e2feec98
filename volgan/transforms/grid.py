"""Geometry: a volume resampled onto a RAS grid of ``spacing`` mm that covers its voxel centres (:func:`model_grid`),
with :func:`resample` (trilinear for images and probabilities, nearest for label maps); inference maps its output
back with the same function in the inverse direction, so masks come out in the input's own shape and affine.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import torchio as tio


def axis_permutation(affine: np.ndarray) -> np.ndarray | None:
    """For a grid whose axes lie along the world axes (any order and sign), the index axis each world axis
    runs along; None for an oblique grid.

    Parameters
    ----------
    affine : np.ndarray
        a 4×4 (or 3×3) matrix whose upper-left 3×3 block maps index axes onto world axes.

    Returns
    -------
    np.ndarray | None
        (3,) int index axis per world axis, or None.
    """
    big = np.abs(affine[:3, :3]) > 1e-9 * np.abs(affine[:3, :3]).max()
    if (big.sum(axis=1) == 1).all() and (big.sum(axis=0) == 1).all():
        return big.argmax(axis=1)
    return None


def model_grid(affine: np.ndarray, shape: tuple[int, ...], spacing) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The RAS grid of ``spacing`` mm whose voxel centres span those of the grid (``affine``, ``shape``).

    A RAS grid of that spacing maps onto itself.

    Parameters
    ----------
    affine : np.ndarray
        4×4 voxel-to-world matrix of the input grid (mm).
    shape : tuple[int, ...]
        The input grid's shape (X, Y, Z).
    spacing
        The model grid's voxel size in mm, (3,).

    Returns
    -------
    tuple[np.ndarray, tuple[int, int, int]]
        The model grid's 4×4 affine and its shape.
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
    """Resample ``data`` from the grid ``src_affine`` onto (``dst_affine``, ``dst_shape``).

    Parameters
    ----------
    data : torch.Tensor
        (C, X, Y, Z) values on the source grid.
    src_affine : np.ndarray
        4×4 voxel-to-world matrix of the source grid (mm).
    dst_affine : np.ndarray
        4×4 voxel-to-world matrix of the destination grid (mm).
    dst_shape : tuple[int, ...]
        The destination grid's shape (X', Y', Z').
    mode : str
        ``"bilinear"`` (trilinear in 3D) or ``"nearest"``.

    Returns
    -------
    torch.Tensor
        (C, X', Y', Z'), 0 outside the source; ``data`` itself when the grids are identical.
    """
    src_shape = tuple(data.shape[1:])
    if src_shape == tuple(dst_shape) and np.allclose(src_affine, dst_affine, atol=1e-5):
        return data
    # voxel index in dst -> voxel index in src
    index_map = np.linalg.inv(src_affine) @ dst_affine
    work = data.float() if not data.is_floating_point() else data
    dst_axis_of = axis_permutation(index_map)  # each source axis' destination axis; None for oblique grids
    if mode == "bilinear" and dst_axis_of is not None:
        out = _resample_by_axis(work, index_map, [int(a) for a in np.argsort(dst_axis_of)], tuple(dst_shape))
    else:
        out = _resample_by_grid_sample(work, index_map, tuple(dst_shape), mode)
    return out.to(data.dtype) if not data.is_floating_point() else out


def _resample_by_grid_sample(data: torch.Tensor, index_map: np.ndarray, dst_shape: tuple[int, ...],
                             mode: str) -> torch.Tensor:
    """Any grid pair, by grid_sample: (C, X, Y, Z) float → (C, X', Y', Z'), zero padding.

    ``index_map``: destination index → source index (4×4)."""
    src_shape = tuple(data.shape[1:])

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
    theta_t = torch.as_tensor(theta, dtype=data.dtype, device=data.device)[None]
    grid = F.affine_grid(theta_t, [1, data.shape[0], *dst_shape], align_corners=True)
    return F.grid_sample(data[None], grid, mode=mode, padding_mode="zeros", align_corners=True)[0]

def _linear_weights(n_dst: int, n_src: int, step: float, offset: float, like: torch.Tensor) -> torch.Tensor:
    """(n_dst, n_src) matrix of linear interpolation at source positions ``offset + step * i``; neighbours outside
    the source weigh 0, as grid_sample's zero padding."""
    position = torch.arange(n_dst, dtype=torch.float64) * step + offset
    below = torch.floor(position)
    fraction = position - below
    rows = torch.arange(n_dst)
    padded = torch.zeros(n_dst, n_src + 2, dtype=torch.float64)  # columns 0 and n_src + 1: outside the source
    padded.index_put_((rows, (below.long() + 1).clamp(0, n_src + 1)), 1.0 - fraction, accumulate=True)
    padded.index_put_((rows, (below.long() + 2).clamp(0, n_src + 1)), fraction, accumulate=True)
    return padded[:, 1:-1].to(dtype=like.dtype, device=like.device)


def _resample_by_axis(data: torch.Tensor, index_map: np.ndarray, axes: list[int],
                      dst_shape: tuple[int, ...]) -> torch.Tensor:
    """Trilinear resampling as three one-axis interpolations (matrix products), for grids paired axis by axis:
    destination axis ``j`` runs along source axis ``axes[j]`` (``index_map``: destination index → source index).

    Trilinear interpolation is separable, so this equals grid_sample's (to float rounding: the positions are
    computed in float64 here). It is about 3× faster: 0.17 s against 0.49 s for 6 channels of 137×137×127 onto
    256×256×64 on 2 threads, the step that maps inference probabilities back onto the input's grid.
    """
    out = data
    # the axis that shrinks most first, so that later products work on fewer values
    for j in sorted(range(3), key=lambda j: dst_shape[j] / data.shape[axes[j] + 1]):
        src_axis = axes[j] + 1
        weights = _linear_weights(dst_shape[j], out.shape[src_axis], index_map[axes[j], j], index_map[axes[j], 3],
                                  out)
        out = torch.movedim(torch.tensordot(weights, out, dims=([1], [src_axis])), 0, src_axis)
    return out.permute(0, *[a + 1 for a in axes]).contiguous()


def field_about_foreground(affine: np.ndarray, label: np.ndarray, size: tuple[int, int, int],
                           spacing: tuple[float, float, float]) -> np.ndarray:
    """The affine (4×4, RAS, ``spacing`` mm) of a ``size``-voxel field centred on the middle of the label map's
    foreground bounding box (label > 0; the volume's centre when the map is empty). Real spine scans span far
    more than a study's field, so the field follows the labeled spine rather than the scan's centre.

    Parameters
    ----------
    affine : np.ndarray
        4×4 voxel-to-RAS affine of the label map (mm).
    label : np.ndarray
        (X, Y, Z) label map.
    size : tuple[int, int, int]
        the field's size in voxels.
    spacing : tuple[float, float, float]
        the field's voxel size in mm.

    Returns
    -------
    np.ndarray
        the field's 4×4 affine.
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    index = np.argwhere(label > 0)
    middle = (index.min(axis=0) + index.max(axis=0)) / 2.0 if index.size else (np.asarray(label.shape) - 1) / 2.0
    centre = (affine @ np.append(middle, 1.0))[:3]
    out = np.diag([*spacing, 1.0])
    out[:3, 3] = centre - spacing * (np.asarray(size, dtype=np.float64) - 1) / 2.0
    return out


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
