"""Map-free benchmark metrics: pose errors, VCRE and the confidence-weighted AUC (numpy, float64).

Every quantity follows the benchmark's definition (``shared/reference/mapfree_metrics.md`` §3-§5):

* translation error: distance between the camera centres ``c = -R^T t`` (metres), not ``|t_est - t_gt|``;
* rotation error: ``2 asin(|vec(q_a ⊗ q_b^-1)|)`` in degrees with normalised quaternions;
* VCRE: mean pixel distance of a fixed virtual grid of 196 points in the GT query camera, projected
  with the GT and the estimated pose, both projections clipped to ``[0, W] x [0, H]``; points behind
  the estimated camera are *not* masked (they flip through the principal point and get clipped);
* AUC: a right-continuous step sum of precision over the fraction of frames kept when estimates
  are accepted by decreasing confidence, with float32 recall (§5.1).

Poses are world-to-camera ``X_cam = R X_world + t``; for Map-free val/test the world is the
reference camera, so a query's pose is the relative pose ``T_0to1`` reference -> query.
"""
from __future__ import annotations

import numpy as np

from mickey_ros.errors import InputError
from mickey_ros.geometry.se3 import invert_T, matrix_to_quat_wxyz

T_THRESHOLD_M = 0.25  # pose accepted when translation error < 0.25 m (strict) ...
R_THRESHOLD_DEG = 5.0  # ... and rotation error < 5 deg (strict)
VCRE_THRESHOLD_PX = 90.0  # VCRE accepted when < 90 px (strict): 10 % of the 540x720 diagonal

_DEG_PER_HALF_RAD = 360.0 / np.pi  # 2 * 180 / pi = 114.59155902616465


def _virtual_grid() -> np.ndarray:
    x = np.array([-0.9, -0.6, -0.3, 0.0, 0.3, 0.6, 0.9])
    y = np.array([-0.45, -0.15, 0.15, 0.45])
    z = np.array([1.8, 2.1, 2.4, 2.7, 3.0, 3.3, 3.6])
    xs, ys, zs = np.meshgrid(x, y, z)  # 'xy' indexing, flattened in C order (as the benchmark)
    return np.stack([xs.ravel(), ys.ravel(), zs.ravel()], axis=1)


VIRTUAL_GRID: np.ndarray = _virtual_grid()
"""``[196, 3]`` metres: the virtual points of VCRE, in the GT query camera (x right, y down, z forward)."""
VIRTUAL_GRID.setflags(write=False)


def _as_T(T: np.ndarray, name: str) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise InputError(f"{name}: expected a 4x4 transform, got shape {T.shape}")
    return T


def camera_centre(T_w2c: np.ndarray) -> np.ndarray:
    """Camera centre ``c = -R^T t`` of a world-to-camera ``[4, 4]`` pose, ``[3]`` metres in the world."""
    T_w2c = _as_T(T_w2c, "T_w2c")
    return -T_w2c[:3, :3].T @ T_w2c[:3, 3]


def _qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of ``[w, x, y, z]`` quaternions."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by + ay * bw + az * bx - ax * bz,
            aw * bz + az * bw + ax * by - ay * bx,
        ]
    )


def rotation_error_quat(q_est_wxyz: np.ndarray, q_gt_wxyz: np.ndarray) -> float:
    """Benchmark rotation error between two world-to-camera quaternions, degrees in [0, 180].

    ``2 asin(|vec(q_est,c2w ⊗ q_gt,c2w^-1)|)`` with both quaternions normalised (``q_c2w`` is the
    normalised conjugate). The sign and scale of either quaternion do not matter.
    The sine is clamped to 1: at exactly 180 deg rounding can push it to ``1 + 1e-16``, where the
    benchmark's ``arcsin`` returns NaN or 180 depending on the numpy build; we return 180.

    Args:
        q_est_wxyz: ``[4]`` estimated quaternion (w, x, y, z), any non-zero norm.
        q_gt_wxyz: ``[4]`` ground-truth quaternion (w, x, y, z), any non-zero norm.
    """
    q_est = np.asarray(q_est_wxyz, dtype=np.float64).reshape(4)
    q_gt = np.asarray(q_gt_wxyz, dtype=np.float64).reshape(4)
    conj = np.array([1.0, -1.0, -1.0, -1.0])
    q1 = q_est * conj / np.linalg.norm(q_est)  # est camera-to-world
    q2 = q_gt * conj / np.linalg.norm(q_gt)  # gt camera-to-world
    q2_inv = q2 * conj / np.linalg.norm(q2)
    sine = np.linalg.norm(_qmul(q1, q2_inv)[1:])
    return float(np.arcsin(min(sine, 1.0)) * _DEG_PER_HALF_RAD)


