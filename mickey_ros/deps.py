"""Optional dependencies: import one, or fail with one line that gives the exact install command.

Each optional feature belongs to an extra of setup.py (``onnx``, ``train``, ...); the message names the module,
what needs it, and ``pip install -e ".[extra]"`` (run in the repository). rclpy comes with ROS 2, not from an extra.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from mickey_ros.errors import DependencyError

# the PyPI wheels the README's test command installs for the nodes (or source a ROS 2 install instead)
ROS_WHEELS = '"ros-rclpy[fastrtps]" ros-sensor-msgs ros-geometry-msgs ros-std-msgs ros-diagnostic-msgs ros-std-srvs'


def install_hint(extra: str | None) -> str:
    """``pip install -e ".[extra]"``, or ``pip install -e .`` for a core dependency (``extra=None``)."""
    return f'pip install -e ".[{extra}]"' if extra else "pip install -e ."


def missing_message(module: str, extra: str | None, needed_for: str = "") -> str:
    """``<module>: not installed (needed for <needed_for>); run pip install -e ".[extra]"`` (one line)."""
    why = f" (needed for {needed_for})" if needed_for else ""
    return f"{module}: not installed{why}; run {install_hint(extra)}"


def require(module: str, extra: str | None, needed_for: str = "") -> ModuleType:
    """Import ``module`` (a dotted name is fine) and return it.

    Raises:
        DependencyError: it (or a module it imports) is not installed; the message is :func:`missing_message`
            for the top-level package, chained with the ImportError.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise DependencyError(missing_message(module.split(".")[0], extra, needed_for)) from err


def rclpy_message() -> str:
    """The one line for a node started where rclpy cannot be imported."""
    return ("rclpy: not importable; source your ROS 2 setup (source /opt/ros/<distro>/setup.bash) or run "
            f"pip install {ROS_WHEELS}")
