"""Pose-only auxiliary training terms: epipolar matching and triangulated metric depth (all off by default).

The official objective (:mod:`training.loss`) only learns once some matches are right: with random
descriptors the cheapest answer of the VCRE loss is a short translation, so a network trained from scratch
collapses its depth (issue 8's probe). These terms use the same supervision, the ground-truth relative pose,
to bootstrap matching and depth directly:

* **epipolar** (descriptors; in the spirit of CAPS, Wang et al. ECCV 2020): with the softmax match
  distributions ``p(j | i)`` (0 -> 1) and ``p(i | j)`` (1 -> 0) of the descriptor similarities, the expected
  robust distance ``rho(d) = d / (d + c)`` (pixels) of the candidate to the epipolar line of the ground-truth
  pose, averaged over both directions. Keypoint positions are detached.
* **triangulation** (depth): mutual nearest neighbours whose symmetric epipolar distance is below a threshold
  are triangulated with the ground-truth pose (two-ray least squares); where the rays meet at a usable angle
  in front of both cameras, ``|log d_pred - log z_tri|`` trains both views' depths (targets detached). This is
  metric: the ground-truth translation carries the scale.
* **keypoint epipolar** (offsets): the symmetric epipolar distance of those matches with gradient into the
  keypoints, so that the sub-patch offsets of a match sit on each other's epipolar lines.
* **reprojection** (descriptors, self-training): each keypoint is lifted with the network's own depth (detached),
  moved by the ground-truth pose and projected into the other image; where a keypoint there lies within
  ``reprojection_radius_px`` and its own depth agrees within ``reprojection_depth_tolerance`` (visibility),
  ``-log p(j | i)`` of that keypoint is minimised, in both directions. Pose-only: it uses no depth labels,
  and is as right as the network's depth (so it follows the depth terms).
* **depth** (RGB-D bags only, not pose-only): ``|log d_pred - log d_sensor|`` at every keypoint with a valid
  registered depth (nearest pixel, centres at integer coordinates); needs ``data.depth_topic``. Its two parts
  can be weighted on their own: **depth shape** ``|r - mean r|`` per image with ``r = log d_pred - log d_sensor``
  (scale-invariant: the relative depth inside an image, what the rotation of a rigid fit depends on) and
  **depth pair scale** ``|mean r0 - mean r1|`` per pair (the two views' scale disagreement, which a rigid fit
  cannot absorb; a scale error common to both views only scales the translation).

Shapes: ``kpts [B, N, 2]`` px of the network input image, ``depth [B, N]`` m, ``descriptors [B, N, D]``,
``K [B, 3, 3]`` of the network input image, ``T_0to1 [B, 4, 4]`` (``X1 = R X0 + t``, metres).
Geometry runs in float64 (also under autocast).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from mickey_ros.errors import InputError
from mickey_ros.geometry.camera import backproject

DEPTH_FLOOR_M = 1e-3  # log of the predicted depth uses max(depth, this)
MIN_TRIANGULATED_DEPTH_M = 0.05
SENSOR_DEPTH_WEIGHTS = ("depth_weight", "depth_shape_weight", "depth_pair_scale_weight")  # terms needing depth


@dataclass(frozen=True)
class AuxConfig:
    """Weights and settings of the auxiliary terms; the defaults leave the official objective alone."""

    mickey_weight: float = 1.0  # weight of the official MicKey loss; 0 skips it (warm-up on the terms below)
    epipolar_weight: float = 0.0
    epipolar_temperature: float = 0.1  # similarities / temperature -> softmax (the matcher's temperature)
    epipolar_scale_px: float = 8.0  # c of rho(d) = d / (d + c)
    triangulation_weight: float = 0.0
    triangulation_max_epipolar_px: float = 2.0  # symmetric epipolar distance of a usable match
    triangulation_min_angle_deg: float = 1.0  # smallest ray angle of a usable triangulation
    keypoint_epipolar_weight: float = 0.0
    depth_weight: float = 0.0  # sensor depth at the keypoints (RGB-D bags: data.depth_topic)
    depth_shape_weight: float = 0.0  # its scale-invariant part, per image
    depth_pair_scale_weight: float = 0.0  # the two views' scale disagreement, per pair
    reprojection_weight: float = 0.0
    reprojection_radius_px: float = 10.0  # a target keypoint must lie this close to the reprojection
    reprojection_depth_tolerance: float = 0.1  # relative depth agreement of the target (visibility check)

    def __post_init__(self) -> None:
        for name in ("mickey_weight", "epipolar_weight", "triangulation_weight", "keypoint_epipolar_weight",
                     *SENSOR_DEPTH_WEIGHTS, "reprojection_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InputError(f"aux.{name}: expected a non-negative number, got {value!r}")
        for name in ("epipolar_temperature", "epipolar_scale_px", "triangulation_max_epipolar_px",
                     "triangulation_min_angle_deg", "reprojection_radius_px", "reprojection_depth_tolerance"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise InputError(f"aux.{name}: expected a positive number, got {value!r}")

    @property
    def active(self) -> bool:
        return bool(self.epipolar_weight or self.triangulation_weight or self.keypoint_epipolar_weight
                    or self.sensor_depth or self.reprojection_weight)

    @property
    def sensor_depth(self) -> str:
        """The first weighted term that needs the sensor depth (``aux.<name>``), or "" when none does."""
        return next((name for name in SENSOR_DEPTH_WEIGHTS if getattr(self, name)), "")


@dataclass
class AuxOutput:
    """``total``: weighted sum (scalar, with graph; a graph-connected 0 when every term is off).
    ``scalars``: per-term values and pose-only diagnostics for logging (``aux_*`` keys)."""

    total: torch.Tensor
    scalars: dict[str, float] = field(default_factory=dict)


def skew(t: torch.Tensor) -> torch.Tensor:
    """``[..., 3]`` -> ``[..., 3, 3]`` cross-product matrix ``[t]_x``."""
    z = torch.zeros_like(t[..., 0])
    x, y, w = t.unbind(-1)
    return torch.stack([z, -w, y, w, z, -x, -y, x, z], -1).reshape(*t.shape[:-1], 3, 3)


def fundamental_matrix(K0: torch.Tensor, K1: torch.Tensor, T_0to1: torch.Tensor) -> torch.Tensor:
    """``[B, 3, 3]`` F with ``x1^T F x0 = 0`` for pixels of the same point (``F = K1^-T [t]_x R K0^-1``)."""
    R, t = T_0to1[..., :3, :3], T_0to1[..., :3, 3]
    return torch.linalg.inv(K1).transpose(-1, -2) @ skew(t) @ R @ torch.linalg.inv(K0)


def epipolar_distances(F: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Point-to-epipolar-line distances in pixels.

    Args:
        F: ``[B, 3, 3]``; x0: ``[B, N0, 2]``; x1: ``[B, N1, 2]`` pixels.

    Returns:
        ``(d1, d0)``, each ``[B, N0, N1]``: ``d1[i, j]`` distance of ``x1_j`` to the line ``F x0_i`` in image 1,
        ``d0[i, j]`` distance of ``x0_i`` to the line ``F^T x1_j`` in image 0.
    """
    h0 = torch.cat([x0, torch.ones_like(x0[..., :1])], -1)
    h1 = torch.cat([x1, torch.ones_like(x1[..., :1])], -1)
    lines1 = h0 @ F.transpose(-1, -2)  # [B, N0, 3]: F x0_i
    lines0 = h1 @ F  # [B, N1, 3]: F^T x1_j
    algebraic = (lines1 @ h1.transpose(-1, -2)).abs()  # [B, N0, N1] = |x1_j^T F x0_i|
    d1 = algebraic / (lines1[..., :2].norm(dim=-1, keepdim=True) + 1e-12)
    d0 = algebraic / (lines0[..., :2].norm(dim=-1).unsqueeze(-2) + 1e-12)
    return d1, d0


