"""Pose of a spinal label map on a RAS voxel grid, and random rigid moves with the training data's spread.

A pose is eight numbers (:data:`POSE_FIELDS`): the tilt of the spine's long axis (principal axis of labels
1–4) away from S, about R and about A, in degrees; its turn about S, the direction from the canal (cord, CSF)
to the column (vertebra, disc) in the axial plane, in degrees; the offset of the centroid of labels 1–4 from
the grid centre along R, A and S, in voxels; and the in-plane size of labels 1–4 along R and along A, as the
log of the standard deviation of their voxel coordinates, in percent (100 × ln; differences are relative
sizes, a spread is a coefficient of variation). Curvature and anatomy move these numbers too; they are
measured alike on real and generated maps, so their spreads compare. Size along S is left out: the spine
runs through the whole field along S, so its extent there is the field's.

Why: a generator trained on a few dozen maps learns their average pose and size better than their spread
(measured: the spine_cgan label generator's tilts spread about half as much as its 48 training maps', its
in-plane sizes 0.4–0.6 times as much). Synthesis makes up the difference (:func:`missing_spread`) with a
move drawn per map (:func:`random_pose`): a rotation, a shift and an in-plane scaling.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from volgan.labels import CORD, CSF, DISC, VERTEBRA

POSE_FIELDS = ("tilt_about_r_deg", "tilt_about_a_deg", "turn_about_s_deg", "shift_r_vox", "shift_a_vox",
               "shift_s_vox", "size_r_log_pct", "size_a_log_pct")


def label_pose(label: np.ndarray) -> np.ndarray:
    """The pose numbers (:data:`POSE_FIELDS`) of a (X, Y, Z) label map on a RAS grid; NaN where the labels they
    need are absent.

    Parameters
    ----------
    label : np.ndarray
        (X, Y, Z) label map, labels 0–5, on a RAS grid.

    Returns
    -------
    np.ndarray
        (len(POSE_FIELDS),) float64 pose numbers (angles in degrees, shifts and sizes in voxels).
    """
    pose = np.full(len(POSE_FIELDS), np.nan)
    spine = np.argwhere((label >= 1) & (label <= 4)).astype(np.float64)
    if len(spine) < 3:
        return pose
    pose[3:6] = spine.mean(0) - (np.array(label.shape) - 1) / 2
    pose[6:8] = 100 * np.log(spine[:, :2].std(0) + 1e-6)
    axis = np.linalg.eigh(np.cov(spine.T))[1][:, -1]
    axis = axis * (1 if axis[2] >= 0 else -1)
    pose[0] = np.degrees(np.arctan2(axis[1], axis[2]))
    pose[1] = np.degrees(np.arctan2(axis[0], axis[2]))
    column, canal = np.argwhere((label == VERTEBRA) | (label == DISC)), np.argwhere((label == CORD) | (label == CSF))
    if len(column) and len(canal):
        towards = column.mean(0) - canal.mean(0)
        pose[2] = np.degrees(np.arctan2(towards[0], towards[1]))
    return pose


def pose_spread(labels: Iterable[np.ndarray]) -> list[float]:
    """Standard deviation of each pose number over label maps (NaNs left out; 0 where none is known).

    Parameters
    ----------
    labels : Iterable[np.ndarray]
        (X, Y, Z) label maps.

    Returns
    -------
    list[float]
        one standard deviation per pose number, in its units.
    """
    poses = np.array([label_pose(label) for label in labels]).reshape(-1, len(POSE_FIELDS))
    known = np.isfinite(poses)
    return [round(float(poses[known[:, i], i].std()), 4) if known[:, i].sum() > 1 else 0.0
            for i in range(len(POSE_FIELDS))]


def missing_spread(target: list[float], own: list[float]) -> list[float]:
    """The spread a random move must add to ``own`` to reach ``target``: √max(target² − own², 0) each. A
    ``target`` shorter than ``own`` (statistics recorded before the size numbers) adds nothing to the rest.

    Parameters
    ----------
    target : list[float]
        the spread to reach, per pose number.
    own : list[float]
        the spread already present, per pose number.

    Returns
    -------
    list[float]
        the spread to add, per pose number (as long as ``own``).
    """
    target = list(target) + list(own[len(target):])
    return [float(np.sqrt(max(t * t - o * o, 0.0))) for t, o in zip(target, own, strict=True)]


def random_pose(label: np.ndarray, noise: torch.Generator, spread: list[float]) -> tuple[np.ndarray, list[float]]:
    """The (X, Y, Z) label map scaled along R and A, turned about R, A, S and shifted, about the grid centre
    (nearest neighbour; background comes in at the edges). Each number of :data:`POSE_FIELDS` is uniform with
    standard deviation ``spread`` (half-width √3 × spread), in its units; a ``spread`` of six numbers (rigid
    moves only) scales nothing. Returns the map and the numbers drawn.

    Parameters
    ----------
    label : np.ndarray
        (X, Y, Z) label map, labels 0–5.
    noise : torch.Generator
        the random source.
    spread : list[float]
        the standard deviation of each pose number, in its units (6 or 8 numbers).

    Returns
    -------
    tuple[np.ndarray, list[float]]
        the moved (X, Y, Z) map and the numbers drawn.
    """
    from scipy.spatial.transform import Rotation

    from volgan.transforms import resample

    u = torch.rand(len(spread), generator=noise).numpy().astype(np.float64) * 2 - 1
    drawn = u * np.sqrt(3.0) * np.asarray(spread, dtype=np.float64)
    angles, shifts = np.radians(drawn[:3]), drawn[3:6]
    scale = np.ones(3)  # along R, A, S
    scale[: len(drawn) - 6] = np.exp(drawn[6:8] / 100)
    rotation = Rotation.from_euler("xyz", angles).as_matrix()  # about R, then A, then S (fixed axes)
    centre = (np.array(label.shape) - 1) / 2
    to_source = np.eye(4)  # output voxel → source voxel: undo the shift, the turn, then the scaling
    to_source[:3, :3] = np.diag(1 / scale) @ rotation
    to_source[:3, 3] = centre - to_source[:3, :3] @ centre + np.diag(1 / scale) @ shifts
    moved = resample(torch.from_numpy(label[None].astype(np.int64)), np.linalg.inv(to_source), np.eye(4),
                     label.shape, "nearest")[0]
    return moved.numpy().astype(np.uint8), [round(float(v), 3) for v in drawn]
