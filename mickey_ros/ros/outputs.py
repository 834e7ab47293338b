"""The messages ``relocalize_node`` publishes for one pose, built without ROS (rclpy or rosbags classes).

Frames and stamps (DESIGN.md §2, §5): camera 0 is the first live camera or, in reference mode, the reference
(its optical frame is ``frame0``, default ``mickey_reference``); camera 1 is the second live camera or the query.
``T_0to1`` maps camera-0 points into camera-1 points (``X1 = R X0 + t``, metres). Every output carries the stamp of
the image it describes: camera 0's image stamp for a pair, the query image's stamp in reference mode.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mickey_ros.ros import builders


@dataclass(frozen=True)
class OutputFrames:
    """Optical frames and stamps (ns) of the two cameras of one pose."""

    frame0: str
    stamp0: int
    frame1: str
    stamp1: int


@dataclass
class PoseMessages:
    """What one successful pose becomes; ``None`` / empty where that output is off."""

    transforms: list[Any] = field(default_factory=list)
    pose: Any = None  # ~/relative_pose: camera 1 in camera 0's optical frame
    map_pose: Any = None  # ~/map_pose: camera 1 in the anchor (map) frame, with an anchor only
    cloud0: Any = None
    cloud1: Any = None
    full: Any = None  # ~/relative_pose_full (mickey_ros_msgs/RelativePose) when that class is given


def pose_messages(types: builders.MessageTypes, frames: OutputFrames, res: Any, tf_naming: builders.TfNaming,
                  anchor: builders.Anchor | None = None, clouds: bool = True,
                  relative_pose_class: Any = None) -> PoseMessages:
    """Messages for a successful :class:`~mickey_ros.pipeline.RelativePose` ``res``.

    - TF per ``tf_naming`` (:meth:`~mickey_ros.ros.builders.TfNaming.transforms`; with ``anchor``: parent the
      anchor frame, ``T_anchor_1 = anchor.T_frame_0 @ inv(T_0to1)``);
    - ``pose``: ``inv(T_0to1)`` in ``frame0`` at ``stamp0``; ``map_pose``: ``T_anchor_1`` in the anchor frame;
      both with the result's covariance (turned into the anchor frame's axes for ``map_pose``);
    - ``cloud0`` / ``cloud1``: the sampled matches' 3D keypoints, each in its own optical frame, green = inlier;
    - ``full``: the RelativePose message (child ``frame1``, ``stamp1``).
    """
    hdr0 = builders.header(types, frames.stamp0, frames.frame0)
    out = PoseMessages(transforms=tf_naming.transforms(types, hdr0, frames.frame1, res.T_0to1, anchor=anchor),
                       pose=builders.pose_with_covariance_from_relative_pose(types, hdr0, res.T_0to1,
                                                                             res.covariance))
    if anchor is not None:
        hdr_map = builders.header(types, frames.stamp0, anchor.frame)
        out.map_pose = builders.pose_with_covariance(types, hdr_map,
                                                     builders.query_pose_in_anchor(anchor.T_frame_0, res.T_0to1),
                                                     builders.covariance_in_anchor(res.covariance, anchor.T_frame_0))
    if clouds:
        inliers = np.asarray(res.inliers, dtype=bool)
        colours = (255 * np.stack([~inliers, inliers, np.zeros_like(inliers)], 1)).astype(np.uint8)
        out.cloud0 = builders.pointcloud2(types, hdr0, res.kpts3d0, rgb=colours)
        out.cloud1 = builders.pointcloud2(types, builders.header(types, frames.stamp1, frames.frame1), res.kpts3d1,
                                          rgb=colours)
    if relative_pose_class is not None:
        out.full = builders.relative_pose_message(types, relative_pose_class, hdr0, frames.frame1, frames.stamp1, res)
    return out
