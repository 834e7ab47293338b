"""Pose summary metrics (mickey_ros.geometry.pose_eval) on hand-computed cases, and their identity floor."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mickey_ros.geometry.metrics import vcre
from mickey_ros.geometry.pose_eval import (KEYS, angular_pose_error_deg, direction_error_deg, flatten, pair_errors,
                                           pose_auc, summarize_poses)
from mickey_ros.geometry.se3 import make_T

K = np.array([[500.0, 0.0, 270.0], [0.0, 500.0, 360.0], [0.0, 0.0, 1.0]])
SIZE = (540, 720)  # diagonal 900 px: 5 % = 45 px, 10 % = 90 px


def _rot(axis: str, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    R = np.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


R_GT = _rot("y", 10.0)
T_GT = np.array([0.6, 0.0, 0.8])  # |t_gt| = 1 m
GT = make_T(R_GT, T_GT)
EST = {
    "half_scale": make_T(R_GT, 0.5 * T_GT),  # centre error |t_est - t_gt| = 0.5 m, rot 0, direction 0, scale 0.5
    "rot3": make_T(_rot("z", 3.0) @ R_GT, T_GT),  # rot 3 deg; centre error 2 sin(1.5 deg) * 0.6 (t's part off z)
    "failure": None,
    "perpendicular": make_T(R_GT, np.array([-0.8, 0.0, 0.6])),  # direction 90 deg, scale 1, centre error sqrt(2)
}


def test_pair_errors_by_hand():
    e = pair_errors(EST["half_scale"], GT, K, *SIZE)
    assert e["trans_err_m"] == pytest.approx(0.5, abs=1e-9) and e["rot_err_deg"] == pytest.approx(0.0, abs=1e-6)
    assert e["trans_dir_err_deg"] == pytest.approx(0.0, abs=1e-6) and e["scale_ratio"] == pytest.approx(0.5, abs=1e-12)
    e = pair_errors(EST["rot3"], GT, K, *SIZE)
    assert e["rot_err_deg"] == pytest.approx(3.0, abs=1e-9)
    assert e["trans_err_m"] == pytest.approx(2 * math.sin(math.radians(1.5)) * 0.6, abs=1e-9)
    assert e["scale_ratio"] == pytest.approx(1.0, abs=1e-12)
    e = pair_errors(EST["perpendicular"], GT, K, *SIZE)
    assert e["trans_dir_err_deg"] == pytest.approx(90.0, abs=1e-9) and e["trans_err_m"] == pytest.approx(2 ** 0.5)
    e = pair_errors(None, GT, K, *SIZE)
    assert e["trans_err_m"] == e["rot_err_deg"] == e["trans_dir_err_deg"] == e["vcre_px"] == math.inf
    assert math.isnan(e["scale_ratio"])
    nan_pose = np.full((4, 4), np.nan)
    assert pair_errors(nan_pose, GT, K, *SIZE)["trans_err_m"] == math.inf  # non-finite estimate = failure
    e = pair_errors(GT, GT, K, *SIZE)
    assert e["vcre_px"] == pytest.approx(0.0, abs=1e-9) and e["trans_err_m"] == pytest.approx(0.0, abs=1e-12)


def test_direction_error_is_undefined_for_zero_vectors():
    assert direction_error_deg([1, 0, 0], [0, 0, 2]) == pytest.approx(90.0, abs=1e-12)
    assert direction_error_deg([1, 0, 0], [-3, 0, 0]) == pytest.approx(180.0, abs=1e-12)
    assert math.isnan(direction_error_deg([0, 0, 0], [1, 0, 0]))


def test_summary_by_hand_with_a_failure_counted_as_infinite_error():
    names = ["half_scale", "rot3", "failure", "perpendicular"]
    conf = [10.0, 5.0, 99.0, 1.0]  # the failure's confidence is ignored
    out = summarize_poses([EST[n] for n in names], [GT] * 4, [K] * 4, [SIZE] * 4, conf)
    assert set(out) == set(KEYS) | {"identity"} and set(out["identity"]) == set(KEYS)
    assert out["num_pairs"] == 4 and out["num_failures"] == 1
    rot3_trans = 2 * math.sin(math.radians(1.5)) * 0.6
    # sorted with the failure as +inf: [0.0314, 0.5, 1.414, inf] -> (0.5 + 1.414) / 2
    assert out["median_trans_err_m"] == pytest.approx((0.5 + 2 ** 0.5) / 2, abs=1e-9)
    assert out["median_rot_err_deg"] == pytest.approx(1.5, abs=1e-6)  # [0, 0, 3, inf]
    assert out["median_trans_dir_err_deg"] == pytest.approx(45.0, abs=1e-6)  # [0, 0, 90, inf]
    assert out["scale_ratio_median"] == pytest.approx(1.0, abs=1e-12)  # [0.5, 1, 1]: failures have no scale
    assert out["scale_ratio_p10"] == pytest.approx(0.6, abs=1e-12)  # 0.5 + 0.2 * (1 - 0.5)
    assert out["scale_ratio_p90"] == pytest.approx(1.0, abs=1e-12)
    assert rot3_trans < 0.25
    assert out["prec_pose_25cm_5deg"] == 0.25  # only rot3 is accepted; the failure stays in the denominator
    # by confidence: half_scale (no), rot3 (yes), perpendicular (no); recall steps of 1/4 (failure included)
    assert out["auc_pose_25cm_5deg"] == pytest.approx(0.25 * 0 + 0.25 * (1 / 2) + 0.25 * (1 / 3), abs=1e-9)
    vc = [vcre(EST[n], GT, K, *SIZE) for n in ("half_scale", "rot3", "perpendicular")]
    assert out["prec_vcre_5pct_diag"] == sum(v < 45.0 for v in vc) / 4
    assert out["prec_vcre_10pct_diag"] == sum(v < 90.0 for v in vc) / 4
    assert out["median_vcre_px"] == pytest.approx(float(np.median(vc + [math.inf])), abs=1e-9)


def test_identity_floor_by_hand_from_the_ground_truth():
    out = summarize_poses([EST["half_scale"]] * 2, [GT] * 2, [K] * 2, [SIZE] * 2)["identity"]
    assert out["num_failures"] == 0
    assert out["median_trans_err_m"] == pytest.approx(1.0, abs=1e-12)  # |c_gt| = |t_gt|
    assert out["median_rot_err_deg"] == pytest.approx(10.0, abs=1e-9)
    assert math.isnan(out["median_trans_dir_err_deg"])  # t = 0: no direction
    assert out["scale_ratio_median"] == out["scale_ratio_p10"] == out["scale_ratio_p90"] == 0.0
    assert out["prec_pose_25cm_5deg"] == 0.0 and out["auc_pose_25cm_5deg"] == 0.0
    assert out["median_vcre_px"] == pytest.approx(vcre(np.eye(4), GT, K, *SIZE), abs=1e-9)
    small = make_T(_rot("x", 2.0), [0.1, 0.05, 0.0])  # a small motion: the identity passes 25 cm / 5 deg
    out = summarize_poses([None, None], [small, GT], [K, K], [SIZE, SIZE])
    assert out["num_failures"] == 2 and out["prec_pose_25cm_5deg"] == 0.0 and out["auc_pose_25cm_5deg"] == 0.0
    assert out["median_trans_err_m"] == math.inf and math.isnan(out["scale_ratio_median"])
    ident = out["identity"]
    assert ident["median_trans_err_m"] == pytest.approx((math.hypot(0.1, 0.05) + 1.0) / 2, abs=1e-12)
    assert ident["median_rot_err_deg"] == pytest.approx(6.0, abs=1e-9)  # (2 + 10) / 2
    assert ident["prec_pose_25cm_5deg"] == 0.5 and ident["auc_pose_25cm_5deg"] == pytest.approx(0.5, abs=1e-9)


def test_bad_input_and_flatten():
    with pytest.raises(Exception, match="expected at least one pair"):
        summarize_poses([], [], [], [])
    with pytest.raises(Exception, match=r"expected 2 entries \(one per ground truth\), got \{'estimates': 1\}"):
        summarize_poses([None], [GT, GT], [K, K], [SIZE, SIZE])
    with pytest.raises(Exception, match="T_gt: expected a 4x4 transform"):
        pair_errors(None, np.eye(3), K, *SIZE)
    assert flatten({"a": 1.0, "identity": {"b": 2.0}}) == {"a": 1.0, "identity/b": 2.0}


def test_pose_auc_by_hand():
    # errors [1, 3, 8, inf] (one failure): recall curve (0,0) (1,.25) (3,.5) (8,.75), flat to the threshold
    assert pose_auc([8.0, math.inf, 1.0, 3.0], (5.0, 10.0, 20.0)) == pytest.approx(
        [(1 * 0.125 + 2 * 0.375 + 2 * 0.5) / 5,  # 0.375
         (1 * 0.125 + 2 * 0.375 + 5 * 0.625 + 2 * 0.75) / 10,  # 0.55
         (1 * 0.125 + 2 * 0.375 + 5 * 0.625 + 12 * 0.75) / 20], abs=1e-12)  # 0.65
    assert pose_auc([0.0, 0.0]) == [1.0, 1.0, 1.0]
    assert pose_auc([math.nan, 5.0], (5.0,)) == [0.0]  # NaN = failure; an error at the threshold is not below it
    assert pose_auc([2.0], (4.0,)) == [pytest.approx((2 * 0.5 + 2 * 1.0) / 4)]  # ramp to (2, 1), flat to 4
    with pytest.raises(Exception, match="expected at least one error"):
        pose_auc([])
    with pytest.raises(Exception, match="expected positive thresholds, got 0"):
        pose_auc([1.0], (0,))


def test_angular_pose_error_is_the_max_and_undefined_direction_fails():
    out = angular_pose_error_deg([3.0, 0.5, math.inf, 1.0], [1.0, 7.0, 2.0, math.nan])
    assert out.tolist() == [3.0, 7.0, math.inf, math.inf]


def test_summary_aucs_by_hand():
    names = ["half_scale", "rot3", "failure", "perpendicular"]
    out = summarize_poses([EST[n] for n in names], [GT] * 4, [K] * 4, [SIZE] * 4, [10.0, 5.0, 99.0, 1.0])
    # max(rot, direction): half_scale 0, rot3 3 (t exact), perpendicular 90, failure inf -> sorted [0, 3, 90, inf]
    assert out["auc_pose_5deg"] == pytest.approx((3 * 0.375 + 2 * 0.5) / 5, abs=1e-12)  # 0.425
    assert out["auc_pose_10deg"] == pytest.approx((3 * 0.375 + 7 * 0.5) / 10, abs=1e-12)
    assert out["auc_pose_20deg"] == pytest.approx((3 * 0.375 + 17 * 0.5) / 20, abs=1e-12)
    vc = {n: vcre(EST[n], GT, K, *SIZE) for n in ("half_scale", "rot3", "perpendicular")}
    assert vc["half_scale"] < 90 and vc["rot3"] < 90 < vc["perpendicular"]  # 65, 8 and 222 px
    # by confidence: half_scale (yes), rot3 (yes), perpendicular (no); recall steps of 1/4 (failure included)
    assert out["auc_vcre_10pct_diag"] == pytest.approx(0.25 * 1 + 0.25 * 1 + 0.25 * (2 / 3), abs=1e-9)
    ident = out["identity"]  # no direction: every angular error is infinite; VCRE 198 px > 90 px
    assert ident["auc_pose_5deg"] == ident["auc_pose_20deg"] == 0.0 and ident["auc_vcre_10pct_diag"] == 0.0
    small = make_T(_rot("x", 2.0), [0.1, 0.05, 0.0])
    ident = summarize_poses([None], [small], [K], [SIZE])["identity"]
    assert ident["prec_vcre_10pct_diag"] == 1.0 and ident["auc_vcre_10pct_diag"] == 1.0  # equal confidences
