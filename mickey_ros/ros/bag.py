"""Offline bag-to-bag processing: the node's job over a recorded rosbag2 (mcap or sqlite3), no ROS needed.

Reads two camera streams (Image or CompressedImage) and their CameraInfo with rosbags, pairs them with the
same synchroniser as the node, runs the Relocalizer and writes, per processed pair, a
``mickey_ros_msgs/msg/RelativePose`` (schema embedded) and, when a pose was found, ``/tf``, the
PoseWithCovarianceStamped, both keypoint clouds and the inlier count (stamps = input image stamps).
"""
from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mickey_ros.errors import InputError, MickeyError
from mickey_ros.ros import builders
from mickey_ros.ros.convert import camera_info_to_model, check_image_matches_info, message_to_rgb
from mickey_ros.ros.interfaces import register_in_typestore
from mickey_ros.ros.sync import PairSynchronizer

RELATIVE_POSE_TYPE = "mickey_ros_msgs/msg/RelativePose"


@dataclass
class BagSummary:
    """Counts of a bag run."""

    pairs_found: int = 0
    processed: int = 0
    succeeded: int = 0
    skipped: list[str] = field(default_factory=list)  # one reason per pair that could not be processed
    confidences: list[float] = field(default_factory=list)

    @property
    def median_confidence(self) -> float:
        return statistics.median(self.confidences) if self.confidences else float("nan")

    def line(self) -> str:
        return (f"pairs found {self.pairs_found}, processed {self.processed}, succeeded {self.succeeded}, "
                f"skipped {len(self.skipped)}, median confidence {self.median_confidence:.3f}")


