"""Build output messages from numpy, for rclpy classes and rosbags classes alike.

``MessageTypes`` maps ROS type names to classes: ``from_typestore`` (rosbags, offline) or ``from_rclpy``
(the node; imports the generated message modules lazily). Builders pass every field by keyword, so the
same code fills both kinds of classes. Nothing here imports rclpy.

Every field gets the Python type rosidl's generated code wants: ``float`` for float32/float64 (never a numpy
scalar: the generated C converter asserts ``PyFloat_Check`` and aborts the process on ``np.float32``), ``int``,
``bool``, ``str``, a float64 ``numpy`` array for fixed-size double arrays, and for ``uint8[]`` an
``array.array('B')`` (rclpy) or a ``numpy`` uint8 array (rosbags, which needs one).
"""
from __future__ import annotations

import array
import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from mickey_ros.geometry.se3 import invert_T, matrix_to_quat_wxyz
from mickey_ros.ros.convert import encode_points

TYPE_NAMES = (
    "builtin_interfaces/msg/Time", "std_msgs/msg/Header", "sensor_msgs/msg/PointCloud2", "sensor_msgs/msg/PointField",
    "geometry_msgs/msg/Vector3", "geometry_msgs/msg/Quaternion", "geometry_msgs/msg/Point",
    "geometry_msgs/msg/Transform", "geometry_msgs/msg/TransformStamped", "geometry_msgs/msg/Pose",
    "geometry_msgs/msg/PoseWithCovariance", "geometry_msgs/msg/PoseWithCovarianceStamped",
)


@dataclass(frozen=True)
class MessageTypes:
    """ROS type name (``pkg/msg/Name``) -> message class; ``rclpy``: the classes are rosidl's generated ones."""

    classes: dict[str, Any]
    rclpy: bool = False

    def __getitem__(self, name: str) -> Any:
        return self.classes[name]

    def uint8_array(self, data: bytes) -> Any:
        """A ``uint8[]`` field's value: ``array.array('B')`` for rclpy classes, a numpy uint8 array for rosbags."""
        return array.array("B", data) if self.rclpy else np.frombuffer(data, dtype=np.uint8).copy()

    @classmethod
    def from_typestore(cls, typestore: Any) -> MessageTypes:
        return cls({name: typestore.types[name] for name in TYPE_NAMES})

    @classmethod
    def from_rclpy(cls) -> MessageTypes:
        classes = {}
        for name in TYPE_NAMES:
            pkg, _, msg = name.split("/")
            classes[name] = getattr(importlib.import_module(f"{pkg}.msg"), msg)
        return cls(classes, rclpy=True)


def header(types: MessageTypes, stamp_ns: int, frame_id: str) -> Any:
    """``std_msgs/Header`` with ``stamp`` = ``stamp_ns`` nanoseconds (the input image stamp)."""
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    stamp = types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=str(frame_id))


def pointcloud2(types: MessageTypes, hdr: Any, points: np.ndarray, rgb: np.ndarray | None = None,
                intensity: np.ndarray | None = None) -> Any:
    """Unorganised ``sensor_msgs/PointCloud2`` of ``[N, 3]`` points (metres, frame of ``hdr``), RViz-ready."""
    fields, step, data = encode_points(points, rgb=rgb, intensity=intensity)
    PointField = types["sensor_msgs/msg/PointField"]
    n = len(data) // step
    return types["sensor_msgs/msg/PointCloud2"](
        header=hdr, height=1, width=n,
        fields=[PointField(name=str(f[0]), offset=int(f[1]), datatype=int(f[2]), count=int(f[3])) for f in fields],
        is_bigendian=False, point_step=int(step), row_step=int(step * n), data=types.uint8_array(data),
        is_dense=True,
    )


def _rotation_translation(types: MessageTypes, T: np.ndarray) -> tuple[Any, Any]:
    w, x, y, z = matrix_to_quat_wxyz(T[:3, :3])
    q = types["geometry_msgs/msg/Quaternion"](x=float(x), y=float(y), z=float(z), w=float(w))
    return q, [float(v) for v in T[:3, 3]]


