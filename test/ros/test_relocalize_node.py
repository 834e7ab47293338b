"""The relocalize node in-process with real rclpy (PyPI wheels): synthetic pairs in, pose and clouds out."""
from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

import cv2  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from conftest import DEMO  # noqa: E402

K = [220.0, 0, 146.5, 0, 220.0, 111.5, 0, 0, 1]


def _make_nodes(context, tiny_net, **params):
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from mickey_ros.ros.relocalize_node import RelocalizeNode

    # generous max_age: a loaded CI machine must not turn test pairs stale; no warm-up (tests are timed by pairs)
    params = {"max_age": 60.0, "warmup": False, **params}
    overrides = [Parameter("device", value="cpu"), Parameter("reliability", value="reliable"),
                 *[Parameter(k, value=v) for k, v in params.items()]]
    node = RelocalizeNode(net=tiny_net, context=context, parameter_overrides=overrides)
    tester = rclpy.create_node("tester", context=context)
    pubs = {name: tester.create_publisher(t, name, 10) for name, t in
            (("image0", Image), ("camera_info0", CameraInfo), ("image1", Image), ("camera_info1", CameraInfo))}
    got: dict[str, list] = {"pose": [], "cloud0": [], "cloud1": []}
    tester.create_subscription(PoseWithCovarianceStamped, "/mickey_relocalizer/relative_pose",
                               lambda m: got["pose"].append(m), 10)
    tester.create_subscription(PointCloud2, "/mickey_relocalizer/keypoints0", lambda m: got["cloud0"].append(m), 10)
    tester.create_subscription(PointCloud2, "/mickey_relocalizer/keypoints1", lambda m: got["cloud1"].append(m), 10)
    from std_msgs.msg import UInt32

    got.update(inliers=[], diagnostics=[], full=[])
    tester.create_subscription(UInt32, "/mickey_relocalizer/num_inliers", lambda m: got["inliers"].append(m), 10)
    if node.pub_diag is not None:
        from diagnostic_msgs.msg import DiagnosticArray

        tester.create_subscription(DiagnosticArray, "/diagnostics", lambda m: got["diagnostics"].append(m), 10)
    if node.relative_pose_class is not None:
        tester.create_subscription(node.relative_pose_class, "/mickey_relocalizer/relative_pose_full",
                                   lambda m: got["full"].append(m), 10)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    executor.add_node(node)
    executor.add_node(tester)
    return node, tester, pubs, got, executor


def _publish_pair(tester, pubs, stamp, k1=K, encoding1="rgb8", info_width1=294, d1=(0.0,) * 5, info1=True):
    from sensor_msgs.msg import CameraInfo, Image

    for cam, path, k, enc, width, d in (("0", "im0.png", K, "rgb8", 294, (0.0,) * 5),
                                        ("1", "im1.png", k1, encoding1, info_width1, d1)):
        rgb = cv2.imread(str(DEMO / path))[:, :, ::-1]
        img = Image(height=224, width=294, encoding=enc, step=294 * 3, data=rgb.tobytes())
        img.header.stamp, img.header.frame_id = stamp, f"cam{cam}_optical_frame"
        info = CameraInfo(height=224, width=width, distortion_model="plumb_bob", d=list(d), k=k)
        info.header = img.header
        pubs[f"image{cam}"].publish(img)
        if cam == "0" or info1:
            pubs[f"camera_info{cam}"].publish(info)


def _wait_connected(executor, node, tester, pubs):
    """Both directions matched (else the first messages are lost to discovery)."""
    out = [p for p in (node.pub_pose, node.pub_cloud0, node.pub_cloud1, node.pub_inliers, node.pub_diag, node.pub_full)
           if p is not None]
    assert _spin_until(executor, lambda: all(tester.count_subscribers(t) for t in pubs)
                       and all(p.get_subscription_count() for p in out), 20)


