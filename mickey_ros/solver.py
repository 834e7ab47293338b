"""Test-time probabilistic Procrustes solver: correspondence probabilities + 3D keypoints -> metric pose.

The algorithm is the official one (reference/official_mickey.md section 7), batched in torch:

1. ``Q`` outer draws, each of up to ``M = 2048`` distinct correspondences sampled without replacement
   with probability proportional to ``P`` (successive sampling).
2. Per draw, ``J`` minimal sets of 3 distinct matches, sampled without replacement proportional to the
   draw's weights; one batched float64 Kabsch gives ``Q * J`` hypotheses.
3. Each hypothesis is scored by its soft inlier count over its draw's matches,
   ``sum sigmoid(beta (tau - d))``, ``d = sqrt(|R X0 + t - X1|^2 + 1e-6)``, ``tau = 0.3 m``, ``beta = 5 / tau``.
4. The best hypothesis is refined (at most 4 times) by Kabsch on its hard inliers (``d <= 0.15 m``) in
   its draw, as long as the inlier count grows.
5. Confidence = soft inlier count (``tau = 0.15 m``) of the final pose / number of matches in the draw.

Departures from the official code, all on purpose: the two images may have different keypoint counts;
fewer than 2048 candidates are sampled as they are; a non-finite hypothesis is dropped alone (the
official code zeroes the whole batch); correspondences with non-finite 3D points are not candidates;
invalid ``P`` or too few candidates give ``success=False`` with a reason instead of an exception.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mickey_ros.errors import InputError
from mickey_ros.geometry.kabsch import kabsch_float64

SHARPNESS = 5.0  # beta = SHARPNESS / tau for the soft inlier sigmoid (official)
DIST_EPS = 1e-6  # m^2, d = sqrt(|R X0 + t - X1|^2 + DIST_EPS) (official)
MAX_TOP_UP_ROUNDS = 16  # rounds of sampling from the remaining mass before the exact Gumbel fallback
MIN_SET_DRAWS = 6  # with-replacement draws per minimal set (at least twice its size) before the Gumbel fallback
SMALL_SUPPORT = 1 << 18  # up to this many entries of P, the first round's draw count comes from a bisection


@dataclass(frozen=True)
class SolverConfig:
    """Solver settings. Defaults = official test time (``PROCRUSTES`` config); symbols as in the paper."""

    num_draws: int = 20  # Q: outer correspondence-set draws per pair (IT_MATCHES)
    hypotheses_per_draw: int = 100  # J: minimal sets (RANSAC hypotheses) per draw (IT_RANSAC)
    num_samples: int = 2048  # |Y|: matches per draw, without replacement, prop. to P (NUM_SAMPLED_MATCHES)
    min_set_size: int = 3  # n: correspondences per minimal set (NUM_CORR_3D_3D)
    num_refinements: int = 4  # t_max: at most this many hard-inlier Kabsch refinements (NUM_REFINEMENTS)
    inlier_threshold: float = 0.15  # m, tau of the hard inliers (refinement) and of the confidence (TH_INLIER)
    soft_inlier_threshold: float = 0.3  # m, tau of the hypothesis score; beta = 5 / tau (TH_SOFT_INLIER)
    min_matches: int = 3  # count: fewer candidates with P > 0 and finite 3D points -> success=False

    def __post_init__(self) -> None:
        for name in ("num_draws", "hypotheses_per_draw", "num_samples", "min_set_size", "min_matches"):
            _check_int(name, getattr(self, name), 1)
        _check_int("min_set_size", self.min_set_size, 3)
        _check_int("num_samples", self.num_samples, self.min_set_size)
        _check_int("num_refinements", self.num_refinements, 0)
        for name in ("inlier_threshold", "soft_inlier_threshold"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise InputError(f"SolverConfig.{name}: expected a positive number of metres, got {value!r}")


def _check_int(name: str, value: object, least: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise InputError(f"SolverConfig.{name}: expected an integer >= {least}, got {value!r}")


@dataclass
class PoseEstimate:
    """Result of :func:`solve_relative_pose`. ``X1 = R X0 + t`` (``T_0to1``), metres.

    Attributes:
        success: True when a pose was estimated.
        reason: ``""`` on success, otherwise one line saying why not.
        R: ``[3, 3]`` float64 rotation camera 0 -> camera 1 (identity on failure).
        t: ``[3]`` float64 translation, metres (zeros on failure).
        soft_inliers: soft inlier count (tau = inlier_threshold) of the final pose over the winning
            draw's matches (the official ``inliers`` value).
        confidence: ``soft_inliers / num_matches`` in [0, 1].
        num_inliers: hard inliers (``d <= inlier_threshold``) of the final pose in the winning draw.
        num_matches: M, matches in the winning draw.
        idx0, idx1: ``[M]`` int64 keypoint indices of those matches, sorted by weight (descending).
        weights: ``[M]`` their ``P`` values.
        inliers: ``[M]`` bool hard-inlier mask of the final pose.
    """

    success: bool
    reason: str
    R: torch.Tensor
    t: torch.Tensor
    soft_inliers: float
    confidence: float
    num_inliers: int
    num_matches: int
    idx0: torch.Tensor
    idx1: torch.Tensor
    weights: torch.Tensor
    inliers: torch.Tensor

    @classmethod
    def failure(cls, reason: str, device: torch.device, dtype: torch.dtype = torch.float32) -> PoseEstimate:
        """Identity pose, zero counts and empty match tensors, with ``reason``."""
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return cls(
            False, reason, torch.eye(3, dtype=torch.float64, device=device),
            torch.zeros(3, dtype=torch.float64, device=device), 0.0, 0.0, 0, 0, empty, empty.clone(),
            torch.zeros(0, dtype=dtype, device=device), torch.zeros(0, dtype=torch.bool, device=device),
        )


@dataclass
class DrawEstimate:
    """Output of :func:`estimate_from_draws`: the final pose and where it came from."""

    R: torch.Tensor  # [3, 3] float64
    t: torch.Tensor  # [3] float64
    draw: int  # index q of the winning outer draw
    distances: torch.Tensor  # [M] float64, d of the final pose over the winning draw's matches
    num_valid_hypotheses: int  # finite hypotheses among the Q * J


@torch.no_grad()
def solve_relative_pose(
    pts3d0: torch.Tensor,
    pts3d1: torch.Tensor,
    P: torch.Tensor,
    config: SolverConfig = SolverConfig(),
    generator: torch.Generator | None = None,
) -> PoseEstimate:
    """Metric relative pose from 3D keypoints and correspondence probabilities.

    Args:
        pts3d0: ``[N0, 3]`` keypoints of image 0 in camera-0 coordinates, metres.
        pts3d1: ``[N1, 3]`` keypoints of image 1 in camera-1 coordinates, metres.
        P: ``[N0, N1]`` non-negative matching probabilities (need not sum to 1).
        config: solver settings.
        generator: random generator on the inputs' device (same seed, same answer); ``None`` uses
            torch's global generator.

    Returns:
        A :class:`PoseEstimate`; ``success=False`` with a one-line ``reason`` when ``P`` is invalid,
        there are too few candidates, or every hypothesis is degenerate.

    Raises:
        InputError: shapes, devices or the generator's device do not fit together.
    """
    _check_inputs(pts3d0, pts3d1, P, generator)
    device = P.device
    with torch.autocast(device_type=device.type, enabled=False):
        P = P.detach()
        lo, hi = torch.aminmax(P) if P.numel() else (P.new_zeros(()), P.new_zeros(()))
        if not bool(torch.isfinite(hi)) or not bool(torch.isfinite(lo)) or bool(lo < 0):
            return PoseEstimate.failure(
                f"invalid matching probabilities: P must be finite and >= 0, got range [{float(lo):g}, {float(hi):g}]",
                device, P.dtype,
            )
        pts0, pts1 = pts3d0.detach().double(), pts3d1.detach().double()
        finite0, finite1 = torch.isfinite(pts0).all(-1), torch.isfinite(pts1).all(-1)
        if not bool(finite0.all()) or not bool(finite1.all()):
            P = P * finite0[:, None] * finite1[None, :]  # non-finite 3D points are no candidates
            pts0 = torch.where(finite0[:, None], pts0, 0.0)
            pts1 = torch.where(finite1[:, None], pts1, 0.0)
        num_candidates = int(torch.count_nonzero(P))
        need = max(config.min_matches, config.min_set_size)
        if num_candidates < need:
            return PoseEstimate.failure(
                f"too few matches: {num_candidates} candidate correspondences with non-zero probability, "
                f"need at least {need}",
                device, P.dtype,
            )
        flat, weights = _sample_flat(P.flatten(), min(config.num_samples, num_candidates), config.num_draws, generator)
        n1 = P.shape[1]
        X0, X1 = pts0[flat // n1], pts1[flat % n1]
        est = estimate_from_draws(X0, X1, weights, config, generator)
        if est is None:
            total = config.num_draws * config.hypotheses_per_draw
            return PoseEstimate.failure(
                f"no valid pose: all {total} minimal-set hypotheses were degenerate (non-finite)", device, P.dtype
            )
        order = torch.argsort(weights[est.draw], descending=True, stable=True)
        flat_q, d = flat[est.draw, order], est.distances[order]
        soft = float(_soft_inliers(d, config.inlier_threshold).sum())
        inliers = d <= config.inlier_threshold
        num_matches = int(flat_q.numel())
        return PoseEstimate(
            success=True, reason="", R=est.R, t=est.t, soft_inliers=soft, confidence=soft / num_matches,
            num_inliers=int(inliers.sum()), num_matches=num_matches, idx0=flat_q // n1, idx1=flat_q % n1,
            weights=weights[est.draw, order], inliers=inliers,
        )


def _check_inputs(
    pts3d0: torch.Tensor, pts3d1: torch.Tensor, P: torch.Tensor, generator: torch.Generator | None
) -> None:
    for name, pts in (("pts3d0", pts3d0), ("pts3d1", pts3d1)):
        if not isinstance(pts, torch.Tensor) or pts.ndim != 2 or pts.shape[1] != 3:
            shape = list(pts.shape) if isinstance(pts, torch.Tensor) else type(pts).__name__
            raise InputError(f"{name}: expected a tensor [N, 3] of 3D points in metres, got {shape}")
    expected = [pts3d0.shape[0], pts3d1.shape[0]]
    if not isinstance(P, torch.Tensor) or list(P.shape) != expected:
        shape = list(P.shape) if isinstance(P, torch.Tensor) else type(P).__name__
        raise InputError(f"P: expected shape [N0, N1] = {expected} to match pts3d0 and pts3d1, got {shape}")
    if not (P.is_floating_point() and pts3d0.is_floating_point() and pts3d1.is_floating_point()):
        raise InputError(
            f"P, pts3d0, pts3d1: expected floating-point tensors, got {P.dtype}, {pts3d0.dtype}, {pts3d1.dtype}"
        )
    if not (pts3d0.device == pts3d1.device == P.device):
        raise InputError(
            f"pts3d0, pts3d1, P: expected one device, got {pts3d0.device}, {pts3d1.device}, {P.device}"
        )
    if generator is not None and generator.device.type != P.device.type:
        raise InputError(f"generator: expected a generator on {P.device}, got one on {generator.device}")


@torch.no_grad()
def sample_correspondences(
    P: torch.Tensor, num_samples: int, num_draws: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw correspondence sets without replacement, with probability proportional to ``P``.

    Each row is an independent successive sample (as ``torch.multinomial(P.flatten(), M)`` without
    replacement) of ``M = min(num_samples, #(P > 0))`` distinct entries. Exact and fast: with-replacement
    draws by inverse CDF keep their first occurrences; short rows continue from the remaining mass,
    and an exact Gumbel-top-k finishes any row the remaining mass cannot (too concentrated).

    Args:
        P: ``[N0, N1]`` finite, non-negative weights.
        num_samples: wanted matches per draw.
        num_draws: Q, independent draws.
        generator: random generator on ``P``'s device, or ``None``.

    Returns:
        ``(flat, weights)``: ``[Q, M]`` int64 flat indices ``i * N1 + j`` in draw order and ``[Q, M]``
        their values ``P[i, j]``.

    Raises:
        InputError: ``P`` not 2D, non-finite or negative, or counts < 1.
    """
    if P.ndim != 2:
        raise InputError(f"P: expected a matrix [N0, N1], got shape {list(P.shape)}")
    if num_samples < 1 or num_draws < 1:
        raise InputError(f"num_samples, num_draws: expected >= 1, got {num_samples}, {num_draws}")
    p_flat = P.detach().flatten()
    if p_flat.numel():
        lo, hi = torch.aminmax(p_flat)  # NaN propagates into both
        if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi)) and float(lo) >= 0):
            raise InputError(
                f"P: expected finite, non-negative matching probabilities, got range [{float(lo):g}, {float(hi):g}]"
            )
    num = min(num_samples, int(torch.count_nonzero(p_flat)))
    return _sample_flat(p_flat, num, num_draws, generator)


