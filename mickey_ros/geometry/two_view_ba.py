"""Two-view metric bundle adjustment: refine a Kabsch pose with the matches' pixels and the network's depths.

Kabsch aligns the two views' 3D keypoints, so an error in a predicted depth moves its point along the viewing ray
and pulls the pose with it: a 5 % scale disagreement between the two depth maps at 3 m shifts the translation by
15 cm whatever the baseline, and a depth map tilted by a few percent across the image turns the point cloud. The
pixels of the matches are more precise than the depths. This refinement keeps the depths as priors and lets the
pixels decide what they determine (rotation, translation direction, the structure where the baseline gives
parallax):

    minimise over R, t, X_n, c_0, c_1
        sum_n  rho(|pi(K0 X_n) - u0_n| / s_px) + rho(|pi(K1 (R X_n + t)) - u1_n| / s_px)
             + rho((log z(X_n) - log d0_n - c_0 . phi(u0_n)) / s_d)
             + rho((log z(R X_n + t) - log d1_n - c_1 . phi(u1_n)) / s_d)
        + |c_0 / s_c|^2 / 2 + |c_1 / s_c|^2 / 2

with ``X_n`` the n-th point in camera 0 (metres), ``z`` the depth along the optical axis, ``rho`` a robust cost
(Cauchy or Huber, scale ``robust_scale`` in units of sigma) and ``c_k . phi(u)`` a smooth per-view correction of
the log depth (``view_depth_model``: none; a log scale; ``affine``, a log scale and its slopes along the normalised
image coordinates; ``quadratic``), each coefficient with a Gaussian prior. The depth priors and the correction
priors fix the metric scale (no gauge freedom). Levenberg-Marquardt in float64; the ``3 N`` point unknowns are
eliminated per point (Schur complement), so one step costs O(N). The rotation is updated on the left,
``R <- exp([w]x) R``, ``t <- exp([w]x) t + dt``.

Not part of the official MicKey inference: the Relocalizer runs it by default for every network but the
``official`` preset (``refine="auto"``), on the solver's inliers and then on the sampled matches the refined pose
explains (:meth:`mickey_ros.pipeline.Relocalizer`; measured in ``training/checkpoints/README.md``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mickey_ros.errors import InputError
from mickey_ros.geometry.camera import backproject

MIN_POINTS = 6  # fewer inlier matches leave the 6 pose unknowns poorly determined: not refined
# per-view log-depth correction models -> their unknowns per view
_NUISANCE_DIMS = {"none": 0, "scale": 1, "affine": 3, "quadratic": 6}
MIN_DEPTH = 1e-3  # m, a point closer than this to either camera (or behind it) ends the refinement
CONVERGED = 1e-5  # relative cost decrease below which the refinement stops


@dataclass(frozen=True)
class RefineConfig:
    """Settings of :func:`refine_two_view`.

    Attributes:
        pixel_sigma: keypoint position noise, pixels of the images the keypoints live in.
        log_depth_sigma: noise of the predicted log depth (0.1 = about 10 %).
        robust_scale: scale of the robust cost in units of sigma (Huber: residuals beyond it count linearly;
            Cauchy: a residual of it has weight 1/2).
        loss: ``"cauchy"`` or ``"huber"``.
        iterations: at most this many Levenberg-Marquardt steps.
        damping: initial Levenberg-Marquardt damping (relative to the Hessian's diagonal).
        view_depth_model: the per-view log-depth correction: ``"none"``, ``"scale"``, ``"affine"``, ``"quadratic"``.
        view_scale_sigma, view_slope_sigma, view_curvature_sigma: prior sigmas of its coefficients (log depth per
            unit of normalised image coordinate, and per its square).
        reselect_px, reselect_m, reselect_rounds: used by the Relocalizer: after the first refinement, refine again
            ``reselect_rounds`` times on the sampled matches whose Sampson distance to the refined pose is at most
            ``reselect_px`` (network pixels) and whose 3D residual (the network's depths) is at most ``reselect_m``
            metres; ``reselect_px=None``: no re-selection.
        probability_weights: used by the Relocalizer: each match's cost is multiplied by its matching probability
            relative to the median of the solver inliers' (at most 1), so that unlikely matches the geometry lets
            in weigh little (``weights`` of :func:`refine_two_view`).

    Defaults: chosen on the synthetic selection rooms (generator seed 13000, 3 x 120 pairs), see
    ``training/checkpoints/README.md``.
    """

    pixel_sigma: float = 4.0
    log_depth_sigma: float = 0.05
    robust_scale: float = 1.0
    loss: str = "cauchy"
    iterations: int = 15
    damping: float = 1e-4
    view_depth_model: str = "affine"
    view_scale_sigma: float = 0.1
    view_slope_sigma: float = 0.2
    view_curvature_sigma: float = 0.2
    reselect_px: float | None = 12.0
    reselect_m: float = 0.5
    reselect_rounds: int = 3
    probability_weights: bool = True

    def __post_init__(self) -> None:
        if self.loss not in ("huber", "cauchy"):
            raise InputError(f"RefineConfig.loss: expected 'huber' or 'cauchy', got {self.loss!r}")
        if self.view_depth_model not in _NUISANCE_DIMS:
            raise InputError(f"RefineConfig.view_depth_model: expected one of {', '.join(_NUISANCE_DIMS)}, "
                             f"got {self.view_depth_model!r}")
        for name in ("pixel_sigma", "log_depth_sigma", "robust_scale", "damping", "view_scale_sigma",
                     "view_slope_sigma", "view_curvature_sigma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise InputError(f"RefineConfig.{name}: expected a positive number, got {value!r}")
        for name in ("reselect_m",) + (() if self.reselect_px is None else ("reselect_px",)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise InputError(f"RefineConfig.{name}: expected a positive number, got {value!r}")
        for name, least in (("iterations", 1), ("reselect_rounds", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InputError(f"RefineConfig.{name}: expected an integer >= {least}, got {value!r}")


@dataclass
class RefineResult:
    """Output of :func:`refine_two_view` (float64, on the inputs' device).

    Attributes:
        success: True when the refined pose was accepted (finite, lower cost than the start).
        reason: ``""`` on success, otherwise one line saying why the initial pose was kept.
        R: ``[3, 3]`` rotation camera 0 -> camera 1 (the initial one when not successful).
        t: ``[3]`` translation, metres.
        points0: ``[N, 3]`` refined points in camera 0, metres (the initial ones when not successful).
        cost_initial, cost_final: the robust cost above at the start and at the end.
        iterations: Levenberg-Marquardt steps taken.
        pose_information: ``[6, 6]`` the Schur complement of the point unknowns at the end, the information
            (inverse covariance, in units where each residual has sigma 1) of (rotX, rotY, rotZ, x, y, z),
            rotations applied on the left in camera 1's axes; zeros when not successful.
        depth_corrections: ``[2, k]`` the per-view log-depth corrections ``c_0, c_1`` (``log z = log d + c . phi``,
            ``phi = [1, x, y, x^2, x y, y^2][:k]`` of the normalised pixel); zeros when not successful.
    """

    success: bool
    reason: str
    R: torch.Tensor
    t: torch.Tensor
    points0: torch.Tensor
    cost_initial: float
    cost_final: float
    iterations: int
    pose_information: torch.Tensor
    depth_corrections: torch.Tensor


def refine_two_view(
    kpts0: torch.Tensor, kpts1: torch.Tensor, depth0: torch.Tensor, depth1: torch.Tensor,
    K0: torch.Tensor, K1: torch.Tensor, R: torch.Tensor, t: torch.Tensor, config: RefineConfig = RefineConfig(),
    weights: torch.Tensor | None = None,
) -> RefineResult:
    """Refine ``X1 = R X0 + t`` on ``N`` matched keypoints (the solver's inliers).

    Args:
        kpts0, kpts1: ``[N, 2]`` matched pixels (x, y) in images 0 and 1.
        depth0, depth1: ``[N]`` predicted depths of those keypoints, metres (positive).
        K0, K1: ``[3, 3]`` intrinsics of the images the pixels live in.
        R: ``[3, 3]`` initial rotation camera 0 -> camera 1; t: ``[3]`` initial translation, metres.
        config: noise model and iteration settings.
        weights: ``[N]`` non-negative factors on each match's costs (None: all 1).

    Returns:
        A :class:`RefineResult`; ``success=False`` with a reason (and the initial pose) when there are fewer than
        :data:`MIN_POINTS` matches, a depth is not positive, a weight is negative (or all are zero), a point is
        behind a camera at the start, or no step lowered the cost.

    Raises:
        InputError: shapes do not fit together.
    """
    n = _check(kpts0, kpts1, depth0, depth1, K0, K1, R, t)
    if weights is not None and (not isinstance(weights, torch.Tensor) or list(weights.shape) != [n]):
        raise InputError(f"weights: expected a tensor of shape [{n}] or None, got {_shape(weights)}")
    device = kpts0.device
    with torch.autocast(device_type=device.type, enabled=False):
        u0, u1 = kpts0.double(), kpts1.double()
        d0, d1 = depth0.double(), depth1.double()
        K0, K1, R, t = K0.double(), K1.double(), R.double(), t.double()
        X = backproject(u0[None], d0[None], K0[None])[0]
        zero_info = torch.zeros(6, 6, dtype=torch.float64, device=device)

        def keep(reason: str, cost: float = float("nan"), steps: int = 0) -> RefineResult:
            return RefineResult(False, reason, R, t, X, cost, cost, steps, zero_info,
                                torch.zeros(2, _NUISANCE_DIMS[config.view_depth_model], dtype=torch.float64,
                                            device=device))

        if n < MIN_POINTS:
            return keep(f"too few matches to refine: {n}, need at least {MIN_POINTS}")
        if not bool(torch.isfinite(torch.cat([d0, d1])).all()) or bool((torch.cat([d0, d1]) <= 0).any()):
            return keep("predicted depths must be finite and positive")
        log_d0, log_d1 = d0.log(), d1.log()
        w = torch.ones_like(d0) if weights is None else weights.detach().double().to(device)
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or not bool((w > 0).any()):
            return keep("weights must be finite, non-negative and not all zero")
        problem = _Problem(u0, u1, log_d0, log_d1, K0, K1, config, w)
        c = problem.initial_corrections()
        cost = problem.cost(R, t, c, X)
        if not math.isfinite(cost):
            return keep("the initial pose puts a point behind a camera", cost)
        cost0, lam = cost, config.damping
        Rc, tc, cc, Xc, steps = R, t, c, X, 0
        for steps in range(1, config.iterations + 1):
            step = problem.step(Rc, tc, cc, Xc, lam)
            if step is None:
                break
            Rn, tn, cn, Xn = step
            new = problem.cost(Rn, tn, cn, Xn)
            if math.isfinite(new) and new < cost:
                converged = cost - new < CONVERGED * max(cost, 1.0)
                Rc, tc, cc, Xc, cost, lam = Rn, tn, cn, Xn, new, max(lam / 3.0, 1e-9)
                if converged:
                    break
            else:
                lam *= 10.0
                if lam > 1e6:
                    break
        if not cost < cost0:
            return keep("no step lowered the cost", cost0, steps)
        info = problem.information(Rc, tc, cc, Xc)
        return RefineResult(True, "", Rc, tc, Xc, cost0, cost, steps, info, cc)


class _Problem:
    """Residuals, robust weights and Levenberg-Marquardt steps of one refinement.

    The unknowns are the pose update (``w`` 3, ``dt`` 3), the per-view depth corrections ``c`` ``[2, k]`` (``k`` = 0,
    1: log scale, or 3: log scale and its slopes along the normalised image x and y) and the points ``X`` ``[N, 3]``.
    """

    def __init__(self, u0: torch.Tensor, u1: torch.Tensor, log_d0: torch.Tensor, log_d1: torch.Tensor,
                 K0: torch.Tensor, K1: torch.Tensor, config: RefineConfig, weights: torch.Tensor) -> None:
        self.u0, self.u1, self.log_d0, self.log_d1, self.K0, self.K1 = u0, u1, log_d0, log_d1, K0, K1
        self.w = weights  # [N] per-point factor on its four residual costs
        self.sp, self.sd, self.k = float(config.pixel_sigma), float(config.log_depth_sigma), float(config.robust_scale)
        self.loss = config.loss
        self.nuisance = _NUISANCE_DIMS[config.view_depth_model]
        sigmas = [config.view_scale_sigma] + [config.view_slope_sigma] * 2 + [config.view_curvature_sigma] * 3
        self.sigma_c = torch.tensor(sigmas, dtype=u0.dtype, device=u0.device)[:self.nuisance]
        # per point the regressors of the depth correction: [1, x_n, y_n] of its pixel in each view
        ones = torch.ones_like(u0[:, 0])  # normalised image coordinates: the points at depth 1
        self.phi = [_regressors(backproject(u[None], ones[None], K[None])[0, :, :2])[:, :self.nuisance]
                    for u, K in ((u0, K0), (u1, K1))]
        self.num_params = 6 + 2 * self.nuisance

    def initial_corrections(self) -> torch.Tensor:
        return torch.zeros(2, self.nuisance, dtype=self.u0.dtype, device=self.u0.device)

    def residuals(self, R: torch.Tensor, t: torch.Tensor, c: torch.Tensor, X: torch.Tensor):
        """Whitened residuals ``[N, 2]``, ``[N, 2]``, ``[N]``, ``[N]``, the priors ``[2, k]`` and the points in
        camera 1, or None when a point is not in front of both cameras."""
        Y = X @ R.T + t
        if bool((X[:, 2] < MIN_DEPTH).any()) or bool((Y[:, 2] < MIN_DEPTH).any()):
            return None
        e0 = (_project(X, self.K0) - self.u0) / self.sp
        e1 = (_project(Y, self.K1) - self.u1) / self.sp
        p0 = (X[:, 2].log() - self.log_d0 - self.phi[0] @ c[0]) / self.sd
        p1 = (Y[:, 2].log() - self.log_d1 - self.phi[1] @ c[1]) / self.sd
        return e0, e1, p0, p1, c / self.sigma_c, Y

    def _rho(self, norm: torch.Tensor) -> torch.Tensor:
        """Robust cost of whitened residual norms: Huber or Cauchy with threshold ``k`` (sigma units)."""
        k = self.k
        if self.loss == "cauchy":
            return 0.5 * k * k * torch.log1p((norm / k) ** 2)
        return torch.where(norm <= k, 0.5 * norm ** 2, k * norm - 0.5 * k * k)

    def _weight(self, norm: torch.Tensor) -> torch.Tensor:
        """IRLS weight rho'(r) / r of whitened residual norms."""
        if self.loss == "cauchy":
            return 1.0 / (1.0 + (norm / self.k) ** 2)
        return torch.where(norm <= self.k, torch.ones_like(norm), self.k / norm.clamp_min(1e-12))

    def cost(self, R: torch.Tensor, t: torch.Tensor, c: torch.Tensor, X: torch.Tensor) -> float:
        res = self.residuals(R, t, c, X)
        if res is None:
            return float("inf")
        e0, e1, p0, p1, prior, _ = res
        total = self._rho(e0.norm(dim=-1)) + self._rho(e1.norm(dim=-1))
        total = total + self._rho(p0.abs()) + self._rho(p1.abs())
        value = float((self.w * total).sum() + 0.5 * (prior ** 2).sum())
        return value if math.isfinite(value) else float("inf")

    def _normal_equations(self, R: torch.Tensor, t: torch.Tensor, c: torch.Tensor, X: torch.Tensor):
        """Blocks of J^T W J and J^T W r: parameters ``[P, P]``, cross ``[N, P, 3]``, points ``[N, 3, 3]``, and
        the gradients ``[P]``, ``[N, 3]`` (``P = 6 + 2 k``: w, dt, c0, c1)."""
        res = self.residuals(R, t, c, X)
        if res is None:
            return None
        e0, e1, p0, p1, prior, Y = res
        n, k, dtype, device = X.shape[0], self.nuisance, X.dtype, X.device
        eye = torch.eye(3, dtype=dtype, device=device).expand(n, 3, 3)
        J0_X = _projection_jacobian(X, self.K0) / self.sp  # [N, 2, 3] whitened pixels / point
        J1_Y = _projection_jacobian(Y, self.K1) / self.sp  # [N, 2, 3]
        dY_dp = torch.cat([-_skew(Y), eye], dim=-1)  # [N, 3, 6]: left update of the pose, Y <- exp([w]x) Y + dt
        dY_dX = R.expand(n, 3, 3)
        dz0 = torch.zeros(n, 1, 3, dtype=dtype, device=device)
        dz0[:, 0, 2] = 1.0 / (X[:, 2] * self.sd)
        dz1 = torch.zeros(n, 1, 3, dtype=dtype, device=device)
        dz1[:, 0, 2] = 1.0 / (Y[:, 2] * self.sd)
        zeros_k = torch.zeros(n, 1, k, dtype=dtype, device=device)
        # parameter Jacobians [N, rows, P] and point Jacobians [N, rows, 3] per residual group
        J1_p = torch.cat([J1_Y @ dY_dp, torch.zeros(n, 2, 2 * k, dtype=dtype, device=device)], -1)
        Jp0_p = torch.cat([torch.zeros(n, 1, 6, dtype=dtype, device=device), -self.phi[0][:, None] / self.sd,
                           zeros_k], -1)
        Jp1_p = torch.cat([dz1 @ dY_dp, zeros_k, -self.phi[1][:, None] / self.sd], -1)
        # all six residual rows per point stacked: e0 (2), e1 (2), p0 (1), p1 (1)
        J_p = torch.cat([torch.zeros(n, 2, P_ := self.num_params, dtype=dtype, device=device), J1_p, Jp0_p, Jp1_p], 1)
        J_X = torch.cat([J0_X, J1_Y @ dY_dX, dz0, dz1 @ dY_dX], 1)  # [N, 6, 3]
        r = torch.cat([e0, e1, p0[:, None], p1[:, None]], 1)  # [N, 6]
        w = self.w[:, None] * torch.stack([self._weight(e0.norm(dim=-1))] * 2 + [self._weight(e1.norm(dim=-1))] * 2
                                          + [self._weight(p0.abs()), self._weight(p1.abs())], 1)  # [N, 6]
        wJ_p, wJ_X = w[..., None] * J_p, w[..., None] * J_X
        H_pp = wJ_p.reshape(-1, P_).T @ J_p.reshape(-1, P_)  # one GEMM over all rows
        H_pX = (wJ_p[..., :, None] * J_X[..., None, :]).sum(1)  # [N, P, 3]
        H_XX = (wJ_X[..., :, None] * J_X[..., None, :]).sum(1)  # [N, 3, 3]
        g_p = wJ_p.reshape(-1, P_).T @ r.reshape(-1)
        g_X = (wJ_X * r[..., None]).sum(1)
        if k:  # the priors of the depth corrections: residual c / sigma_c, unit weight
            inv_var = (1.0 / self.sigma_c ** 2).repeat(2)
            H_pp[6:, 6:] += torch.diag(inv_var)
            g_p[6:] += (prior / self.sigma_c).flatten()
        return H_pp, H_pX, H_XX, g_p, g_X

    def step(self, R: torch.Tensor, t: torch.Tensor, c: torch.Tensor, X: torch.Tensor, lam: float):
        """One damped Gauss-Newton step on the robust (IRLS) normal equations; None if singular."""
        blocks = self._normal_equations(R, t, c, X)
        if blocks is None:
            return None
        H_pp, H_pX, H_XX, g_p, g_X = blocks
        eye3 = torch.eye(3, dtype=X.dtype, device=X.device)
        H_XX = H_XX + lam * torch.diag_embed(torch.diagonal(H_XX, dim1=-2, dim2=-1)) + 1e-12 * eye3
        H_pp = H_pp + lam * torch.diag(torch.diagonal(H_pp)) + 1e-12 * torch.eye(
            self.num_params, dtype=X.dtype, device=X.device)
        try:
            H_XX_inv = torch.linalg.inv(H_XX)  # [N, 3, 3]
            A = H_pX @ H_XX_inv  # [N, P, 3]
            S = H_pp - (A @ H_pX.transpose(-1, -2)).sum(0)
            b = g_p - (A @ g_X[..., None]).sum(0)[:, 0]
            dp = -torch.linalg.solve(S, b)
        except RuntimeError:  # torch.linalg.LinAlgError: singular system
            return None
        if not bool(torch.isfinite(dp).all()):
            return None
        dX = -(H_XX_inv @ (g_X + (H_pX.transpose(-1, -2) @ dp[:, None])[..., 0])[..., None])[..., 0]
        rotation = _so3_exp(dp[:3])
        return rotation @ R, rotation @ t + dp[3:6], c + dp[6:].reshape(2, self.nuisance), X + dX

    def information(self, R: torch.Tensor, t: torch.Tensor, c: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """Schur complement of the points (and the depth corrections) at the solution: information ``[6, 6]``
        of the pose update (w, dt)."""
        blocks = self._normal_equations(R, t, c, X)
        assert blocks is not None  # the accepted solution has every point in front of both cameras
        H_pp, H_pX, H_XX, _, _ = blocks
        H_XX = H_XX + 1e-12 * torch.eye(3, dtype=X.dtype, device=X.device)
        S = H_pp - (H_pX @ torch.linalg.inv(H_XX) @ H_pX.transpose(-1, -2)).sum(0)
        if self.nuisance:
            S = S[:6, :6] - S[:6, 6:] @ torch.linalg.solve(S[6:, 6:], S[6:, :6])
        return S


def sampson_distance(kpts0: torch.Tensor, kpts1: torch.Tensor, K0: torch.Tensor, K1: torch.Tensor,
                     R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``[N]`` Sampson distance (pixels, float64) of matches ``[N, 2]`` to the epipolar geometry of ``X1 = R X0 + t``
    (first-order distance to the nearest pair of pixels that satisfy it; 0 for a pure rotation's exact matches)."""
    K0, K1, R, t = K0.double(), K1.double(), R.double(), t.double()
    E = _skew(t[None])[0] @ R
    F = torch.linalg.inv(K1).T @ E @ torch.linalg.inv(K0)
    x0 = torch.cat([kpts0.double(), torch.ones_like(kpts0[:, :1], dtype=torch.float64)], -1)
    x1 = torch.cat([kpts1.double(), torch.ones_like(kpts1[:, :1], dtype=torch.float64)], -1)
    Fx0, Ftx1 = x0 @ F.T, x1 @ F
    algebraic = (x1 * Fx0).sum(-1)
    norm = (Fx0[:, :2] ** 2).sum(-1) + (Ftx1[:, :2] ** 2).sum(-1)
    return algebraic.abs() / norm.clamp_min(1e-30).sqrt()


def _regressors(xy: torch.Tensor) -> torch.Tensor:
    """``[N, 6]`` the depth-correction regressors ``[1, x, y, x^2, x y, y^2]`` of normalised coordinates."""
    x, y = xy[:, 0], xy[:, 1]
    return torch.stack([torch.ones_like(x), x, y, x * x, x * y, y * y], -1)


def _project(X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    x, y = X[:, 0] / X[:, 2], X[:, 1] / X[:, 2]
    return torch.stack([K[0, 0] * x + K[0, 1] * y + K[0, 2], K[1, 1] * y + K[1, 2]], dim=-1)


def _projection_jacobian(X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """``[N, 2, 3]`` d pixel / d point for the pinhole ``K`` (with skew)."""
    inv_z = 1.0 / X[:, 2]
    x, y = X[:, 0] * inv_z, X[:, 1] * inv_z
    zero = torch.zeros_like(inv_z)
    dn = torch.stack([torch.stack([inv_z, zero, -x * inv_z], -1), torch.stack([zero, inv_z, -y * inv_z], -1)], -2)
    return K[:2, :2] @ dn


def _skew(v: torch.Tensor) -> torch.Tensor:
    """``[N, 3, 3]`` cross-product matrices of ``[N, 3]`` vectors."""
    zero = torch.zeros_like(v[:, 0])
    return torch.stack([
        torch.stack([zero, -v[:, 2], v[:, 1]], -1),
        torch.stack([v[:, 2], zero, -v[:, 0]], -1),
        torch.stack([-v[:, 1], v[:, 0], zero], -1),
    ], -2)


def _so3_exp(w: torch.Tensor) -> torch.Tensor:
    """Rodrigues: ``[3]`` axis-angle (rad) -> ``[3, 3]`` rotation."""
    theta = w.norm()
    W = _skew(w[None])[0]
    eye = torch.eye(3, dtype=w.dtype, device=w.device)
    if float(theta) < 1e-12:
        return eye + W
    return eye + torch.sin(theta) / theta * W + (1 - torch.cos(theta)) / theta ** 2 * (W @ W)


def _check(kpts0, kpts1, depth0, depth1, K0, K1, R, t) -> int:
    if not isinstance(kpts0, torch.Tensor) or kpts0.ndim != 2 or kpts0.shape[1] != 2:
        raise InputError(f"kpts0: expected a tensor [N, 2] of pixels, got {_shape(kpts0)}")
    n = kpts0.shape[0]
    for name, value, shape in (("kpts1", kpts1, [n, 2]), ("depth0", depth0, [n]), ("depth1", depth1, [n]),
                               ("K0", K0, [3, 3]), ("K1", K1, [3, 3]), ("R", R, [3, 3]), ("t", t, [3])):
        if not isinstance(value, torch.Tensor) or list(value.shape) != shape:
            raise InputError(f"{name}: expected a tensor of shape {shape}, got {_shape(value)}")
        if value.device != kpts0.device:
            raise InputError(f"{name}: expected a tensor on {kpts0.device} (kpts0's device), got {value.device}")
    return n


def _shape(value: object) -> object:
    return list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
