"""Pieces both nodes share: parameter declaration with descriptors and ranges, and the optional RelativePose type.

ROS modules are imported inside the functions, so importing this module needs no ROS installation.
"""
from __future__ import annotations

from typing import Any


def declare_parameters(node: Any, parameters: dict[str, tuple[Any, str]],
                       float_ranges: dict[str, tuple[float, float]] | None = None,
                       int_ranges: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
    """Declare ``{name: (default, description)}`` on ``node`` (with the given ranges); returns the values in effect."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    for name, (default, text) in parameters.items():
        desc = ParameterDescriptor(description=text)
        if float_ranges and name in float_ranges:
            lo, hi = float_ranges[name]
            desc.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi)]
        if int_ranges and name in int_ranges:
            lo, hi = int_ranges[name]
            desc.integer_range = [IntegerRange(from_value=lo, to_value=hi)]
        node.declare_parameter(name, default, desc)
    return {name: node.get_parameter(name).value for name in parameters}


def relative_pose_class() -> Any:
    """``mickey_ros_msgs.msg.RelativePose`` when that interface package is built, else ``None``."""
    try:
        from mickey_ros_msgs.msg import RelativePose
    except ImportError:
        return None
    return RelativePose


def run_node(factory: Any, name: str, args: list[str] | None = None) -> None:
    """Console-script body: init rclpy, build the node with ``factory()``, spin until Ctrl-C, shut down cleanly.

    A bad configuration (:class:`~mickey_ros.errors.MickeyError` while building) prints one line, no traceback.
    """
    import rclpy

    from mickey_ros.errors import MickeyError

    rclpy.init(args=args)
    node = None
    try:
        node = factory()
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    except MickeyError as err:
        print(f"{name}: error: {err}")
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
