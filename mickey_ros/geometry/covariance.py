"""6x6 covariance of a metric relative pose, propagated to first order from its 3D-3D inliers, and its NEES.

Convention (the published pose, DESIGN.md §2): the pose of camera 1 in camera 0's optical frame, position
``p = -R^T t`` and orientation ``Q = R^T`` for ``T_0to1 = [R | t]``. The covariance is over
``(x, y, z, rotX, rotY, rotZ)``: the position error in camera 0's frame (metres) and the orientation error as a
rotation vector about camera 0's axes (radians), applied on the left: ``Q_true = exp([dphi]_x) Q_est``
(geometry_msgs/PoseWithCovariance, rotations about the fixed axes of the header frame).

Noise model. A MicKey keypoint is ``X = d * ray``: its error lies mostly along the ray and grows with depth (a
relative depth error ``sigma_rel``), with a small lateral part (``pixel_sigma`` px of keypoint position at focal
``f``: ``pixel_sigma * d / f`` metres). With ``r_i = Q X1_i + p - X0_i`` the residual of inlier i,
``C_i = S0_i + Q S1_i Q^T`` (``Sk_i`` = the point's covariance in its camera) and the Jacobian
``J_i = d r_i / d(dp, dphi) = [I, -[Q X1_i]_x]``, the covariance of the unweighted least-squares fit the solver
makes (Kabsch on the hard inliers) is the sandwich ``A^-1 (sum J_i^T C_i J_i) A^-1`` with ``A = sum J_i^T J_i``
(not the information bound ``(sum J_i^T C_i^-1 J_i)^-1``, which Kabsch does not reach when the noise differs
between points).
``sigma_rel`` is fitted to the inliers' own residuals (the value at which ``sum r_i^T C_i^-1 r_i = 3n - 6``, the
expectation of a consistent fit), so the covariance scales with how well the inliers agree.

The inliers' depth errors are correlated (a network's depth is often off by a common factor), which the
independent model cannot see; ``scale`` multiplies the result, chosen by calibration on held-out pairs with known
ground truth (:func:`nees`: mean 6 and 95 % of pairs under the chi-square bound 12.59 for a consistent
covariance). numpy float64.
"""
from __future__ import annotations

import numpy as np

from mickey_ros.errors import InputError
from mickey_ros.geometry.se3 import angle_axis_deg

CHI2_95_6DOF = 12.591587243743977  # 95 % quantile of the chi-square distribution with 6 degrees of freedom
CHI2_MEDIAN_6DOF = 5.348120627447116  # its median
MIN_INLIERS = 6  # below this the 6 unknowns are not over-determined: no covariance
PIXEL_SIGMA = 1.0  # px, keypoint position noise (lateral part of the point covariance)


