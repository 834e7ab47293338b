"""Weighted Kabsch: exactness, sign fix, weights, gradients, precision, bad inputs."""
from __future__ import annotations

import pytest
import torch

from mickey_ros.errors import InputError
from mickey_ros.geometry.kabsch import weighted_kabsch


def random_rotation(generator: torch.Generator, batch: tuple[int, ...] = ()) -> torch.Tensor:
    """Uniform random rotations ``[*batch, 3, 3]`` float64 (QR of a Gaussian, det fixed to +1)."""
    q, r = torch.linalg.qr(torch.randn(*batch, 3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    return q * torch.sign(torch.linalg.det(q))[..., None, None]


def transform(R: torch.Tensor, t: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    return X @ R.transpose(-1, -2) + t.unsqueeze(-2)


def test_recovers_known_pose_batched():
    g = torch.Generator().manual_seed(0)
    R, t = random_rotation(g, (4, 2)), torch.randn(4, 2, 3, generator=g, dtype=torch.float64)
    X0 = torch.randn(4, 2, 50, 3, generator=g, dtype=torch.float64) + torch.tensor([0.0, 0.0, 4.0], dtype=torch.float64)
    R_est, t_est = weighted_kabsch(X0, transform(R, t, X0))
    assert R_est.shape == (4, 2, 3, 3) and t_est.shape == (4, 2, 3) and R_est.dtype == torch.float64
    torch.testing.assert_close(R_est, R, atol=1e-10, rtol=0)
    torch.testing.assert_close(t_est, t, atol=1e-10, rtol=0)


def test_weights_select_the_inliers():
    g = torch.Generator().manual_seed(1)
    R, t = random_rotation(g), torch.randn(3, generator=g, dtype=torch.float64)
    X0 = torch.randn(40, 3, generator=g, dtype=torch.float64)
    X1 = transform(R, t, X0)
    X1[25:] = torch.randn(15, 3, generator=g, dtype=torch.float64) * 3  # outliers
    w = torch.zeros(40, dtype=torch.float64)
    w[:25] = torch.rand(25, generator=g, dtype=torch.float64) + 0.5  # arbitrary positive weights
    R_est, t_est = weighted_kabsch(X0, X1, w)
    torch.testing.assert_close(R_est, R, atol=1e-10, rtol=0)
    torch.testing.assert_close(t_est, t, atol=1e-10, rtol=0)
    R_plain, _ = weighted_kabsch(X0, X1)  # without weights the outliers pull the estimate away
    assert (R_plain - R).abs().max() > 1e-3


def test_binary_weights_equal_kabsch_on_the_subset():
    g = torch.Generator().manual_seed(2)
    X0, X1 = torch.randn(2, 30, 3, generator=g, dtype=torch.float64)
    mask = torch.rand(30, generator=g) < 0.5
    R_w, t_w = weighted_kabsch(X0, X1, mask.double())
    R_s, t_s = weighted_kabsch(X0[mask], X1[mask])
    torch.testing.assert_close(R_w, R_s, atol=1e-12, rtol=0)
    torch.testing.assert_close(t_w, t_s, atol=1e-12, rtol=0)


def test_planar_points_give_a_rotation_not_a_reflection():
    g = torch.Generator().manual_seed(3)
    R, t = random_rotation(g), torch.randn(3, generator=g, dtype=torch.float64)
    X0 = torch.randn(20, 3, generator=g, dtype=torch.float64)
    X0[:, 2] = 0.0  # coplanar: the third singular value is 0 and its sign is arbitrary
    X1 = transform(R, t, X0)
    U, _, Vh = torch.linalg.svd((X0 - X0.mean(0)).T @ (X1 - X1.mean(0)))
    assert torch.linalg.det(Vh.T @ U.T).item() < 0  # precondition: plain V U^T is a reflection here
    R_est, t_est = weighted_kabsch(X0, X1)
    assert torch.linalg.det(R_est).item() == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(R_est, R, atol=1e-10, rtol=0)
    torch.testing.assert_close(t_est, t, atol=1e-10, rtol=0)


def test_sign_fix_on_mirrored_points():
    g = torch.Generator().manual_seed(4)
    X0 = torch.randn(30, 3, generator=g, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    X1 = X0 * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)  # mirror image: no rotation fits exactly
    H = (X0 - X0.mean(0)).T @ (X1 - X1.mean(0))
    # precondition: without the sign fix the orthogonal solution would be a reflection
    U, _, Vh = torch.linalg.svd(H)
    assert torch.linalg.det(Vh.T @ U.T).item() == pytest.approx(-1.0)
    R_est, _ = weighted_kabsch(X0, X1)
    assert torch.linalg.det(R_est).item() == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(R_est @ R_est.T, torch.eye(3, dtype=torch.float64), atol=1e-12, rtol=0)
    # it is the best proper rotation: sum_n X1_n . R X0_n = trace(R H) reaches the exact optimum over SO(3),
    # s1 + s2 - s3 when det H < 0 (singular values s1 >= s2 > s3, so this optimum is unique)
    s = torch.linalg.svdvals(H)
    assert torch.linalg.det(H).item() < 0 and s[1] - s[2] > 1.0  # precondition: the reflection case, unique optimum
    assert torch.einsum("ij,ji->", R_est, H).item() == pytest.approx((s[0] + s[1] - s[2]).item(), rel=1e-12)
    # the mirrored largest axis is turned back by half a turn about the middle axis (measured distance 0.136)
    half_turn_y = torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(R_est, half_turn_y, atol=0.2, rtol=0)


@pytest.mark.parametrize("scale", [1.0, -1.0], ids=["rotation", "mirrored"])
def test_noisy_clouds_reach_the_exact_procrustes_optimum(scale):
    """trace(R H) = s1 + s2 + sign(det H) s3: the maximum over proper rotations (no rotation aligns better)."""
    g = torch.Generator().manual_seed(8)
    R, t = random_rotation(g, (16,)), torch.randn(16, 3, generator=g, dtype=torch.float64)
    X0 = torch.randn(16, 12, 3, generator=g, dtype=torch.float64)
    X1 = transform(R, t, X0 * torch.tensor([scale, 1.0, 1.0], dtype=torch.float64))
    X1 = X1 + 0.3 * torch.randn(16, 12, 3, generator=g, dtype=torch.float64)
    w = torch.rand(16, 12, generator=g, dtype=torch.float64) + 0.1
    R_est, t_est = weighted_kabsch(X0, X1, w)
    wn = (w / w.sum(-1, keepdim=True)).unsqueeze(-1)
    c0, c1 = (wn * X0).sum(-2, keepdim=True), (wn * X1).sum(-2, keepdim=True)
    H = (X0 - c0).transpose(-1, -2) @ (w.unsqueeze(-1) * (X1 - c1))
    s = torch.linalg.svdvals(H)
    sign = torch.sign(torch.linalg.det(H))
    assert (sign == scale).sum() >= 12  # precondition: mostly the case the parameter names
    optimum = s[:, 0] + s[:, 1] + sign * s[:, 2]
    torch.testing.assert_close(torch.einsum("bij,bji->b", R_est, H), optimum, rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.linalg.det(R_est), torch.ones(16, dtype=torch.float64), rtol=0, atol=1e-12)
    # the translation is the optimum's: the weighted centroids coincide
    torch.testing.assert_close(t_est, (c1 - c0 @ R_est.transpose(-1, -2)).squeeze(-2), rtol=0, atol=1e-12)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(5)
    X0 = torch.randn(2, 6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    X1 = torch.randn(2, 6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(2, 6, generator=g, dtype=torch.float64) + 0.2).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c: weighted_kabsch(a, b, c), (X0, X1, w))
    assert torch.autograd.gradcheck(lambda a, b: weighted_kabsch(a, b), (X0, X1))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_under_autocast_returns_float32_rotation(dtype):
    g = torch.Generator().manual_seed(6)
    R, t = random_rotation(g), torch.randn(3, generator=g, dtype=torch.float64)
    X0 = torch.randn(100, 3, generator=g, dtype=torch.float64) * 2
    X1 = transform(R, t, X0)
    with torch.autocast(device_type="cpu", dtype=dtype):
        R_est, t_est = weighted_kabsch(X0.to(dtype), X1.to(dtype), torch.ones(100, dtype=dtype))
    assert R_est.dtype == torch.float32 and t_est.dtype == torch.float32
    torch.testing.assert_close(R_est @ R_est.T, torch.eye(3), atol=1e-6, rtol=0)
    assert torch.linalg.det(R_est).item() == pytest.approx(1.0, abs=1e-6)
    # input rounding only (bf16: 8-bit, fp16: 11-bit mantissa); measured over seeds 0-199: max |R_est - R|
    # 5.0e-4 (bf16) and 7.0e-5 (fp16), max |t_est - t| 1.5e-3 and 2.4e-4; this seed: 1.0e-4 / 1.6e-5
    atol_R, atol_t = (1e-3, 4e-3) if dtype == torch.bfloat16 else (2e-4, 6e-4)
    torch.testing.assert_close(R_est.double(), R, atol=atol_R, rtol=0)
    torch.testing.assert_close(t_est.double(), t, atol=atol_t, rtol=0)


def test_float32_stays_float32():
    X0 = torch.randn(10, 3)
    R, t = weighted_kabsch(X0, X0 + 1.0)
    assert R.dtype == torch.float32 and t.dtype == torch.float32
    torch.testing.assert_close(R, torch.eye(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(t, torch.ones(3), atol=1e-5, rtol=0)


def test_non_finite_batch_element_is_nan_alone():
    g = torch.Generator().manual_seed(7)
    X0 = torch.randn(3, 10, 3, generator=g, dtype=torch.float64)
    X1 = X0 + 0.5
    X0[1, 4, 0] = float("nan")
    R, t = weighted_kabsch(X0, X1)
    assert torch.isnan(R[1]).all() and torch.isnan(t[1]).all()
    torch.testing.assert_close(R[[0, 2]], torch.eye(3, dtype=torch.float64).expand(2, 3, 3), atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    ("shape0", "shape1", "wshape", "match"),
    [
        ((10, 2), (10, 2), None, r"X0: expected shape \[\.\.\., N, 3\]"),
        ((10, 3), (9, 3), None, r"X1: expected the shape of X0 \[10, 3\], got \[9, 3\]"),
        ((10, 3), (10, 3), (9,), r"weights: expected shape \[10\], got \[9\]"),
    ],
)
def test_bad_shapes_raise_one_line_input_error(shape0, shape1, wshape, match):
    w = None if wshape is None else torch.ones(wshape)
    with pytest.raises(InputError, match=match) as info:
        weighted_kabsch(torch.zeros(shape0), torch.zeros(shape1), w)
    assert "\n" not in str(info.value)
