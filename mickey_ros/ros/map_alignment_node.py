"""``map_alignment_node``: the transform between two robots' maps from MicKey measurements (rclpy).

Camera 0 of the relocalize node is robot A's camera, camera 1 is robot B's. Inputs (relative names, remap them):
- ``relative_pose`` (``geometry_msgs/PoseWithCovarianceStamped``, the relocalize node's ``~/relative_pose``: pose
  of camera B in camera A's optical frame, stamped with image A), or, when the ``mickey_ros_msgs`` package is built,
  ``relative_pose_full`` (``RelativePose``: also carries the confidence used for gating and image B's stamp);
- ``camera_pose_a`` / ``camera_pose_b`` (``geometry_msgs/PoseStamped``): each camera's optical-frame pose in its
  own robot's map (``header.frame_id`` = ``map_a_frame`` / ``map_b_frame``), e.g. from each robot's localisation.

Each measurement gives one candidate ``T_mapa_mapb = T_mapa_ca @ inv(T_0to1) @ inv(T_mapb_cb)`` with the camera
poses interpolated at the image stamps; the last ``window`` candidates are fused robustly
(:func:`mickey_ros.ros.alignment.fuse`), weighted by the measurements' covariances where they all carry one.
Outputs: ``~/map_alignment`` (``PoseWithCovarianceStamped``, pose of ``map_b`` in ``map_a``) after every
successful fusion, and the TF ``map_a -> map_b`` (static broadcaster, needs tf2_ros) only while ``map_b`` has no other parent in the TF tree; otherwise the message is the only output and
one warning says why.

Parameters are checked at start-up and on ``set_parameters`` (:mod:`mickey_ros.ros.node_common`); the frames,
``window``, ``max_pose_gap`` and ``publish_tf`` are read-only, the fusion settings apply from the next measurement.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from rclpy.node import Node

from mickey_ros.errors import MickeyError
from mickey_ros.geometry.se3 import invert_T, make_T, quat_wxyz_to_matrix
from mickey_ros.ros import builders
from mickey_ros.ros.alignment import AlignmentConfig, AlignmentWindow, PoseBuffer, other_tf_parent
from mickey_ros.ros.map_alignment_config import (  # noqa: F401 - the parameter tables are part of this module's API
    INT_RANGES,
    PARAMETERS,
    RANGES,
    RULES,
)
from mickey_ros.ros.node_common import (
    declare_parameters,
    relative_pose_class,
    run_node,
    warn_unknown_overrides,
    watch_parameters,
)

def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _pose_to_T(pose: Any) -> np.ndarray:
    """``[4, 4]`` from a ``geometry_msgs/Pose`` (quaternion x, y, z, w; must be unit length to 1e-3)."""
    q = np.array([pose.orientation.w, pose.orientation.x, pose.orientation.y, pose.orientation.z], dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if not np.isfinite(norm) or abs(norm - 1.0) > 1e-3:
        raise MickeyError(f"expected a unit quaternion, got norm {norm:.4g}")
    p = pose.position
    return make_T(quat_wxyz_to_matrix(q / norm), np.array([p.x, p.y, p.z], dtype=np.float64))


class MapAlignmentNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("mickey_map_alignment", **kwargs)
        p = self.params = declare_parameters(self, PARAMETERS, RULES)  # ParameterError before anything is logged
        self.window = AlignmentWindow(p["window"], self._alignment_config())
        gap = int(p["max_pose_gap"] * 1e9)
        self.poses = {"a": PoseBuffer(gap), "b": PoseBuffer(gap)}
        self.types = builders.MessageTypes.from_rclpy()
        self.stats = {"measurements": 0, "used": 0, "rejected": 0, "fusions_ok": 0, "last_inliers": 0}
        self._warned: set[str] = set()
        self._warned_kinds: set[str] = set()
        self.latest = None  # the last successful Alignment

        from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped

        self.create_subscription(PoseStamped, "camera_pose_a", lambda m: self._on_camera_pose("a", m), 50)
        self.create_subscription(PoseStamped, "camera_pose_b", lambda m: self._on_camera_pose("b", m), 50)
        full = relative_pose_class()
        if full is not None:
            self.create_subscription(full, "relative_pose_full", self._on_relative_pose_full, 10)
        else:
            self.get_logger().info("mickey_ros_msgs is not built: using relative_pose (PoseWithCovarianceStamped); "
                                   "without confidences only the robust estimator rejects bad measurements")
            self.create_subscription(PoseWithCovarianceStamped, "relative_pose", self._on_relative_pose, 10)
        self.pub_alignment = self.create_publisher(PoseWithCovarianceStamped, "~/map_alignment", 10)
        self.tf = self._tf_outputs() if p["publish_tf"] else None
        watch_parameters(self, PARAMETERS, RULES, self.params, self._apply_parameters)
        warn_unknown_overrides(self)
        log = self.get_logger()
        log.info(f"maps: {p['map_a_frame']} (robot A, camera 0) -> {p['map_b_frame']} (robot B, camera 1)")
        log.info("inputs: " + ", ".join(f"{s.topic_name} ({s.msg_type.__name__})" for s in self.subscriptions))
        log.info("ready")

    def _alignment_config(self) -> AlignmentConfig:
        p = self.params
        return AlignmentConfig(min_confidence=p["min_confidence"], rotation_scale_deg=p["rotation_scale_deg"],
                               translation_scale_m=p["translation_scale_m"], outlier_factor=p["outlier_factor"],
                               min_inliers=p["min_inliers"])

    def _apply_parameters(self, changed: set[str]) -> None:
        self.window.config = self._alignment_config()

    # -- optional parts --------------------------------------------------------------------------------------
    def _tf_outputs(self) -> Any:
        try:
            from tf2_ros import Buffer, StaticTransformBroadcaster, TransformListener
        except ImportError:
            self.get_logger().warning("tf2_ros is not importable: TF map_a -> map_b disabled (~/map_alignment is "
                                      "still published)")
            return None
        buffer = Buffer()
        return {"buffer": buffer, "listener": TransformListener(buffer, self),
                "broadcaster": StaticTransformBroadcaster(self)}

    # -- callbacks -------------------------------------------------------------------------------------------
    def _on_camera_pose(self, robot: str, msg: Any) -> None:
        expected = self.params[f"map_{robot}_frame"]
        if msg.header.frame_id and msg.header.frame_id != expected:
            self._warn_once(f"camera_pose_{robot}: expected frame_id '{expected}', got '{msg.header.frame_id}'; "
                            "message ignored")
            return
        try:
            self.poses[robot].add(_stamp_ns(msg.header.stamp), _pose_to_T(msg.pose))
        except MickeyError as err:
            self._warn_once(f"camera_pose_{robot}: {err}; message ignored")

    def _on_relative_pose(self, msg: Any) -> None:
        stamp = _stamp_ns(msg.header.stamp)
        self._measure(msg.pose.pose, stamp, stamp, confidence=1.0, covariance=_covariance(msg.pose.covariance))

    def _on_relative_pose_full(self, msg: Any) -> None:
        if msg.status != msg.STATUS_OK:
            return
        self._measure(msg.pose.pose, _stamp_ns(msg.header.stamp), _stamp_ns(msg.stamp1), float(msg.confidence),
                      covariance=_covariance(msg.pose.covariance))

    def _measure(self, pose: Any, stamp_a: int, stamp_b: int, confidence: float,
                 covariance: np.ndarray | None = None) -> None:
        self.stats["measurements"] += 1
        try:
            T_0to1 = invert_T(_pose_to_T(pose))  # the message carries camera B's pose in camera A
        except MickeyError as err:
            self.stats["rejected"] += 1
            self._warn_once(f"relative_pose: {err}; measurement ignored")
            return
        T_mapa_ca, T_mapb_cb = self.poses["a"].at(stamp_a), self.poses["b"].at(stamp_b)
        for robot, T, stamp in (("a", T_mapa_ca, stamp_a), ("b", T_mapb_cb, stamp_b)):
            if T is None:
                self.stats["rejected"] += 1
                self._warn_once(f"camera_pose_{robot}: no pose within max_pose_gap "
                                f"({self.params['max_pose_gap']} s) around an image stamp (first at {stamp} ns); "
                                "such measurements are ignored")
                return
        self.stats["used"] += 1
        self.window.add(T_mapa_ca, T_0to1, T_mapb_cb, confidence, covariance)
        result = self.window.fuse()
        if not result.success:
            self.get_logger().debug(f"no alignment yet: {result.reason}")
            return
        self.stats["fusions_ok"] += 1
        self.stats["last_inliers"] = int(result.inliers.sum())
        self.latest = result
        self._publish(result, stamp_a)

    def _publish(self, result: Any, stamp_ns: int) -> None:
        map_a, map_b = self.params["map_a_frame"], self.params["map_b_frame"]
        hdr = builders.header(self.types, stamp_ns, map_a)
        # the builder writes the pose of "camera 1" in "camera 0" = inv(argument): pass inv(T_mapa_mapb)
        msg = builders.pose_with_covariance_from_relative_pose(self.types, hdr, invert_T(result.T_mapa_mapb),
                                                               covariance=result.covariance)
        self.pub_alignment.publish(msg)
        if self.tf is None:
            return
        parent = other_tf_parent(self.tf["buffer"].all_frames_as_yaml(), map_b, own_parent=map_a)
        if parent is not None:
            self._warn_once(f"TF: {map_b} already has parent {parent}; {map_a} -> {map_b} is published only on "
                            "~/map_alignment")
            return
        self.tf["broadcaster"].sendTransform(
            builders.transform_stamped_from_relative_pose(self.types, hdr, map_b, invert_T(result.T_mapa_mapb)))

    def _warn_once(self, text: str) -> None:
        """One warning per kind of problem (the text up to its first parenthesis), not one per message."""
        kind = text.split("(")[0]
        if kind not in self._warned_kinds:
            self._warned_kinds.add(kind)
            self._warned.add(text)
            self.get_logger().warning(text)


def _covariance(values: Any) -> np.ndarray | None:
    """A message's row-major 6x6 covariance; None where unknown (-1 in element 0, the ROS convention), not finite or
    not positive definite (it cannot weight a measurement)."""
    C = np.asarray(values, dtype=np.float64).reshape(6, 6)
    if C[0, 0] == -1.0 or not np.all(np.isfinite(C)):
        return None
    try:
        np.linalg.cholesky(0.5 * (C + C.T))
    except np.linalg.LinAlgError:
        return None
    return C


def main(args: list[str] | None = None) -> None:
    run_node(MapAlignmentNode, "map_alignment_node", args)
