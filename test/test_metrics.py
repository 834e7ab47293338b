"""Map-free metrics (mickey_ros.geometry.metrics) against hand-computed values."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mickey_ros.errors import InputError
from mickey_ros.geometry.metrics import (
    VIRTUAL_GRID,
    camera_centre,
    confidence_auc,
    pose_errors,
    rotation_error_quat,
    vcre,
)

FX = FY = 590.0
CX, CY, W, H = 270.0, 360.0, 540.0, 720.0
K_REF = np.array([[FX, 0, CX], [0, FY, CY], [0, 0, 1.0]])
GRID_X = (-0.9, -0.6, -0.3, 0.0, 0.3, 0.6, 0.9)
GRID_Y = (-0.45, -0.15, 0.15, 0.45)
GRID_Z = (1.8, 2.1, 2.4, 2.7, 3.0, 3.3, 3.6)


def rot_y(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def transform(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def hand_vcre(R_rel, t_rel, fx, fy, cx, cy, w, h, clip_gt: bool = True) -> float:
    """Point by point: grid in the GT camera, moved by (R_rel, t_rel) into the estimated camera."""
    total = 0.0
    for x, y, z in itertools.product(GRID_X, GRID_Y, GRID_Z):
        u0, v0 = fx * x / z + cx, fy * y / z + cy
        if clip_gt:
            u0, v0 = min(max(u0, 0.0), w), min(max(v0, 0.0), h)
        p = R_rel @ np.array([x, y, z]) + np.asarray(t_rel, dtype=float)
        u1 = min(max(fx * p[0] / p[2] + cx, 0.0), w)
        v1 = min(max(fy * p[1] / p[2] + cy, 0.0), h)
        total += math.hypot(u0 - u1, v0 - v1)
    return total / 196


def hand_auc(items: list[tuple[float, bool]], failures: int, recall_dtype=np.float32) -> float:
    """Step sum over groups of equal confidence, recall (k+1)/(N+F) in ``recall_dtype``."""
    items = sorted(items, key=lambda it: -it[0])
    n, auc, prev, hits = len(items), 0.0, recall_dtype(0), 0
    for k, (conf, tp) in enumerate(items):
        hits += tp
        if k == n - 1 or items[k + 1][0] != conf:
            r = recall_dtype(k + 1) / recall_dtype(n + failures)
            auc += float(recall_dtype(r - prev)) * (hits / (k + 1))
            prev = r
    return auc


def test_virtual_grid():
    assert VIRTUAL_GRID.shape == (196, 3)
    got = {tuple(np.round(p, 9)) for p in VIRTUAL_GRID}
    assert got == {tuple(np.round(p, 9)) for p in itertools.product(GRID_X, GRID_Y, GRID_Z)}
    # meshgrid 'xy' order: y varies slowest, then x, then z
    np.testing.assert_allclose(VIRTUAL_GRID[:8], [[-0.9, -0.45, z] for z in GRID_Z] + [[-0.6, -0.45, 1.8]])


def test_reference_edge_values():
    """379.79 px and 138.79 px are the values the benchmark's own code gives for these two poses
    (shared/reference/mapfree_metrics.md section 3.3, "Reference edge cases", read from nianticlabs/map-free-reloc
    benchmark/reprojection.py and checked by running it); the point-by-point hand computation gives them too."""
    # camera moved 2.5 m forward: 84 of the 196 points behind it, flipped and clipped, not masked
    forward = transform(np.eye(3), [0, 0, -2.5])
    assert int(np.sum(VIRTUAL_GRID[:, 2] - 2.5 < 0)) == 84
    assert vcre(forward, np.eye(4), K_REF, W, H) == pytest.approx(379.79, abs=0.01)
    assert hand_vcre(np.eye(3), [0, 0, -2.5], FX, FY, CX, CY, W, H) == pytest.approx(379.79, abs=0.01)
    # 179 deg yaw: every point behind the camera
    yaw = transform(rot_y(179.0), [0, 0, 0])
    assert vcre(yaw, np.eye(4), K_REF, W, H) == pytest.approx(138.79, abs=0.01)
    assert hand_vcre(rot_y(179.0), [0, 0, 0], FX, FY, CX, CY, W, H) == pytest.approx(138.79, abs=0.01)


@pytest.mark.parametrize(
    "R_rel, t_rel",
    [
        (np.eye(3), [0.0, 0.0, -2.5]),  # behind-camera points
        (rot_y(179.0), [0.0, 0.0, 0.0]),
        (rot_y(3.0), [0.1, -0.05, 0.2]),
        (np.eye(3), [0.01, 0.0, 0.0]),
    ],
)
def test_vcre_matches_hand_computation_with_any_gt(R_rel, t_rel):
    T_gt = transform(rot_y(-40.0) @ np.array([[1, 0, 0], [0, 0.6, -0.8], [0, 0.8, 0.6]]), [0.3, -1.2, 4.0])
    T_est = transform(R_rel, t_rel) @ T_gt  # the estimate differs by (R_rel, t_rel) in the GT camera
    got = vcre(T_est, T_gt, K_REF, W, H)
    assert got == pytest.approx(hand_vcre(R_rel, t_rel, FX, FY, CX, CY, W, H), abs=1e-9)


def test_vcre_clips_gt_projection_too():
    # the two outer columns of the z = 1.8 layer fall outside the 540 px wide image: u = 270 + 590 * 0.9 / 1.8
    assert FX * 0.9 / 1.8 + CX > W
    t_rel = [0.01, 0.0, 0.0]
    got = vcre(transform(np.eye(3), t_rel), np.eye(4), K_REF, W, H)
    clipped = hand_vcre(np.eye(3), t_rel, FX, FY, CX, CY, W, H)
    unclipped_gt = hand_vcre(np.eye(3), t_rel, FX, FY, CX, CY, W, H, clip_gt=False)
    assert got == pytest.approx(clipped, abs=1e-9)
    assert abs(clipped - unclipped_gt) > 1e-2


def test_vcre_upper_bound_and_bad_shapes():
    far = transform(np.eye(3), [100.0, 100.0, 0.0])
    assert vcre(far, np.eye(4), K_REF, W, H) <= math.hypot(W, H)
    with pytest.raises(InputError, match="T_est_w2c: expected a 4x4"):
        vcre(np.eye(3), np.eye(4), K_REF, W, H)
    with pytest.raises(InputError, match="K: expected a 3x3"):
        vcre(np.eye(4), np.eye(4), np.eye(4), W, H)


def test_pose_errors_use_camera_centres_and_asin_rotation():
    T_gt = transform(rot_y(25.0), [1.0, 2.0, 3.0])
    # rotate the estimated camera about its own centre: same centre, different t
    T_est = transform(rot_y(4.0), [0, 0, 0]) @ T_gt
    trans, rot = pose_errors(T_est, T_gt)
    assert np.linalg.norm(T_est[:3, 3] - T_gt[:3, 3]) > 0.1
    assert trans == pytest.approx(0.0, abs=1e-12)
    assert rot == pytest.approx(4.0, abs=1e-9)
    # translate in the camera frame by d: centres differ by |d| whatever the rotation
    T_est = transform(rot_y(-7.5), [0.2, 0.1, -0.05]) @ T_gt
    trans, rot = pose_errors(T_est, T_gt)
    assert trans == pytest.approx(math.sqrt(0.04 + 0.01 + 0.0025), abs=1e-12)
    assert rot == pytest.approx(7.5, abs=1e-9)
    np.testing.assert_allclose(camera_centre(T_gt), -rot_y(25.0).T @ [1.0, 2.0, 3.0])


def test_rotation_error_quat_normalises_and_ignores_sign():
    half = math.radians(10.0) / 2
    q_gt = np.array([1.0, 0.0, 0.0, 0.0])
    q_est = np.array([math.cos(half), 0.0, math.sin(half), 0.0])
    assert rotation_error_quat(q_est, q_gt) == pytest.approx(10.0, abs=1e-12)
    assert rotation_error_quat(-3.0 * q_est, 0.5 * q_gt) == pytest.approx(10.0, abs=1e-12)
    # tiny angles stay accurate with the asin form
    tiny = 1e-7
    q_small = np.array([math.cos(math.radians(tiny) / 2), math.sin(math.radians(tiny) / 2), 0.0, 0.0])
    assert rotation_error_quat(q_small, q_gt) == pytest.approx(tiny, rel=1e-9)
    # exactly 180 deg never gives NaN
    assert rotation_error_quat(np.array([0.0, 0.0, 1.0, 0.0]), q_gt) == 180.0


def test_auc_ties_count_once():
    items = [(7.0, False), (3.0, True), (3.0, False), (1.0, False)]
    conf = np.array([c for c, _ in items])
    tp = np.array([t for _, t in items])
    expected = hand_auc(items, failures=8)
    assert confidence_auc(conf, tp, 8) == pytest.approx(expected, abs=1e-15)
    # by hand: thresholds at k = 0, 2, 3 -> 1/12 * 0 + 2/12 * 1/3 + 1/12 * 1/4 (float32 recall)
    assert expected == pytest.approx(2 / 36 + 1 / 48, abs=1e-8)
    # the tie order does not matter
    assert confidence_auc(conf[[0, 2, 1, 3]], tp[[0, 2, 1, 3]], 8) == confidence_auc(conf, tp, 8)


def test_auc_recall_is_float32():
    items = [(0.9, True), (0.8, True), (0.7, False), (0.6, True), (0.5, True), (0.4, False), (0.3, True)]
    conf = np.array([c for c, _ in items])
    tp = np.array([t for _, t in items])
    expected32 = hand_auc(items, failures=4)
    expected64 = hand_auc(items, failures=4, recall_dtype=np.float64)
    assert abs(expected32 - expected64) > 1e-9  # the case tells the two apart
    assert confidence_auc(conf, tp, 4) == pytest.approx(expected32, abs=1e-15)


def test_auc_equal_confidences_equal_precision():
    rng = np.random.default_rng(0)
    tp = rng.random(50) < 0.6
    assert confidence_auc(np.full(50, 2.0), tp, 10) == pytest.approx(tp.sum() / 60, abs=1e-7)
    assert confidence_auc(np.arange(50.0), np.ones(50, bool), 0) == pytest.approx(1.0, abs=1e-7)
    with pytest.raises(InputError, match="equal non-zero lengths"):
        confidence_auc(np.zeros(0), np.zeros(0, bool), 0)
