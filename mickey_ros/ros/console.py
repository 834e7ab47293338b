"""Console entry points of the two nodes (setup.py): where rclpy cannot be imported, the node exits with code 2
and one line on stderr saying how to get it, instead of an ImportError traceback. rclpy-free itself."""
from __future__ import annotations

import importlib
import sys

from mickey_ros.deps import rclpy_message


def _start(name: str, module: str) -> None:
    try:
        importlib.import_module("rclpy")
    except ImportError:
        print(f"{name}: error: {rclpy_message()}", file=sys.stderr)
        sys.exit(2)  # node_common.ERROR_EXIT_CODE; node_common itself needs no rclpy, but stay import-light
    importlib.import_module(module).main()


def relocalize_node() -> None:
    """``relocalize_node`` console script."""
    _start("relocalize_node", "mickey_ros.ros.relocalize_node")


def map_alignment_node() -> None:
    """``map_alignment_node`` console script."""
    _start("map_alignment_node", "mickey_ros.ros.map_alignment_node")
