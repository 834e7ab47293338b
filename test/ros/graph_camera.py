"""A live camera for the ROS 2 graph tests (run as a process): one image file + its CameraInfo, republished.

    python test/ros/graph_camera.py NAME IMAGE FX FY CX CY [--rate HZ]

Publishes ``/NAME/image_raw`` (sensor_msgs/Image, rgb8) and ``/NAME/camera_info`` with frame ``NAME_optical_frame``.
Stamps lie on a grid of 1/rate seconds of wall-clock time, so two such cameras started apart are hardware-synced: the
same stamp for the same tick. Runs until SIGINT/SIGTERM (exit 0).
"""
from __future__ import annotations

import argparse
import time

import cv2
import rclpy
from rclpy.executors import ExternalShutdownException


def main() -> int:
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CameraInfo, Image

    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("image")
    parser.add_argument("intrinsics", nargs=4, type=float, metavar="FX FY CX CY")
    parser.add_argument("--rate", type=float, default=2.0)
    args = parser.parse_args()
    bgr = cv2.imread(args.image)
    if bgr is None:
        parser.error(f"cannot read {args.image}")
    rgb = bgr[:, :, ::-1].copy()
    height, width = rgb.shape[:2]
    fx, fy, cx, cy = args.intrinsics
    rclpy.init()
    node = rclpy.create_node(f"{args.name}_driver")
    pub_image = node.create_publisher(Image, f"/{args.name}/image_raw", 5)
    pub_info = node.create_publisher(CameraInfo, f"/{args.name}/camera_info", 5)
    image = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=rgb.tobytes())
    info = CameraInfo(height=height, width=width, distortion_model="plumb_bob", d=[0.0] * 5,
                      k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0], r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])
    period_ns = int(1e9 / args.rate)
    try:
        while rclpy.ok():
            tick = (time.time_ns() // period_ns + 1) * period_ns
            time.sleep(max(0.0, (tick - time.time_ns()) * 1e-9))
            for msg in (image, info):
                msg.header.stamp = Time(sec=tick // 10**9, nanosec=tick % 10**9)
                msg.header.frame_id = f"{args.name}_optical_frame"
            pub_image.publish(image)
            pub_info.publish(info)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # noqa: BLE001 - a signal shut the context down between ok() and publish
        if rclpy.ok():
            raise
    finally:
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
