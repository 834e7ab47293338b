"""map_alignment_node in-process with real rclpy: measurements with gross outliers in, map_a -> map_b out."""
from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from mickey_ros.geometry.se3 import invert_T, make_T, matrix_to_quat_wxyz, quat_wxyz_to_matrix, rotation_angle_deg  # noqa: E402
from mickey_ros.ros import builders  # noqa: E402
from test_alignment import _rot  # noqa: E402


def _spin_until(executor, cond, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        executor.spin_once(timeout_sec=0.02)
    return cond()


def _pose_stamped(T, stamp_ns, frame):
    from geometry_msgs.msg import PoseStamped

    msg = PoseStamped()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    msg.header.frame_id = frame
    w, x, y, z = matrix_to_quat_wxyz(T[:3, :3])
    msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z, msg.pose.orientation.w = x, y, z, w
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in T[:3, 3])
    return msg


def _pose_to_T(pose):
    q = pose.orientation
    return make_T(quat_wxyz_to_matrix([q.w, q.x, q.y, q.z]), [pose.position.x, pose.position.y, pose.position.z])


@pytest.fixture()
def graph(ros):
    from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped

    from mickey_ros.ros.map_alignment_node import MapAlignmentNode

    node = MapAlignmentNode(context=ros, parameter_overrides=[Parameter("map_a_frame", value="robot_a/map"),
                                                              Parameter("map_b_frame", value="robot_b/map")])
    tester = rclpy.create_node("alignment_tester", context=ros)
    pubs = {"a": tester.create_publisher(PoseStamped, "camera_pose_a", 50),
            "b": tester.create_publisher(PoseStamped, "camera_pose_b", 50),
            "rel": tester.create_publisher(PoseWithCovarianceStamped, "relative_pose", 50)}
    got = []
    tester.create_subscription(PoseWithCovarianceStamped, "/mickey_map_alignment/map_alignment", got.append, 50)
    executor = SingleThreadedExecutor(context=ros)
    executor.add_node(node)
    executor.add_node(tester)
    assert _spin_until(executor, lambda: all(p.get_subscription_count() for p in pubs.values())
                       and node.pub_alignment.get_subscription_count())
    yield node, tester, pubs, got, executor
    executor.shutdown()
    node.destroy_node()
    tester.destroy_node()


def _send(executor, node, pubs, types, stamp_ns, T_mapa_ca, T_0to1, T_mapb_cb, frame_a="robot_a/map"):
    before = node.stats["measurements"]
    pubs["a"].publish(_pose_stamped(T_mapa_ca, stamp_ns, frame_a))
    pubs["b"].publish(_pose_stamped(T_mapb_cb, stamp_ns, "robot_b/map"))
    assert _spin_until(executor, lambda: len(node.poses["b"]) and node.poses["b"].at(stamp_ns) is not None
                       or node._warned, 10)
    hdr = builders.header(types, stamp_ns, "robot_a/camera_optical_frame")
    pubs["rel"].publish(builders.pose_with_covariance_from_relative_pose(types, hdr, T_0to1))
    assert _spin_until(executor, lambda: node.stats["measurements"] == before + 1)


def test_fuses_measurements_with_25_percent_outliers_into_map_a_to_map_b(graph):
    node, tester, pubs, got, executor = graph
    types = builders.MessageTypes.from_rclpy()
    rng = np.random.default_rng(0)
    T_true = make_T(_rot(rng, 70.0), [12.0, -4.0, 0.5])
    for k in range(40):
        T_mapa_ca = make_T(_rot(rng, 180 * rng.random()), rng.uniform(-10, 10, 3))
        T_mapb_cb = invert_T(T_true) @ T_mapa_ca @ make_T(_rot(rng, 20), rng.uniform(-1, 1, 3))
        T_0to1 = invert_T(T_mapb_cb) @ invert_T(T_true) @ T_mapa_ca
        if k % 4 == 1:  # 25 % gross outliers
            T_0to1 = make_T(_rot(rng, rng.uniform(20, 170)), rng.uniform(-3, 3, 3)) @ T_0to1
        else:
            T_0to1 = make_T(_rot(rng, abs(rng.normal(0, 0.3))), rng.normal(0, 0.02, 3)) @ T_0to1
        _send(executor, node, pubs, types, (k + 1) * 10**9, T_mapa_ca, T_0to1, T_mapb_cb)
    assert _spin_until(executor, lambda: len(got) == node.stats["fusions_ok"] and got)
    last = got[-1]
    assert last.header.frame_id == "robot_a/map" and last.header.stamp.sec == 40
    T = _pose_to_T(last.pose.pose)
    assert rotation_angle_deg(T[:3, :3], T_true[:3, :3]) < 1.0 and np.linalg.norm(T[:3, 3] - T_true[:3, 3]) < 0.05
    cov = np.array(last.pose.covariance).reshape(6, 6)
    assert np.all(np.linalg.eigvalsh(cov) >= 0) and cov[0, 0] > 0
    assert node.stats == {"measurements": 40, "used": 40, "rejected": 0, "fusions_ok": node.stats["fusions_ok"],
                          "last_inliers": 30}
    if importlib.util.find_spec("tf2_ros") is None:
        assert node.tf is None  # TF needs tf2_ros; the message is still published


def test_measurement_without_camera_pose_or_with_wrong_frame_is_ignored_with_one_warning(graph):
    node, tester, pubs, got, executor = graph
    types = builders.MessageTypes.from_rclpy()
    for k in range(3):  # robot A's pose arrives in the wrong frame: nothing can be fused
        _send(executor, node, pubs, types, (k + 1) * 10**9, np.eye(4), np.eye(4), np.eye(4), frame_a="odom")
    assert node.stats["rejected"] == 3 and node.stats["used"] == 0 and got == []
    assert sorted(w.split(":")[0] for w in node._warned) == ["camera_pose_a", "camera_pose_a"]
    assert any("expected frame_id 'robot_a/map', got 'odom'" in w for w in node._warned)
    assert any("no pose within max_pose_gap" in w for w in node._warned)
    for k in range(3, 6):  # the node keeps working once the poses are right
        _send(executor, node, pubs, types, (k + 1) * 10**9, np.eye(4), np.eye(4), np.eye(4))
    assert _spin_until(executor, lambda: got)
    np.testing.assert_allclose(_pose_to_T(got[-1].pose.pose), np.eye(4), atol=1e-9)


def test_set_parameters_rejects_bad_values_with_a_reason_and_leaves_the_node_unchanged(graph):
    node, tester, pubs, got, executor = graph
    before, config = dict(node.params), node.window.config
    for name, value, reason in (
        ("min_confidence", 2.0, ""),  # outside [0, 1] (rclpy's own reason)
        ("min_inliers", 500, "min_inliers: expected at most window (200), got 500"),
        ("map_a_frame", "robot_c/map", "read-only"),  # the fused window belongs to these frames
        ("window", 50, "read-only"),
    ):
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful and result.reason and reason in result.reason, (name, value, result)
    assert node.params == before and node.window.config == config
    assert all(r.successful for r in node.set_parameters([Parameter("min_confidence", value=0.5),
                                                          Parameter("min_inliers", value=5)]))
    assert node.params["min_confidence"] == 0.5
    assert (node.window.config.min_confidence, node.window.config.min_inliers) == (0.5, 5)
