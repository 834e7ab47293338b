"""SE(3) and quaternion helpers (numpy, float64).

Conventions: ``T_a_to_b`` maps points from frame a into frame b, ``X_b = R X_a + t``.
Quaternions are Hamilton. ``wxyz`` is Map-free's file order, ``xyzw`` is ROS's message order.
"""
from __future__ import annotations

import numpy as np

from mickey_ros.errors import InputError


def make_T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Build a homogeneous transform.

    Args:
        R: ``[3, 3]`` rotation.
        t: ``[3]`` translation (metres).

    Returns:
        ``[4, 4]`` float64 transform.
    """
    T = np.eye(4, dtype=np.float64)
    T[:3, :3] = np.asarray(R, dtype=np.float64)
    T[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return T


def invert_T(T: np.ndarray) -> np.ndarray:
    """Invert a rigid ``[4, 4]`` transform exactly (R^T, -R^T t), float64."""
    T = np.asarray(T, dtype=np.float64)
    R, t = T[:3, :3], T[:3, 3]
    return make_T(R.T, -R.T @ t)


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """Geodesic angle between two rotations in degrees, in [0, 180]."""
    R = np.asarray(R_a, dtype=np.float64).T @ np.asarray(R_b, dtype=np.float64)
    cos = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)))


def angle_axis_deg(R: np.ndarray) -> tuple[float, np.ndarray]:
    """``(angle in degrees [0, 180], unit axis [3])`` of a ``[3, 3]`` rotation; axis ``[0, 0, 1]`` at angle 0.

    Near 180 deg the axis comes from the largest column of ``R + I`` (the skew part vanishes there).
    """
    R = np.asarray(R, dtype=np.float64)
    angle = rotation_angle_deg(np.eye(3), R)
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    if np.linalg.norm(axis) < 1e-9:
        if angle < 90.0:
            return angle, np.array([0.0, 0.0, 1.0])
        sym = R + np.eye(3)
        axis = sym[:, int(np.argmax(np.linalg.norm(sym, axis=0)))]
    return angle, axis / np.linalg.norm(axis)


def quat_wxyz_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a (not necessarily unit) quaternion ``[w, x, y, z]``.

    Raises:
        InputError: the quaternion has (near) zero norm or is not finite.
    """
    q = np.asarray(q, dtype=np.float64).reshape(4)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or np.isclose(n, 0.0):
        raise InputError(f"quaternion: expected a finite non-zero [w, x, y, z], got {q.tolist()}")
    w, x, y, z = q / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quat_wxyz(R: np.ndarray) -> np.ndarray:
    """Unit quaternion ``[w, x, y, z]`` with w >= 0 of a rotation matrix (robust for all angles).

    Uses the eigenvector of the symmetric 4x4 matrix of Bar-Itzhack, so a slightly non-orthogonal R
    gives the nearest rotation's quaternion.
    """
    R = np.asarray(R, dtype=np.float64).reshape(3, 3)
    (xx, yx, zx), (xy, yy, zy), (xz, yz, zz) = R
    K = np.array(
        [
            [xx - yy - zz, 0.0, 0.0, 0.0],
            [yx + xy, yy - xx - zz, 0.0, 0.0],
            [zx + xz, zy + yz, zz - xx - yy, 0.0],
            [yz - zy, zx - xz, xy - yx, xx + yy + zz],
        ]
    ) / 3.0
    vals, vecs = np.linalg.eigh(K, UPLO="L")
    x, y, z, w = vecs[:, np.argmax(vals)]
    q = np.array([w, x, y, z])
    return -q if q[0] < 0 else q


def quat_wxyz_to_xyzw(q: np.ndarray) -> np.ndarray:
    """Reorder Map-free ``[w, x, y, z]`` into ROS ``[x, y, z, w]``."""
    q = np.asarray(q, dtype=np.float64).reshape(4)
    return q[[1, 2, 3, 0]]


def quat_xyzw_to_wxyz(q: np.ndarray) -> np.ndarray:
    """Reorder ROS ``[x, y, z, w]`` into Map-free ``[w, x, y, z]``."""
    q = np.asarray(q, dtype=np.float64).reshape(4)
    return q[[3, 0, 1, 2]]
