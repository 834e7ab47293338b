"""Write robot-style rosbag2 recordings (mcap, Humble types) with rosbags: cameras, CameraInfo and TF.

Shared by the synthetic generator (``training/data/synthetic.py``) and the real-data converters
(``mickey_ros/realdata_bags.py``). A recording holds, per camera (:class:`CameraTopics`), an image topic, its
CameraInfo topic and optionally a registered depth topic, plus ``/tf`` and ``/tf_static`` (latched QoS, as a
robot's ``robot_state_publisher`` offers it). Frames follow REP 103 / 105 names: ``map``, ``base_link`` and the
cameras' optical frames (x right, y down, z forward). Nothing here imports rclpy; rosbags is imported when a
writer is made.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mickey_ros.geometry.se3 import invert_T
from mickey_ros.ros import builders

IMAGE_TOPIC, INFO_TOPIC, DEPTH_TOPIC = "/camera/image_raw", "/camera/camera_info", "/camera/depth/image_raw"
TF_TOPIC, TF_STATIC_TOPIC = "/tf", "/tf_static"
MAP_FRAME, BASE_FRAME, CAMERA_FRAME = "map", "base_link", "camera_optical_frame"
# base_link (x forward, y left, z up) -> optical (x right, y down, z forward): columns are the optical axes.
R_BASE_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class CameraTopics:
    """Where one camera of a recording goes: its topics and the ``frame_id`` of its optical frame
    (``depth`` empty: the camera has no depth topic)."""

    image: str
    info: str
    depth: str
    frame: str


SINGLE_CAMERA = (CameraTopics(IMAGE_TOPIC, INFO_TOPIC, DEPTH_TOPIC, CAMERA_FRAME),)
# a two-camera rig: what ``mickey-ros bag --image0 /cam0/image_raw --info0 /cam0/camera_info
# --image1 /cam1/image_raw --info1 /cam1/camera_info`` reads
TWO_CAMERAS = tuple(CameraTopics(f"/cam{i}/image_raw", f"/cam{i}/camera_info", f"/cam{i}/depth/image_raw",
                                 f"cam{i}_optical_frame") for i in range(2))


@contextmanager
def mcap_writer(path: str | Path) -> Iterator[Any]:
    """A rosbags ``Writer`` of a new rosbag2 folder ``path`` (mcap storage, bag format 9), closed on exit."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    with Writer(Path(path), version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        yield writer


class RecordingWriter:
    """The topics of a recording (per camera: image, CameraInfo and, where named, depth; ``/tf``, ``/tf_static``)
    on a rosbags ``Writer``, with the Humble typestore. Messages go out in the order they are written; the
    bag timestamp of each is the stamp given (the header stamp)."""

    def __init__(self, writer: Any, cameras: Sequence[CameraTopics] = SINGLE_CAMERA) -> None:
        from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
        from rosbags.typesys import Stores, get_typestore

        self.writer, self.ts = writer, get_typestore(Stores.ROS2_HUMBLE)
        self.types = builders.MessageTypes.from_typestore(self.ts)
        latched = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
                      QosTime(0, 0), QosTime(0, 0), QosLiveliness.AUTOMATIC, QosTime(0, 0), False)
        spec = {}
        for camera in cameras:
            spec.update({camera.image: "sensor_msgs/msg/Image", camera.info: "sensor_msgs/msg/CameraInfo"})
            if camera.depth:
                spec[camera.depth] = "sensor_msgs/msg/Image"
        spec.update({TF_TOPIC: "tf2_msgs/msg/TFMessage", TF_STATIC_TOPIC: "tf2_msgs/msg/TFMessage"})
        self.conns = {topic: writer.add_connection(topic, msgtype, typestore=self.ts,
                                                   offered_qos_profiles=[latched] if topic == TF_STATIC_TOPIC else [])
                      for topic, msgtype in spec.items()}

    def write(self, topic: str, stamp_ns: int, msg: Any) -> None:
        conn = self.conns[topic]
        self.writer.write(conn, int(stamp_ns), self.ts.serialize_cdr(msg, conn.msgtype))

    def tf(self, topic: str, stamp_ns: int, parent: str, children: list[tuple[str, np.ndarray]]) -> None:
        """A TFMessage with one transform per ``(child, T_parent_child)``: the pose of ``child`` in ``parent``
        (``[4, 4]``, maps child-frame points into the parent frame, metres)."""
        hdr = builders.header(self.types, stamp_ns, parent)
        # the builder takes T_0to1, which maps parent coordinates into child ones: the inverse of the pose
        transforms = [builders.transform_stamped_from_relative_pose(self.types, hdr, child, invert_T(T_parent_child))
                      for child, T_parent_child in children]
        self.write(topic, stamp_ns, self.ts.types["tf2_msgs/msg/TFMessage"](transforms=transforms))

    def image(self, topic: str, stamp_ns: int, pixels: np.ndarray, encoding: str, frame: str = CAMERA_FRAME) -> None:
        """A ``sensor_msgs/Image`` of ``pixels`` (``[H, W]`` or ``[H, W, C]``, any dtype; the bytes as they are in
        memory, little-endian) with the given ROS ``encoding`` (e.g. ``rgb8``, ``mono8``, ``32FC1``)."""
        height, width = pixels.shape[:2]
        data = np.ascontiguousarray(pixels).view(np.uint8).reshape(-1)
        msg = self.ts.types["sensor_msgs/msg/Image"](
            header=builders.header(self.types, stamp_ns, frame), height=height, width=width,
            encoding=encoding, is_bigendian=0, step=len(data) // height, data=data)
        self.write(topic, stamp_ns, msg)

    def camera_info(self, stamp_ns: int, K: np.ndarray, width: int, height: int, topic: str = INFO_TOPIC,
                    frame: str = CAMERA_FRAME, D: np.ndarray | None = None, P: np.ndarray | None = None) -> None:
        """A ``sensor_msgs/CameraInfo``: ``K [3, 3]`` (pixels), ``plumb_bob`` distortion ``D`` (k1, k2, p1, p2[, k3];
        ``None``: zeros, a rectified or ideal image), ``R`` identity and ``P [3, 4]`` (``None``: ``[K | 0]``)."""
        T = self.ts.types
        roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        d = np.zeros(5) if D is None else np.asarray(D, dtype=np.float64).reshape(-1)
        p = np.hstack([K, np.zeros((3, 1))]) if P is None else np.asarray(P, dtype=np.float64)
        msg = T["sensor_msgs/msg/CameraInfo"](
            header=builders.header(self.types, stamp_ns, frame), height=height, width=width,
            distortion_model="plumb_bob", d=d, k=np.asarray(K, dtype=np.float64).reshape(-1),
            r=np.eye(3).reshape(-1), p=p.reshape(-1), binning_x=0, binning_y=0, roi=roi)
        self.write(topic, stamp_ns, msg)
