"""Multi-robot map alignment: robust fusion survives 25 % gross outliers where the plain mean fails."""
from __future__ import annotations

import numpy as np

from mickey_ros.geometry.se3 import invert_T, make_T, quat_wxyz_to_matrix, rotation_angle_deg
from mickey_ros.ros.alignment import AlignmentConfig, candidate, fuse


def _rot(rng, deg):
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    half = np.radians(deg) / 2
    return quat_wxyz_to_matrix([np.cos(half), *(np.sin(half) * axis)])


def _simulate(seed=0, n=40, outlier_fraction=0.25):
    rng = np.random.default_rng(seed)
    T_true = make_T(_rot(rng, 70.0), [12.0, -4.0, 0.5])  # map_b in map_a
    cands, confs = [], []
    n_out = int(n * outlier_fraction)
    for k in range(n):
        T_mapa_ca = make_T(_rot(rng, 180 * rng.random()), rng.uniform(-10, 10, 3))
        T_mapb_cb = invert_T(T_true) @ T_mapa_ca @ make_T(_rot(rng, 20), rng.uniform(-1, 1, 3))  # B near A
        T_0to1 = invert_T(T_mapb_cb) @ invert_T(T_true) @ T_mapa_ca  # exact X_cb = T X_ca
        if k < n_out:  # gross outlier: wrong match, confident anyway
            T_0to1 = make_T(_rot(rng, rng.uniform(20, 170)), rng.uniform(-3, 3, 3)) @ T_0to1
        else:  # MicKey-like noise: ~0.3 deg, ~2 cm
            T_0to1 = make_T(_rot(rng, abs(rng.normal(0, 0.3))), rng.normal(0, 0.02, 3)) @ T_0to1
        cands.append(candidate(T_mapa_ca, T_0to1, T_mapb_cb))
        confs.append(rng.uniform(0.3, 0.9))
    return T_true, np.array(cands), np.array(confs), n_out


def _errors(T, T_true):
    return rotation_angle_deg(T[:3, :3], T_true[:3, :3]), np.linalg.norm(T[:3, 3] - T_true[:3, 3])


def test_candidate_recovers_the_map_transform_exactly():
    T_true = _simulate(outlier_fraction=0.0)[0]
    rng = np.random.default_rng(5)
    T_mapa_ca = make_T(_rot(rng, 30), [1.0, 2.0, 3.0])
    T_mapb_cb = invert_T(T_true) @ T_mapa_ca @ make_T(_rot(rng, 10), [0.3, 0.0, 0.1])
    T_0to1 = invert_T(T_mapb_cb) @ invert_T(T_true) @ T_mapa_ca
    np.testing.assert_allclose(candidate(T_mapa_ca, T_0to1, T_mapb_cb), T_true, atol=1e-9)


def test_robust_fusion_within_1_deg_and_5_cm_where_the_mean_fails():
    T_true, cands, confs, n_out = _simulate()
    res = fuse(cands, confs)
    assert res.success
    rot, trans = _errors(res.T_mapa_mapb, T_true)
    assert rot < 1.0 and trans < 0.05
    assert not res.inliers[:n_out].any() and res.inliers[n_out:].all()
    assert res.covariance.shape == (6, 6) and np.all(np.linalg.eigvalsh(res.covariance) >= 0)
    # the plain mean (chordal rotation mean + mean translation) of the same data is far off
    U, _, Vt = np.linalg.svd(cands[:, :3, :3].sum(0))
    mean_T = make_T(U @ np.diag([1, 1, np.sign(np.linalg.det(U @ Vt))]) @ Vt, cands[:, :3, 3].mean(0))
    m_rot, m_trans = _errors(mean_T, T_true)
    assert m_rot > 1.0 and m_trans > 0.05


def test_confidence_gating_and_too_few():
    T_true, cands, confs, n_out = _simulate(n=8, outlier_fraction=0.0)
    res = fuse(cands, np.full(8, 0.05), AlignmentConfig(min_confidence=0.2))
    assert not res.success and "too few measurements: 0 with confidence >= 0.2" in res.reason
    assert np.array_equal(res.T_mapa_mapb, np.eye(4))
