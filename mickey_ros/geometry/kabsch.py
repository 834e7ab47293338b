"""Weighted Kabsch (orthogonal Procrustes with translation), batched and differentiable.

Given matched 3D points ``X0`` (camera 0) and ``X1`` (camera 1), find the rotation ``R`` and translation
``t`` that minimise ``sum_n w_n |R X0_n + t - X1_n|^2``, so that ``X1 ~ R X0 + t`` (``T_0to1``).
Numerics follow the official solver (reference/official_mickey.md section 9): centroids with the
normalised weights ``w / (sum |w| + 1e-16)``, covariance with the *raw* weights, SVD, and the sign
fix ``Z = diag(1, 1, sign(det(V U^T)))`` so that ``det R = +1``. The SVD always runs in float64.
"""
from __future__ import annotations

import torch

from mickey_ros.errors import InputError

WEIGHT_EPS = 1e-16  # added to sum |w| before normalising the centroid weights (official value)


def weighted_kabsch(
    X0: torch.Tensor, X1: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rigid transform ``X1 ~ R X0 + t`` from weighted 3D-3D correspondences.

    Runs in float64 whatever the input dtype (also under autocast) and casts the results back to the
    input dtype (float16/bfloat16 inputs give float32, float64 gives float64). Differentiable with
    respect to ``X0``, ``X1`` and ``weights`` where the covariance has distinct singular values.
    A batch element whose inputs are not finite yields NaN ``R`` and ``t`` (the others are unaffected).

    Args:
        X0: ``[..., N, 3]`` points in camera 0, metres.
        X1: ``[..., N, 3]`` matching points in camera 1, metres.
        weights: ``[..., N]`` non-negative weights; ``None`` = uniform (plain Kabsch).

    Returns:
        ``(R, t)``: ``[..., 3, 3]`` rotation with ``det R = +1`` and ``[..., 3]`` translation, metres.

    Raises:
        InputError: shapes do not match the above.
    """
    if X0.ndim < 2 or X0.shape[-1] != 3 or X0.shape[-2] < 1:
        raise InputError(f"X0: expected shape [..., N, 3] with N >= 1, got {list(X0.shape)}")
    if X1.shape != X0.shape:
        raise InputError(f"X1: expected the shape of X0 {list(X0.shape)}, got {list(X1.shape)}")
    if weights is not None and weights.shape != X0.shape[:-1]:
        raise InputError(f"weights: expected shape {list(X0.shape[:-1])}, got {list(weights.shape)}")
    out_dtype = torch.promote_types(X0.dtype, X1.dtype)
    if out_dtype not in (torch.float32, torch.float64):
        out_dtype = torch.float32
    with torch.autocast(device_type=X0.device.type, enabled=False):
        w = None if weights is None else weights.double()
        R, t = kabsch_float64(X0.double(), X1.double(), w)
    return R.to(out_dtype), t.to(out_dtype)


def kabsch_float64(
    X0: torch.Tensor, X1: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Core of :func:`weighted_kabsch` without checks: float64 inputs of matching shapes, no autocast.

    Args:
        X0: ``[..., N, 3]`` float64.
        X1: ``[..., N, 3]`` float64.
        weights: ``[..., N]`` float64 or ``None`` (uniform).

    Returns:
        ``[..., 3, 3]`` R and ``[..., 3]`` t, float64; NaN where the batch element is not finite.
    """
    if weights is None:
        c0, c1 = X0.mean(dim=-2), X1.mean(dim=-2)
        H = (X0 - c0.unsqueeze(-2)).transpose(-1, -2) @ (X1 - c1.unsqueeze(-2))
    else:
        w_norm = (weights / (weights.abs().sum(dim=-1, keepdim=True) + WEIGHT_EPS)).unsqueeze(-1)
        c0, c1 = (w_norm * X0).sum(dim=-2), (w_norm * X1).sum(dim=-2)
        H = (X0 - c0.unsqueeze(-2)).transpose(-1, -2) @ (weights.unsqueeze(-1) * (X1 - c1.unsqueeze(-2)))
    finite = torch.isfinite(H).flatten(-2).all(dim=-1) & torch.isfinite(c0).all(-1) & torch.isfinite(c1).all(-1)
    # LAPACK refuses non-finite input: solve a zero matrix there and report NaN afterwards
    H = torch.where(finite[..., None, None], H, torch.zeros_like(H))
    U, _, Vh = torch.linalg.svd(H, full_matrices=False)
    V = Vh.transpose(-1, -2)
    sign = torch.sign(torch.linalg.det(V @ U.transpose(-1, -2)))
    Z = torch.ones_like(c0)
    Z = torch.cat([Z[..., :2], sign.unsqueeze(-1)], dim=-1)
    R = (V * Z.unsqueeze(-2)) @ U.transpose(-1, -2)
    t = c1 - (R @ c0.unsqueeze(-1)).squeeze(-1)
    nan = torch.tensor(float("nan"), dtype=R.dtype, device=R.device)
    R = torch.where(finite[..., None, None], R, nan)
    t = torch.where(finite[..., None], t, nan)
    return R, t