def _sample_flat(
    p_flat: torch.Tensor, num: int, num_draws: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sample_correspondences` on a checked ``[L]`` weight vector with ``num <= #(p > 0)``."""
    if num == 0:
        empty = torch.zeros(num_draws, 0, dtype=torch.long, device=p_flat.device)
        return empty, p_flat.new_zeros(num_draws, 0)
    # one float64 buffer (a copy, never the caller's P), summed in place: a second 30 MB buffer costs page faults
    cdf = p_flat.to(torch.float64, copy=True)
    sum_sq = float(torch.dot(cdf, cdf))
    cdf.cumsum_(0)
    draws = _inverse_cdf(cdf, (num_draws, _draws_needed(p_flat, sum_sq, float(cdf[-1]), num)), generator)
    flat, count = _first_distinct(draws, num)
    for q in torch.nonzero(count < num).flatten().tolist():
        flat[q] = _complete_row(p_flat, cdf, flat[q, : int(count[q])], num, generator)
    return flat, p_flat[flat]


def _draws_needed(p_flat: torch.Tensor, sum_sq: float, total: float, num: int) -> int:
    """With-replacement draws after which a row most likely holds ``num`` distinct entries.

    Small supports: bisection on the expected distinct count ``sum_i 1 - exp(-K p_i)`` (Poisson) for
    ``num + 3 sqrt(num)``; large ones: the second-order estimate ``num + num^2 sum p^2 / 2`` (+50 %).
    Rows that still come up short are completed exactly by :func:`_complete_row`.
    """
    cap = 4 * num + 32
    if p_flat.numel() > SMALL_SUPPORT:
        extra = 1.5 * num * num * sum_sq / total**2 / 2
        return min(num + math.ceil(extra) + 32, cap)
    prob = p_flat[p_flat > 0].double() / total

    def expected_distinct(draws: int) -> float:
        return float((-torch.expm1(-draws * prob)).sum())

    target = num + 3 * math.sqrt(num)
    lo, hi = num, cap
    if expected_distinct(cap) < target:  # concentrated: the top-up rounds finish the rows
        return cap
    while lo < hi:
        mid = (lo + hi) // 2
        if expected_distinct(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _inverse_cdf(cdf: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    """With-replacement draws ``[*shape]`` from the inclusive CDFs ``[..., L]`` (leading dims broadcast)."""
    u = torch.rand(shape, generator=generator, dtype=torch.float64, device=cdf.device)
    u = u.view(*cdf.shape[:-1], -1) * cdf[..., -1:]
    idx = torch.searchsorted(cdf, u, right=True)
    return idx.clamp_(max=cdf.shape[-1] - 1).view(shape)


def _first_distinct(draws: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``k`` distinct values of each row of ``draws [..., K]`` in draw order.

    Returns:
        ``[..., k]`` values (rows with fewer distinct values are padded with -1) and ``[...]`` counts.
    """
    sorted_vals, perm = torch.sort(draws, dim=-1, stable=True)
    first_sorted = torch.ones_like(sorted_vals, dtype=torch.bool)
    first_sorted[..., 1:] = sorted_vals[..., 1:] != sorted_vals[..., :-1]
    first = torch.empty_like(first_sorted).scatter_(-1, perm, first_sorted)
    first &= first.cumsum(-1) <= k
    count = first.sum(-1)
    pos = torch.argsort((~first).to(torch.uint8), dim=-1, stable=True)[..., :k]
    out = draws.gather(-1, pos)
    if out.shape[-1] < k:  # fewer draws than wanted values
        out = torch.cat([out, out.new_full((*out.shape[:-1], k - out.shape[-1]), -1)], dim=-1)
    out[torch.arange(k, device=draws.device) >= count.unsqueeze(-1)] = -1
    return out, count


def _complete_row(
    p: torch.Tensor, cdf: torch.Tensor, chosen: torch.Tensor, k: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Continue one successive sample ``chosen [m]`` to ``k`` distinct entries of ``p [L]`` (CDF ``cdf``).

    Draws with replacement from the mass *not yet chosen* (inverse CDF with the chosen entries cut out,
    exact), keeps first occurrences, repeats; an exact Gumbel-top-k over the rest ends it when that
    mass is below float64 resolution.
    """
    for _ in range(MAX_TOP_UP_ROUNDS):
        need = k - chosen.numel()
        if need == 0:
            return chosen
        new = _draw_outside(cdf, chosen, 2 * need + 32, generator)
        if new is None:
            break
        new = new[~torch.isin(new, chosen)]
        if new.numel() == 0:
            continue
        new, count = _first_distinct(new, need)
        chosen = torch.cat([chosen, new[: int(count)]])
    if chosen.numel() == k:
        return chosen
    return _gumbel_complete(p.double().log()[None], chosen[None], k, generator)[0]


def _draw_outside(
    cdf: torch.Tensor, chosen: torch.Tensor, num: int, generator: torch.Generator | None
) -> torch.Tensor | None:
    """``num`` with-replacement draws from the CDF ``[L]`` restricted to entries not in ``chosen``.

    The restricted CDF is ``cdf(i) - removed(i)``, with ``removed`` a step function over the sorted
    chosen entries: locate the segment between two chosen entries first, then search the full CDF
    shifted by that segment's removed mass. ``None`` when the remaining mass is not positive.
    """
    s = torch.sort(chosen).values
    mass = cdf[s] - torch.where(s > 0, cdf[(s - 1).clamp_min(0)], 0.0)
    removed = mass.cumsum(0)
    remaining = float(cdf[-1] - removed[-1])
    if not remaining > 0:
        return None
    bounds = cdf[s] - removed  # restricted CDF at each chosen entry
    u = torch.rand(num, generator=generator, dtype=torch.float64, device=cdf.device) * remaining
    segment = torch.searchsorted(bounds, u, right=True)
    shift = torch.cat([removed.new_zeros(1), removed])[segment]
    return torch.searchsorted(cdf, u + shift, right=True).clamp_(max=cdf.numel() - 1)


def _gumbel_complete(
    logp: torch.Tensor, chosen: torch.Tensor, k: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Exact Gumbel-top-k continuation of successive samples.

    Args:
        logp: ``[R, L]`` log weights (``-inf`` = impossible).
        chosen: ``[R, m]`` entries already drawn, in order, ``-1`` = none (only at the end of a row).
        k: wanted length (at most the number of finite ``logp`` per row).

    Returns:
        ``[R, k]``: each row's chosen prefix followed by a successive sample of the rest.
    """
    u = torch.rand(logp.shape, generator=generator, dtype=torch.float64, device=logp.device)
    keys = logp - torch.log(-torch.log(u.clamp_(min=1e-300)))
    m = chosen.shape[1]
    rank = torch.arange(m, 0, -1, device=logp.device, dtype=torch.float64).expand(chosen.shape)
    # chosen entries get huge keys that keep their order and stay above every Gumbel key
    bonus = torch.zeros_like(keys).scatter_reduce_(
        1, chosen.clamp_min(0), torch.where(chosen >= 0, 1e300 * rank, 0.0), reduce="amax"
    )
    keys = torch.where(bonus > 0, bonus, keys)
    return torch.topk(keys, k, dim=1).indices


def minimal_sets(
    weights: torch.Tensor, num_sets: int, set_size: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per draw, ``num_sets`` sets of ``set_size`` distinct matches, each a successive sample prop. to weights.

    Args:
        weights: ``[Q, M]`` positive match weights of each draw.
        num_sets: J.
        set_size: matches per set (<= M).

    Returns:
        ``[Q, J, set_size]`` int64 positions into the draw's M matches.
    """
    num_q = weights.shape[0]
    w = weights.double()
    cdf = w.cumsum(-1)
    draws = _inverse_cdf(cdf, (num_q, num_sets, max(MIN_SET_DRAWS, 2 * set_size)), generator)
    sets, count = _first_distinct(draws, set_size)
    short = count < set_size
    if bool(short.any()):
        q_short = torch.nonzero(short)[:, 0]
        logp = torch.where(w > 0, w, 0.0).log()[q_short]
        sets[short] = _gumbel_complete(logp, sets[short], set_size, generator)
    return sets


def estimate_from_draws(
    X0: torch.Tensor,
    X1: torch.Tensor,
    weights: torch.Tensor,
    config: SolverConfig = SolverConfig(),
    generator: torch.Generator | None = None,
) -> DrawEstimate | None:
    """Hypotheses, scoring and refinement on already sampled correspondence draws.

    Args:
        X0: ``[Q, M, 3]`` float64 camera-0 points of each draw, metres (finite).
        X1: ``[Q, M, 3]`` float64 matching camera-1 points, metres (finite).
        weights: ``[Q, M]`` positive sampling weights (minimal sets are drawn proportional to them).
        config: solver settings.
        generator: random generator on the points' device, or ``None``.

    Returns:
        The refined best pose, or ``None`` when every hypothesis is non-finite.
    """
    num_q, num_m, _ = X0.shape
    sets = minimal_sets(weights, config.hypotheses_per_draw, config.min_set_size, generator)
    q_index = torch.arange(num_q, device=X0.device)[:, None, None]
    R, t = kabsch_float64(X0[q_index, sets], X1[q_index, sets])  # [Q, J, 3, 3], [Q, J, 3]
    valid = torch.isfinite(R).flatten(-2).all(-1) & torch.isfinite(t).all(-1)
    num_valid = int(valid.sum())
    if num_valid == 0:
        return None
    R = torch.where(valid[..., None, None], R, 0.0)
    t = torch.where(valid[..., None], t, 0.0)
    scores = _score_hypotheses(R, t, X0, X1, config.soft_inlier_threshold)
    best = int(torch.argmax(torch.where(valid, scores, -math.inf)))
    q, j = divmod(best, config.hypotheses_per_draw)
    R_best, t_best = R[q, j], t[q, j]
    x0, x1 = X0[q], X1[q]
    count_prev = config.min_set_size
    d = _distances(R_best, t_best, x0, x1)
    for _ in range(config.num_refinements):
        inliers = d <= config.inlier_threshold
        count = int(inliers.sum())
        if count < config.min_set_size or count <= count_prev:
            break
        R_new, t_new = kabsch_float64(x0, x1, inliers.double())
        if not bool(torch.isfinite(R_new).all() and torch.isfinite(t_new).all()):
            break
        R_best, t_best, count_prev = R_new, t_new, count
        d = _distances(R_best, t_best, x0, x1)
    return DrawEstimate(R=R_best, t=t_best, draw=q, distances=d, num_valid_hypotheses=num_valid)


def _score_hypotheses(
    R: torch.Tensor, t: torch.Tensor, X0: torch.Tensor, X1: torch.Tensor, tau: float
) -> torch.Tensor:
    """Soft inlier counts ``[Q, J]`` of hypotheses ``R [Q, J, 3, 3], t [Q, J, 3]`` over their draw ``[Q, M, 3]``.

    ``|R X + t - Y|^2 = |t|^2 + (|X|^2 + |Y|^2) + 2 (R^T t) . X - 2 t . Y - 2 vec(R) . vec(Y X^T)``, so all
    squared residuals come from one batched float64 matmul of 17 hypothesis coefficients against
    17 point features; the sigmoid then runs in float32.
    """
    Rt_t = (R.transpose(-1, -2) @ t.unsqueeze(-1)).squeeze(-1)
    coef = torch.cat(  # [Q, J, 17]
        [t.square().sum(-1, keepdim=True), torch.ones_like(t[..., :1]), 2 * Rt_t, -2 * t, -2 * R.flatten(-2)], dim=-1
    )
    norms = X0.square().sum(-1, keepdim=True) + X1.square().sum(-1, keepdim=True)
    outer = (X1.unsqueeze(-1) * X0.unsqueeze(-2)).flatten(-2)  # vec(Y X^T)
    feat = torch.cat([torch.ones_like(norms), norms, X0, X1, outer], dim=-1)  # [Q, M, 17]
    d2 = (coef @ feat.transpose(-1, -2)).float()  # [Q, J, M]
    d2.nan_to_num_(nan=math.inf).clamp_(min=0).add_(DIST_EPS).sqrt_()
    beta = SHARPNESS / tau
    return d2.neg_().add_(tau).mul_(beta).sigmoid_().sum(-1)


def _distances(R: torch.Tensor, t: torch.Tensor, X0: torch.Tensor, X1: torch.Tensor) -> torch.Tensor:
    """``[M]`` residuals ``sqrt(|R X0 + t - X1|^2 + 1e-6)`` (non-finite -> inf)."""
    d = ((X0 @ R.T + t - X1).square().sum(-1) + DIST_EPS).sqrt()
    return d.nan_to_num(nan=math.inf)


def _soft_inliers(d: torch.Tensor, tau: float) -> torch.Tensor:
    """Per-match soft inlier weight ``sigmoid(beta (tau - d))``, ``beta = 5 / tau``."""
    return torch.sigmoid(SHARPNESS / tau * (tau - d))
