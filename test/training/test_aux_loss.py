"""Pose-only auxiliary terms: epipolar geometry and triangulation against hand-made scenes, gradients, config."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mickey_ros.errors import InputError
from training.aux_loss import (AuxConfig, aux_loss, epipolar_distances, fundamental_matrix, skew,
                               symmetric_epipolar_distance, triangulate)


def _rotation(axis, deg) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.deg2rad(deg)
    Kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * Kx + (1 - np.cos(a)) * Kx @ Kx


def _scene(n=40, seed=0):
    """Points in front of camera 0, a known T_0to1 and the exact pixels in both views."""
    rng = np.random.default_rng(seed)
    K = np.array([[220.0, 0, 146.5], [0, 220.0, 111.5], [0, 0, 1]])
    X0 = np.stack([rng.uniform(-1, 1, n), rng.uniform(-0.7, 0.7, n), rng.uniform(1.5, 4.0, n)], -1)
    T = np.eye(4)
    T[:3, :3] = _rotation([0.2, 1.0, 0.1], 12.0)
    T[:3, 3] = [-0.45, 0.05, 0.1]
    X1 = X0 @ T[:3, :3].T + T[:3, 3]
    x0 = X0 @ K.T
    x1 = X1 @ K.T
    t = lambda a: torch.tensor(a)[None]  # noqa: E731
    return t(K), t(K), t(T), t(x0[:, :2] / x0[:, 2:]), t(x1[:, :2] / x1[:, 2:]), t(X0[:, 2]), t(X1[:, 2])


def test_skew_is_cross_product():
    a, b = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    assert torch.allclose((skew(a) @ b[..., None]).squeeze(-1), torch.linalg.cross(a, b), atol=1e-12)


def test_true_correspondences_lie_on_epipolar_lines_and_others_do_not():
    K0, K1, T, x0, x1, _, _ = _scene()
    d1, d0 = epipolar_distances(fundamental_matrix(K0, K1, T), x0, x1)
    diag1, diag0 = d1[0].diagonal(), d0[0].diagonal()
    assert diag1.max() < 1e-8 and diag0.max() < 1e-8
    off = d1[0][~torch.eye(40, dtype=torch.bool)]
    assert off.median() > 5.0  # wrong pairings are pixels away from the line
    # independent check of one distance: the line through the image of two points on camera 0's ray of x0_0
    Kinv = np.linalg.inv(K0[0].numpy())
    ray = Kinv @ np.array([*x0[0, 0].numpy(), 1.0])
    R, t = T[0, :3, :3].numpy(), T[0, :3, 3].numpy()
    p, q = [(K1[0].numpy() @ (R @ (z * ray) + t)) for z in (1.0, 7.0)]
    p, q = p[:2] / p[2], q[:2] / q[2]
    u = x1[0, 5].numpy()
    expected = abs((q[0] - p[0]) * (p[1] - u[1]) - (p[0] - u[0]) * (q[1] - p[1])) / np.linalg.norm(q - p)
    assert d1[0, 0, 5].item() == pytest.approx(expected, rel=1e-9)


def test_symmetric_distance_of_matches_is_the_mean_of_both_matrix_entries():
    K0, K1, T, x0, x1, _, _ = _scene()
    F = fundamental_matrix(K0, K1, T)
    x1s = torch.roll(x1, 3, dims=1)  # wrong pairings: distances of pixels
    d1, d0 = epipolar_distances(F, x0, x1s)
    expected = (d1[0].diagonal() + d0[0].diagonal()) / 2
    assert torch.allclose(symmetric_epipolar_distance(F, x0, x1s)[0], expected, rtol=1e-12)
    assert float(expected.min()) > 0.1


def test_triangulation_recovers_metric_depths():
    K0, K1, T, x0, x1, z0, z1 = _scene()
    t0, t1, angle = triangulate(x0, x1, K0, K1, T)
    assert torch.allclose(t0, z0, rtol=1e-9) and torch.allclose(t1, z1, rtol=1e-9)
    assert bool((angle > 1.0).all()) and bool((angle < 30.0).all())
    T2 = T.clone()
    T2[:, :3, 3] *= 2.0  # twice the baseline, same pixels: the depths are no longer consistent with the rays
    t0b, _, _ = triangulate(x0, x1, K0, K1, T2)
    assert not torch.allclose(t0b, z0, rtol=1e-2)


def _outputs(x, depth, desc, requires_grad=True):
    return SimpleNamespace(kpts=x.clone().float().requires_grad_(requires_grad),
                           depth=depth.clone().float().requires_grad_(requires_grad),
                           descriptors=desc.clone().float().requires_grad_(requires_grad))


def _descriptors(n, seed=1):
    d = torch.randn(1, n, 32, generator=torch.Generator().manual_seed(seed))
    return d / d.norm(dim=-1, keepdim=True)


def test_matching_descriptors_with_metric_depth_give_zero_triangulation_loss_and_unit_ratio():
    K0, K1, T, x0, x1, z0, z1 = _scene()
    desc = _descriptors(40)
    cfg = AuxConfig(epipolar_weight=1.0, triangulation_weight=1.0, keypoint_epipolar_weight=1.0)
    out = aux_loss(_outputs(x0, z0, desc), _outputs(x1, z1, desc), K0, K1, T, cfg)
    s = out.scalars
    assert s["aux_mutual"] == 1.0 and s["aux_epipolar_inlier_ratio"] == 1.0
    assert s["aux_triangulated"] == 40
    assert s["aux_depth_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert s["aux_triangulation"] == pytest.approx(0.0, abs=1e-6)
    # depth at half scale: the loss is |log 0.5| and the ratio 0.5
    out = aux_loss(_outputs(x0, z0 / 2, desc), _outputs(x1, z1 / 2, desc), K0, K1, T, cfg)
    assert out.scalars["aux_depth_ratio"] == pytest.approx(0.5, rel=1e-6)
    assert out.scalars["aux_triangulation"] == pytest.approx(np.log(2.0), rel=1e-6)


def test_gradients_move_depth_towards_metric_and_descriptors_towards_the_epipolar_match():
    K0, K1, T, x0, x1, z0, z1 = _scene()
    desc = _descriptors(40)
    o0, o1 = _outputs(x0, z0 * 2, desc), _outputs(x1, z1 * 2, desc)
    cfg = AuxConfig(epipolar_weight=1.0, triangulation_weight=1.0, keypoint_epipolar_weight=0.0)
    aux_loss(o0, o1, K0, K1, T, cfg).total.backward()
    assert bool((o0.depth.grad > 0).all()) and bool((o1.depth.grad > 0).all())  # too deep -> decrease
    # epipolar: from random descriptors of image 1, one step along -grad lowers the expected distance
    o0 = _outputs(x0, z0, desc)
    o1 = _outputs(x1, z1, _descriptors(40, seed=7))
    only_epi = AuxConfig(epipolar_weight=1.0)
    before = aux_loss(o0, o1, K0, K1, T, only_epi)
    before.total.backward()
    with torch.no_grad():
        o1b = _outputs(x1, z1, o1.descriptors - 0.5 * o1.descriptors.grad / o1.descriptors.grad.norm(), False)
        o0b = _outputs(x0, z0, o0.descriptors - 0.5 * o0.descriptors.grad / o0.descriptors.grad.norm(), False)
        after = aux_loss(o0b, o1b, K0, K1, T, only_epi)
    assert after.scalars["aux_epipolar"] < before.scalars["aux_epipolar"]
    assert o0.kpts.grad is None or float(o0.kpts.grad.abs().sum()) == 0.0  # positions detached here


def test_wrong_matches_are_not_triangulated():
    K0, K1, T, x0, x1, z0, z1 = _scene()
    desc = _descriptors(40)
    perm = torch.roll(torch.arange(40), 1)
    out = aux_loss(_outputs(x0, z0, desc), _outputs(x1, z1, desc[:, perm]), K0, K1, T,
                   AuxConfig(triangulation_weight=1.0))
    assert out.scalars["aux_mutual"] == 1.0
    assert out.scalars["aux_epipolar_inlier_ratio"] < 0.2
    assert out.scalars["aux_triangulated"] < 8


def test_off_by_default_and_config_checks():
    K0, K1, T, x0, x1, z0, z1 = _scene()
    desc = _descriptors(40)
    out = aux_loss(_outputs(x0, z0, desc), _outputs(x1, z1, desc), K0, K1, T, AuxConfig())
    assert float(out.total.detach()) == 0.0 and out.scalars == {} and out.total.requires_grad
    with pytest.raises(InputError, match=r"aux\.epipolar_weight: expected a non-negative number"):
        AuxConfig(epipolar_weight=-1.0)
    with pytest.raises(InputError, match=r"aux\.epipolar_scale_px: expected a positive number"):
        AuxConfig(epipolar_scale_px=0.0)


def test_reprojection_targets_find_the_true_match_and_reject_occluded_or_far_ones():
    from training.aux_loss import reprojection_targets

    K0, K1, T, x0, x1, z0, z1 = _scene()
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(3))
    x1p, z1p = x1[:, perm], z1[:, perm]  # destination keypoints in another order
    target, ok = reprojection_targets(x0, z0, x1p, z1p, K0, K1, T, 2.0, 0.1)
    assert bool(ok.all()) and torch.equal(perm[target[0]], torch.arange(40))
    z1o = z1p.clone()
    z1o[0, 0] *= 0.5  # the destination point is much closer: it occludes the reprojected one
    target, ok = reprojection_targets(x0, z0, x1p, z1o, K0, K1, T, 2.0, 0.1)
    assert not bool(ok[0, perm[0]]) and int(ok.sum()) == 39
    target, ok = reprojection_targets(x0, z0 * 1.5, x1p, z1p, K0, K1, T, 2.0, 0.1)  # wrong depth: far from any
    assert int(ok.sum()) < 10


def test_reprojection_term_is_the_cross_entropy_of_the_true_match():
    K0, K1, T, x0, x1, z0, z1 = _scene()
    desc = _descriptors(40)
    cfg = AuxConfig(reprojection_weight=1.0, epipolar_temperature=0.1)
    o0, o1 = _outputs(x0, z0, desc), _outputs(x1, z1, desc)
    out = aux_loss(o0, o1, K0, K1, T, cfg)
    sim = desc[0] @ desc[0].T / 0.1
    expected = (-(sim.log_softmax(-1).diagonal()).mean() - (sim.T.log_softmax(-1).diagonal()).mean()) / 2
    assert out.scalars["aux_reprojection"] == pytest.approx(float(expected), rel=1e-5)
    assert out.scalars["aux_reprojection_targets"] == 80
    out.total.backward()
    assert float(o0.descriptors.grad.abs().sum()) > 0 and o0.depth.grad is None or float(o0.depth.grad.abs().sum()) == 0