def transform_stamped(types: MessageTypes, hdr: Any, child_frame_id: str, T_parent_child: np.ndarray) -> Any:
    """TF ``hdr.frame_id`` (parent) -> ``child_frame_id``; ``T_parent_child`` maps child-frame points into the parent
    frame (``X_parent = T_parent_child X_child``), i.e. it is the child's pose in the parent, as TF carries it."""
    q, t = _rotation_translation(types, T_parent_child)
    transform = types["geometry_msgs/msg/Transform"](
        translation=types["geometry_msgs/msg/Vector3"](x=t[0], y=t[1], z=t[2]), rotation=q
    )
    return types["geometry_msgs/msg/TransformStamped"](header=hdr, child_frame_id=str(child_frame_id),
                                                       transform=transform)


def transform_stamped_from_relative_pose(types: MessageTypes, hdr: Any, child_frame_id: str, T_0to1: np.ndarray) -> Any:
    """TF ``hdr.frame_id`` (camera 0 optical) -> ``child_frame_id`` (camera 1 optical).

    A TF parent -> child carries the child's pose in the parent, i.e. ``T_1to0 = inv(T_0to1)``.
    """
    return transform_stamped(types, hdr, child_frame_id, invert_T(T_0to1))


def query_pose_in_anchor(T_anchor_0: np.ndarray, T_0to1: np.ndarray) -> np.ndarray:
    """Camera 1's pose in an anchor frame (e.g. a map): ``T_anchor_1 = T_anchor_0 @ inv(T_0to1)``.

    ``T_anchor_0`` maps camera-0 points into the anchor frame (camera 0's pose in it); ``T_0to1`` maps camera-0
    points into camera-1 points (``X1 = R X0 + t``), so ``inv(T_0to1)`` maps camera-1 points into camera 0.
    """
    return np.asarray(T_anchor_0, dtype=np.float64) @ invert_T(T_0to1)


TF_MODES = ("none", "relative")
DEFAULT_CHILD_SUFFIX = "_mickey"


@dataclass(frozen=True)
class Anchor:
    """Camera 0's known pose in a fixed frame (reference mode: the reference camera in a map).

    ``T_frame_0`` maps camera-0 optical-frame points into ``frame`` (the pose a TF ``frame`` -> camera 0 carries).
    """

    frame: str
    T_frame_0: np.ndarray


@dataclass(frozen=True)
class TfNaming:
    """Which TF the relative pose becomes (``mode``) and the names of its frames.

    - ``none``: no TF.
    - ``relative``: parent = camera 0's optical frame, child = :meth:`child` of camera 1's optical frame. The child
      is a frame of its own (``<frame1><child_suffix>``, or ``child_frame`` when given), never camera 1's optical
      frame itself: a robot's URDF usually gives that frame a parent already, and a TF frame has exactly one.
      With an :class:`Anchor` (camera 0's pose in a map is known) the parent is the anchor frame instead and the
      transform is camera 1's pose in it (:func:`query_pose_in_anchor`): still one parent for the child, and
      ``map -> <frame1>_mickey`` is what a consumer of map poses looks up.
    """

    mode: str = "relative"
    child_suffix: str = DEFAULT_CHILD_SUFFIX
    child_frame: str = ""

    def child(self, frame1: str) -> str:
        """TF child for the estimated pose of camera 1 (optical frame ``frame1``)."""
        return self.child_frame or f"{frame1}{self.child_suffix}"

    def transforms(self, types: MessageTypes, hdr0: Any, frame1: str, T_0to1: np.ndarray,
                   anchor: Anchor | None = None) -> list[Any]:
        """``geometry_msgs/TransformStamped`` messages for one pose (``hdr0``: image-0 stamp, camera-0 optical frame;
        with ``anchor``: parent ``anchor.frame``, the same stamp).

        Raises:
            ValueError: unknown ``mode``.
        """
        if self.mode == "none":
            return []
        if self.mode == "relative":
            if anchor is None:
                return [transform_stamped_from_relative_pose(types, hdr0, self.child(frame1), T_0to1)]
            hdr = types["std_msgs/msg/Header"](stamp=hdr0.stamp, frame_id=anchor.frame)
            return [transform_stamped(types, hdr, self.child(frame1), query_pose_in_anchor(anchor.T_frame_0, T_0to1))]
        raise ValueError(f"tf_mode: expected one of {', '.join(TF_MODES)}, got {self.mode!r}")