def _skew(v: np.ndarray) -> np.ndarray:
    """``[..., 3]`` -> ``[..., 3, 3]`` cross-product matrices."""
    z = np.zeros(v.shape[:-1])
    return np.stack([np.stack([z, -v[..., 2], v[..., 1]], -1), np.stack([v[..., 2], z, -v[..., 0]], -1),
                     np.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def _point_parts(X: np.ndarray, focal: float, pixel_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Per point ``[n, 3, 3]``: the along-ray part for a unit relative depth error, and the lateral part."""
    d = np.linalg.norm(X, axis=-1)
    u = X / np.maximum(d, 1e-12)[:, None]
    along = np.einsum("ni,nj->nij", u, u)
    lateral = (pixel_sigma * d / focal)[:, None, None] ** 2 * (np.eye(3) - along)
    return d[:, None, None] ** 2 * along, lateral


def pose_covariance(X0: np.ndarray, X1: np.ndarray, T_0to1: np.ndarray, focal0: float, focal1: float,
                    scale: float = 1.0, pixel_sigma: float = PIXEL_SIGMA) -> np.ndarray | None:
    """Covariance of the pose of camera 1 in camera 0 (module docstring) from the inlier correspondences.

    Args:
        X0, X1: ``[n, 3]`` metres, inlier 3D keypoints, each in its own camera frame.
        T_0to1: ``[4, 4]`` the estimated pose (``X1 = R X0 + t``).
        focal0, focal1: focal lengths in pixels of the images the keypoints come from.
        scale: calibration factor the covariance is multiplied by.
        pixel_sigma: keypoint position noise in pixels.

    Returns:
        ``[6, 6]`` float64, symmetric positive definite, (x, y, z, rotX, rotY, rotZ) in m^2 / rad^2; None when
        fewer than :data:`MIN_INLIERS` inliers or a degenerate (e.g. collinear) set leaves it undetermined.

    Raises:
        InputError: malformed arrays or non-positive focal lengths / scale.
    """
    X0, X1 = np.asarray(X0, dtype=np.float64), np.asarray(X1, dtype=np.float64)
    T = np.asarray(T_0to1, dtype=np.float64)
    if X0.ndim != 2 or X0.shape[1:] != (3,) or X0.shape != X1.shape:
        raise InputError(f"X0, X1: expected two [n, 3] arrays of the same shape, got {X0.shape} and {X1.shape}")
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise InputError(f"T_0to1: expected a finite 4x4 transform, got shape {T.shape}")
    if not (focal0 > 0 and focal1 > 0 and scale > 0 and pixel_sigma > 0):
        raise InputError(f"focal0, focal1, scale, pixel_sigma: expected positive values, got "
                         f"{focal0}, {focal1}, {scale}, {pixel_sigma}")
    finite = np.all(np.isfinite(X0), 1) & np.all(np.isfinite(X1), 1)
    X0, X1 = X0[finite], X1[finite]
    n = len(X0)
    if n < MIN_INLIERS:
        return None
    Q, p = T[:3, :3].T, -T[:3, :3].T @ T[:3, 3]
    QX1 = X1 @ Q.T
    r = QX1 + p - X0  # [n, 3]
    along0, lateral0 = _point_parts(X0, focal0, pixel_sigma)
    along1, lateral1 = _point_parts(X1, focal1, pixel_sigma)
    along = along0 + Q @ along1 @ Q.T
    lateral = lateral0 + Q @ lateral1 @ Q.T
    dof = 3 * n - 6

    def mahalanobis(sigma_rel: float) -> float:
        C = sigma_rel**2 * along + lateral
        return float(np.einsum("ni,ni->", r, np.linalg.solve(C, r[..., None])[..., 0]))

    lo, hi = 1e-6, 10.0  # relative depth error: bisection in log space on the decreasing Mahalanobis sum
    if mahalanobis(lo) <= dof:
        sigma_rel = lo
        lateral = lateral * (mahalanobis(lo) / dof)  # residuals below even the lateral noise: shrink it
    else:
        for _ in range(60):
            mid = float(np.sqrt(lo * hi))
            lo, hi = (mid, hi) if mahalanobis(mid) > dof else (lo, mid)
        sigma_rel = hi
    C = sigma_rel**2 * along + lateral
    J = np.concatenate([np.broadcast_to(np.eye(3), (n, 3, 3)), -_skew(QX1)], axis=2)  # [n, 3, 6]
    A = np.einsum("nki,nkj->ij", J, J)  # the unweighted normal matrix: Kabsch on the inliers
    eig = np.linalg.eigvalsh(A)
    if eig[0] <= eig[-1] * 1e-12:
        return None
    A_inv = np.linalg.inv(A)
    cov = A_inv @ np.einsum("nki,nkl,nlj->ij", J, C, J) @ A_inv * scale
    return 0.5 * (cov + cov.T)


def pose_error_vector(T_est: np.ndarray, T_gt: np.ndarray) -> np.ndarray:
    """``[6]`` error of the published pose (module convention): ``(p_gt - p_est, log(Q_gt Q_est^T))``, m and rad,
    for ``T_0to1`` estimates and ground truth."""
    T_est, T_gt = np.asarray(T_est, dtype=np.float64), np.asarray(T_gt, dtype=np.float64)
    Q_est, Q_gt = T_est[:3, :3].T, T_gt[:3, :3].T
    p_est, p_gt = Q_est @ -T_est[:3, 3], Q_gt @ -T_gt[:3, 3]
    return np.concatenate([p_gt - p_est, _log_so3(Q_gt @ Q_est.T)])


def _log_so3(R: np.ndarray) -> np.ndarray:
    """Rotation vector (axis x angle, radians) of a 3x3 rotation."""
    angle_deg, axis = angle_axis_deg(R)
    return np.radians(angle_deg) * axis


def nees(T_est: np.ndarray, T_gt: np.ndarray, covariance: np.ndarray) -> float:
    """Normalised estimation error squared ``e^T P^-1 e`` (6 on average for a consistent covariance ``P``)."""
    e = pose_error_vector(T_est, T_gt)
    return float(e @ np.linalg.solve(np.asarray(covariance, dtype=np.float64), e))


def nees_summary(values: list[float]) -> dict[str, float]:
    """Calibration summary of NEES values: ``nees_mean``, ``nees_median``, ``nees_within_95`` (fraction under the
    6-dof 95 % bound), ``nees_pairs``, and ``scale_for_mean_6`` / ``scale_for_median`` / ``scale_for_95`` (the
    covariance factor that would make the mean 6 / the median the chi-square median 5.348 / 95 % of the pairs fall
    inside the bound); NaN without values."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        nan = float("nan")
        return {"nees_pairs": 0, "nees_mean": nan, "nees_median": nan, "nees_within_95": nan,
                "scale_for_mean_6": nan, "scale_for_median": nan, "scale_for_95": nan}
    return {"nees_pairs": int(len(v)), "nees_mean": float(v.mean()), "nees_median": float(np.median(v)),
            "nees_within_95": float(np.mean(v <= CHI2_95_6DOF)), "scale_for_mean_6": float(v.mean() / 6.0),
            "scale_for_median": float(np.median(v) / CHI2_MEDIAN_6DOF),
            "scale_for_95": float(np.quantile(v, 0.95) / CHI2_95_6DOF)}

