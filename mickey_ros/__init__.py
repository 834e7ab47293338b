"""mickey_ros: MicKey metric relative pose (CVPR 2024) as a ROS 2 package.

The ROS-free core lives here; ``mickey_ros.ros`` is the only place that imports rclpy.
``Relocalizer`` and ``RelativePose`` are imported lazily so that light submodules
(``mickey_ros.geometry``, ``mickey_ros.ros.convert``) do not pay for torch at import.
"""
from __future__ import annotations

from typing import Any

from mickey_ros.errors import MickeyError

__all__ = ["MickeyError", "RelativePose", "Relocalizer"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("RelativePose", "Relocalizer"):
        from mickey_ros import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'mickey_ros' has no attribute {name!r}")
