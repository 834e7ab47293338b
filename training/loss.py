"""MicKey's training objective: expected VCRE of a probabilistic Procrustes solver, learned by REINFORCE.

The official ``MetricPoseLoss.RANSAC_vectorized`` (reference/official_mickey.md section 8), per pair:

1. ``Q = 20`` draws of ``M = 512`` correspondences without replacement, proportional to ``P`` (detached).
2. Per draw ``J = 20`` minimal sets of 8 matches (proportional to the draw's ``P`` values) -> Kabsch hypotheses.
3. Refinement without gradient (:func:`refine_masks`): Kabsch on the current mask -> hard inliers (0.15 m);
   when their count beats the best so far (which starts at 8), the mask that *generated* that pose is kept and
   the inliers become the next mask (4 steps). The pose is then recomputed **with** gradient on the kept mask,
   i.e. the best-count pose itself (often the minimal set's), not a refit on its inliers.
4. Score = soft inlier count (tau 0.3 m, beta 5 / tau) of that pose over the draw's M matches.
5. Hypothesis loss = ``tanh(((VCRE_0 + VCRE_1) / 2) / 80)``: symmetric virtual-correspondence reprojection
   error on a 196-point grid, projections clipped to [0, 720] px, with the original-resolution intrinsics.
6. Expected loss of draw k: ``L_k = sum_h softmax_h(score_h / 20) loss_h`` with a null hypothesis of score
   ``0.35 M`` and loss 0.8.
7. REINFORCE: the gradient w.r.t. ``log(P + 1e-16)`` is ``(1/Q) sum_k count_k (L_k - mean_k L_k)`` per pair,
   summed over the kept pairs; the direct gradient of the mean over the kept pairs of ``mean_k L_k`` (the
   official ``avg_loss``) flows through Kabsch into keypoints and depth.
8. Curriculum: only pairs whose mean loss is strictly below the (k+1)-th smallest of the batch contribute,
   ``k = max(floor(B topk / 100), 1)``.

Both gradients come from one ``surrogate.backward()`` (the REINFORCE term is ``sum(coef * log(P + 1e-16))``
with a detached coefficient), which gives the official two-stage backward's gradients and works unchanged under
DDP. The scales and the steps above follow the official code; the result is not bit-identical to it.
Remaining departures:

* Sampling: an exact successive sampler (:func:`mickey_ros.solver.sample_correspondences`, same distribution
  as ``torch.multinomial`` without replacement) with its own random stream, so draws differ from the official
  ones for the same seed.
* Geometry runs in float64 (official: float32), also under autocast.
* With fewer than 512 candidate matches the draw is smaller and the null score is ``0.35 * M`` (official:
  ``multinomial`` fails and the whole batch gets no loss).
* Failures are per pair and per hypothesis, not per batch: a pair whose ``P`` is invalid or has fewer than 8
  candidates is left out (counted in ``invalid``), and a hypothesis whose Kabsch pose is not finite gets zero
  softmax weight. The official code drops the whole batch in both cases (no loss, no optimiser step).
* The curriculum ranks the valid pairs only (official: the whole batch, where an invalid pair already voided
  the batch).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mickey_ros.errors import InputError
from mickey_ros.geometry.camera import backproject
from mickey_ros.geometry.kabsch import kabsch_float64
from mickey_ros.solver import DIST_EPS, SHARPNESS, minimal_sets, sample_correspondences

LOG_EPS = 1e-16  # log(P + LOG_EPS) in the REINFORCE term (official)
PROJ_EPS = 1e-16  # pi(x) divides by z + PROJ_EPS (official)


@dataclass(frozen=True)
class LossConfig:
    """Loss settings; defaults = official ``curriculum_learning.yaml`` (LOSS_CLASS)."""

    num_samples: int = 512  # M: correspondences per draw (NUM_SAMPLES_MATCHES)
    num_draws: int = 20  # Q: REINFORCE draws per pair (IT_MATCHES)
    hypotheses_per_draw: int = 20  # J: minimal sets per draw (IT_RANSAC)
    min_set_size: int = 8  # matches per minimal set (NUM_CORR_3d3d)
    soft_inlier_threshold: float = 0.3  # m, tau of the hypothesis score (INLIER_3D_TH)
    refine_threshold: float = 0.15  # m, hard inliers of the refinement (INLIER_REF_TH)
    num_refinements: int = 4  # NUM_REF_STEPS
    score_temperature: float = 20.0  # softmax over score / temperature (SCORE_TEMPERATURE)
    null_hypothesis: bool = True  # NULL_HYPOTHESIS.ADD
    null_inlier_fraction: float = 0.35  # null score = fraction * M (TH_OUTLIERS)
    soft_clipping: bool = True  # loss = tanh(vcre / soft_clip_px); else the raw VCRE in pixels
    soft_clip_px: float = 80.0
    null_loss_soft: float = 0.8  # loss of the null hypothesis with soft clipping (MAX_LOSS_SOFTVALUE)
    null_loss_raw: float = 90.0  # ... without (MAX_LOSS_VALUE)
    vcre_clip_px: float = 720.0  # projections clipped to [0, 720] in u and v

    def __post_init__(self) -> None:
        for name in ("num_samples", "num_draws", "hypotheses_per_draw", "num_refinements"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "num_refinements" else 1):
                raise InputError(f"LossConfig.{name}: expected a positive integer, got {value!r}")
        if not isinstance(self.min_set_size, int) or not 3 <= self.min_set_size <= self.num_samples:
            raise InputError(f"LossConfig.min_set_size: expected an integer in [3, num_samples], got {self.min_set_size!r}")
        for name in ("soft_inlier_threshold", "refine_threshold", "score_temperature", "soft_clip_px", "vcre_clip_px"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise InputError(f"LossConfig.{name}: expected a positive number, got {value!r}")

    @property
    def null_loss(self) -> float:
        return self.null_loss_soft if self.soft_clipping else self.null_loss_raw


@dataclass
class LossOutput:
    """Result of :func:`mickey_loss` for a batch of ``B`` pairs.

    Attributes:
        surrogate: scalar; ``surrogate.backward()`` gives the REINFORCE + direct gradients of the kept pairs.
        loss: scalar (detached), mean expected loss of the kept pairs (what the curriculum minimises).
        pair_loss: ``[B]`` each pair's mean expected loss ``mean_k L_k`` (NaN for invalid pairs).
        kept: ``[B]`` bool, pairs that contributed (valid and selected by the curriculum).
        rotation_error_deg, translation_error_m: ``[B]`` softmax-weighted (without null hypothesis) pose
            errors of the hypotheses, for logging (NaN for invalid pairs).
        invalid: one reason per left-out pair (``"pair 3: ..."``).
    """

    surrogate: torch.Tensor
    loss: torch.Tensor
    pair_loss: torch.Tensor
    kept: torch.Tensor
    rotation_error_deg: torch.Tensor
    translation_error_m: torch.Tensor
    invalid: list[str]


def virtual_grid(dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[196, 3]`` training grid in camera space, metres: x in -0.9..0.9, y in +-0.15/+-0.45, z in 1.8..3.6."""
    x = torch.arange(7, dtype=dtype, device=device) * 0.3 - 0.9
    y = torch.tensor([-0.45, -0.15, 0.15, 0.45], dtype=dtype, device=device)
    z = torch.arange(7, dtype=dtype, device=device) * 0.3 + 1.8
    gx, gy, gz = torch.meshgrid(x, y, z, indexing="ij")
    return torch.stack([gx, gy, gz], -1).reshape(-1, 3)