def pose_errors(T_est_w2c: np.ndarray, T_gt_w2c: np.ndarray) -> tuple[float, float]:
    """Benchmark pose errors of an estimated world-to-camera pose.

    Args:
        T_est_w2c: ``[4, 4]`` estimated pose (for Map-free val/test: ``T_0to1`` reference -> query).
        T_gt_w2c: ``[4, 4]`` ground-truth pose, same convention.

    Returns:
        ``(trans_err, rot_err)``: distance of the camera centres in metres, and the rotation error in
        degrees (asin form, :func:`rotation_error_quat`).
    """
    T_est = _as_T(T_est_w2c, "T_est_w2c")
    T_gt = _as_T(T_gt_w2c, "T_gt_w2c")
    trans_err = float(np.linalg.norm(camera_centre(T_est) - camera_centre(T_gt)))
    rot_err = rotation_error_quat(matrix_to_quat_wxyz(T_est[:3, :3]), matrix_to_quat_wxyz(T_gt[:3, :3]))
    return trans_err, rot_err


def _project_clipped(P: np.ndarray, K: np.ndarray, width: float, height: float) -> np.ndarray:
    """``[N, 2]`` pixels ``(K P)[:2] / (K P)[2]``, u clipped to [0, W], v to [0, H]; no depth test."""
    KP = P @ K.T
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = KP[:, :2] / KP[:, 2:3]
    uv[:, 0] = np.clip(uv[:, 0], 0.0, width)
    uv[:, 1] = np.clip(uv[:, 1], 0.0, height)
    return uv


def vcre(T_est_w2c: np.ndarray, T_gt_w2c: np.ndarray, K: np.ndarray, width: float, height: float) -> float:
    """Virtual correspondence reprojection error (pixels) of an estimated query pose.

    The 196 :data:`VIRTUAL_GRID` points are placed in the GT query camera, mapped to the estimated
    query camera by ``T_est_w2c @ inv(T_gt_w2c)`` and projected with the query intrinsics ``K``.
    Both projections are clipped to ``u in [0, W]``, ``v in [0, H]``; points behind the estimated
    camera are not masked. The benchmark rounds K to float32 when it reads ``intrinsics.txt``
    (:func:`mickey_ros.mapfree.evaluate_submission` does that); this function uses K as given.

    Args:
        T_est_w2c: ``[4, 4]`` estimated world-to-camera pose of the query.
        T_gt_w2c: ``[4, 4]`` ground-truth world-to-camera pose of the query.
        K: ``[3, 3]`` intrinsics of the query image at its original resolution (pixels).
        width: image width W (pixels), the clip bound of u.
        height: image height H (pixels), the clip bound of v.

    Returns:
        Mean over the 196 points of ``|uv_gt - uv_est|``, at most ``sqrt(W^2 + H^2)`` (NaN only if a
        point lands exactly on the estimated camera plane with a zero numerator).
    """
    T_est = _as_T(T_est_w2c, "T_est_w2c")
    T_gt = _as_T(T_gt_w2c, "T_gt_w2c")
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise InputError(f"K: expected a 3x3 intrinsics matrix, got shape {K.shape}")
    T_gt_to_est = T_est @ invert_T(T_gt)
    P_est = VIRTUAL_GRID @ T_gt_to_est[:3, :3].T + T_gt_to_est[:3, 3]
    uv_gt = _project_clipped(VIRTUAL_GRID, K, float(width), float(height))
    uv_est = _project_clipped(P_est, K, float(width), float(height))
    return float(np.mean(np.linalg.norm(uv_gt - uv_est, axis=1)))


def confidence_auc(confidence: np.ndarray, accepted: np.ndarray, failures: int) -> float:
    """Benchmark AUC of precision over "fraction of frames kept", ranking estimates by confidence.

    Estimates are sorted by decreasing confidence; each group of equal confidence is one threshold
    (its last index k counts). ``precision_k = #accepted[:k+1] / (k+1)`` (float64),
    ``recall_k = (k+1) / (N + failures)`` (float32, as the benchmark), and
    ``AUC = sum_k (recall_k - recall_{k-1}) precision_k`` with ``recall_{-1} = 0``: a step sum
    without interpolation or precision envelope. It lies in ``[0, N / (N + failures)]``.

    Args:
        confidence: ``[N]`` confidences of the estimated frames (higher = more confident), N >= 1.
        accepted: ``[N]`` bool, the estimate passes the threshold (pose or VCRE).
        failures: number of evaluated frames without an estimate (they lower the recall axis).

    Returns:
        The AUC as a Python float.
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    ok = np.asarray(accepted, dtype=bool).reshape(-1)
    if conf.size == 0 or conf.size != ok.size:
        raise InputError(f"confidence/accepted: expected equal non-zero lengths, got {conf.size} and {ok.size}")
    n = conf.size
    order = np.argsort(conf)[::-1]
    conf, ok = conf[order], ok[order]
    last_of_group = np.append(np.flatnonzero(conf[1:] != conf[:-1]), n - 1)
    kept = (np.arange(n, dtype=np.float32) + 1)[last_of_group]
    precision = np.cumsum(ok)[last_of_group] / kept  # float64
    recall = kept / np.float32(n + failures)  # float32 division, as the benchmark
    top = int(np.searchsorted(recall, recall[-1]))  # first threshold reaching the final recall
    recall_desc = np.append(recall[top::-1], np.float32(0.0))  # decreasing, ending at (0, 1)
    precision_desc = np.append(precision[top::-1], 1.0)
    return float(abs(np.sum(np.diff(recall_desc) * precision_desc[:-1])))