def pose_with_covariance(types: MessageTypes, hdr: Any, T_frame_child: np.ndarray,
                         covariance: np.ndarray | None = None) -> Any:
    """``PoseWithCovarianceStamped`` of the pose ``T_frame_child`` (maps child points into ``hdr.frame_id``),
    covariance ``[6, 6]`` row-major (x, y, z, rotX, rotY, rotZ); ``None`` = unknown, marked by -1 in element 0
    (the ROS convention)."""
    q, t = _rotation_translation(types, T_frame_child)
    pose = types["geometry_msgs/msg/Pose"](position=types["geometry_msgs/msg/Point"](x=t[0], y=t[1], z=t[2]),
                                           orientation=q)
    cov = np.zeros(36) if covariance is None else np.ascontiguousarray(covariance, dtype=np.float64).reshape(36)
    if covariance is None:
        cov[0] = -1.0
    return types["geometry_msgs/msg/PoseWithCovarianceStamped"](
        header=hdr, pose=types["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=cov)
    )


def covariance_in_anchor(covariance: np.ndarray | None, T_anchor_0: np.ndarray) -> np.ndarray | None:
    """A ``[6, 6]`` pose covariance about camera 0's axes, expressed about the anchor frame's axes
    (``diag(R, R) C diag(R, R)^T``, R = the rotation of ``T_anchor_0``; the anchor pose itself taken as exact)."""
    if covariance is None:
        return None
    B = np.kron(np.eye(2), np.asarray(T_anchor_0, dtype=np.float64)[:3, :3])
    return B @ np.asarray(covariance, dtype=np.float64) @ B.T


def pose_with_covariance_from_relative_pose(types: MessageTypes, hdr: Any, T_0to1: np.ndarray,
                                            covariance: np.ndarray | None = None) -> Any:
    """Pose of camera 1 in camera 0's optical frame (``inv(T_0to1)``), covariance as :func:`pose_with_covariance`."""
    return pose_with_covariance(types, hdr, invert_T(T_0to1), covariance)


def relative_pose_message(types: MessageTypes, relative_pose_class: Any, hdr: Any, child_frame_id: str,
                          stamp1_ns: int, res: Any) -> Any:
    """``mickey_ros_msgs/RelativePose`` (rclpy or rosbags class) from a :class:`~mickey_ros.pipeline.RelativePose`.

    ``hdr`` = image-0 stamp and camera-0 optical frame; ``stamp1_ns`` = image-1 stamp. The pose carries the
    result's covariance (unknown, -1 in element 0, where it has none). A failed result carries ``STATUS_NO_POSE``,
    the identity pose with unknown covariance and the reason.
    """
    RP = relative_pose_class
    T_0to1 = res.T_0to1 if res.success else np.eye(4)
    covariance = getattr(res, "covariance", None) if res.success else None
    pose = pose_with_covariance_from_relative_pose(types, hdr, T_0to1, covariance).pose
    sec, nanosec = divmod(int(stamp1_ns), 1_000_000_000)
    return RP(header=hdr, child_frame_id=str(child_frame_id),
              stamp1=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), pose=pose,
              num_matches=int(res.num_matches), num_inliers=int(res.num_inliers),
              confidence=float(res.confidence) if res.success else 0.0,  # a Python float: see the module docstring
              status=int(RP.STATUS_OK if res.success else RP.STATUS_NO_POSE), reason=str(res.reason))
