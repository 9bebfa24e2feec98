"""Label-map morphology shared by both sources of synthetic label maps: where a tumor sits (:func:`tumor_site`), a
region grown in its host tissue (:func:`grow_region`), a generated map made to fit its class (:func:`enforce_class`),
a tumor removed or placed (:func:`remove_tumor`, :func:`place_tumor`), and a smooth elastic deformation
(:func:`elastic_deform`). Arrays are (X, Y, Z) label maps with volgan's label numbers (:mod:`volgan.labels`).
"""

from __future__ import annotations

import heapq

import numpy as np
import torch
from scipy import ndimage

from volgan.labels import (
    BACKGROUND,
    CORD,
    CSF,
    DISC,
    EXTRAMEDULLARY,
    INTRAMEDULLARY,
    NO_TUMOR,
    NUM_LABELS,
    TUMOR_LABEL,
    VERTEBRA,
    VERTEBRAL,
)

FACES = ndimage.generate_binary_structure(3, 1)


def tumor_site(label: np.ndarray) -> int:
    """Where the tumor sits, judged by the labels touching it (6-connectivity).

    Parameters
    ----------
    label : np.ndarray
        (X, Y, Z) label map.

    Returns
    -------
    int
        3 vertebral (mostly bone around it), 1 intramedullary (more cord than CSF), 2 intradural
        extramedullary (more CSF); 0 when the map has no tumor.
    """
    tumor = label == TUMOR_LABEL
    if not tumor.any():
        return NO_TUMOR
    shell = ndimage.binary_dilation(tumor, FACES) & ~tumor
    share = np.bincount(label[shell], minlength=NUM_LABELS) / max(int(shell.sum()), 1)
    if share[VERTEBRA] + share[DISC] >= 0.5:
        return VERTEBRAL
    return INTRAMEDULLARY if share[CORD] >= share[CSF] else EXTRAMEDULLARY


# docs/design.md: in the cord; in the canal outside the cord; in a vertebra
TUMOR_HOSTS = {INTRAMEDULLARY: (CORD,), EXTRAMEDULLARY: (CSF,), VERTEBRAL: (VERTEBRA,)}


def grow_region(score: np.ndarray, size: int, preferred: np.ndarray | None = None) -> np.ndarray:
    """A face-connected region of ``size`` voxels of an (X, Y, Z) grid, grown from the highest-``score`` voxel of
    ``preferred`` (bool, (X, Y, Z); everything when None or empty), each step taking the bordering voxel of highest
    score among the preferred ones, and others only when no preferred voxel borders the region.

    Parameters
    ----------
    score : np.ndarray
        (X, Y, Z) float scores.
    size : int
        the region's size in voxels.
    preferred : np.ndarray | None
        (X, Y, Z) bool voxels to grow through first, or None.

    Returns
    -------
    np.ndarray
        (X, Y, Z) bool region.
    """
    preferred = np.ones(score.shape, bool) if preferred is None or not preferred.any() else preferred
    region, taken = np.zeros(score.shape, bool), 0
    start = np.unravel_index(int(np.where(preferred, score, -np.inf).argmax()), score.shape)
    border, queued = [(False, -float(score[start]), start)], {start}
    while border and taken < size:
        *_, voxel = heapq.heappop(border)
        region[voxel], taken = True, taken + 1
        for axis in range(3):
            for step in (-1, 1):
                near = list(voxel)
                near[axis] += step
                near = tuple(near)
                if 0 <= near[axis] < score.shape[axis] and near not in queued:
                    queued.add(near)
                    heapq.heappush(border, (not preferred[near], -float(score[near]), near))
    return region


def enforce_class(logits: torch.Tensor, tumor_type: int, tumor_size: int | None = None) -> np.ndarray:
    """Label map from (6, X, Y, Z) logits with label 5 present exactly when ``tumor_type`` ≠ 0.

    With ``tumor_size`` the tumor has that many voxels, grown (:func:`grow_region`) in its class's host label
    (:data:`TUMOR_HOSTS`) along the tumor logit's margin over the other labels, from where that margin is
    highest; without, the generator's own tumor is kept, or its most tumor-like voxel and face neighbours
    when it drew none.

    Parameters
    ----------
    logits : torch.Tensor
        (6, X, Y, Z) label logits of the label generator.
    tumor_type : int
        the class, 0–3.
    tumor_size : int | None
        the tumor's voxels (None: the generator's own tumor).

    Returns
    -------
    np.ndarray
        (X, Y, Z) uint8 label map.
    """
    anatomy = logits[:TUMOR_LABEL].argmax(0).to(torch.uint8).cpu().numpy()
    if tumor_type == 0:
        return anatomy
    margin = (logits[TUMOR_LABEL] - logits[:TUMOR_LABEL].max(0).values).float().cpu().numpy()
    if tumor_size is not None:
        anatomy[grow_region(margin, tumor_size, np.isin(anatomy, TUMOR_HOSTS[tumor_type]))] = TUMOR_LABEL
        return anatomy
    label = logits.argmax(0).to(torch.uint8).cpu().numpy()
    if not (label == TUMOR_LABEL).any():
        seed = np.zeros(label.shape, bool)
        seed[np.unravel_index(int(margin.argmax()), label.shape)] = True
        label[ndimage.binary_dilation(seed, FACES)] = TUMOR_LABEL
    return label


