"""The pose covariance in the published messages (issue 9 item 6): relative pose, map pose, RelativePose, bag."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

typesys = pytest.importorskip("rosbags.typesys")

from mickey_ros.cli import read_image  # noqa: E402
from mickey_ros.errors import InputError  # noqa: E402
from mickey_ros.geometry.se3 import make_T, quat_wxyz_to_matrix  # noqa: E402
from mickey_ros.model.default import load_default_network  # noqa: E402
from mickey_ros.pipeline import Relocalizer, RelativePose  # noqa: E402
from mickey_ros.ros import builders  # noqa: E402
from mickey_ros.ros.interfaces import register_in_typestore  # noqa: E402
from mickey_ros.ros.outputs import OutputFrames, pose_messages  # noqa: E402

TS = typesys.get_typestore(typesys.Stores.ROS2_HUMBLE)
register_in_typestore(TS)
TYPES = builders.MessageTypes.from_typestore(TS)
RP = TS.types["mickey_ros_msgs/msg/RelativePose"]
DEMO = Path(__file__).resolve().parents[2] / "mickey_ros" / "data" / "demo"
K = np.array([[220.0, 0.0, 146.5], [0.0, 220.0, 111.5], [0.0, 0.0, 1.0]])


def _cov(seed=0):
    A = np.random.default_rng(seed).normal(size=(6, 6))
    return A @ A.T * 1e-3 + np.eye(6) * 1e-4


def _result(covariance):
    T = make_T(quat_wxyz_to_matrix([0.9, 0.1, -0.3, 0.2]), [0.4, -0.1, 1.5])
    return RelativePose(success=True, reason="", T_0to1=T, confidence=0.5, num_inliers=10, num_matches=20,
                        kpts3d0=np.ones((20, 3)), kpts3d1=np.ones((20, 3)), inliers=np.ones(20, bool),
                        covariance=covariance)


def test_relative_map_and_full_messages_carry_the_covariance():
    C = _cov()
    R_map = quat_wxyz_to_matrix([0.7, 0.0, 0.7, 0.1])
    anchor = builders.Anchor("map", make_T(R_map, [1.0, 2.0, 0.5]))
    frames = OutputFrames("cam0", 10, "cam1", 11)
    out = pose_messages(TYPES, frames, _result(C), builders.TfNaming(), anchor=anchor, clouds=False,
                        relative_pose_class=RP)
    np.testing.assert_array_equal(np.asarray(out.pose.pose.covariance).reshape(6, 6), C)
    np.testing.assert_array_equal(np.asarray(out.full.pose.covariance).reshape(6, 6), C)
    B = np.kron(np.eye(2), R_map / np.linalg.norm(R_map[:, 0]))
    np.testing.assert_allclose(np.asarray(out.map_pose.pose.covariance).reshape(6, 6), B @ C @ B.T, atol=1e-12)
    # unknown covariance: -1 in element 0 everywhere
    out = pose_messages(TYPES, frames, _result(None), builders.TfNaming(), anchor=anchor, clouds=False,
                        relative_pose_class=RP)
    for msg in (out.pose.pose, out.map_pose.pose, out.full.pose):
        assert msg.covariance[0] == -1.0 and not np.any(np.asarray(msg.covariance)[1:])


def test_failed_result_has_unknown_covariance():
    failed = RelativePose(success=False, reason="too few matches", T_0to1=np.eye(4), covariance=_cov())
    msg = builders.relative_pose_message(TYPES, RP, builders.header(TYPES, 0, "cam0"), "cam1", 0, failed)
    assert msg.pose.covariance[0] == -1.0


@pytest.fixture(scope="module")
def demo():
    return read_image(DEMO / "im0.png", "im0"), read_image(DEMO / "im1.png", "im1")


def test_relocalizer_gives_a_scaled_positive_definite_covariance(demo):
    net = load_default_network()
    res = Relocalizer(net, seed=0, covariance_scale=1.0).estimate(demo[0], K, demo[1], K)
    res3 = Relocalizer(net, seed=0, covariance_scale=3.0).estimate(demo[0], K, demo[1], K)
    assert res.success and res.covariance.shape == (6, 6)
    np.testing.assert_allclose(res.covariance, res.covariance.T)
    assert np.linalg.eigvalsh(res.covariance)[0] > 0
    np.testing.assert_allclose(res3.covariance, 3.0 * res.covariance)
    for bad in (0.0, -1.0, float("nan"), "2", True):
        with pytest.raises(InputError, match=r"covariance_scale: expected a positive number, got"):
            Relocalizer(net, covariance_scale=bad)