def _spin_until(executor, cond, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        executor.spin_once(timeout_sec=0.05)
    return cond()


def test_node_publishes_pose_and_clouds_with_frames_and_stamps(ros, tiny_net):
    node, tester, pubs, got, executor = _make_nodes(ros, tiny_net)
    try:
        _wait_connected(executor, node, tester, pubs)
        stamp = node.get_clock().now().to_msg()
        _publish_pair(tester, pubs, stamp)
        assert _spin_until(executor, lambda: got["pose"] and got["cloud0"] and got["cloud1"])
        pose, cloud0, cloud1 = got["pose"][0], got["cloud0"][0], got["cloud1"][0]
        assert pose.header.frame_id == "cam0_optical_frame" and pose.header.stamp == stamp
        assert cloud0.header.frame_id == "cam0_optical_frame" and cloud1.header.frame_id == "cam1_optical_frame"
        assert [f.name for f in cloud0.fields] == ["x", "y", "z", "rgb"] and cloud0.width > 0
        assert node.stats["succeeded"] == 1
        # the values: the API's answer on the same images, K and seed, as the pose of camera 1 in camera 0
        from mickey_ros import Relocalizer
        from mickey_ros.geometry.se3 import make_T, quat_wxyz_to_matrix

        rgb = [cv2.imread(str(DEMO / f"im{i}.png"))[:, :, ::-1].copy() for i in (0, 1)]
        Km = np.array(K).reshape(3, 3)
        expected = Relocalizer(tiny_net, device="cpu", seed=0).estimate(rgb[0], Km, rgb[1], Km)

        def T_of(p):
            q = p.orientation
            return make_T(quat_wxyz_to_matrix([q.w, q.x, q.y, q.z]), [p.position.x, p.position.y, p.position.z])

        np.testing.assert_allclose(T_of(pose.pose.pose), np.linalg.inv(expected.T_0to1), atol=1e-9)
        assert cloud0.width == cloud1.width == expected.num_matches
        assert _spin_until(executor, lambda: got["inliers"] and (got["diagnostics"] or node.pub_diag is None))
        assert [m.data for m in got["inliers"]] == [expected.num_inliers]
        if node.pub_diag is not None:
            from diagnostic_msgs.msg import DiagnosticStatus

            (status,) = got["diagnostics"][-1].status
            values = {kv.key: kv.value for kv in status.values}
            assert status.level == DiagnosticStatus.OK and status.message == "ok"
            assert values["succeeded"] == "1" and values["last_inliers"] == str(expected.num_inliers)
        # RelativePose goes on the live graph only when mickey_ros_msgs is built (not pip-installable here)
        if importlib.util.find_spec("mickey_ros_msgs") is None:
            assert node.pub_full is None and node.relative_pose_class is None
        else:
            assert _spin_until(executor, lambda: got["full"])
            full = got["full"][0]
            np.testing.assert_allclose(T_of(full.pose.pose), np.linalg.inv(expected.T_0to1), atol=1e-9)
            assert (full.num_inliers, full.num_matches) == (expected.num_inliers, expected.num_matches)
    finally:
        executor.shutdown()
        node.destroy_node()
        tester.destroy_node()


@pytest.mark.parametrize(
    ("bad", "warning"),
    [
        (dict(k1=[0.0] * 9), "camera_info1: expected focal lengths fx > 0"),
        (dict(encoding1="yuv422"), "image1: unsupported encoding 'yuv422'"),
        (dict(info_width1=320), "camera_info1: CameraInfo describes 320x224 images"),
        (dict(d1=(-0.2, 0.05, 0.0, 0.0, 0.0)), "camera_info1: non-zero distortion"),
    ],
)
def test_bad_input_publishes_nothing_warns_once_and_node_keeps_running(ros, tiny_net, bad, warning, capfd):
    node, tester, pubs, got, executor = _make_nodes(ros, tiny_net)
    try:
        _wait_connected(executor, node, tester, pubs)
        capfd.readouterr()  # start-up lines are not this test's business
        for k in (1, 2):  # pair by pair: each one rejected before the next is sent
            _publish_pair(tester, pubs, node.get_clock().now().to_msg(), **bad)
            assert _spin_until(executor, lambda: node.stats["rejected"] == k), node.stats
        assert got["pose"] == []
        _publish_pair(tester, pubs, node.get_clock().now().to_msg())  # the next good pair still works
        assert _spin_until(executor, lambda: got["pose"])
        # the log (rcutils writes to stderr, or stdout with RCUTILS_LOGGING_USE_STDOUT): one warning naming the
        # input, not one per pair
        captured = capfd.readouterr()
        warnings = [line for line in (captured.err + captured.out).splitlines() if "WARN" in line]
        assert len(warnings) == 1 and warning in warnings[0], warnings
    finally:
        executor.shutdown()
        node.destroy_node()
        tester.destroy_node()


def test_missing_camera_info_never_pairs(ros, tiny_net):
    node, tester, pubs, got, executor = _make_nodes(ros, tiny_net)
    try:
        _wait_connected(executor, node, tester, pubs)
        for _ in range(3):
            _publish_pair(tester, pubs, node.get_clock().now().to_msg(), info1=False)
            _spin_until(executor, lambda: False, 0.2)
        assert _spin_until(executor, lambda: node.sync.pending("image1") == 3 and node.sync.pending("info0") == 3, 20)
        assert node.stats["received_pairs"] == 0 and got["pose"] == []
        assert node.sync.pending("info1") == 0
    finally:
        executor.shutdown()
        node.destroy_node()
        tester.destroy_node()


def test_camera_info_that_stops_coming_is_replaced_by_the_cached_one_and_counted(ros, tiny_net):
    from node_harness import Harness

    # camera 1's driver publishes one CameraInfo and then none: its later images use that one once they have
    # waited one frame (the third pair's image still waits), counted in /diagnostics' info_substituted
    h = Harness(ros, tiny_net)
    try:
        h.wait_connected()
        base = h.now_ns()
        for i, pairs in enumerate((1, 1, 2)):  # the second pair leaves when the third image of camera 1 arrives
            h.publish_pair(base + i * 100_000_000, info1=i == 0)
            h.spin_for(0.5)
            assert h.spin_until(lambda: h.node.stats["received_pairs"] == pairs, 60), h.node.stats
        assert h.spin_until(lambda: h.node.stats["succeeded"] == 2 and len(h.got["diagnostics"]) >= 2)
        assert h.node.stats["received_pairs"] == 2 and h.node.sync.pending("image1") == 1
        (status,) = h.got["diagnostics"][-1].status
        assert {kv.key: kv.value for kv in status.values}["info_substituted"] == "1"
    finally:
        h.close()


def test_publishing_faster_than_inference_drops_and_counts(ros, tiny_net):
    import threading

    node, tester, pubs, got, executor = _make_nodes(ros, tiny_net)
    entered, release = threading.Event(), threading.Event()
    real_estimate = node.reloc.estimate

    def held_estimate(*args, **kwargs):  # the first inference waits until the test has sent every pair
        entered.set()
        assert release.wait(120)
        return real_estimate(*args, **kwargs)

    node.reloc.estimate = held_estimate
    try:
        _wait_connected(executor, node, tester, pubs)
        stamps = []
        for k in range(1, 13):
            stamps.append(node.get_clock().now().to_msg())
            _publish_pair(tester, pubs, stamps[-1])
            assert _spin_until(executor, lambda: node.stats["received_pairs"] == k), node.stats
            if k == 1:
                assert entered.wait(60)  # the worker holds pair 1; pairs 2..12 meet a busy worker
        s = node.stats
        assert s["dropped_replaced"] == 10 and s["processed"] == 0  # the slot keeps only the newest pair: no backlog
        release.set()
        assert _spin_until(executor, lambda: len(got["pose"]) == 2 and s["processed"] == 2, 120), s
        assert [p.header.stamp for p in got["pose"]] == [stamps[0], stamps[-1]]  # the first and the newest
        assert s["received_pairs"] == 12 and s["dropped_replaced"] == 10 and node._slot is None
        assert node.sync.pending("image0") <= node.sync.queue_size
    finally:
        release.set()
        executor.shutdown()
        node.destroy_node()
        tester.destroy_node()


def test_stale_pairs_are_dropped_and_counted(ros, tiny_net):
    node, tester, pubs, got, executor = _make_nodes(ros, tiny_net, max_age=0.5)
    try:
        _wait_connected(executor, node, tester, pubs)
        old = node.get_clock().now().nanoseconds - 5 * 10**9  # 5 s in the past
        _publish_pair(tester, pubs, Time(sec=old // 10**9, nanosec=old % 10**9))
        assert _spin_until(executor, lambda: node.stats["dropped_stale"] == 1)
        assert got["pose"] == [] and node.stats["processed"] == 0
    finally:
        executor.shutdown()
        node.destroy_node()
        tester.destroy_node()


def test_set_parameters_rejects_bad_values_with_a_reason_and_leaves_the_node_unchanged(ros, tiny_net):
    node, tester, pubs, got, executor = _make_nodes(ros, tiny_net)
    try:
        before = dict(node.params)
        naming, slop_ns = node.tf_naming, node.sync.slop_ns
        for name, value, reason in (
            ("slop", -1.0, ""),  # outside the declared range (rclpy's own reason)
            ("slop", "fast", ""),  # wrong type
            ("reliability", "best_effort", "read-only"),  # fixed at start-up: the subscriptions exist
            ("device", "cuda", "read-only"),
            ("tf_mode", "map", "tf_mode: expected one of none, relative, got 'map'"),
            ("child_frame", "/cam1", "child_frame: expected a TF frame id without a leading '/'"),
            ("child_frame_suffix", "", "child_frame_suffix: expected a non-empty suffix while child_frame is empty"),
        ):
            result = node.set_parameters([Parameter(name, value=value)])[0]
            assert not result.successful and result.reason and reason in result.reason, (name, value, result)
        assert node.params == before and node.tf_naming == naming and node.sync.slop_ns == slop_ns
        assert node.get_parameter("tf_mode").value == "relative" and node.get_parameter("slop").value == 0.05

        good = node.set_parameters([Parameter("slop", value=0.2), Parameter("tf_mode", value="none"),
                                    Parameter("seed", value=7)])
        assert all(r.successful for r in good)
        assert node.params["slop"] == 0.2 and node.sync.slop_ns == 200_000_000 and node.reloc.seed == 7
        assert node.tf_naming.mode == "none"
        # an empty suffix is fine once the child is named explicitly (set together, checked together)
        both = node.set_parameters_atomically([Parameter("child_frame", value="cam1_estimate"),
                                               Parameter("child_frame_suffix", value="")])
        assert both.successful and node.tf_naming.child("cam1_optical_frame") == "cam1_estimate"
    finally:
        executor.shutdown()
        node.destroy_node()
        tester.destroy_node()


class _FakeBroadcaster:
    """Stands in for tf2_ros.TransformBroadcaster (not pip-installable): keeps what the node sends."""

    def __init__(self):
        self.sent = []

    def sendTransform(self, transforms):  # noqa: N802 - tf2_ros's name
        self.sent.extend(transforms)


def test_tf_modes_name_the_frames_and_never_reparent_camera1(ros, tiny_net):
    node, tester, pubs, got, executor = _make_nodes(ros, tiny_net)
    node.tf = _FakeBroadcaster()
    try:
        _wait_connected(executor, node, tester, pubs)
        frames = []
        for changes in ({}, {"child_frame_suffix": "_est"}, {"child_frame": "robot_b/cam_mickey"},
                        {"tf_mode": "none"}):
            assert all(r.successful for r in node.set_parameters([Parameter(k, value=v) for k, v in changes.items()]))
            n_pose, n_tf = len(got["pose"]), len(node.tf.sent)
            _publish_pair(tester, pubs, node.get_clock().now().to_msg())
            assert _spin_until(executor, lambda: len(got["pose"]) > n_pose, 120)
            frames.append([(t.header.frame_id, t.child_frame_id) for t in node.tf.sent[n_tf:]])
        assert frames == [[("cam0_optical_frame", "cam1_optical_frame_mickey")],
                          [("cam0_optical_frame", "cam1_optical_frame_est")],
                          [("cam0_optical_frame", "robot_b/cam_mickey")],
                          []]
        assert all(t.header.stamp == got["pose"][i].header.stamp for i, t in enumerate(node.tf.sent))
    finally:
        executor.shutdown()
        node.destroy_node()
        tester.destroy_node()


def test_a_failing_warm_up_stops_the_node_with_one_reason(ros, tiny_net, monkeypatch):
    from mickey_ros.pipeline import Relocalizer
    from mickey_ros.ros.node_common import ParameterError
    from mickey_ros.ros.relocalize_node import RelocalizeNode

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr(Relocalizer, "estimate", out_of_memory)
    # autostart: configure waits for the worker's warm-up; its failure is the constructor's error (the console
    # script: one line, exit 2)
    with pytest.raises(ParameterError, match=r"^device: warm-up inference on cpu failed: CUDA out of memory\. "
                                             r"Tried to allocate 2\.00 GiB$"):
        RelocalizeNode(net=tiny_net, context=ros, parameter_overrides=[Parameter("device", value="cpu")])