def _stamp_ns(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def process_bag(in_path: str | Path, out_path: str | Path, reloc: Any, topics: dict[str, str], *,
                prefix: str = "/mickey", slop: float = 0.05, storage: str = "mcap",
                frame0: str | None = None, frame1: str | None = None, progress: bool = True) -> BagSummary:
    """Run the relocaliser over a bag and write the outputs to a new bag.

    Args:
        in_path: input rosbag2 folder (mcap or sqlite3).
        out_path: output bag folder (must not exist).
        reloc: a ``Relocalizer``.
        topics: ``{"image0": ..., "info0": ..., "image1": ..., "info1": ...}`` input topic names.
        prefix: namespace of the output topics (``<prefix>/relative_pose``, ...); ``/tf`` stays ``/tf``.
        slop: seconds allowed between the two cameras' stamps.
        storage: ``mcap`` or ``sqlite3`` for the output.
        frame0, frame1: optical frame ids overriding the images' ``header.frame_id``.

    Raises:
        InputError: unreadable/corrupt input bag, missing topic, existing output, bad storage name.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise InputError(f"--storage: expected mcap or sqlite3, got {storage!r}")
    in_path, out_path = Path(in_path), Path(out_path)
    if out_path.exists():
        raise InputError(f"OUT: {out_path} exists; rosbag2 writers need a new folder")
    ts = get_typestore(Stores.ROS2_HUMBLE)
    register_in_typestore(ts)
    types = builders.MessageTypes.from_typestore(ts)
    summary = BagSummary()
    reader = _open_reader(in_path, ts)
    try:
        by_topic, wanted = _check_topics(reader, in_path, topics)
        total = sum(by_topic[t].msgcount for t in wanted)
        sync = PairSynchronizer(slop=slop)
        with Writer(out_path, version=9, storage_plugin=plugins[storage]) as writer:
            out = _Outputs(writer, ts, types, prefix)
            connections = [by_topic[t] for t in wanted]
            for count, (conn, _, raw) in enumerate(reader.messages(connections=connections), 1):
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                except Exception as err:  # noqa: BLE001
                    summary.skipped.append(f"{conn.topic}: undecodable message ({_first_line(err)})")
                    continue
                pair = sync.add(wanted[conn.topic], _stamp_ns(msg), msg)
                if pair is not None:
                    summary.pairs_found += 1
                    _process_pair(pair, reloc, out, types, summary, frame0, frame1)
                if progress and (count % 20 == 0 or count == total):
                    print(f"\r{progress_bar(count, total)} {count}/{total} messages, {summary.processed} pairs",
                          end="", file=sys.stderr, flush=True)
            if progress:
                print(file=sys.stderr)
    finally:
        reader.close()
    return summary


def progress_bar(done: int, total: int, width: int = 30) -> str:
    """``mickey-ros bag [#########.....]  64%``: a text bar for ``done`` of ``total`` items."""
    frac = min(max(done / total, 0.0), 1.0) if total > 0 else 1.0
    filled = int(round(frac * width))
    return f"mickey-ros bag [{'#' * filled}{'.' * (width - filled)}] {100 * frac:3.0f}%"


def check_bag(in_path: str | Path, topics: dict[str, str]) -> None:
    """Open the bag and check the topics exist (fail fast, before a network is loaded).

    Raises:
        InputError: unreadable/corrupt bag or a missing topic, in one line.
    """
    from rosbags.typesys import Stores, get_typestore

    reader = _open_reader(Path(in_path), get_typestore(Stores.ROS2_HUMBLE))
    try:
        _check_topics(reader, Path(in_path), topics)
    finally:
        reader.close()


def _open_reader(in_path: Path, ts: Any) -> Any:
    from rosbags.highlevel import AnyReader

    if not in_path.exists():
        raise InputError(f"IN: {in_path} does not exist")
    try:
        reader = AnyReader([in_path], default_typestore=ts)
        reader.open()
    except Exception as err:  # noqa: BLE001 - rosbags raises several types for broken bags
        raise InputError(f"IN: cannot read {in_path} as a rosbag2 (mcap or sqlite3): {_first_line(err)}") from err
    return reader


def _check_topics(reader: Any, in_path: Path, topics: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    by_topic = {c.topic: c for c in reader.connections}
    wanted = {}
    for stream, topic in topics.items():
        if topic not in by_topic:
            raise InputError(f"--{stream}: topic {topic} is not in {in_path} (topics: {', '.join(sorted(by_topic))})")
        wanted[topic] = stream
    return by_topic, wanted


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


class _Outputs:
    """Output connections of the bag writer and one ``write`` per message."""

    def __init__(self, writer: Any, ts: Any, types: builders.MessageTypes, prefix: str) -> None:
        self.writer, self.ts = writer, ts
        prefix = prefix.rstrip("/")
        spec = {
            "tf": ("/tf", "tf2_msgs/msg/TFMessage"),
            "pose": (f"{prefix}/relative_pose", "geometry_msgs/msg/PoseWithCovarianceStamped"),
            "full": (f"{prefix}/relative_pose_full", RELATIVE_POSE_TYPE),
            "cloud0": (f"{prefix}/keypoints0", "sensor_msgs/msg/PointCloud2"),
            "cloud1": (f"{prefix}/keypoints1", "sensor_msgs/msg/PointCloud2"),
            "inliers": (f"{prefix}/num_inliers", "std_msgs/msg/UInt32"),
        }
        self.conns = {k: (writer.add_connection(topic, msgtype, typestore=ts), msgtype)
                      for k, (topic, msgtype) in spec.items()}

    def write(self, key: str, stamp_ns: int, msg: Any) -> None:
        conn, msgtype = self.conns[key]
        self.writer.write(conn, stamp_ns, self.ts.serialize_cdr(msg, msgtype))


def _process_pair(pair: Any, reloc: Any, out: _Outputs, types: builders.MessageTypes, summary: BagSummary,
                  frame0: str | None, frame1: str | None) -> None:
    try:
        image0, image1 = message_to_rgb(pair.image0, "image0"), message_to_rgb(pair.image1, "image1")
        cam0, cam1 = camera_info_to_model(pair.info0, "camera_info0"), camera_info_to_model(pair.info1, "camera_info1")
        check_image_matches_info(image0, cam0, "camera_info0")
        check_image_matches_info(image1, cam1, "camera_info1")
        if cam0.distorted or cam1.distorted:
            raise InputError("camera_info: non-zero distortion; record rectified images (image_rect) for now")
        res = reloc.estimate(image0, cam0.K, image1, cam1.K)
    except MickeyError as err:
        summary.skipped.append(f"pair at {pair.stamp0} ns: {err}")
        return
    summary.processed += 1
    f0 = frame0 or pair.image0.header.frame_id or "camera0_optical_frame"
    f1 = frame1 or pair.image1.header.frame_id or "camera1_optical_frame"
    hdr0 = builders.header(types, pair.stamp0, f0)
    pose = builders.pose_with_covariance_from_relative_pose(types, hdr0, res.T_0to1)
    full = builders.relative_pose_message(types, out.ts.types[RELATIVE_POSE_TYPE], hdr0, f1, pair.stamp1, res)
    out.write("full", pair.stamp0, full)
    if not res.success:
        return
    summary.succeeded += 1
    summary.confidences.append(res.confidence)
    tf = builders.transform_stamped_from_relative_pose(types, hdr0, f1, res.T_0to1)
    out.write("tf", pair.stamp0, out.ts.types["tf2_msgs/msg/TFMessage"](transforms=[tf]))
    out.write("pose", pair.stamp0, pose)
    colours = (255 * np.stack([~res.inliers, res.inliers, np.zeros_like(res.inliers)], 1)).astype(np.uint8)
    out.write("cloud0", pair.stamp0, builders.pointcloud2(types, hdr0, res.kpts3d0, rgb=colours))
    out.write("cloud1", pair.stamp1, builders.pointcloud2(types, builders.header(types, pair.stamp1, f1),
                                                          res.kpts3d1, rgb=colours))
    out.write("inliers", pair.stamp0, out.ts.types["std_msgs/msg/UInt32"](data=res.num_inliers))
