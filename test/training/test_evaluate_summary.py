"""evaluate.py's dataset evaluation reports the pose summary beside the Map-free metrics, with the identity floor."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import DEMO
from mickey_ros.geometry.metrics import vcre
from mickey_ros.geometry.pose_eval import KEYS
from mickey_ros.geometry.se3 import make_T
from mickey_ros.mapfree import KEY_AUC_POSE, KEY_AUC_VCRE, KEY_PREC_POSE, KEY_PREC_VCRE
from training.evaluate import evaluate_dataset

K_DEMO = np.array([[220.0, 0.0, 146.5], [0.0, 220.0, 111.5], [0.0, 0.0, 1.0]])


def _rot(axis: str, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    i, j = {"x": (1, 2), "y": (2, 0)}[axis]
    R = np.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def _dataset():
    """The demo images under two hand-made ground truths: a large motion and a small one."""
    from mickey_ros.cli import read_image

    ims = [torch.from_numpy(read_image(DEMO / f"im{i}.png", "image")).permute(2, 0, 1).float() / 255 for i in (0, 1)]
    gts = [make_T(_rot("y", 10.0), [0.6, 0.0, 0.8]), make_T(_rot("x", 2.0), [0.1, 0.05, 0.0])]
    K = torch.from_numpy(K_DEMO).float()
    return [{"image0": ims[0], "image1": ims[1], "K_color0": K, "K_color1": K, "Kori_color0": K, "Kori_color1": K,
             "T_0to1": torch.from_numpy(T).float(), "pair_id": i, "scene_id": "s00000",
             "pair_names": ("seq0/frame_00000.jpg", f"seq1/frame_{5 * i:05d}.jpg")} for i, T in enumerate(gts)], gts


def test_evaluate_dataset_reports_the_summary_and_the_identity_floor(tiny_net):
    data, gts = _dataset()
    metrics, _ = evaluate_dataset(tiny_net, data, device="cpu", seed=0)
    assert {KEY_PREC_POSE, KEY_AUC_VCRE} <= set(metrics)  # the Map-free keys stay
    assert set(KEYS) <= set(metrics) and set(metrics["identity"]) == set(KEYS)
    assert metrics["num_pairs"] == 2
    # one implementation: the summary's precisions and AUC agree with the Map-free aggregation of the same pairs
    assert metrics["prec_pose_25cm_5deg"] == pytest.approx(metrics[KEY_PREC_POSE], abs=1e-12)
    assert metrics["auc_pose_25cm_5deg"] == pytest.approx(metrics[KEY_AUC_POSE], abs=1e-12)
    ident = metrics["identity"]
    gts = [T.astype(np.float32).astype(np.float64) for T in gts]  # the items hold float32 poses
    small = math.hypot(0.1, 0.05)
    assert ident["num_failures"] == 0
    assert ident["median_trans_err_m"] == pytest.approx((1.0 + small) / 2, abs=1e-6)  # |t_gt| of each pair
    assert ident["median_rot_err_deg"] == pytest.approx((10.0 + 2.0) / 2, abs=1e-5)
    assert ident["prec_pose_25cm_5deg"] == 0.5 and ident["auc_pose_25cm_5deg"] == pytest.approx(0.5, abs=1e-9)
    assert math.isnan(ident["median_trans_dir_err_deg"]) and ident["scale_ratio_median"] == 0.0
    diag = math.hypot(294, 224)
    ident_vcre = [vcre(np.eye(4), T, K_DEMO, 294, 224) for T in gts]
    assert ident["median_vcre_px"] == pytest.approx(float(np.median(ident_vcre)), abs=1e-9)
    assert ident["prec_vcre_10pct_diag"] == sum(v < 0.1 * diag for v in ident_vcre) / 2
    assert ident["prec_vcre_5pct_diag"] == sum(v < 0.05 * diag for v in ident_vcre) / 2
    assert KEY_PREC_VCRE in metrics


class _HostileDataset(list):
    """The demo pairs with an unreadable item and an item whose K cannot belong to its image in between."""

    def __getitem__(self, i):
        if i == 1:
            raise OSError("truncated bag: cannot read message 17")
        return super().__getitem__(i)


def test_a_pair_that_raises_is_a_counted_skip_and_the_run_goes_on(tiny_net):
    data, _ = _dataset()
    bad_k = dict(data[0], K_color1=torch.tensor([[1e9, 0, 147.0], [0, 1e9, 112.0], [0, 0, 1]]))
    hostile = _HostileDataset([data[0], None, bad_k, data[1]])
    metrics, estimates = evaluate_dataset(tiny_net, hostile, device="cpu", seed=0)
    assert metrics["skipped"] == {
        "OSError: truncated bag: cannot read message 17": 1,
        "K1: horizontal field of view 1.68e-05 deg (focal 1e+09 px for 294 px) is outside (1, 179) deg; is K for "
        "this 294x224 image?": 1,
    }
    clean, clean_estimates = evaluate_dataset(tiny_net, data, device="cpu", seed=0)
    assert clean["skipped"] == {} and metrics["num_failures"] == clean["num_failures"]  # summary over good pairs
    assert metrics["median_trans_err_m"] == clean["median_trans_err_m"]
    assert metrics["Estimates for % of frames"] == pytest.approx(clean["Estimates for % of frames"] * 2 / 4)
    assert [e[0] for e in estimates["s00000"]] == [e[0] for e in clean_estimates["s00000"]]


def test_batched_evaluation_equals_one_by_one(tiny_net):
    data, _ = _dataset()
    bad_k = dict(data[0], K_color1=torch.tensor([[1e9, 0, 147.0], [0, 1e9, 112.0], [0, 0, 1]]))
    hostile = _HostileDataset([data[0], None, bad_k, data[1], data[0]])
    one, one_est = evaluate_dataset(tiny_net, hostile, device="cpu", seed=0)
    three, three_est = evaluate_dataset(tiny_net, hostile, device="cpu", seed=0, batch=3)
    assert one["skipped"] and json.dumps(three, sort_keys=True) == json.dumps(one, sort_keys=True)  # NaN-aware
    assert [(n, R.tolist(), t.tolist(), c) for n, R, t, c in three_est["s00000"]] == \
        [(n, R.tolist(), t.tolist(), c) for n, R, t, c in one_est["s00000"]]
    with pytest.raises(Exception, match=r"--batch: expected a positive number of pairs, got 0"):
        evaluate_dataset(tiny_net, hostile, device="cpu", seed=0, batch=0)