def remove_tumor(label: np.ndarray) -> np.ndarray:
    """The map with its tumor removed.

    Parameters
    ----------
    label : np.ndarray
        (X, Y, Z) label map.

    Returns
    -------
    np.ndarray
        The map with each tumor voxel given the label of its nearest non-tumor voxel (the host tissue).
    """
    tumor = label == TUMOR_LABEL
    if not tumor.any() or tumor.all():
        return np.where(tumor, 0, label).astype(np.uint8)
    _, nearest = ndimage.distance_transform_edt(tumor, return_indices=True)
    return label[tuple(nearest)].astype(np.uint8)


def elastic_deform(label: np.ndarray, spacing, noise: torch.Generator, max_displacement_vox: float = 2.0,
                   control_points: int = 5) -> np.ndarray:
    """(X, Y, Z) map under a smooth random deformation: volgan's :class:`~volgan.transforms.
    RandomElasticDeformation` (torchio's B-spline field, ``control_points`` per axis, displacements up to
    ``max_displacement_vox`` voxels), nearest-neighbour, its random draws seeded from ``noise``.

    Parameters
    ----------
    label : np.ndarray
        (X, Y, Z) label map.
    spacing : tuple[float, float, float]
        its voxel size in mm.
    noise : torch.Generator
        the random source.
    max_displacement_vox : float
        the largest displacement, in voxels.
    control_points : int
        B-spline control points per axis.

    Returns
    -------
    np.ndarray
        (X, Y, Z) deformed map, same dtype.
    """
    import torchio as tio

    from volgan.transforms import RandomElasticDeformation

    spacing = np.asarray(spacing, dtype=np.float64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=noise)))
        transform = RandomElasticDeformation(num_control_points=control_points,
                                             max_displacement=tuple(max_displacement_vox * spacing))
        moved = transform(tio.LabelMap(tensor=torch.from_numpy(label[None].astype(np.int64)),
                                       affine=np.diag([*spacing, 1.0])))
    return moved.data[0].numpy().astype(np.uint8)


def place_tumor(label: np.ndarray, tumor_type: int, size: int, noise: torch.Generator,
                site: np.ndarray | None = None) -> np.ndarray:
    """The map with a tumor of ``size`` voxels for ``tumor_type`` (1–3) added: centred on a host voxel
    (:data:`TUMOR_HOSTS`; for vertebral ones, deep in the bone) in the middle 70% of the field along S, drawn
    with weight ∝ depth² in the host, and grown (:func:`grow_region`) through the host by distance from that
    centre bent by smooth noise, so its outline is irregular; an intramedullary tumor's cord widens by a voxel of
    CSF around it (not at the canal wall). With ``site`` ((X, Y, Z) bool) the centre is drawn from the host voxels
    inside it, when it holds any. A map with no host voxel comes back unchanged.

    Parameters
    ----------
    label : np.ndarray
        (X, Y, Z) label map, labels 0–4 (its tumor removed).
    tumor_type : int
        the class, 1–3.
    size : int
        the tumor's size in voxels.
    noise : torch.Generator
        the random source.
    site : np.ndarray | None
        (X, Y, Z) bool voxels to centre the tumor among (the removed tumor's site, widened), or None.

    Returns
    -------
    np.ndarray
        (X, Y, Z) map with the tumor (label 5).
    """
    host = np.isin(label, TUMOR_HOSTS[tumor_type])
    depth = ndimage.distance_transform_edt(host)
    lo, hi = int(0.15 * label.shape[2]), int(np.ceil(0.85 * label.shape[2]))
    weight = np.zeros(label.shape)
    weight[:, :, lo:hi] = depth[:, :, lo:hi] ** 2
    if tumor_type == VERTEBRAL:  # a vertebral body rather than a thin posterior element
        weight[depth < 0.6 * depth.max()] = 0.0
    if site is not None and (weight * site).sum() > 0:
        weight = weight * site
    if weight.sum() <= 0:
        return label
    pick = int(torch.multinomial(torch.from_numpy(weight.ravel() / weight.sum()), 1, generator=noise))
    centre = np.array(np.unravel_index(pick, label.shape), dtype=np.float64)
    grid = np.indices(label.shape, dtype=np.float64)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)))
    radius = max(1.0, (3.0 * size / (4.0 * np.pi)) ** (1 / 3))
    bend = torch.rand((4, 4, 4), generator=noise).numpy() * 2 - 1
    bend = ndimage.zoom(bend, [n / 4 for n in label.shape], order=1, mode="nearest", grid_mode=True)
    out = label.copy()
    tumor = grow_region(-distance + 0.6 * radius * bend, size, host)
    out[tumor] = TUMOR_LABEL
    if tumor_type == INTRAMEDULLARY:  # the cord widens around its tumor (as in the phantom), never up to the canal wall
        wall = ndimage.binary_dilation(np.isin(label, (BACKGROUND, VERTEBRA, DISC)), FACES)
        out[ndimage.binary_dilation(tumor, FACES) & (label == CSF) & ~wall] = CORD
    return out
