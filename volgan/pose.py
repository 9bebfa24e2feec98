"""Pose of a spinal label map on a RAS voxel grid, and random rigid moves with the training data's spread.

A pose is six numbers (:data:`POSE_FIELDS`): the tilt of the spine's long axis (principal axis of labels 1–4)
away from S, about R and about A, in degrees; its turn about S, the direction from the canal (cord, CSF) to
the column (vertebra, disc) in the axial plane, in degrees; and the offset of the centroid of labels 1–4 from
the grid centre along R, A and S, in voxels. Curvature and anatomy move these numbers too; they are measured
alike on real and generated maps, so their spreads compare.

Why: a generator trained on a few dozen maps learns their average pose better than their spread (measured:
the spine_cgan label generator's tilts spread about half as much as its 48 training maps'). Synthesis makes up
the difference (:func:`missing_spread`) with a rigid move drawn per map (:func:`random_pose`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

POSE_FIELDS = ("tilt_about_r_deg", "tilt_about_a_deg", "turn_about_s_deg", "shift_r_vox", "shift_a_vox",
               "shift_s_vox")


def label_pose(label: np.ndarray) -> np.ndarray:
    """The six pose numbers of a (X, Y, Z) label map on a RAS grid; NaN where the labels they need are absent."""
    pose = np.full(6, np.nan)
    spine = np.argwhere((label >= 1) & (label <= 4)).astype(np.float64)
    if len(spine) < 3:
        return pose
    pose[3:] = spine.mean(0) - (np.array(label.shape) - 1) / 2
    axis = np.linalg.eigh(np.cov(spine.T))[1][:, -1]
    axis = axis * (1 if axis[2] >= 0 else -1)
    pose[0] = np.degrees(np.arctan2(axis[1], axis[2]))
    pose[1] = np.degrees(np.arctan2(axis[0], axis[2]))
    column, canal = np.argwhere((label == 1) | (label == 2)), np.argwhere((label == 3) | (label == 4))
    if len(column) and len(canal):
        towards = column.mean(0) - canal.mean(0)
        pose[2] = np.degrees(np.arctan2(towards[0], towards[1]))
    return pose


def pose_spread(labels: Iterable[np.ndarray]) -> list[float]:
    """Standard deviation of each pose number over label maps (NaNs left out; 0 where none is known)."""
    poses = np.array([label_pose(label) for label in labels]).reshape(-1, 6)
    known = np.isfinite(poses)
    return [round(float(poses[known[:, i], i].std()), 4) if known[:, i].sum() > 1 else 0.0 for i in range(6)]


def missing_spread(target: list[float], own: list[float]) -> list[float]:
    """The spread a random move must add to ``own`` to reach ``target``: √max(target² − own², 0) each."""
    return [float(np.sqrt(max(t * t - o * o, 0.0))) for t, o in zip(target, own, strict=True)]


def random_pose(label: np.ndarray, noise: torch.Generator, spread: list[float]) -> tuple[np.ndarray, list[float]]:
    """The (X, Y, Z) label map turned about R, A, S and moved rigidly about the grid centre (nearest neighbour;
    background comes in at the edges). Each of the six numbers is uniform with standard deviation ``spread``
    (half-width √3 × spread), in :data:`POSE_FIELDS` units. Returns the map and the six numbers drawn."""
    from scipy.spatial.transform import Rotation

    from volgan.transforms import resample

    u = torch.rand(6, generator=noise).numpy().astype(np.float64) * 2 - 1
    drawn = u * np.sqrt(3.0) * np.asarray(spread, dtype=np.float64)
    angles, shifts = np.radians(drawn[:3]), drawn[3:]
    rotation = Rotation.from_euler("xyz", angles).as_matrix()  # about R, then A, then S (fixed axes)
    centre = (np.array(label.shape) - 1) / 2
    to_source = np.eye(4)  # output voxel → source voxel
    to_source[:3, :3] = rotation
    to_source[:3, 3] = centre - rotation @ centre + shifts
    moved = resample(torch.from_numpy(label[None].astype(np.int64)), np.linalg.inv(to_source), np.eye(4),
                     label.shape, "nearest")[0]
    return moved.numpy().astype(np.uint8), [round(float(v), 3) for v in drawn]