def symmetric_epipolar_distance(F: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """``[B, M]`` mean of the two point-to-line distances (pixels) of row-aligned matches ``x0, x1 [B, M, 2]``
    (the diagonal of :func:`epipolar_distances`, without its ``M x M`` matrices)."""
    h0 = torch.cat([x0, torch.ones_like(x0[..., :1])], -1)
    h1 = torch.cat([x1, torch.ones_like(x1[..., :1])], -1)
    lines1, lines0 = h0 @ F.transpose(-1, -2), h1 @ F
    algebraic = (lines1 * h1).sum(-1).abs()
    return (algebraic / (lines1[..., :2].norm(dim=-1) + 1e-12)
            + algebraic / (lines0[..., :2].norm(dim=-1) + 1e-12)) / 2


def triangulate(x0: torch.Tensor, x1: torch.Tensor, K0: torch.Tensor, K1: torch.Tensor,
                T_0to1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Depths of matched pixels from two rays and the pose (least squares ``z1 r1 = z0 R r0 + t``).

    Args:
        x0, x1: ``[B, M, 2]`` matched pixels; K0, K1: ``[B, 3, 3]``; T_0to1: ``[B, 4, 4]``.

    Returns:
        ``(z0, z1, angle_deg)``, each ``[B, M]``: depths along each camera's optical axis (metres) and the
        angle between the two rays.
    """
    r0 = backproject(x0, torch.ones_like(x0[..., 0]), K0)  # rays with z = 1
    r1 = backproject(x1, torch.ones_like(x1[..., 0]), K1)
    R, t = T_0to1[..., :3, :3], T_0to1[..., None, :3, 3]
    a = r0 @ R.transpose(-1, -2)  # ray of camera 0 in camera-1 coordinates, [B, M, 3] (z0 a + t)
    aa, bb, ab = (a * a).sum(-1), (r1 * r1).sum(-1), (a * r1).sum(-1)
    at, bt = (a * t).sum(-1), (r1 * t).sum(-1)
    det = aa * bb - ab * ab  # normal equations of min |z0 a - z1 r1 + t|^2
    z0 = (ab * bt - bb * at) / det
    z1 = (aa * bt - ab * at) / det
    cos = (ab / (aa.sqrt() * bb.sqrt())).clamp(-1.0, 1.0)
    return z0, z1, torch.rad2deg(torch.arccos(cos))


def sample_depth(depth_map: torch.Tensor, kpts: torch.Tensor) -> torch.Tensor:
    """``[B, H, W]`` depth image at ``[B, N, 2]`` pixels (nearest pixel, centres at integers) -> ``[B, N]``."""
    B, H, W = depth_map.shape
    col = kpts[..., 0].round().long().clamp(0, W - 1)
    row = kpts[..., 1].round().long().clamp(0, H - 1)
    return depth_map.reshape(B, H * W).gather(1, row * W + col)


def reprojection_targets(kpts_s: torch.Tensor, depth_s: torch.Tensor, kpts_d: torch.Tensor, depth_d: torch.Tensor,
                         K_s: torch.Tensor, K_d: torch.Tensor, T_sd: torch.Tensor, radius_px: float,
                         depth_tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """For each source keypoint, the destination keypoint at its reprojection (no gradient).

    Args:
        kpts_s: ``[B, Ns, 2]`` px, depth_s: ``[B, Ns]`` m (source view); kpts_d, depth_d: destination view.
        K_s, K_d: ``[B, 3, 3]``; T_sd: ``[B, 4, 4]`` source -> destination camera (metres).
        radius_px: largest distance of the chosen keypoint to the reprojection.
        depth_tolerance: largest ``|d_dst - z| / z`` of the chosen keypoint (occlusion check).

    Returns:
        ``(target [B, Ns] index into the destination keypoints, ok [B, Ns] bool)``.
    """
    X = backproject(kpts_s, depth_s, K_s) @ T_sd[..., :3, :3].transpose(-1, -2) + T_sd[..., None, :3, 3]
    z = X[..., 2]
    uvw = X @ K_d.transpose(-1, -2)
    uv = uvw[..., :2] / uvw[..., 2:].clamp(min=1e-9)
    dist = torch.cdist(uv, kpts_d)  # [B, Ns, Nd]
    best, target = dist.min(-1)
    agree = (depth_d.gather(1, target) - z).abs() <= depth_tolerance * z
    return target, (z > MIN_TRIANGULATED_DEPTH_M) & (best <= radius_px) & agree & torch.isfinite(best)


def aux_loss(out0: Any, out1: Any, K0: torch.Tensor, K1: torch.Tensor, T_0to1: torch.Tensor,
             config: AuxConfig, depth0: torch.Tensor | None = None,
             depth1: torch.Tensor | None = None) -> AuxOutput:
    """The weighted auxiliary terms of a batch.

    Args:
        out0, out1: network outputs with ``kpts``, ``depth``, ``descriptors`` (see the module docstring).
        K0, K1: ``[B, 3, 3]`` network-input intrinsics; T_0to1: ``[B, 4, 4]`` ground truth.
        config: weights and thresholds.
        depth0, depth1: ``[B, H, W]`` registered sensor depth (metres, NaN = unknown), for ``depth_weight``.

    Returns:
        :class:`AuxOutput`.

    Raises:
        InputError: ``depth_weight`` without depth images.
    """
    zero = out0.depth.sum() * 0.0
    if not config.active:
        return AuxOutput(zero)
    if config.sensor_depth and (depth0 is None or depth1 is None):
        raise InputError(f"aux.{config.sensor_depth}: needs registered depth images in the batch; set "
                         "data.depth_topic")
    with torch.autocast(device_type=out0.depth.device.type, enabled=False):
        out = _aux_loss(out0, out1, K0.double(), K1.double(), T_0to1.double(), config, zero)
        if depth0 is not None and depth1 is not None:
            out = _with_depth(out, out0, out1, depth0, depth1, config)
    return out


def _with_depth(out: AuxOutput, out0: Any, out1: Any, depth0: torch.Tensor, depth1: torch.Tensor,
                cfg: AuxConfig) -> AuxOutput:
    """Adds the sensor-depth terms (when weighted) and their diagnostics (always, when depth is given)."""
    errs, ratios, shapes, scales, valid = [], [], [], [], []
    for o, gt in ((out0, depth0), (out1, depth1)):
        z = sample_depth(gt.to(o.depth.device).float(), o.kpts.detach())  # [B, N]
        ok = torch.isfinite(z) & (z > 0)
        pred = o.depth.double().clamp(min=DEPTH_FLOOR_M)
        r = torch.where(ok, pred.log() - torch.where(ok, z, 1.0).double().log(), 0.0)  # [B, N] log ratio
        count = ok.sum(1)  # [B]
        scale = r.sum(1) / count.clamp(min=1)  # [B] mean log ratio: the image's scale error
        errs.append(r.abs()[ok])
        shapes.append((r - scale[:, None]).abs()[ok])
        ratios.append(r.detach()[ok].exp())
        scales.append(scale)
        valid.append(count > 0)
    err, shape = torch.cat(errs), torch.cat(shapes)
    pair = valid[0] & valid[1]
    pair_scale = (scales[0] - scales[1]).abs()[pair]  # [pairs with depth in both views]
    total = out.total
    if err.numel():
        out.scalars["aux_sensor_depth_ratio"] = float(torch.cat(ratios).median())
        out.scalars["aux_sensor_depth_logerr"] = float(err.detach().mean())
        out.scalars["aux_sensor_depth_shape"] = float(shape.detach().mean())
        if cfg.depth_weight:
            total = total + cfg.depth_weight * err.mean().to(total.dtype)
        if cfg.depth_shape_weight:
            total = total + cfg.depth_shape_weight * shape.mean().to(total.dtype)
    if pair_scale.numel():
        out.scalars["aux_sensor_depth_pair_scale"] = float(pair_scale.detach().mean())
        if cfg.depth_pair_scale_weight:
            total = total + cfg.depth_pair_scale_weight * pair_scale.mean().to(total.dtype)
    out.scalars["aux_total"] = float(total.detach())
    return AuxOutput(total, out.scalars)


def _aux_loss(out0: Any, out1: Any, K0: torch.Tensor, K1: torch.Tensor, T: torch.Tensor, cfg: AuxConfig,
              zero: torch.Tensor) -> AuxOutput:
    B, N0, _ = out0.kpts.shape
    F = fundamental_matrix(K0, K1, T)
    k0, k1 = out0.kpts.double(), out1.kpts.double()
    sim = (out0.descriptors.float() @ out1.descriptors.float().transpose(-1, -2)) / cfg.epipolar_temperature
    total, scalars = zero, {}
    if cfg.epipolar_weight:
        d1, d0 = epipolar_distances(F, k0.detach(), k1.detach())  # [B, N0, N1]
        c = cfg.epipolar_scale_px
        rho1, rho0 = d1 / (d1 + c), d0 / (d0 + c)
        term = ((sim.softmax(-1).double() * rho1).sum(-1).mean(-1) + (sim.softmax(-2).double() * rho0).sum(-2).mean(-1))
        epi = (term / 2).mean()
        total = total + cfg.epipolar_weight * epi
        scalars["aux_epipolar"] = float(epi.detach())
    if cfg.reprojection_weight:
        T_inv = torch.linalg.inv(T)
        terms, found = [], 0
        for logp, src, dst, Ks, Kd, Tsd in ((sim.log_softmax(-1), out0, out1, K0, K1, T),
                                            (sim.transpose(-1, -2).log_softmax(-1), out1, out0, K1, K0, T_inv)):
            target, ok = reprojection_targets(src.kpts.detach().double(), src.depth.detach().double(),
                                              dst.kpts.detach().double(), dst.depth.detach().double(), Ks, Kd, Tsd,
                                              cfg.reprojection_radius_px, cfg.reprojection_depth_tolerance)
            found += int(ok.sum())
            if bool(ok.any()):
                terms.append(-logp.gather(-1, target[..., None]).squeeze(-1)[ok].double())
        if terms:
            rep = torch.cat(terms).mean()
            total = total + cfg.reprojection_weight * rep
            scalars["aux_reprojection"] = float(rep.detach())
        scalars["aux_reprojection_targets"] = found / B
    with torch.no_grad():  # mutual nearest neighbours and their epipolar distance (also a pose-only diagnostic)
        j_of_i = sim.argmax(-1)  # [B, N0]
        i_of_j = sim.argmax(-2)  # [B, N1]
        mutual = i_of_j.gather(1, j_of_i) == torch.arange(N0, device=sim.device)
    k1m = k1.gather(1, j_of_i[..., None].expand(B, N0, 2))  # [B, N0, 2] matched keypoints of image 1
    dist = symmetric_epipolar_distance(F, k0, k1m)  # [B, N0], with gradient into both keypoints
    good = mutual & (dist.detach() < cfg.triangulation_max_epipolar_px)
    scalars["aux_mutual"] = float(mutual.double().mean())
    scalars["aux_epipolar_inlier_ratio"] = float(good.sum() / mutual.sum().clamp(min=1))
    if cfg.keypoint_epipolar_weight and bool(good.any()):
        c = cfg.epipolar_scale_px
        kp = (dist / (dist + c))[good].mean()
        total = total + cfg.keypoint_epipolar_weight * kp
        scalars["aux_keypoint_epipolar"] = float(kp.detach())
    with torch.no_grad():
        z0, z1, angle = triangulate(k0.detach(), k1m.detach(), K0, K1, T)
        usable = (good & (z0 > MIN_TRIANGULATED_DEPTH_M) & (z1 > MIN_TRIANGULATED_DEPTH_M)
                  & (angle > cfg.triangulation_min_angle_deg) & torch.isfinite(z0) & torch.isfinite(z1))
    scalars["aux_triangulated"] = float(usable.sum()) / B
    dp0 = out0.depth.double()
    dp1 = out1.depth.double().gather(1, j_of_i)
    if bool(usable.any()):
        ratio = torch.cat([dp0[usable] / z0[usable], dp1[usable] / z1[usable]]).detach()
        scalars["aux_depth_ratio"] = float(ratio.median())  # predicted / triangulated: 1 = metric scale
    if cfg.triangulation_weight and bool(usable.any()):
        err0 = (dp0.clamp(min=DEPTH_FLOOR_M).log() - z0.log()).abs()[usable]
        err1 = (dp1.clamp(min=DEPTH_FLOOR_M).log() - z1.log()).abs()[usable]
        tri = (err0.mean() + err1.mean()) / 2
        total = total + cfg.triangulation_weight * tri
        scalars["aux_triangulation"] = float(tri.detach())
    scalars["aux_total"] = float(total.detach())
    return AuxOutput(total.float() if total.dtype != torch.float32 else total, scalars)
