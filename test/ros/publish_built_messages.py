"""Publish every message class the package builds through real rclpy and receive each back (run as a process).

    python test/ros/publish_built_messages.py [--require-relative-pose]

Builds the messages with :func:`message_samples.built_messages` on rclpy's classes (and mickey_ros_msgs'
RelativePose where that package is built), plus ``~/num_inliers`` and ``/diagnostics``; publishes each on a topic of
its own and checks the received message serialises to the same bytes. Prints ``ok: N messages (types)`` and exits
0; a wrong field type fails where the generated code checks it: a Python assertion with
``ROS_PYTHON_CHECK_FIELDS=1`` (one line, exit 1), otherwise the generated C converter's assertion (the process
aborts, as the node did in issue 29).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rclpy  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402

WAIT_S = 60.0


def main() -> int:
    from builtin_interfaces.msg import Time
    from message_samples import built_messages

    from mickey_ros.ros.builders import MessageTypes
    from mickey_ros.ros.node_common import relative_pose_class
    from mickey_ros.ros.relocalize_publishing import diagnostic_array, inliers_message

    full = relative_pose_class()
    if "--require-relative-pose" in sys.argv and full is None:
        print("error: mickey_ros_msgs is not importable (build it: scripts/ros_workspace.sh)", file=sys.stderr)
        return 1
    try:
        messages = built_messages(MessageTypes.from_rclpy(), full)
        messages += [("std_msgs/msg/UInt32", inliers_message(__import__("numpy").int64(57))),
                     ("diagnostic_msgs/msg/DiagnosticArray",
                      diagnostic_array("ok", True, [("processed", 3), ("mean_latency_s", 0.25)], "cpu",
                                       Time(sec=1, nanosec=2)))]
    except AssertionError as err:  # ROS_PYTHON_CHECK_FIELDS=1: the generated setters check each field's type
        print(f"error: a built message has a field of the wrong type: {err}", file=sys.stderr)
        return 1
    rclpy.init()
    node = rclpy.create_node("publish_built_messages")
    qos = QoSProfile(depth=len(messages), reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    received: dict[int, object] = {}
    keep = []
    for i, (_, msg) in enumerate(messages):
        topic = f"/built_messages/m{i}"
        keep.append(node.create_subscription(type(msg), topic, lambda m, i=i: received.setdefault(i, m), qos))
        node.create_publisher(type(msg), topic, qos).publish(msg)  # the C conversion happens here
    end = time.monotonic() + WAIT_S
    while len(received) < len(messages) and time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    missing = [messages[i][0] for i in range(len(messages)) if i not in received]
    differ = [messages[i][0] for i, m in received.items() if serialize_message(m) != serialize_message(messages[i][1])]
    node.destroy_node()
    rclpy.try_shutdown()
    if missing or differ:
        print(f"error: not received: {missing}; received different: {differ}", file=sys.stderr)
        return 1
    print(f"ok: {len(messages)} messages ({', '.join(sorted({name for name, _ in messages}))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