def _project(K: torch.Tensor, X: torch.Tensor, clip: float) -> torch.Tensor:
    """``[..., P, 3]`` camera points -> ``[..., P, 2]`` pixels ``pi(K X)``, clipped to ``[0, clip]``."""
    uvw = X @ K.transpose(-1, -2)
    return (uvw[..., :2] / (uvw[..., 2:] + PROJ_EPS)).clamp(0.0, clip)


def vcre(R: torch.Tensor, t: torch.Tensor, T_gt: torch.Tensor, K: torch.Tensor, clip: float = 720.0) -> torch.Tensor:
    """Virtual-correspondence reprojection error (training version), pixels.

    Args:
        R: ``[..., 3, 3]``, t: ``[..., 3]`` estimated camera-0 -> camera-1 pose (``X1 = R X0 + t``), metres.
        T_gt: ``[4, 4]`` ground-truth ``T_0to1``.
        K: ``[3, 3]`` intrinsics of camera 0 (original resolution).
        clip: projections are clipped to ``[0, clip]`` px in u and v.

    Returns:
        ``[...]`` mean over the 196 grid points of ``sqrt(|pi(K P) - pi(K T_gt^-1 T_est P)|^2 + 1e-6)``.
    """
    grid = virtual_grid(R.dtype, R.device)
    R_gt, t_gt = T_gt[:3, :3].to(R.dtype), T_gt[:3, 3].to(R.dtype)
    moved = grid @ R.transpose(-1, -2) + t.unsqueeze(-2)  # T_est P  [..., 196, 3]
    back = (moved - t_gt) @ R_gt  # T_gt^-1 (.) = R_gt^T (. - t_gt), row-vector form
    K = K.to(R.dtype)
    diff = _project(K, back, clip) - _project(K, grid, clip)
    return (diff.square().sum(-1) + 1e-6).sqrt().mean(-1)


