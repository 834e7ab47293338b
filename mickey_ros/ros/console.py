"""Console entry points of the two nodes (setup.py). rclpy-free itself.

- ``-h`` / ``--help`` (before ``--ros-args``): usage, parameters (defaults and descriptions), topics and services on
  stdout, exit code 0; rclpy is neither imported nor initialised.
- Where rclpy cannot be imported, the node exits with code 2 and one line on stderr saying how to get it, instead of
  an ImportError traceback.
- SIGINT/SIGTERM before rclpy has taken the signals over (while torch and the network's modules load): exit code 0,
  no traceback (DESIGN.md §5), as after it.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from mickey_ros.deps import rclpy_message

SUMMARY = {
    "relocalize_node": "Two camera streams + CameraInfo in, the metric relative pose (MicKey) out: TF, "
                       "PoseWithCovarianceStamped, keypoint clouds. A lifecycle node (autostart by default).",
    "map_alignment_node": "The transform between two robots' maps, fused from relocalize_node's relative poses and "
                          "each camera's pose in its robot's map.",
}
CONFIG = {"relocalize_node": "mickey_ros.ros.relocalize_config",
          "map_alignment_node": "mickey_ros.ros.map_alignment_config"}
NODE_NAME = {"relocalize_node": "mickey_relocalizer", "map_alignment_node": "mickey_map_alignment"}
YAML = {"relocalize_node": "relocalize.yaml", "map_alignment_node": "map_alignment.yaml"}
WIDTH = 110


def wants_help(args: Sequence[str]) -> bool:
    """``-h`` or ``--help`` among the node's own arguments (not inside ``--ros-args ... [--]``)."""
    in_ros_args = False
    for arg in args:
        if arg == "--ros-args":
            in_ros_args = True
        elif arg == "--" and in_ros_args:
            in_ros_args = False
        elif not in_ros_args and arg in ("-h", "--help"):
            return True
    return False


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _wrap(text: str, indent: str = "      ") -> str:
    return textwrap.fill(text, width=WIDTH, subsequent_indent=indent, break_on_hyphens=False)


def usage(name: str) -> str:
    """The ``--help`` text of console script ``name`` (from the node's parameter, topic and service tables)."""
    config = importlib.import_module(CONFIG[name])
    rules = config.RULES
    lines = [f"usage: {name} [-h] [--ros-args [-p NAME:=VALUE] [--params-file FILE] [-r FROM:=TO] ...]", "",
             _wrap(SUMMARY[name], indent=""), "",
             _wrap(f"Node name {NODE_NAME[name]}: ~/ topics and services are under /{NODE_NAME[name]}/. Parameters: "
                   f"-p NAME:=VALUE or --params-file config/{YAML[name]}; the launch file's arguments: "
                   f"ros2 launch mickey_ros {YAML[name].replace('.yaml', '.launch.py')} --show-args", indent=""), "",
             "subscribes (relative names; remap with -r NAME:=TOPIC):"]
    lines += [_wrap(f"  {topic:<22} {kind}: {text}") for topic, kind, text in config.SUBSCRIBES]
    lines += ["", "publishes:"] + [_wrap(f"  {topic:<22} {kind}: {text}") for topic, kind, text in config.PUBLISHES]
    lines += ["", "services:"] + ([_wrap(f"  {srv:<22} {kind}: {text}") for srv, kind, text in config.SERVICES]
                                  or ["  (only the standard parameter services)"])
    lines += ["", "parameters (name, default: description):"]
    for param, (default, text) in config.PARAMETERS.items():
        notes = []
        bounds = rules.float_ranges.get(param) or rules.int_ranges.get(param)
        if bounds is not None:
            notes.append(f"range [{bounds[0]}, {bounds[1]}]")
        if param in rules.choices:
            notes.append(" | ".join(rules.choices[param]))
        if param in rules.read_only:
            notes.append("read-only")
        extra = f" ({'; '.join(notes)})" if notes else ""
        lines.append(_wrap(f"  {param} = {_value(default)}: {text}{extra}"))
    lines += ["", "SIGINT/SIGTERM: exit 0. A bad parameter: one line on stderr naming it, exit code 2."]
    return "\n".join(lines) + "\n"


def _quiet_exit(signum: int, frame: Any) -> None:
    """A signal while the node's modules load (torch: seconds on a loaded machine): leave now, code 0, no
    KeyboardInterrupt traceback from the middle of an import."""
    os._exit(0)


def _start(name: str, module: str) -> None:
    if wants_help(sys.argv[1:]):
        sys.stdout.write(usage(name))
        sys.stdout.flush()
        sys.exit(0)
    previous = {sig: signal.signal(sig, _quiet_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        importlib.import_module("rclpy")
    except ImportError:
        print(f"{name}: error: {rclpy_message()}", file=sys.stderr)
        sys.exit(2)  # node_common.ERROR_EXIT_CODE; node_common itself needs no rclpy, but stay import-light
    main = importlib.import_module(module).main
    for sig, handler in previous.items():  # run_node's rclpy.init takes the signals over from here
        signal.signal(sig, handler)
    main()


def relocalize_node() -> None:
    """``relocalize_node`` console script."""
    _start("relocalize_node", "mickey_ros.ros.relocalize_node")


def map_alignment_node() -> None:
    """``map_alignment_node`` console script."""
    _start("map_alignment_node", "mickey_ros.ros.map_alignment_node")
