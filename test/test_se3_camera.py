"""SE(3), quaternion and camera helpers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mickey_ros.errors import InputError, IntrinsicsError
from mickey_ros.geometry.camera import (
    backproject,
    check_intrinsics,
    crop_to_multiple,
    intrinsics_from_values,
    rescale_intrinsics,
)
from mickey_ros.geometry.se3 import (
    angle_axis_deg,
    invert_T,
    make_T,
    matrix_to_quat_wxyz,
    quat_wxyz_to_matrix,
    quat_wxyz_to_xyzw,
    quat_xyzw_to_wxyz,
    rotation_angle_deg,
)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    return quat_wxyz_to_matrix(q)


def test_quaternion_round_trip_and_sign():
    rng = np.random.default_rng(0)
    for _ in range(200):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        R = quat_wxyz_to_matrix(q)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        q2 = matrix_to_quat_wxyz(R)
        assert q2[0] >= 0
        np.testing.assert_allclose(q2, q if q[0] >= 0 else -q, atol=1e-9)
    # 180 degrees about x: w = 0
    np.testing.assert_allclose(np.abs(matrix_to_quat_wxyz(np.diag([1.0, -1.0, -1.0]))), [0, 1, 0, 0], atol=1e-12)


def test_quaternion_matches_axis_angle():
    angle = np.deg2rad(30.0)
    q = [np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2)]  # about z
    R = quat_wxyz_to_matrix(q)
    expected = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    np.testing.assert_allclose(R, expected, atol=1e-12)
    np.testing.assert_allclose(quat_xyzw_to_wxyz(quat_wxyz_to_xyzw(q)), q)
    assert rotation_angle_deg(np.eye(3), R) == pytest.approx(30.0)


def test_zero_quaternion_is_an_error():
    with pytest.raises(InputError, match=r"quaternion: expected a finite non-zero"):
        quat_wxyz_to_matrix([0, 0, 0, 0])


def test_invert_and_compose():
    rng = np.random.default_rng(1)
    T = make_T(_random_rotation(rng), rng.normal(size=3))
    np.testing.assert_allclose(invert_T(T) @ T, np.eye(4), atol=1e-12)
    X0 = rng.normal(size=(5, 3))
    X1 = (T[:3, :3] @ X0.T).T + T[:3, 3]
    back = (invert_T(T)[:3, :3] @ X1.T).T + invert_T(T)[:3, 3]
    np.testing.assert_allclose(back, X0, atol=1e-12)


def test_intrinsics_checks():
    K = intrinsics_from_values([500, 400, 320, 240])
    np.testing.assert_array_equal(K, [[500, 0, 320], [0, 400, 240], [0, 0, 1]])
    with pytest.raises(IntrinsicsError, match=r"cam: expected 4 numbers FX FY CX CY, got 5"):
        intrinsics_from_values([1, 2, 3, 4, 5], "cam")
    with pytest.raises(IntrinsicsError, match=r"K: expected focal lengths fx > 0 and fy > 0, got fx=-1"):
        check_intrinsics(np.array([[-1.0, 0, 1], [0, 1, 1], [0, 0, 1]]))
    with pytest.raises(IntrinsicsError, match=r"K: expected finite intrinsics"):
        check_intrinsics(np.array([[np.nan, 0, 1], [0, 1, 1], [0, 0, 1]]))
    with pytest.raises(IntrinsicsError, match=r"K: expected last row \[0, 0, 1\]"):
        check_intrinsics(np.array([[1.0, 0, 1], [0, 1, 1], [0, 1, 1]]))


def test_rescale_intrinsics_half_pixel_convention():
    K = intrinsics_from_values([590.0, 590.0, 269.5, 359.5])
    # halving the image: pixel centre (269.5, 359.5) of a 540x720 image maps to (134.5, 179.5) of 270x360
    K2 = rescale_intrinsics(K, 0.5, 0.5)
    np.testing.assert_allclose(K2, [[295.0, 0, 134.5], [0, 295.0, 179.5], [0, 0, 1]])
    np.testing.assert_allclose(rescale_intrinsics(K, 1.0, 1.0), K)
    assert crop_to_multiple(720, 540) == (714, 532)
    assert crop_to_multiple(224, 294) == (224, 294)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backproject_projects_back(dtype):
    g = torch.Generator().manual_seed(0)
    K = torch.tensor([[[500.0, 0.0, 150.0], [0.0, 450.0, 110.0], [0.0, 0.0, 1.0]]], dtype=dtype)
    kpts = torch.rand(1, 50, 2, generator=g, dtype=dtype) * 300
    depth = torch.rand(1, 50, generator=g, dtype=dtype) * 5 + 0.5
    X = backproject(kpts, depth, K)
    assert X.shape == (1, 50, 3) and X.dtype == dtype
    proj = X[0] @ K[0].T
    torch.testing.assert_close(proj[:, :2] / proj[:, 2:], kpts[0])
    torch.testing.assert_close(X[0, :, 2], depth[0])


@pytest.mark.parametrize("angle_deg", [0.0, 1e-4, 10.0, 90.0, 179.0, 180.0])
def test_angle_axis_round_trips_through_the_rotation(angle_deg):
    import cv2

    axis = np.array([1.0, -2.0, 0.5]) / np.linalg.norm([1.0, -2.0, 0.5])
    R, _ = cv2.Rodrigues(axis * np.deg2rad(angle_deg))
    angle, got = angle_axis_deg(R)
    assert angle == pytest.approx(angle_deg, abs=1e-6)
    if angle_deg == 0.0:
        np.testing.assert_array_equal(got, [0.0, 0.0, 1.0])
    elif angle_deg == 180.0:
        np.testing.assert_allclose(np.abs(got @ axis), 1.0, atol=1e-9)  # +-axis: the same rotation
    else:
        np.testing.assert_allclose(got, axis, atol=1e-6)
