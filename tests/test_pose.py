"""Pose estimation of label maps and the calibrated random pose of synthesis."""

import numpy as np
import pytest
import torch

from volgan.gan.pose import label_pose, missing_spread, pose_spread, random_pose


def spine_map(rotation: np.ndarray | None = None, shift=(0.0, 0.0, 0.0), size: int = 32,
              scale=(1.0, 1.0, 1.0)) -> np.ndarray:
    """A straight column (labels 1) in front of a canal (cord 3 in CSF 4) along S, scaled by ``scale`` along
    R, A, S, then turned by ``rotation`` about the grid centre and moved by ``shift`` voxels."""
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), -1) - (size - 1) / 2 - np.asarray(shift)
    rotation = np.eye(3) if rotation is None else rotation
    x, y, z = np.moveaxis(grid @ rotation / np.asarray(scale), -1, 0)  # body frame: S⁻¹ rotation.T @ p
    label = np.zeros((size,) * 3, np.uint8)
    along = np.abs(z) < 12
    label[along & (x**2 + (y - 4) ** 2 < 16)] = 1
    label[along & (x**2 + (y + 3) ** 2 < 6)] = 4
    label[along & (x**2 + (y + 3) ** 2 < 2)] = 3
    return label


def turn(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_label_pose_reads_a_known_turn(axis):
    straight = label_pose(spine_map())
    assert np.allclose(straight[:3], 0, atol=0.5)
    turned = label_pose(spine_map(turn(axis, 10.0)))
    assert abs(turned[axis]) == pytest.approx(10.0, abs=1.0)
    others = [k for k in range(3) if k != axis]
    assert np.allclose(turned[others], 0, atol=1.0)  # angles; the off-axis centroid moves with the turn


def test_label_pose_reads_a_shift_and_says_when_it_cannot():
    moved = label_pose(spine_map(shift=(2.0, -3.0, 1.0))) - label_pose(spine_map())
    assert moved == pytest.approx([0.0, 0.0, 0.0, 2.0, -3.0, 1.0, 0.0, 0.0], abs=0.3)
    assert np.isnan(label_pose(np.zeros((16, 16, 16), np.uint8))).all()
    canal_only = spine_map()
    canal_only[canal_only == 1] = 0
    pose = label_pose(canal_only)
    assert np.isnan(pose[2]) and np.isfinite(pose[[0, 1, 3, 4, 5, 6, 7]]).all()


def test_label_pose_reads_a_known_in_plane_size():
    for scale in ((1.25, 0.8, 1.0), (0.8, 1.25, 1.0)):
        size = label_pose(spine_map(scale=scale))[6:] - label_pose(spine_map())[6:]
        assert size == pytest.approx(100 * np.log(scale[:2]), abs=7.0)  # ±22 asked; the map's radii are 1–4 voxels
    assert label_pose(spine_map(scale=(1.0, 1.0, 1.1)))[6:] == pytest.approx(label_pose(spine_map())[6:], abs=1.0)


def test_random_pose_is_rigid_seeded_and_has_the_asked_spread():
    label = spine_map()
    spread = [4.0, 3.0, 8.0, 1.5, 1.0, 0.5]  # six numbers: a rigid move
    first, drawn = random_pose(label, torch.Generator().manual_seed(3), spread)
    again, _ = random_pose(label, torch.Generator().manual_seed(3), spread)
    other, _ = random_pose(label, torch.Generator().manual_seed(4), spread)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert all(abs(d) <= np.sqrt(3) * s for d, s in zip(drawn, spread, strict=True))
    assert abs((first == 1).sum() / (label == 1).sum() - 1) < 0.05  # a rigid move keeps volumes
    assert set(np.unique(first)) <= {0, 1, 3, 4}
    noise = torch.Generator().manual_seed(0)
    measured = pose_spread(random_pose(label, noise, spread)[0] for _ in range(60))
    assert measured[:6] == pytest.approx(spread, rel=0.3)  # what the estimator reads back is what was asked
    assert random_pose(label, noise, [0.0] * 6)[0].tolist() == label.tolist()


def test_random_pose_scales_in_plane_with_the_asked_spread():
    label = spine_map(size=48, scale=(2.0, 2.0, 2.0))  # radii of 2–8 voxels, so that a few % show
    spread = [0.0] * 6 + [8.0, 5.0]
    noise = torch.Generator().manual_seed(0)
    moves = [random_pose(label, noise, spread) for _ in range(60)]
    measured = pose_spread(m for m, _ in moves)
    assert measured[6:] == pytest.approx(spread[6:], rel=0.3)
    assert measured[:6] == pytest.approx([0.0] * 6, abs=0.6)  # about the centre: no turn, no real shift
    big = max(moves, key=lambda m: m[1][6] + m[1][7])
    growth = np.exp((big[1][6] + big[1][7]) / 100)  # the area of an axial section grows by both factors
    assert (big[0] == 1).sum() / (label == 1).sum() == pytest.approx(growth, rel=0.1)


def test_missing_spread():
    assert missing_spread([5.0, 1.0, 0.0], [3.0, 2.0, 0.0]) == pytest.approx([4.0, 0.0, 0.0])
    assert missing_spread([5.0], [3.0, 2.0]) == pytest.approx([4.0, 0.0])  # older statistics: nothing added
    assert pose_spread([]) == [0.0] * 8