def symmetric_vcre_loss(R: torch.Tensor, t: torch.Tensor, T_gt: torch.Tensor, K0: torch.Tensor, K1: torch.Tensor,
                        config: LossConfig = LossConfig()) -> torch.Tensor:
    """Per-hypothesis loss ``[...]``: mean of the VCRE in both directions, soft-clipped ``tanh(. / 80)``."""
    loss0 = vcre(R, t, T_gt, K0, config.vcre_clip_px)
    R_inv = R.transpose(-1, -2)
    t_inv = -(R_inv @ t.unsqueeze(-1)).squeeze(-1)
    T_gt_inv = torch.linalg.inv(T_gt.double()).to(T_gt.dtype)
    loss1 = vcre(R_inv, t_inv, T_gt_inv, K1, config.vcre_clip_px)
    mean = (loss0 + loss1) / 2
    return torch.tanh(mean / config.soft_clip_px) if config.soft_clipping else mean


def _pose_errors(R: torch.Tensor, t: torch.Tensor, T_gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation angle (deg) and translation distance (m) of hypotheses ``[..., 3, 3]``, ``[..., 3]`` to ``T_gt``."""
    R_gt, t_gt = T_gt[:3, :3].to(R.dtype), T_gt[:3, 3].to(R.dtype)
    cos = ((R_gt.transpose(0, 1) @ R).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0))), (t - t_gt).norm(dim=-1)


def _residuals(R: torch.Tensor, t: torch.Tensor, X0: torch.Tensor, X1: torch.Tensor) -> torch.Tensor:
    """``[Q, J, M]`` distances ``sqrt(|R X0 + t - X1|^2 + 1e-6)`` of hypotheses ``[Q, J]`` over draws ``[Q, M]``."""
    pred = X0.unsqueeze(1) @ R.transpose(-1, -2) + t.unsqueeze(-2)  # [Q, J, M, 3]
    return ((pred - X1.unsqueeze(1)).square().sum(-1) + DIST_EPS).sqrt()


@torch.no_grad()
def refine_masks(X0: torch.Tensor, X1: torch.Tensor, mask: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """Training refinement (official vectorised version): the mask whose Kabsch pose has the most hard inliers.

    Per hypothesis, ``num_refinements`` times: Kabsch on the current mask -> hard inliers (``d <= 0.15 m``) of
    that pose. When their count beats the best so far (which starts at the minimal-set size), the best count is
    updated, the mask that *generated* that pose becomes the result, and the inliers become the next mask.
    Otherwise the hypothesis stops. The result is therefore the mask of the best-count pose, often the minimal
    set itself, not that pose's inlier set (there is no final refit on it).

    Args:
        X0, X1: ``[Q, M, 3]`` float64 back-projected matches of each draw (detached).
        mask: ``[Q, J, M]`` float64 0/1 minimal-set masks.
        cfg: thresholds and number of steps.

    Returns:
        ``[Q, J, M]`` float64 0/1 masks for the differentiable Kabsch.
    """
    Q, J, M = mask.shape
    Xe0, Xe1 = X0.unsqueeze(1).expand(Q, J, M, 3), X1.unsqueeze(1).expand(Q, J, M, 3)
    current, final = mask, mask
    best = mask.sum(-1)
    for _ in range(cfg.num_refinements):
        R, t = kabsch_float64(Xe0, Xe1, current)
        inliers = (_residuals(R, t, X0, X1) <= cfg.refine_threshold).double()
        count = inliers.sum(-1)
        better = (count > best) & torch.isfinite(R).flatten(-2).all(-1) & torch.isfinite(t).all(-1)
        if not bool(better.any()):
            break
        final = torch.where(better.unsqueeze(-1), current, final)
        current = torch.where(better.unsqueeze(-1), inliers, current)
        best = torch.where(better, count, best)
    return final


@dataclass
class _PairResult:
    draw_losses: torch.Tensor  # [Q] L_k, with graph
    coef: torch.Tensor  # [N0 * N1] REINFORCE coefficient of log(P + eps), detached
    rotation_error_deg: torch.Tensor
    translation_error_m: torch.Tensor


def _pair_loss(P: torch.Tensor, kpts0: torch.Tensor, kpts1: torch.Tensor, depth0: torch.Tensor, depth1: torch.Tensor,
               K0: torch.Tensor, K1: torch.Tensor, Kori0: torch.Tensor, Kori1: torch.Tensor, T_gt: torch.Tensor,
               cfg: LossConfig, generator: torch.Generator | None) -> _PairResult | str:
    """Loss terms of one pair (shapes as :func:`mickey_loss` without the batch dimension) or why it is invalid."""
    p = P.detach()
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
        return "matching probabilities are not finite and non-negative"
    num_candidates = int(torch.count_nonzero(p))
    if num_candidates < cfg.min_set_size:
        return f"{num_candidates} candidate correspondences, need {cfg.min_set_size}"
    flat, weights = sample_correspondences(p, cfg.num_samples, cfg.num_draws, generator)  # [Q, M]
    n1 = P.shape[1]
    i0, i1 = flat // n1, flat % n1
    Q, M = flat.shape
    K0q = K0.double().expand(Q, 3, 3)
    K1q = K1.double().expand(Q, 3, 3)
    X0 = backproject(kpts0.double()[i0], depth0.double()[i0], K0q)  # [Q, M, 3] metres, with graph
    X1 = backproject(kpts1.double()[i1], depth1.double()[i1], K1q)
    sets = minimal_sets(weights.double(), cfg.hypotheses_per_draw, cfg.min_set_size, generator)  # [Q, J, 8]
    J = sets.shape[1]
    mask = torch.zeros(Q, J, M, dtype=torch.float64, device=P.device).scatter_(-1, sets, 1.0)
    mask = refine_masks(X0.detach(), X1.detach(), mask, cfg)
    R, t = kabsch_float64(X0.unsqueeze(1).expand(Q, J, M, 3), X1.unsqueeze(1).expand(Q, J, M, 3), mask)
    finite = torch.isfinite(R).flatten(-2).all(-1) & torch.isfinite(t).all(-1)  # [Q, J]
    R = torch.where(finite[..., None, None], R, torch.eye(3, dtype=R.dtype, device=R.device))
    t = torch.where(finite[..., None], t, 0.0)
    tau = cfg.soft_inlier_threshold
    scores = torch.sigmoid(SHARPNESS / tau * (tau - _residuals(R, t, X0, X1))).sum(-1)  # [Q, J]
    losses = symmetric_vcre_loss(R, t, T_gt.double(), Kori0.double(), Kori1.double(), cfg)  # [Q, J]
    logits = torch.where(finite, scores / cfg.score_temperature, -math.inf)
    if cfg.null_hypothesis:
        null_logit = logits.new_full((Q, 1), cfg.null_inlier_fraction * M / cfg.score_temperature)
        w = torch.cat([logits, null_logit], 1).softmax(-1)
        draw_losses = (w[:, :J] * torch.where(finite, losses, 0.0)).sum(-1) + w[:, J] * cfg.null_loss
    else:
        draw_losses = (logits.softmax(-1) * torch.where(finite, losses, 0.0)).sum(-1)
    with torch.no_grad():
        baseline = draw_losses.mean()
        coef = torch.zeros(P.numel(), dtype=torch.float64, device=P.device)
        coef.index_add_(0, flat.flatten(), ((draw_losses - baseline) / Q).unsqueeze(1).expand(Q, M).flatten())
        w_pose = logits.softmax(-1)  # logging: the same weights without the null hypothesis
        rot, trans = _pose_errors(R, t, T_gt.double())
        rot_err = (w_pose * rot.nan_to_num(0.0)).sum() / Q
        trans_err = (w_pose * trans.nan_to_num(0.0)).sum() / Q
    return _PairResult(draw_losses, coef, rot_err, trans_err)


def curriculum_mask(pair_loss: torch.Tensor, valid: torch.Tensor, topk_percent: float | None) -> torch.Tensor:
    """Pairs kept by the curriculum: valid and strictly below the (k+1)-th smallest loss of the valid pairs.

    Args:
        pair_loss: ``[B]`` mean expected loss per pair.
        valid: ``[B]`` bool.
        topk_percent: percentage of the batch to keep (``None`` = all valid pairs);
            ``k = max(floor(n_valid * topk / 100), 1)``.
    """
    kept = valid.clone()
    n = int(valid.sum())
    if topk_percent is None or n == 0:
        return kept
    k = max(int(math.floor(n * topk_percent / 100.0)), 1)
    if k >= n:
        return kept
    threshold = torch.sort(pair_loss[valid]).values[k]
    return kept & (pair_loss < threshold)


def mickey_loss(P: torch.Tensor, kpts0: torch.Tensor, kpts1: torch.Tensor, depth0: torch.Tensor,
                depth1: torch.Tensor, K0: torch.Tensor, K1: torch.Tensor, Kori0: torch.Tensor, Kori1: torch.Tensor,
                T_0to1: torch.Tensor, config: LossConfig = LossConfig(), topk_percent: float | None = None,
                generator: torch.Generator | Sequence[torch.Generator] | None = None) -> LossOutput:
    """The MicKey training loss of a batch.

    Args:
        P: ``[B, N0, N1]`` matching probabilities (``net.match``), with graph.
        kpts0, kpts1: ``[B, N, 2]`` keypoints in pixels of the network input images, with graph.
        depth0, depth1: ``[B, N]`` keypoint depths, metres, with graph.
        K0, K1: ``[B, 3, 3]`` intrinsics of the network input images (back-projection).
        Kori0, Kori1: ``[B, 3, 3]`` intrinsics at the original resolution (VCRE).
        T_0to1: ``[B, 4, 4]`` ground-truth relative poses (``X1 = R X0 + t``, metres).
        config: loss settings.
        topk_percent: curriculum percentage (``None`` = every valid pair).
        generator: random generator on ``P``'s device (seeded training = reproducible draws), or one per pair
            (then a pair's draws do not depend on the other pairs: DDP shards give the single-process result).

    Returns:
        :class:`LossOutput`.
    """
    B = P.shape[0]
    generators = list(generator) if isinstance(generator, (list, tuple)) else [generator] * B
    if len(generators) != B:
        raise InputError(f"generator: expected one generator per pair ({B}), got {len(generators)}")
    for name, value, shape in (("kpts0", kpts0, (B, P.shape[1], 2)), ("kpts1", kpts1, (B, P.shape[2], 2)),
                               ("depth0", depth0, (B, P.shape[1])), ("depth1", depth1, (B, P.shape[2])),
                               ("K0", K0, (B, 3, 3)), ("K1", K1, (B, 3, 3)), ("Kori0", Kori0, (B, 3, 3)),
                               ("Kori1", Kori1, (B, 3, 3)), ("T_0to1", T_0to1, (B, 4, 4))):
        if tuple(value.shape) != shape:
            raise InputError(f"{name}: expected shape {list(shape)} to match P {list(P.shape)}, got {list(value.shape)}")
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=P.device)
    with torch.autocast(device_type=P.device.type, enabled=False):
        results: list[_PairResult | None] = []
        invalid = []
        for b in range(B):
            res = _pair_loss(P[b], kpts0[b], kpts1[b], depth0[b], depth1[b], K0[b], K1[b], Kori0[b], Kori1[b],
                             T_0to1[b], config, generators[b])
            if isinstance(res, str):
                invalid.append(f"pair {b}: {res}")
                results.append(None)
            else:
                results.append(res)
        valid = torch.tensor([r is not None for r in results], device=P.device)
        pair_loss = torch.stack([r.draw_losses.detach().mean() if r is not None else nan for r in results])
        kept = curriculum_mask(pair_loss, valid, topk_percent)
        n_kept = int(kept.sum())
        surrogate = P.sum() * 0.0  # keeps the graph (and DDP's hooks) alive when no pair is kept
        for b, r in enumerate(results):
            if r is None or not bool(kept[b]):
                continue
            log_p = torch.log(P[b].double().flatten() + LOG_EPS)
            # official scales: the direct term is the mean over kept pairs (avg_loss), the REINFORCE term is
            # each kept pair's own gradient, summed over the kept pairs (not divided by their number)
            surrogate = surrogate + r.draw_losses.mean() / n_kept + (r.coef * log_p).sum()
        loss = pair_loss[kept].mean() if n_kept else nan
        rot = torch.stack([r.rotation_error_deg if r is not None else nan for r in results])
        trans = torch.stack([r.translation_error_m if r is not None else nan for r in results])
    return LossOutput(surrogate, loss.detach(), pair_loss, kept, rot, trans, invalid)
