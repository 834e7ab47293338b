"""Pose covariance from 3D-3D inliers (issue 9 item 6): consistency where the noise model holds, conventions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mickey_ros.errors import InputError
from mickey_ros.geometry.covariance import (
    CHI2_95_6DOF,
    nees,
    nees_summary,
    pose_covariance,
    pose_error_vector,
)
from mickey_ros.geometry.kabsch import kabsch_float64
from mickey_ros.geometry.se3 import make_T


def _rotation(rng, max_deg):
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.radians(rng.uniform(0, max_deg))
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def _trial(rng, n=300, sigma_rel=0.03, f=220.0, pixel_sigma=1.0):
    """Points in front of camera 0, moved into camera 1, each point re-measured with depth noise along its ray."""
    T = make_T(_rotation(rng, 15.0), rng.uniform(-0.5, 0.5, 3))
    X0 = np.stack([rng.uniform(-1.5, 1.5, n), rng.uniform(-1.0, 1.0, n), rng.uniform(1.5, 4.5, n)], 1)
    X1 = X0 @ T[:3, :3].T + T[:3, 3]

    def measure(X):
        d = np.linalg.norm(X, axis=1, keepdims=True)
        u = X / d
        lateral = rng.normal(size=X.shape) * pixel_sigma * d / f
        lateral -= (lateral * u).sum(1, keepdims=True) * u
        return X * (1 + sigma_rel * rng.normal(size=(n, 1))) + lateral

    M0, M1 = measure(X0), measure(X1)
    R, t = kabsch_float64(torch.from_numpy(M0), torch.from_numpy(M1))
    return make_T(R.numpy(), t.numpy()), T, M0, M1


def test_consistent_where_the_noise_model_holds():
    rng = np.random.default_rng(0)
    values = []
    for _ in range(300):
        T_est, T_gt, M0, M1 = _trial(rng)
        cov = pose_covariance(M0, M1, T_est, 220.0, 220.0)
        values.append(nees(T_est, T_gt, cov))
    summary = nees_summary(values)
    # a consistent covariance: mean 6 (chi-square, 6 dof), 95 % within the bound; an error of 2x in the
    # covariance would put the mean at 3 or 12
    assert 5.0 < summary["nees_mean"] < 7.3, summary
    assert 0.91 < summary["nees_within_95"] <= 0.99, summary
    assert summary["nees_pairs"] == 300


def test_covariance_follows_the_residuals_and_the_scale():
    rng = np.random.default_rng(1)
    T_est, _, M0, M1 = _trial(rng, sigma_rel=0.01)
    small = pose_covariance(M0, M1, T_est, 220.0, 220.0)
    rng = np.random.default_rng(1)
    T_est4, _, N0, N1 = _trial(rng, sigma_rel=0.04)
    large = pose_covariance(N0, N1, T_est4, 220.0, 220.0)
    ratio = np.trace(large[:3, :3]) / np.trace(small[:3, :3])
    assert 10 < ratio < 22  # 4x the depth noise: ~16x the variance
    np.testing.assert_allclose(pose_covariance(M0, M1, T_est, 220.0, 220.0, scale=3.0), 3 * small)
    np.testing.assert_allclose(small, small.T)
    assert np.linalg.eigvalsh(small)[0] > 0


def test_covariance_is_expressed_in_camera_0_axes():
    """Turning camera 0's frame by G turns the covariance by diag(G, G): position and rotation about its axes."""
    rng = np.random.default_rng(2)
    T_est, _, M0, M1 = _trial(rng)
    G = _rotation(rng, 40.0)
    cov = pose_covariance(M0, M1, T_est, 220.0, 220.0)
    T_turned = T_est @ make_T(G.T, np.zeros(3))  # X1 = R G^T (G X0) + t
    turned = pose_covariance(M0 @ G.T, M1, T_turned, 220.0, 220.0)
    B = np.kron(np.eye(2), G)
    np.testing.assert_allclose(turned, B @ cov @ B.T, rtol=1e-6, atol=1e-12)


def test_error_vector_convention():
    """Camera 1 in camera 0: position -R^T t; rotation error about camera 0's axes, on the left."""
    R = _rotation(np.random.default_rng(3), 20.0)
    T_est = make_T(R, [0.2, -0.1, 0.4])
    dphi = np.array([0.0, 0.0, 0.01])  # a small turn about camera 0's z axis
    Q_true = (np.eye(3) + np.array([[0, -0.01, 0], [0.01, 0, 0], [0, 0, 0]])) @ R.T
    U, _, Vt = np.linalg.svd(Q_true)
    Q_true = U @ Vt
    p_est = -R.T @ T_est[:3, 3]
    p_true = p_est + np.array([0.05, 0.0, 0.0])
    T_gt = make_T(Q_true.T, -Q_true.T @ p_true)
    e = pose_error_vector(T_est, T_gt)
    np.testing.assert_allclose(e[:3], [0.05, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(e[3:], dphi, atol=1e-6)
    cov = np.diag([0.05**2, 1, 1, 1, 1, 0.01**2])
    assert nees(T_est, T_gt, cov) == pytest.approx(2.0, rel=1e-4)


def test_undetermined_and_bad_input():
    rng = np.random.default_rng(4)
    T_est, _, M0, M1 = _trial(rng, n=5)
    assert pose_covariance(M0, M1, T_est, 220.0, 220.0) is None  # fewer than 6 inliers
    line = np.linspace([0, 0, 2], [1, 0, 3], 20)
    assert pose_covariance(line, line + 0.1, make_T(np.eye(3), [0.1, 0.1, 0.1]), 220.0, 220.0) is None  # collinear
    with pytest.raises(InputError, match=r"X0, X1: expected two \[n, 3\] arrays of the same shape"):
        pose_covariance(M0[:, :2], M1, T_est, 220.0, 220.0)
    with pytest.raises(InputError, match="expected positive values, got 0.0"):
        pose_covariance(M0, M1, T_est, 0.0, 220.0)
    empty = nees_summary([float("inf"), float("nan")])
    assert empty["nees_pairs"] == 0 and np.isnan(empty["nees_mean"])
    assert nees_summary([CHI2_95_6DOF, 100.0])["nees_within_95"] == 0.5
    values = list(np.linspace(1.0, 100.0, 101))
    s95 = nees_summary(values)["scale_for_95"]
    assert np.mean(np.asarray(values) / s95 <= CHI2_95_6DOF) == pytest.approx(0.95, abs=0.01)
