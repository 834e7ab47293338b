"""Two-view metric bundle adjustment (mickey_ros.geometry.two_view_ba): known scenes, noisy depths, bad input."""
from __future__ import annotations

import math

import pytest
import torch

from mickey_ros.errors import InputError
from mickey_ros.geometry.kabsch import weighted_kabsch
from mickey_ros.geometry.two_view_ba import MIN_POINTS, RefineConfig, refine_two_view, sampson_distance

K = torch.tensor([[280.0, 0.0, 182.0], [0.0, 280.0, 140.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def rodrigues(w: list[float]) -> torch.Tensor:
    w = torch.tensor(w, dtype=torch.float64)
    theta = float(w.norm())
    W = torch.tensor([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(theta) / theta * W + (1 - math.cos(theta)) / theta ** 2 * W @ W


R_GT = rodrigues([0.05, 0.15, -0.03])
T_GT = torch.tensor([0.4, 0.05, 0.1], dtype=torch.float64)


def project(X: torch.Tensor) -> torch.Tensor:
    uv = X @ K.T
    return uv[:, :2] / uv[:, 2:]


def scene(n: int = 300, pixel_noise: float = 0.0, log_depth_noise: float = 0.0, scale0: float = 1.0,
          scale1: float = 1.0, tilt1: float = 0.0, seed: int = 0):
    """``n`` points 1.5-4.5 m in front of camera 0, seen by both cameras; predicted depths with per-point noise,
    a per-view scale error and, in view 1, a log-depth tilt of ``tilt1`` per unit of normalised x."""
    g = torch.Generator().manual_seed(seed)
    X = torch.stack([torch.rand(n, generator=g, dtype=torch.float64) * 4 - 2,
                     torch.rand(n, generator=g, dtype=torch.float64) * 3 - 1.5,
                     torch.rand(n, generator=g, dtype=torch.float64) * 3 + 1.5], -1)
    Y = X @ R_GT.T + T_GT
    u0 = project(X) + pixel_noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    u1 = project(Y) + pixel_noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    d0 = X[:, 2] * scale0 * torch.exp(log_depth_noise * torch.randn(n, generator=g, dtype=torch.float64))
    x1 = Y[:, 0] / Y[:, 2]
    d1 = Y[:, 2] * scale1 * torch.exp(tilt1 * x1 + log_depth_noise * torch.randn(n, generator=g, dtype=torch.float64))
    return u0, u1, d0, d1


def lift(u: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return torch.cat([u, torch.ones_like(u[:, :1])], -1) @ torch.linalg.inv(K).T * d[:, None]


def errors(R: torch.Tensor, t: torch.Tensor) -> tuple[float, float, float]:
    """Rotation error (deg), camera-centre error (m), scale ratio |t| / |t_gt|."""
    cos = (float(torch.trace(R.T @ R_GT)) - 1) / 2
    centre = float((R.T @ t - R_GT.T @ T_GT).norm())
    return math.degrees(math.acos(max(-1.0, min(1.0, cos)))), centre, float(t.norm() / T_GT.norm())


def kabsch_start(u0, u1, d0, d1):
    return weighted_kabsch(lift(u0, d0), lift(u1, d1))


def test_exact_observations_from_a_perturbed_start_give_the_ground_truth():
    u0, u1, d0, d1 = scene()
    R0, t0 = rodrigues([0.01, -0.02, 0.015]) @ R_GT, T_GT + torch.tensor([0.05, -0.03, 0.04], dtype=torch.float64)
    res = refine_two_view(u0, u1, d0, d1, K, K, R0, t0)
    rot, centre, scale = errors(res.R, res.t)
    assert res.success and res.reason == ""
    assert rot < 1e-4 and centre < 1e-4 and abs(scale - 1) < 1e-4, (rot, centre, scale)  # to the stopping rule
    assert res.cost_final < 1e-6 < res.cost_initial
    assert res.R.dtype == torch.float64 and res.points0.shape == (300, 3)


def test_depth_scale_disagreement_and_tilt_are_absorbed_where_kabsch_follows_them():
    """5 % scale disagreement, a 10 % tilt of view 1's depth across the image, 5 % per-point depth noise and 1 px
    of pixel noise: Kabsch turns and shifts with the depth errors; the refinement follows the pixels.
    Measured: Kabsch 3.9 deg / 0.36 m, refined 0.06 deg / 3.5 mm (the metric scale stays the depths' mean)."""
    u0, u1, d0, d1 = scene(pixel_noise=1.0, log_depth_noise=0.05, scale0=0.975, scale1=1.025, tilt1=0.1)
    R0, t0 = kabsch_start(u0, u1, d0, d1)
    k_rot, k_centre, _ = errors(R0, t0)
    res = refine_two_view(u0, u1, d0, d1, K, K, R0, t0)
    rot, centre, scale = errors(res.R, res.t)
    assert res.success
    assert k_rot > 1.0 and k_centre > 0.15, (k_rot, k_centre)
    assert rot < 0.3 and centre < 0.05 and abs(scale - 1) < 0.1, (rot, centre, scale)
    corrections = res.depth_corrections  # [2, 3]: log z = log d + c . [1, x, y] per view, from the pixels
    assert corrections.shape == (2, 3)
    assert float(corrections[1, 1] - corrections[0, 1]) == pytest.approx(-0.1, abs=0.04)  # view 1's tilt undone


def test_the_depth_model_none_keeps_the_view_scale_errors_in_the_pose():
    u0, u1, d0, d1 = scene(pixel_noise=1.0, log_depth_noise=0.05, scale0=0.975, scale1=1.025, tilt1=0.1)
    R0, t0 = kabsch_start(u0, u1, d0, d1)
    plain = refine_two_view(u0, u1, d0, d1, K, K, R0, t0, RefineConfig(view_depth_model="none"))
    affine = refine_two_view(u0, u1, d0, d1, K, K, R0, t0)
    assert plain.depth_corrections.shape == (2, 0)
    assert errors(affine.R, affine.t)[0] < errors(plain.R, plain.t)[0]


def test_gross_pixel_outliers_barely_move_the_cauchy_refinement():
    u0, u1, d0, d1 = scene(pixel_noise=0.5, seed=3)
    g = torch.Generator().manual_seed(4)
    bad = torch.rand(len(u1), generator=g) < 0.1
    u1 = torch.where(bad[:, None], u1 + torch.randn(len(u1), 2, generator=g, dtype=torch.float64) * 15, u1)
    res = refine_two_view(u0, u1, d0, d1, K, K, R_GT, T_GT)
    rot, centre, _ = errors(res.R, res.t)
    huber = refine_two_view(u0, u1, d0, d1, K, K, R_GT, T_GT, RefineConfig(loss="huber"))
    assert rot < 0.05 and centre < 0.01, (rot, centre)
    assert errors(huber.R, huber.t)[1] > centre  # the Huber cost lets the outliers pull more


def test_weights_silence_the_matches_they_weigh_down():
    u0, u1, d0, d1 = scene(pixel_noise=0.5, seed=5)
    bad = torch.arange(len(u1)) % 4 == 0  # a quarter of the matches 20 px off
    u1 = torch.where(bad[:, None], u1 + 20.0, u1)
    unweighted = refine_two_view(u0, u1, d0, d1, K, K, R_GT, T_GT, RefineConfig(loss="huber"))
    weighted = refine_two_view(u0, u1, d0, d1, K, K, R_GT, T_GT, RefineConfig(loss="huber"),
                               weights=torch.where(bad, 1e-6, 1.0).double())
    assert errors(weighted.R, weighted.t)[1] < 0.005 < errors(unweighted.R, unweighted.t)[1]
    res = refine_two_view(u0, u1, d0, d1, K, K, R_GT, T_GT, weights=torch.zeros(len(u0), dtype=torch.float64))
    assert not res.success and res.reason == "weights must be finite, non-negative and not all zero"
    with pytest.raises(InputError, match=r"^weights: expected a tensor of shape \[300\] or None, got \[3\]$"):
        refine_two_view(u0, u1, d0, d1, K, K, R_GT, T_GT, weights=torch.ones(3))


def test_pose_information_is_symmetric_positive_definite():
    u0, u1, d0, d1 = scene(pixel_noise=1.0, log_depth_noise=0.05)
    res = refine_two_view(u0, u1, d0, d1, K, K, *kabsch_start(u0, u1, d0, d1))
    info = res.pose_information
    assert info.shape == (6, 6)
    torch.testing.assert_close(info, info.T)
    assert float(torch.linalg.eigvalsh(info).min()) > 0


def test_too_few_matches_and_bad_depths_keep_the_start_with_a_reason():
    u0, u1, d0, d1 = scene(n=MIN_POINTS - 1)
    res = refine_two_view(u0, u1, d0, d1, K, K, R_GT, T_GT)
    assert not res.success and res.reason == f"too few matches to refine: {MIN_POINTS - 1}, need at least {MIN_POINTS}"
    assert torch.equal(res.R, R_GT) and torch.equal(res.t, T_GT)
    u0, u1, d0, d1 = scene(n=20)
    d1[3] = 0.0
    res = refine_two_view(u0, u1, d0, d1, K, K, R_GT, T_GT)
    assert not res.success and res.reason == "predicted depths must be finite and positive"
    res = refine_two_view(u0, u1, d0, d1.clamp_min(1.0), K, K, R_GT, -T_GT * 20)  # points behind camera 1
    assert not res.success and res.reason == "the initial pose puts a point behind a camera"


def test_float32_inputs_under_autocast_are_refined_in_float64():
    u0, u1, d0, d1 = scene(pixel_noise=1.0, log_depth_noise=0.05)
    R0, t0 = kabsch_start(u0, u1, d0, d1)
    reference = refine_two_view(u0, u1, d0, d1, K, K, R0, t0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res = refine_two_view(u0.float(), u1.float(), d0.float(), d1.float(), K.float(), K.float(), R0.float(),
                              t0.float())
    assert res.R.dtype == torch.float64 and res.t.dtype == torch.float64
    assert errors(res.R, res.t)[1] == pytest.approx(errors(reference.R, reference.t)[1], abs=2e-3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(pixel_sigma=0.0), "RefineConfig.pixel_sigma: expected a positive number, got 0.0"),
    (dict(log_depth_sigma=float("nan")), "RefineConfig.log_depth_sigma: expected a positive number, got nan"),
    (dict(iterations=0), "RefineConfig.iterations: expected an integer >= 1, got 0"),
    (dict(reselect_rounds=-1), "RefineConfig.reselect_rounds: expected an integer >= 0, got -1"),
    (dict(reselect_px=-2.0), "RefineConfig.reselect_px: expected a positive number, got -2.0"),
    (dict(loss="l2"), "RefineConfig.loss: expected 'huber' or 'cauchy', got 'l2'"),
    (dict(view_depth_model="cubic"),
     "RefineConfig.view_depth_model: expected one of none, scale, affine, quadratic, got 'cubic'"),
])
def test_bad_settings_name_the_field(kwargs, message):
    with pytest.raises(InputError) as err:
        RefineConfig(**kwargs)
    assert str(err.value) == message


def test_mismatched_inputs_name_the_argument():
    u0, u1, d0, d1 = scene(n=10)
    with pytest.raises(InputError, match=r"^kpts0: expected a tensor \[N, 2\] of pixels, got \[10, 3\]$"):
        refine_two_view(torch.zeros(10, 3), u1, d0, d1, K, K, R_GT, T_GT)
    with pytest.raises(InputError, match=r"^depth1: expected a tensor of shape \[10\], got \[9\]$"):
        refine_two_view(u0, u1, d0, d1[:9], K, K, R_GT, T_GT)
    with pytest.raises(InputError, match=r"^t: expected a tensor of shape \[3\], got list$"):
        refine_two_view(u0, u1, d0, d1, K, K, R_GT, [0.0, 0.0, 0.0])
    if torch.cuda.is_available():
        with pytest.raises(InputError, match="^K1: expected a tensor on cpu"):
            refine_two_view(u0, u1, d0, d1, K, K.cuda(), R_GT, T_GT)


def test_sampson_distance_is_zero_for_true_matches_and_half_root_two_of_an_epipolar_offset():
    u0, u1, _, _ = scene(n=50)
    assert float(sampson_distance(u0, u1, K, K, R_GT, T_GT).abs().max()) < 1e-9
    R, t = torch.eye(3, dtype=torch.float64), torch.tensor([0.3, 0.0, 0.0], dtype=torch.float64)  # epipolar lines: rows
    k0 = torch.tensor([[100.0, 120.0], [250.0, 40.0]], dtype=torch.float64)
    k1 = k0 + torch.tensor([[-30.0, 2.0], [-10.0, -1.0]], dtype=torch.float64)  # 2 px and 1 px off the row
    torch.testing.assert_close(sampson_distance(k0, k1, K, K, R, t),
                               torch.tensor([2.0, 1.0], dtype=torch.float64) / math.sqrt(2))
