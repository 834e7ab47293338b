"""Every message the package builds, from a pose result carrying numpy scalars (as the pipeline may): the builders
must hand the generated message code Python types (float, int, bool, str), whatever they are given.

``built_messages(types, relative_pose_class)`` returns ``[(ROS type name, message), ...]`` for rclpy classes
(``MessageTypes.from_rclpy()``) or rosbags classes (``MessageTypes.from_typestore(...)``).
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from mickey_ros.geometry.se3 import make_T, quat_wxyz_to_matrix
from mickey_ros.ros import builders
from mickey_ros.ros.outputs import OutputFrames, pose_messages

T_0TO1 = make_T(quat_wxyz_to_matrix([0.9, 0.1, -0.3, 0.2]), [0.4, -0.1, 1.5])


def fake_result(success: bool = True) -> SimpleNamespace:
    """A :class:`mickey_ros.pipeline.RelativePose` stand-in whose numbers are numpy scalars and float32 arrays."""
    rng = np.random.default_rng(0)
    return SimpleNamespace(
        success=success, reason="" if success else "too few matches: 3 < 8", T_0to1=T_0TO1 if success else np.eye(4),
        confidence=np.float32(0.71) if success else np.float32(0.0), num_inliers=np.int64(57 if success else 0),
        num_matches=np.int64(80 if success else 0),
        covariance=np.diag(np.array([1e-3, 2e-3, 3e-3, 1e-4, 2e-4, 3e-4], dtype=np.float32)) if success else None,
        kpts3d0=rng.normal(size=(80, 3)).astype(np.float32), kpts3d1=rng.normal(size=(80, 3)).astype(np.float32),
        inliers=rng.random(80) < 0.7,
    )


def built_messages(types: builders.MessageTypes, relative_pose_class: Any = None) -> list[tuple[str, Any]]:
    """What the relocalize node publishes for one pose (TF, pose, map pose, clouds, RelativePose when its class is
    given; also a failed pose's RelativePose) and what the map-alignment node publishes (pose + TF)."""
    frames = OutputFrames("cam0_optical_frame", np.int64(1_700_000_000_123_456_789), "cam1_optical_frame",
                          np.int64(1_700_000_000_140_000_000))
    anchor = builders.Anchor("map", make_T(quat_wxyz_to_matrix([1.0, 0.0, 0.0, 0.0]), [1.0, 2.0, 0.0]))
    out = pose_messages(types, frames, fake_result(), builders.TfNaming(), anchor=anchor, clouds=True,
                        relative_pose_class=relative_pose_class)
    msgs = [("geometry_msgs/msg/TransformStamped", tf) for tf in out.transforms]
    msgs += [("geometry_msgs/msg/PoseWithCovarianceStamped", out.pose),
             ("geometry_msgs/msg/PoseWithCovarianceStamped", out.map_pose),
             ("sensor_msgs/msg/PointCloud2", out.cloud0), ("sensor_msgs/msg/PointCloud2", out.cloud1)]
    plain = pose_messages(types, frames, fake_result(), builders.TfNaming(), clouds=False)
    msgs += [("geometry_msgs/msg/TransformStamped", tf) for tf in plain.transforms]
    hdr = builders.header(types, np.int64(5), "map_a")  # map_alignment_node._publish
    msgs += [("geometry_msgs/msg/PoseWithCovarianceStamped",
              builders.pose_with_covariance_from_relative_pose(types, hdr, T_0TO1, np.eye(6, dtype=np.float32))),
             ("geometry_msgs/msg/TransformStamped",
              builders.transform_stamped_from_relative_pose(types, hdr, "map_b", T_0TO1))]
    if relative_pose_class is not None:
        failed = builders.relative_pose_message(types, relative_pose_class, builders.header(types, 9, "cam0"),
                                                "cam1", np.int64(11), fake_result(success=False))
        msgs += [("mickey_ros_msgs/msg/RelativePose", out.full), ("mickey_ros_msgs/msg/RelativePose", failed)]
    return msgs
