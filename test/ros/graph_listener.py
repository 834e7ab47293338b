"""What a consumer of relocalize_node sees on the ROS 2 graph (run as a process in a sourced workspace).

    python test/ros/graph_listener.py OUT.json PARENT CHILD [--node /mickey_relocalizer] [--timeout S]

Waits for ``<node>/relative_pose`` (PoseWithCovarianceStamped), ``<node>/relative_pose_full``
(mickey_ros_msgs/RelativePose) and the TF ``PARENT -> CHILD`` looked up through a real ``tf2_ros.Buffer`` and
``TransformListener``; writes them to OUT.json (4x4 matrices: the child's / camera 1's pose in the parent frame) and
exits 0, or exits 1 naming what never came.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import rclpy
from rclpy.duration import Duration
from rclpy.time import Time


def _matrix(rotation, translation) -> list[list[float]]:
    from mickey_ros.geometry.se3 import make_T, quat_wxyz_to_matrix

    q, t = rotation, translation
    return make_T(quat_wxyz_to_matrix([q.w, q.x, q.y, q.z]), [t.x, t.y, t.z]).tolist()


def main() -> int:
    import tf2_ros
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from mickey_ros_msgs.msg import RelativePose

    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("parent")
    parser.add_argument("child")
    parser.add_argument("--node", default="/mickey_relocalizer")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    rclpy.init()
    node = rclpy.create_node("graph_listener")
    buffer = tf2_ros.Buffer()
    listener = tf2_ros.TransformListener(buffer, node)  # noqa: F841 - keeps the /tf subscription
    got: dict = {}
    node.create_subscription(PoseWithCovarianceStamped, f"{args.node}/relative_pose",
                             lambda m: got.setdefault("pose", m), 10)
    node.create_subscription(RelativePose, f"{args.node}/relative_pose_full", lambda m: got.setdefault("full", m), 10)
    end = time.monotonic() + args.timeout
    while time.monotonic() < end and not ({"pose", "full", "tf"} <= got.keys()):
        rclpy.spin_once(node, timeout_sec=0.1)
        if "tf" not in got and buffer.can_transform(args.parent, args.child, Time(), Duration(seconds=0)):
            got["tf"] = buffer.lookup_transform(args.parent, args.child, Time())
    missing = sorted({"pose", "full", "tf"} - got.keys())
    if missing:
        print(f"graph_listener: error: nothing received for {missing} in {args.timeout:g} s", file=sys.stderr)
        return 1
    pose, full, tf = got["pose"], got["full"], got["tf"]
    result = {
        "pose": {"frame_id": pose.header.frame_id, "T": _matrix(pose.pose.pose.orientation, pose.pose.pose.position),
                 "stamp": [pose.header.stamp.sec, pose.header.stamp.nanosec]},
        "full": {"frame_id": full.header.frame_id, "child_frame_id": full.child_frame_id, "status": full.status,
                 "confidence": full.confidence, "num_inliers": full.num_inliers, "num_matches": full.num_matches,
                 "reason": full.reason, "T": _matrix(full.pose.pose.orientation, full.pose.pose.position)},
        "tf": {"frame_id": tf.header.frame_id, "child_frame_id": tf.child_frame_id,
               "T": _matrix(tf.transform.rotation, tf.transform.translation),
               "stamp": [tf.header.stamp.sec, tf.header.stamp.nanosec]},
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
