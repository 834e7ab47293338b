"""Pose summary metrics of a set of relative-pose estimates, beside the same numbers for the identity pose.

The one implementation every evaluation uses (``training/evaluate.py``, the trainer's validation). Per pair
(``T_0to1``: ``X1 = R X0 + t``, metres; camera 0 = the Map-free reference, so ``T_0to1`` is the query's
world-to-camera pose):

* translation error: camera-centre distance, metres (Map-free's, :func:`mickey_ros.geometry.metrics.pose_errors`);
* rotation error: degrees (Map-free's quaternion form, same function);
* translation-direction error: angle between ``t_est`` and ``t_gt``, degrees (undefined, NaN, where either is 0);
* scale ratio ``|t_est| / |t_gt|`` (undefined, NaN, where ``t_gt = 0``);
* VCRE: Map-free's virtual-correspondence reprojection error, pixels, with the query's K and image size
  (:func:`mickey_ros.geometry.metrics.vcre`).

Summary: medians of the errors; scale ratio median, 10th and 90th percentile (numpy's linear interpolation);
pose precision and AUC at (25 cm, 5 deg) exactly as Map-free (:func:`mickey_ros.mapfree.aggregate_results`:
strict thresholds, failures in the denominator, confidence-ranked AUC); VCRE precision below 5 % and 10 % of the
image diagonal (10 % of 540 x 720 = Map-free's 90 px) and the confidence-ranked AUC at 10 % (Map-free's
``AUC @ VCRE < 90px``; MicKey's Table 2 protocol on ScanNet); the pose AUC at 5, 10 and 20 deg of SuperGlue /
LoFTR (:func:`pose_auc`) on the per-pair angular error ``max(rotation error, translation-direction error)``.
That angular error does not fold the direction error into [0, 90] deg as the essential-matrix papers do (a metric
pose has a sign), and an undefined direction (``t_est = 0`` or ``t_gt = 0``) counts as an infinite error.

Failures (no estimate, or a non-finite one) count as failures: infinite translation, rotation, direction and
VCRE errors, never accepted, so they raise the medians instead of being left out. (Map-free's own medians,
the ``Average Median ...`` keys, leave them out and average per-scene medians; these are pooled over all
pairs.) The scale ratio of a failure is undefined and left out of the scale statistics; ``num_failures`` says
how many there were. Undefined values (NaN) are left out of medians; a statistic with no value is NaN.

The ``identity`` entry holds the same numbers for ``T_0to1 = I`` on every pair (constant confidence): the
"no motion" floor that an estimate must beat. Its direction error is undefined (``t = 0``), its scale ratio 0.
ROS-free, numpy, float64.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mickey_ros.errors import InputError
from mickey_ros.geometry.metrics import R_THRESHOLD_DEG, T_THRESHOLD_M, confidence_auc, pose_errors, vcre

VCRE_DIAGONAL_FRACTIONS = (0.05, 0.10)  # VCRE precision thresholds, fractions of the image diagonal
VCRE_AUC_DIAGONAL_FRACTION = 0.10  # the confidence-ranked VCRE AUC's threshold (Map-free: 90 px of 540 x 720)
POSE_AUC_THRESHOLDS_DEG = (5.0, 10.0, 20.0)  # SuperGlue / LoFTR pose AUC thresholds on max(rot, direction) error

KEYS = ("num_pairs", "num_failures", "median_trans_err_m", "median_rot_err_deg", "median_trans_dir_err_deg",
        "scale_ratio_median", "scale_ratio_p10", "scale_ratio_p90", "median_vcre_px", "prec_pose_25cm_5deg",
        "auc_pose_25cm_5deg", "prec_vcre_5pct_diag", "prec_vcre_10pct_diag", "auc_vcre_10pct_diag",
        "auc_pose_5deg", "auc_pose_10deg", "auc_pose_20deg")
"""Keys of a summary (and of its ``identity`` entry)."""


def _as_T(T: object, what: str) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise InputError(f"{what}: expected a 4x4 transform, got shape {T.shape}")
    return T


def direction_error_deg(t_est: np.ndarray, t_gt: np.ndarray) -> float:
    """Angle between two translation vectors in degrees, [0, 180]; NaN where either has zero length."""
    t_est, t_gt = np.asarray(t_est, dtype=np.float64), np.asarray(t_gt, dtype=np.float64)
    n_est, n_gt = float(np.linalg.norm(t_est)), float(np.linalg.norm(t_gt))
    if n_est == 0.0 or n_gt == 0.0:
        return float("nan")
    cos = float(np.dot(t_est, t_gt)) / (n_est * n_gt)
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def pair_errors(T_est: np.ndarray | None, T_gt: np.ndarray, K: np.ndarray, width: float, height: float
                ) -> dict[str, float]:
    """Errors of one estimate: ``trans_err_m``, ``rot_err_deg``, ``trans_dir_err_deg``, ``scale_ratio``,
    ``vcre_px`` (``T_est`` None or non-finite = failure: infinite errors, NaN scale ratio)."""
    T_gt = _as_T(T_gt, "T_gt")
    if T_est is None or not np.all(np.isfinite(np.asarray(T_est, dtype=np.float64))):
        inf = float("inf")
        return {"trans_err_m": inf, "rot_err_deg": inf, "trans_dir_err_deg": inf, "scale_ratio": float("nan"),
                "vcre_px": inf}
    T_est = _as_T(T_est, "T_est")
    trans_err, rot_err = pose_errors(T_est, T_gt)
    n_gt = float(np.linalg.norm(T_gt[:3, 3]))
    return {"trans_err_m": trans_err, "rot_err_deg": rot_err,
            "trans_dir_err_deg": direction_error_deg(T_est[:3, 3], T_gt[:3, 3]),
            "scale_ratio": float(np.linalg.norm(T_est[:3, 3])) / n_gt if n_gt > 0 else float("nan"),
            "vcre_px": vcre(T_est, T_gt, K, width, height)}


def angular_pose_error_deg(rot_err_deg: np.ndarray, dir_err_deg: np.ndarray) -> np.ndarray:
    """Per-pair angular pose error ``max(rotation error, translation-direction error)``, degrees.

    Args:
        rot_err_deg: ``[N]`` rotation errors (inf for a failure).
        dir_err_deg: ``[N]`` translation-direction errors; NaN (undefined direction) counts as inf.

    Returns:
        ``[N]`` float64 degrees, inf where either error is infinite or the direction undefined.
    """
    rot = np.asarray(rot_err_deg, dtype=np.float64).reshape(-1)
    direction = np.asarray(dir_err_deg, dtype=np.float64).reshape(-1)
    return np.maximum(np.where(np.isnan(rot), np.inf, rot), np.where(np.isnan(direction), np.inf, direction))


def pose_auc(errors: Sequence[float] | np.ndarray, thresholds: Sequence[float] = POSE_AUC_THRESHOLDS_DEG
             ) -> list[float]:
    """SuperGlue / LoFTR pose AUC: the area under the recall curve up to each threshold, divided by it.

    With the N errors sorted, the recall curve runs through ``(0, 0)`` and ``(e_i, i / N)`` (linear in between)
    and stays at the last recall below the threshold up to the threshold. Failures (inf, or NaN) count in N and
    never reach the curve, so the AUC lies in [0, 1] and is 1 only if every error is 0.

    Args:
        errors: ``[N]`` per-pair errors (degrees for the pose AUC), N >= 1.
        thresholds: positive upper limits of the integral (same unit).

    Returns:
        One AUC per threshold.

    Raises:
        InputError: no error, or a threshold that is not positive.
    """
    err = np.asarray(errors, dtype=np.float64).reshape(-1)
    if err.size == 0:
        raise InputError("pose_auc: expected at least one error")
    err = np.sort(np.where(np.isnan(err), np.inf, err))
    recall = np.arange(1, err.size + 1, dtype=np.float64) / err.size
    out = []
    for threshold in thresholds:
        if not threshold > 0:
            raise InputError(f"pose_auc: expected positive thresholds, got {threshold}")
        below = int(np.searchsorted(err, threshold, side="left"))  # errors strictly below the threshold
        x = np.concatenate([[0.0], err[:below], [threshold]])
        y = np.concatenate([[0.0], recall[:below], [recall[below - 1] if below else 0.0]])
        out.append(float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0) / threshold))  # trapezoids
    return out


def _median(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(np.median(values)) if values.size else float("nan")


def _percentile(values: np.ndarray, q: float) -> float:
    values = values[np.isfinite(values)]
    return float(np.percentile(values, q)) if values.size else float("nan")


def _summary(rows: list[dict[str, float]], ok: np.ndarray, confidence: np.ndarray, diagonals: np.ndarray
             ) -> dict[str, float]:
    col = {k: np.array([r[k] for r in rows], dtype=np.float64) for k in rows[0]}
    n, failures = len(rows), int((~ok).sum())
    accepted = (col["trans_err_m"] < T_THRESHOLD_M) & (col["rot_err_deg"] < R_THRESHOLD_DEG)
    auc = confidence_auc(confidence[ok], accepted[ok], failures) if ok.any() else 0.0
    out = {"num_pairs": n, "num_failures": failures,
           "median_trans_err_m": _median(col["trans_err_m"]), "median_rot_err_deg": _median(col["rot_err_deg"]),
           "median_trans_dir_err_deg": _median(col["trans_dir_err_deg"]),
           "scale_ratio_median": _percentile(col["scale_ratio"], 50.0),
           "scale_ratio_p10": _percentile(col["scale_ratio"], 10.0),
           "scale_ratio_p90": _percentile(col["scale_ratio"], 90.0),
           "median_vcre_px": _median(col["vcre_px"]),
           "prec_pose_25cm_5deg": int(accepted.sum()) / n, "auc_pose_25cm_5deg": auc}
    for frac in VCRE_DIAGONAL_FRACTIONS:
        out[f"prec_vcre_{round(frac * 100)}pct_diag"] = int((col["vcre_px"] < frac * diagonals).sum()) / n
    vcre_ok = col["vcre_px"] < VCRE_AUC_DIAGONAL_FRACTION * diagonals
    out[f"auc_vcre_{round(VCRE_AUC_DIAGONAL_FRACTION * 100)}pct_diag"] = (
        confidence_auc(confidence[ok], vcre_ok[ok], failures) if ok.any() else 0.0)
    angular = angular_pose_error_deg(col["rot_err_deg"], col["trans_dir_err_deg"])
    for threshold, value in zip(POSE_AUC_THRESHOLDS_DEG, pose_auc(angular, POSE_AUC_THRESHOLDS_DEG)):
        out[f"auc_pose_{threshold:g}deg"] = value
    return out


def summarize_poses(estimates: Sequence[np.ndarray | None], ground_truths: Sequence[np.ndarray],
                    K: Sequence[np.ndarray], sizes: Sequence[tuple[float, float]],
                    confidences: Sequence[float] | None = None) -> dict:
    """Summary metrics of the estimates and of the identity pose on the same pairs.

    Args:
        estimates: per pair ``[4, 4]`` ``T_0to1`` (metres) or None for a failure.
        ground_truths: per pair ``[4, 4]`` ground-truth ``T_0to1``.
        K: per pair ``[3, 3]`` intrinsics of image 1 (the query), pixels, at the resolution of ``sizes``.
        sizes: per pair ``(W, H)`` of image 1, pixels.
        confidences: per pair confidence (higher = surer; failures' values are ignored); None = all equal.

    Returns:
        ``{key: value for key in KEYS}`` plus ``"identity"``: the same dict for ``T_0to1 = I``.

    Raises:
        InputError: no pair, lengths that differ, or bad shapes.
    """
    n = len(ground_truths)
    if n == 0:
        raise InputError("summarize_poses: expected at least one pair")
    lengths = {"estimates": len(estimates), "K": len(K), "sizes": len(sizes)}
    if confidences is not None:
        lengths["confidences"] = len(confidences)
    bad = {k: v for k, v in lengths.items() if v != n}
    if bad:
        raise InputError(f"summarize_poses: expected {n} entries (one per ground truth), got {bad}")
    if any(len(s) != 2 for s in sizes):
        raise InputError("sizes: expected (W, H) per pair")
    diagonals = np.array([np.hypot(float(w), float(h)) for w, h in sizes])
    conf = np.ones(n) if confidences is None else np.asarray(confidences, dtype=np.float64).reshape(n)
    rows = [pair_errors(e, g, k, w, h) for e, g, k, (w, h) in zip(estimates, ground_truths, K, sizes)]
    ok = np.array([np.isfinite(r["trans_err_m"]) for r in rows])
    eye = np.eye(4)
    identity_rows = [pair_errors(eye, g, k, w, h) for g, k, (w, h) in zip(ground_truths, K, sizes)]
    return {**_summary(rows, ok, conf, diagonals),
            "identity": _summary(identity_rows, np.ones(n, dtype=bool), np.ones(n), diagonals)}


def flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Nested metric dicts -> one level with ``/``-joined keys (for scalar loggers such as TensorBoard)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out
