"""Probabilistic Procrustes solver: accuracy, determinism, official quirks fixed, exact sampling."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from mickey_ros import solver as solver_module
from mickey_ros.errors import InputError
from mickey_ros.geometry.se3 import rotation_angle_deg
from mickey_ros.solver import (
    SolverConfig,
    estimate_from_draws,
    minimal_sets,
    sample_correspondences,
    solve_relative_pose,
)


def random_rotation(generator: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q * torch.sign(torch.linalg.det(q))


def make_scene(seed: int, n0: int = 300, n1: int = 300, inlier_ratio: float = 0.3, noise: float = 0.01,
               background: float = 1e-6):
    """Keypoints of two views and a P whose strong entries pair each i with a partner j.

    The first ``inlier_ratio * n0`` pairs are true (``X1 = R X0 + t`` + Gaussian noise), the other strong pairs
    and every background entry (``background`` * uniform) are outliers.
    """
    g = torch.Generator().manual_seed(seed)
    R, t = random_rotation(g), torch.randn(3, generator=g, dtype=torch.float64)
    def frustum(n):
        u = torch.rand(n, 3, generator=g, dtype=torch.float64)
        return (u - torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)) * torch.tensor([4.0, 3.0, 4.0]) + \
            torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64)
    pts0, pts1 = frustum(n0), frustum(n1)
    partner = torch.randperm(n1, generator=g)[:n0]
    n_in = int(inlier_ratio * n0)
    pts1[partner[:n_in]] = pts0[:n_in] @ R.T + t + noise * torch.randn(n_in, 3, generator=g, dtype=torch.float64)
    P = background * torch.rand(n0, n1, generator=g, dtype=torch.float64)
    P[torch.arange(n0), partner] = 0.5 + torch.rand(n0, generator=g, dtype=torch.float64)
    return pts0, pts1, P.float(), R, t, partner, n_in


def pose_errors(est, R, t) -> tuple[float, float]:
    return rotation_angle_deg(est.R.numpy(), R.numpy()), float((est.t - t).norm())


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_recovers_pose_with_noise_and_70_percent_outliers():
    pts0, pts1, P, R, t, partner, n_in = make_scene(0)
    est = solve_relative_pose(pts0, pts1, P, generator=seeded(0))
    assert est.success and est.reason == ""
    rot_deg, trans_m = pose_errors(est, R, t)
    assert rot_deg < 0.5 and trans_m < 0.02
    assert est.R.dtype == torch.float64 and est.R.shape == (3, 3) and est.t.shape == (3,)
    # the hard inliers are the true pairs that were drawn (plus at most a few lucky outliers)
    true_pair = partner[est.idx0.clamp(max=n_in - 1)] == est.idx1
    true_pair &= est.idx0 < n_in
    assert est.inliers[true_pair].all()
    assert est.num_inliers <= int(true_pair.sum()) + 3


def test_noiseless_inliers_give_the_exact_pose():
    pts0, pts1, P, R, t, _, _ = make_scene(1, noise=0.0)
    P = P.double()
    before = P.clone()
    est = solve_relative_pose(pts0, pts1, P, generator=seeded(1))
    assert est.success and torch.equal(P, before)  # the caller's P is not modified
    torch.testing.assert_close(est.R, R, atol=1e-6, rtol=0)
    torch.testing.assert_close(est.t, t, atol=1e-6, rtol=0)


def test_outputs_are_consistent_with_the_definitions():
    pts0, pts1, P, *_ = make_scene(2)
    est = solve_relative_pose(pts0, pts1, P, generator=seeded(2))
    M = est.num_matches
    assert M == 2048 and est.idx0.shape == est.idx1.shape == est.weights.shape == est.inliers.shape == (M,)
    assert len(set(zip(est.idx0.tolist(), est.idx1.tolist()))) == M  # no correspondence twice
    torch.testing.assert_close(est.weights, P[est.idx0, est.idx1])
    assert (est.weights[:-1] >= est.weights[1:]).all()  # sorted by weight, descending
    d = ((pts0[est.idx0] @ est.R.T + est.t - pts1[est.idx1]).square().sum(-1) + 1e-6).sqrt()
    torch.testing.assert_close(est.inliers, d <= 0.15)
    assert est.num_inliers == int(est.inliers.sum())
    soft = torch.sigmoid(5 / 0.15 * (0.15 - d)).sum().item()
    assert est.soft_inliers == pytest.approx(soft, rel=1e-9)
    assert est.confidence == pytest.approx(soft / M, rel=1e-9) and 0 < est.confidence < 1


def test_same_seed_same_answer_different_seed_other_draws():
    pts0, pts1, P, R, t, *_ = make_scene(3)
    a = solve_relative_pose(pts0, pts1, P, generator=seeded(7))
    b = solve_relative_pose(pts0, pts1, P, generator=seeded(7))
    assert torch.equal(a.R, b.R) and torch.equal(a.t, b.t) and torch.equal(a.idx0, b.idx0)
    assert a.soft_inliers == b.soft_inliers
    c = solve_relative_pose(pts0, pts1, P, generator=seeded(8))
    assert c.success and max(pose_errors(c, R, t)) < 0.5
    assert set(zip(a.idx0.tolist(), a.idx1.tolist())) != set(zip(c.idx0.tolist(), c.idx1.tolist()))


def test_autocast_and_low_precision_inputs():
    pts0, pts1, P, R, t, *_ = make_scene(12)
    plain = solve_relative_pose(pts0, pts1, P, generator=seeded(12))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        auto = solve_relative_pose(pts0, pts1, P, generator=seeded(12))
        half = solve_relative_pose(pts0.float(), pts1.float(), P.bfloat16(), generator=seeded(12))
    assert torch.equal(plain.R, auto.R) and torch.equal(plain.t, auto.t)  # float64 maths, autocast has no say
    assert half.success and half.R.dtype == torch.float64 and half.weights.dtype == torch.bfloat16
    assert max(pose_errors(half, R, t)) < 0.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_inputs_and_generator():
    pts0, pts1, P, R, t, *_ = make_scene(13)
    cuda = torch.device("cuda")
    est = solve_relative_pose(pts0.to(cuda), pts1.to(cuda), P.to(cuda), generator=torch.Generator(cuda).manual_seed(0))
    assert est.success and est.R.device.type == "cuda" and est.idx0.device.type == "cuda"
    rot_deg, trans_m = rotation_angle_deg(est.R.cpu().numpy(), R.numpy()), float((est.t.cpu() - t).norm())
    assert rot_deg < 0.5 and trans_m < 0.02
    with pytest.raises(InputError, match="generator: expected a generator on cuda"):
        solve_relative_pose(pts0.to(cuda), pts1.to(cuda), P.to(cuda), generator=seeded(0))


def test_images_with_different_keypoint_counts():
    pts0, pts1, P, R, t, *_ = make_scene(4, n0=250, n1=400)
    est = solve_relative_pose(pts0, pts1, P, generator=seeded(4))
    assert P.shape == (250, 400) and est.success
    rot_deg, trans_m = pose_errors(est, R, t)
    assert rot_deg < 0.5 and trans_m < 0.02
    assert int(est.idx0.max()) < 250 and int(est.idx1.max()) < 400


def test_fewer_candidates_than_num_samples_are_all_used():
    pts0, pts1, P, R, t, partner, _ = make_scene(5, background=0.0)  # exactly 300 candidates
    est = solve_relative_pose(pts0, pts1, P, generator=seeded(5))
    assert est.success and est.num_matches == 300
    assert set(zip(est.idx0.tolist(), est.idx1.tolist())) == set(enumerate(partner.tolist()))
    assert max(pose_errors(est, R, t)) < 0.5


def test_non_finite_hypotheses_are_dropped_alone():
    pts0, pts1, P, R, t, partner, n_in = make_scene(6)
    pts0[n_in] = pts1[partner[n_in]] = 1e160  # finite, but products overflow: minimal sets with it give NaN
    P[n_in, partner[n_in]] = 30.0  # so heavy that it is in every draw and many minimal sets
    config = SolverConfig()
    flat, w = sample_correspondences(P, config.num_samples, config.num_draws, seeded(0))
    n1 = P.shape[1]
    est = estimate_from_draws(pts0[flat // n1], pts1[flat % n1], w, config, seeded(0))
    total = config.num_draws * config.hypotheses_per_draw
    assert est is not None and 0 < est.num_valid_hypotheses < total  # precondition: some hypotheses are NaN
    res = solve_relative_pose(pts0, pts1, P, config, generator=seeded(6))
    assert res.success
    assert max(pose_errors(res, R, t)) < 0.5 and pose_errors(res, R, t)[1] < 0.02
    assert torch.isfinite(res.R).all() and math.isfinite(res.confidence)


def test_non_finite_points_are_not_candidates():
    pts0, pts1, P, R, t, partner, n_in = make_scene(7, background=0.0)
    pts1[partner[n_in:n_in + 20]] = float("nan")
    pts0[n_in + 20] = float("inf")
    est = solve_relative_pose(pts0, pts1, P, generator=seeded(7))
    assert est.success and est.num_matches == 300 - 21
    assert torch.isfinite(pts0[est.idx0]).all() and torch.isfinite(pts1[est.idx1]).all()
    assert max(pose_errors(est, R, t)) < 0.5


def test_all_hypotheses_invalid_is_a_failure_with_reason():
    pts0, pts1, P, *_ = make_scene(8, background=0.0)
    est = solve_relative_pose(pts0 * 1e160, pts1 * 1e160, P, generator=seeded(8))
    assert not est.success
    assert est.reason == "no valid pose: all 2000 minimal-set hypotheses were degenerate (non-finite)"
    torch.testing.assert_close(est.R, torch.eye(3, dtype=torch.float64))


def test_too_few_matches_is_a_failure_with_reason():
    pts0, pts1, _, *_ = make_scene(9, n0=20, n1=30)
    P = torch.zeros(20, 30)
    P[3, 4], P[5, 6] = 0.5, 0.25
    est = solve_relative_pose(pts0, pts1, P, generator=seeded(9))
    assert not est.success
    assert est.reason == "too few matches: 2 candidate correspondences with non-zero probability, need at least 3"
    torch.testing.assert_close(est.R, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(est.t, torch.zeros(3, dtype=torch.float64))
    assert est.num_matches == 0 and est.idx0.numel() == 0 and est.confidence == 0.0
    more = solve_relative_pose(pts0, pts1, P + 1.0, SolverConfig(min_matches=1000))
    assert not more.success and "600 candidate correspondences" in more.reason


@pytest.mark.parametrize("bad", [float("nan"), -0.1, float("inf")])
def test_invalid_probabilities_are_a_failure_not_a_crash(bad):
    pts0, pts1, P, *_ = make_scene(10, n0=20, n1=20)
    P[2, 3] = bad
    est = solve_relative_pose(pts0, pts1, P)
    assert not est.success and est.reason.startswith("invalid matching probabilities: P must be finite and >= 0")
    assert "\n" not in est.reason


def test_official_setting_on_a_large_grid_is_quick_enough_to_test():
    # 1938 x 1938 candidates as for 720x540 images; mostly a smoke test of the full-size path
    g = seeded(11)
    n = 1938
    pts0 = 4 * torch.randn(n, 3, generator=g, dtype=torch.float64) + torch.tensor([0, 0, 5.0], dtype=torch.float64)
    R, t = random_rotation(g), torch.tensor([0.1, 0.0, 0.0], dtype=torch.float64)  # a rotation, not only a shift
    pts1 = pts0 @ R.T + t
    P = torch.rand(n, n, generator=g) * 1e-3
    P[torch.arange(n), torch.arange(n)] = 1.0
    est = solve_relative_pose(pts0, pts1, P, generator=g)
    assert est.success and est.num_matches == 2048
    # a background pair may fall within 0.15 m by chance and nudge the refined pose a little
    torch.testing.assert_close(est.R, R, atol=1e-3, rtol=0)
    torch.testing.assert_close(est.t, t, atol=1e-3, rtol=0)
    assert est.num_inliers == int((est.idx0 == est.idx1).sum()) > 500


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        (((10, 2), (10, 3), (10, 10)), r"pts3d0: expected a tensor \[N, 3\] of 3D points in metres, got \[10, 2\]"),
        (((10, 3), (12, 3), (10, 10)), r"P: expected shape \[N0, N1\] = \[10, 12\] to match .*, got \[10, 10\]"),
    ],
)
def test_bad_shapes_raise_one_line_input_error(shapes, match):
    s0, s1, sp = shapes
    with pytest.raises(InputError, match=match) as info:
        solve_relative_pose(torch.zeros(s0), torch.zeros(s1), torch.ones(sp))
    assert "\n" not in str(info.value)


def test_bad_config_raises_input_error():
    with pytest.raises(InputError, match=r"SolverConfig.num_draws: expected an integer >= 1, got 0"):
        SolverConfig(num_draws=0)
    with pytest.raises(InputError, match=r"SolverConfig.min_set_size: expected an integer >= 3, got 2"):
        SolverConfig(min_set_size=2)
    with pytest.raises(InputError, match=r"SolverConfig.inlier_threshold: expected a positive number"):
        SolverConfig(inlier_threshold=-1.0)


# ---------------------------------------------------------------- sampling


def successive_probability(p: np.ndarray, sequence: tuple[int, ...]) -> float:
    """Probability that successive sampling without replacement starts with ``sequence``."""
    prob = 1.0
    for i, k in enumerate(sequence):
        left = np.delete(p, list(sequence[:i])).sum()  # summed afresh: no cancellation with tiny entries
        prob *= p[k] / left
    return prob


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sampling_is_without_replacement_and_only_hits_candidates(dtype):
    P = torch.rand(40, 50, generator=seeded(12), dtype=dtype)
    P[P < 0.5] = 0.0
    before = P.clone()
    flat, w = sample_correspondences(P, 300, 6, seeded(12))
    assert torch.equal(P, before)  # the caller's P is not modified
    assert flat.shape == w.shape == (6, 300)
    for row in flat:
        assert row.unique().numel() == 300
    assert (w > 0).all()
    torch.testing.assert_close(w, P.flatten()[flat])
    P[0, 0] = float("nan")
    with pytest.raises(InputError, match=r"P: expected finite, non-negative matching probabilities, got range \[nan"):
        sample_correspondences(P, 300, 6, seeded(12))


def test_sampling_matches_successive_sampling_probabilities():
    P = torch.tensor([[0.1, 0.0, 0.3], [0.2, 0.25, 0.15]])
    p = P.flatten().double().numpy()
    counts: dict[tuple[int, int], int] = {}
    for seed in range(10):
        flat, _ = sample_correspondences(P, 2, 4000, seeded(seed))
        for a, b in flat.tolist():
            counts[(a, b)] = counts.get((a, b), 0) + 1
    assert 1 not in {k for pair in counts for k in pair}  # the zero entry is never drawn
    n = 40000
    chi2 = 0.0
    for pair in itertools.permutations([0, 2, 3, 4, 5], 2):
        expected = n * successive_probability(p, pair)
        chi2 += (counts.get(pair, 0) - expected) ** 2 / expected
    assert chi2 < 43.8  # 99.9 % quantile of chi-square with 19 degrees of freedom


def positional_marginals(p: np.ndarray, k: int) -> np.ndarray:
    """``[k, len(p)]`` exact probability that position ``i`` of a successive sample is entry ``j``."""
    out = np.zeros((k, len(p)))
    for seq in itertools.permutations(np.flatnonzero(p), k):
        prob = successive_probability(p, seq)
        for i, j in enumerate(seq):
            out[i, j] += prob
    return out


def empirical_marginals(flat: torch.Tensor, size: int) -> np.ndarray:
    return np.stack([np.bincount(col, minlength=size) for col in flat.T.numpy()]) / flat.shape[0]


def test_concentrated_distribution_continues_from_the_remaining_mass(monkeypatch):
    calls = []
    original = solver_module._draw_outside
    monkeypatch.setattr(solver_module, "_draw_outside", lambda *a: calls.append(1) or original(*a))
    P = torch.tensor([[1000.0, 1000.0, 1.0, 2.0, 3.0]])
    flat, _ = sample_correspondences(P, 5, 5000, seeded(13))
    assert calls  # precondition: the first round left rows short
    assert (flat.sort(dim=1).values == torch.arange(5)).all()
    exact = positional_marginals(P.flatten().double().numpy(), 5)
    np.testing.assert_allclose(empirical_marginals(flat, 5), exact, atol=0.03)


def test_mass_below_float64_resolution_uses_the_gumbel_fallback(monkeypatch):
    calls = []
    original = solver_module._gumbel_complete
    monkeypatch.setattr(solver_module, "_gumbel_complete", lambda *a: calls.append(1) or original(*a))
    P = torch.tensor([[1.0, 1e-30], [1e-30, 2e-30]], dtype=torch.float64)
    flat, _ = sample_correspondences(P, 4, 8000, seeded(14))
    assert calls  # precondition: 1 + 1e-30 == 1 in float64, so the inverse CDF cannot reach the tiny entries
    assert (flat.sort(dim=1).values == torch.arange(4)).all()
    exact = positional_marginals(P.flatten().numpy(), 4)
    np.testing.assert_allclose(empirical_marginals(flat, 4), exact, atol=0.02)


def test_minimal_sets_are_successive_samples_of_the_weights():
    w = torch.tensor([[0.5, 0.2, 0.2, 0.1], [1e6, 1.0, 1.0, 1.0]], dtype=torch.float64)
    sets = minimal_sets(w, 20000, 3, seeded(15))
    assert sets.shape == (2, 20000, 3)
    assert (sets[..., 0] != sets[..., 1]).all() and (sets[..., 1] != sets[..., 2]).all()
    assert (sets[..., 0] != sets[..., 2]).all()
    for q in range(2):
        exact = positional_marginals(w[q].numpy(), 3)
        np.testing.assert_allclose(empirical_marginals(sets[q], 4), exact, atol=0.015)
