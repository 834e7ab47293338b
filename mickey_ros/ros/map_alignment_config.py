"""Parameters, topics and services of ``map_alignment_node`` (no ROS needed: ``map_alignment_node --help`` and the
tests read them without rclpy). The node checks the parameters by :data:`RULES` at start-up and on every
``set_parameters`` (:mod:`mickey_ros.ros.node_common`)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mickey_ros.ros.node_common import ParameterError, ParameterRules, check_frame_id

PARAMETERS: dict[str, tuple[Any, str]] = {
    "map_a_frame": ("map_a", "map frame of robot A (camera 0 of the relocalize node)"),
    "map_b_frame": ("map_b", "map frame of robot B (camera 1)"),
    "window": (200, "number of most recent measurements fused"),
    "min_confidence": (0.2, "measurements with a lower MicKey confidence are ignored (needs relative_pose_full)"),
    "rotation_scale_deg": (2.0, "deg of rotation residual weighted like translation_scale_m"),
    "translation_scale_m": (0.2, "m, scale of the robust (Cauchy) residual"),
    "outlier_factor": (3.0, "residual / scale above which a measurement is an outlier"),
    "min_inliers": (3, "agreeing measurements needed before anything is published"),
    "max_pose_gap": (0.2, "s, largest gap between camera-pose samples bracketing an image stamp"),
    "publish_tf": (True, "broadcast TF map_a -> map_b (only where map_b has no other parent)"),
}
RANGES = {"min_confidence": (0.0, 1.0), "rotation_scale_deg": (1e-3, 180.0), "translation_scale_m": (1e-4, 100.0),
          "outlier_factor": (0.1, 100.0), "max_pose_gap": (0.0, 60.0)}
INT_RANGES = {"window": (3, 100_000), "min_inliers": (1, 100_000)}


def _check_configuration(p: Mapping[str, Any]) -> None:
    for name in ("map_a_frame", "map_b_frame"):
        check_frame_id(name, p[name])
        if not p[name]:
            raise ParameterError(f"{name}: expected a TF frame id, got ''")
    if p["map_a_frame"] == p["map_b_frame"]:
        raise ParameterError(f"map_b_frame: expected a frame other than map_a_frame, got {p['map_b_frame']!r}")
    if p["min_inliers"] > p["window"]:
        raise ParameterError(f"min_inliers: expected at most window ({p['window']}), got {p['min_inliers']}")


RULES = ParameterRules(float_ranges=RANGES, int_ranges=INT_RANGES,
                       read_only=frozenset({"map_a_frame", "map_b_frame", "window", "max_pose_gap", "publish_tf"}),
                       check=_check_configuration)

SUBSCRIBES = (
    ("relative_pose", "geometry_msgs/PoseWithCovarianceStamped",
     "camera B's pose in camera A's optical frame (relocalize_node's ~/relative_pose); used when mickey_ros_msgs is "
     "not built"),
    ("relative_pose_full", "mickey_ros_msgs/RelativePose",
     "relocalize_node's ~/relative_pose_full (confidence, image B's stamp); used when mickey_ros_msgs is built"),
    ("camera_pose_a", "geometry_msgs/PoseStamped", "robot A's camera optical frame in map_a_frame"),
    ("camera_pose_b", "geometry_msgs/PoseStamped", "robot B's camera optical frame in map_b_frame"),
)
PUBLISHES = (
    ("~/map_alignment", "geometry_msgs/PoseWithCovarianceStamped", "pose of map_b in map_a, after each fusion"),
    ("/tf_static", "tf2_msgs/TFMessage", "map_a -> map_b while map_b has no other parent (needs tf2_ros)"),
)
SERVICES: tuple[tuple[str, str, str], ...] = ()
