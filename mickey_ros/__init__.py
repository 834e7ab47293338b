"""mickey_ros: MicKey metric relative pose (CVPR 2024) as a ROS 2 package.

The ROS-free core lives here; ``mickey_ros.ros`` is the only place that imports rclpy.
"""
from mickey_ros.errors import MickeyError
from mickey_ros.pipeline import RelativePose, Relocalizer

__all__ = ["MickeyError", "RelativePose", "Relocalizer"]
__version__ = "0.1.0"
