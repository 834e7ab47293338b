"""Helpers for the relocalize-node tests of reference mode and triggering (real rclpy, in-process).

``Harness`` builds the node with the session's tiny network and a tester node on one multi-threaded executor
(the node's service callbacks wait for its worker: that needs more than one executor thread, as in the console
script). Waits are generous and never timed assertions: a loaded 2-core machine only makes them slower.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter

from conftest import DEMO, REPO

K = [220.0, 0.0, 146.5, 0.0, 220.0, 111.5, 0.0, 0.0, 1.0]  # both demo images (mickey_ros/data/demo/intrinsics.txt)
K_MATRIX = np.array(K).reshape(3, 3)
WAIT_S = 300.0  # longest wait for anything that needs an inference
NODE = "/mickey_relocalizer"


def demo_rgb(name: str) -> np.ndarray:
    """uint8 RGB of a bundled demo image (``im0.png``, ``im1.png``)."""
    return np.ascontiguousarray(cv2.imread(str(DEMO / name))[:, :, ::-1])


class FakeBroadcaster:
    """Stands in for tf2_ros.TransformBroadcaster (not pip-installable): keeps what the node sends."""

    def __init__(self) -> None:
        self.sent: list = []

    def sendTransform(self, transforms) -> None:  # noqa: N802 - tf2_ros's name
        self.sent.extend(transforms)


class Harness:
    """The node under test, a tester node publishing camera streams and receiving outputs, one executor."""

    def __init__(self, context, net, **params) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        from mickey_ros.ros.relocalize_node import RelocalizeNode

        params = {"device": "cpu", "reliability": "reliable", "max_age": 60.0, "warmup": False, **params}
        self.node = RelocalizeNode(net=net, context=context,
                                   parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        self.tester = rclpy.create_node("mode_tester", context=context)
        self.pubs = {name: self.tester.create_publisher(t, name, 10) for name, t in
                     (("image0", Image), ("camera_info0", CameraInfo), ("image1", Image), ("camera_info1", CameraInfo))}
        self.got: dict[str, list] = {k: [] for k in ("pose", "map_pose", "cloud0", "cloud1", "diagnostics")}
        for key, topic, msg_type in (("pose", "relative_pose", PoseWithCovarianceStamped),
                                     ("map_pose", "map_pose", PoseWithCovarianceStamped),
                                     ("cloud0", "keypoints0", PointCloud2), ("cloud1", "keypoints1", PointCloud2)):
            self.tester.create_subscription(msg_type, f"{NODE}/{topic}", self.got[key].append, 10)
        self.tester.create_subscription(DiagnosticArray, "/diagnostics", self.got["diagnostics"].append, 10)
        self.executor = MultiThreadedExecutor(num_threads=4, context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.tester)

    def spin_until(self, cond, timeout: float = WAIT_S) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not cond():
            self.executor.spin_once(timeout_sec=0.05)
        return bool(cond())

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def wait_connected(self, cams: tuple[str, ...] = ("0", "1")) -> None:
        """The node's inputs and its pose output matched both ways (else first messages are lost to discovery)."""
        topics = [t for cam in cams for t in (f"image{cam}", f"camera_info{cam}")]
        assert self.spin_until(lambda: all(self.tester.count_subscribers(t) for t in topics)
                               and self.node.pub_pose.get_subscription_count() > 0, 60), "no DDS match"

    def publish(self, cam: str, image: str, stamp_ns: int, frame: str | None = None, info: bool = True) -> None:
        """One demo image (``image``) and (unless ``info`` is false) its CameraInfo on camera ``cam``'s topics,
        stamped ``stamp_ns``."""
        from builtin_interfaces.msg import Time
        from sensor_msgs.msg import CameraInfo, Image

        rgb = demo_rgb(image)
        height, width = rgb.shape[:2]
        msg = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=rgb.tobytes())
        msg.header.stamp = Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
        msg.header.frame_id = frame or f"cam{cam}_optical_frame"
        camera_info = CameraInfo(height=height, width=width, distortion_model="plumb_bob", d=[0.0] * 5, k=K)
        camera_info.header = msg.header
        self.pubs[f"image{cam}"].publish(msg)
        if info:
            self.pubs[f"camera_info{cam}"].publish(camera_info)

    def publish_pair(self, stamp_ns: int, info1: bool = True) -> None:
        self.publish("0", "im0.png", stamp_ns)
        self.publish("1", "im1.png", stamp_ns, info=info1)

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def client(self, service: str):
        from std_srvs.srv import Trigger

        client = self.tester.create_client(Trigger, f"{NODE}/{service}")
        assert self.spin_until(client.service_is_ready, 60), f"{service} not offered"
        return client

    def call(self, client):
        from std_srvs.srv import Trigger

        return client.call_async(Trigger.Request())

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.tester.destroy_node()


RUN_TIMEOUT_S = 300.0  # a console script that must fail at start-up (torch import on a loaded machine)


@pytest.fixture()
def subprocess_ros_env(monkeypatch):
    """Console-script subprocesses get a private DDS domain on loopback."""
    monkeypatch.setenv("ROS_DOMAIN_ID", str(random.Random(os.getpid() + 2).randint(100, 200)))
    monkeypatch.setenv("ROS_LOCALHOST_ONLY", "1")
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def assert_one_line_exit_2(params: list[str], parameter: str, expected: str) -> None:
    """``relocalize_node --ros-args -p ...`` exits with code 2 and one stderr line naming ``parameter``."""
    script = shutil.which("relocalize_node", path=str(Path(sys.executable).parent)) or shutil.which("relocalize_node")
    if script is None:
        pytest.skip("console script relocalize_node is not installed (pip install -e .)")
    args = [script, "--ros-args", *[a for p in params for a in ("-p", p)]]
    # this checkout's package first, whatever checkout the editable install points at
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"relocalize_node: error: {parameter}: ") and expected in lines[0], lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def pose_matrix(pose) -> np.ndarray:
    """``geometry_msgs/Pose`` -> ``[4, 4]`` (maps child points into the message's frame)."""
    from mickey_ros.geometry.se3 import make_T, quat_wxyz_to_matrix

    p, q = pose.position, pose.orientation
    return make_T(quat_wxyz_to_matrix([q.w, q.x, q.y, q.z]), [p.x, p.y, p.z])


def transform_matrix(tf) -> np.ndarray:
    """``geometry_msgs/TransformStamped`` -> ``[4, 4]`` (maps child points into the parent frame)."""
    from mickey_ros.geometry.se3 import make_T, quat_wxyz_to_matrix

    r, t = tf.transform.rotation, tf.transform.translation
    return make_T(quat_wxyz_to_matrix([r.w, r.x, r.y, r.z]), [t.x, t.y, t.z])
