"""Pieces both nodes share: parameter declaration and validation, the console-script body, the optional
RelativePose type.

Parameters are checked by one function at start-up and on every later ``set_parameters``, so a value the node
refuses at start is refused the same way at run time: start-up raises :class:`ParameterError` (the console script
prints its one line on stderr and exits with code 2); ``set_parameters`` answers ``successful=False`` with the same
text as the reason and leaves the node unchanged.

ROS modules are imported inside the functions, so importing this module needs no ROS installation.
"""
from __future__ import annotations

import array
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mickey_ros.errors import InputError, MickeyError

STOP_TIMEOUT_S = 2.0  # longest wait for a worker thread at shutdown; a longer inference is abandoned
ERROR_EXIT_CODE = 2  # as the mickey-ros command


class ParameterError(InputError):
    """A node parameter has a value the node cannot run with; the message names it and what was expected."""


@dataclass(frozen=True)
class ParameterRules:
    """What a node accepts beyond each parameter's type (the type of its default).

    ``check`` sees every value at once, for rules on files, devices and pairs of parameters; it raises
    :class:`ParameterError`. ``read_only`` parameters are fixed after start-up (rclpy rejects changes).
    """

    float_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    int_ranges: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    read_only: frozenset[str] = frozenset()
    check: Callable[[Mapping[str, Any]], None] | None = None


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "a list of numbers"}


def _number_list(name: str, value: Any) -> list[float]:
    """A double-array parameter (rclpy gives ``array.array('d')``; YAML and ``-p`` give lists, maybe of integers)."""
    if isinstance(value, (list, tuple, array.array)) and all(type(v) in (int, float) for v in value):
        return [float(v) for v in value]
    raise ParameterError(f"{name}: expected a list of numbers, got {value!r}")


def check_value(name: str, value: Any, default: Any, rules: ParameterRules) -> Any:
    """``value`` for parameter ``name`` converted to the type of ``default`` (an integer is a valid double; a list
    default means a list of numbers, returned as a list of floats).

    Raises:
        ParameterError: wrong type, outside the range or not one of the choices.
    """
    kind = type(default)
    if kind is list:
        return _number_list(name, value)
    if kind is float and type(value) is int:
        value = float(value)
    if type(value) is not kind:
        raise ParameterError(f"{name}: expected {_TYPE_WORDS.get(kind, kind.__name__)}, got {value!r}")
    bounds = rules.float_ranges.get(name) or rules.int_ranges.get(name)
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise ParameterError(f"{name}: expected a value in [{bounds[0]}, {bounds[1]}], got {value!r}")
    choices = rules.choices.get(name)
    if choices is not None and value not in choices:
        raise ParameterError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def check_parameters(values: Mapping[str, Any], parameters: Mapping[str, tuple[Any, str]],
                     rules: ParameterRules) -> dict[str, Any]:
    """Every value checked and converted (:func:`check_value`), then the whole set by ``rules.check``."""
    checked = {name: check_value(name, values[name], parameters[name][0], rules) for name in parameters}
    if rules.check is not None:
        rules.check(checked)
    return checked


def check_frame_id(name: str, frame: str) -> None:
    """A TF frame id: no leading '/' (tf2 rejects it) and no whitespace; empty is allowed (= not set)."""
    if frame.startswith("/") or any(c.isspace() for c in frame):
        raise ParameterError(f"{name}: expected a TF frame id without a leading '/' or spaces, got {frame!r}")


def _descriptor(name: str, default: Any, text: str, rules: ParameterRules, *, final: bool) -> Any:
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    from rclpy.parameter import Parameter

    if name in rules.choices:
        text = f"{text} [{' | '.join(rules.choices[name])}]"
    if not final:  # any type at first, so that a wrong override reaches check_value and its one-line message
        return ParameterDescriptor(description=text, dynamic_typing=True)
    desc = ParameterDescriptor(description=text, type=Parameter.Type.from_parameter_value(default).value,
                               read_only=name in rules.read_only)
    if name in rules.float_ranges:
        lo, hi = rules.float_ranges[name]
        desc.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi))]
    if name in rules.int_ranges:
        lo, hi = rules.int_ranges[name]
        desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi))]
    return desc


def declare_parameters(node: Any, parameters: Mapping[str, tuple[Any, str]], rules: ParameterRules) -> dict[str, Any]:
    """Declare ``{name: (default, description)}`` on ``node``, check the values in effect (overrides from the
    command line or a YAML file included) and fix each parameter's type, range and read-only flag.

    Returns:
        the checked values.

    Raises:
        ParameterError: a value the node cannot run with (nothing has been logged yet).
    """
    from rclpy.parameter import Parameter

    for name, (default, text) in parameters.items():
        node.declare_parameter(name, default, _descriptor(name, default, text, rules, final=False))
    values = check_parameters({name: node.get_parameter(name).value for name in parameters}, parameters, rules)
    for name, (default, text) in parameters.items():
        if type(node.get_parameter(name).value) is not type(values[name]):  # an integer given for a double
            node.set_parameters([Parameter(name, value=values[name])])
        node.set_descriptor(name, _descriptor(name, default, text, rules, final=True))
    return values


def watch_parameters(node: Any, parameters: Mapping[str, tuple[Any, str]], rules: ParameterRules,
                     values: dict[str, Any], apply: Callable[[set[str]], None] | None = None) -> None:
    """Check every later ``set_parameters`` like the start-up values; on success update ``values`` in place and
    call ``apply(changed names)``. A rejected change answers ``successful=False`` with the reason and changes
    nothing."""
    from rcl_interfaces.msg import SetParametersResult

    def on_set(changes: list[Any]) -> Any:
        proposed = {**values, **{p.name: p.value for p in changes if p.name in parameters}}
        try:
            check_parameters(proposed, parameters, rules)
        except ParameterError as err:
            return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def after_set(changes: list[Any]) -> None:
        changed = {p.name for p in changes if p.name in parameters}
        values.update(check_parameters({**values, **{p.name: p.value for p in changes if p.name in parameters}},
                                        parameters, rules))
        if apply is not None and changed:
            apply(changed)

    node.add_on_set_parameters_callback(on_set)
    node.add_post_set_parameters_callback(after_set)


def warn_unknown_overrides(node: Any, renamed: Mapping[str, str] | None = None) -> None:
    """One warning per override (command line / YAML) naming a parameter this node does not have: rclpy ignores
    them silently, which hides typos. ``renamed`` maps old names to their replacements."""
    overrides = getattr(node, "_parameter_overrides", None) or {}
    for name in sorted(overrides):
        if node.has_parameter(name):
            continue
        hint = f" (replaced by {renamed[name]})" if renamed and name in renamed else ""
        node.get_logger().warning(f"parameter '{name}' is not a parameter of this node and is ignored{hint}")


def relative_pose_class() -> Any:
    """``mickey_ros_msgs.msg.RelativePose`` when that interface package is built, else ``None``."""
    try:
        from mickey_ros_msgs.msg import RelativePose
    except ImportError:
        return None
    return RelativePose


FATAL_POLL_S = 0.5  # how often the spin loop looks at a node's ``fatal_error``


def run_node(factory: Callable[[], Any], name: str, args: list[str] | None = None, threads: int = 1) -> None:
    """Console-script body: init rclpy, build the node with ``factory()``, spin until SIGINT/SIGTERM, shut down.

    - ``threads`` > 1: a ``MultiThreadedExecutor`` with that many threads (a node whose service callbacks wait
      for its worker thread needs one, with those services in a callback group of their own); else a
      ``SingleThreadedExecutor``.
    - SIGINT/SIGTERM (rclpy's handlers shut the context down): exit code 0, no traceback, also while building the
      node or during an inference. ``destroy_node`` stops a node's worker thread (waiting at most
      :data:`STOP_TIMEOUT_S`); then the process ends at once (:func:`os._exit` after flushing), without waiting for
      an inference still in progress or for interpreter teardown.
    - A bad configuration (:class:`~mickey_ros.errors.MickeyError` while building, or unparsable ``--ros-args``):
      one line ``<name>: error: <message>`` on stderr, exit code 2, no traceback. So is a ``MickeyError`` a node
      stores in its ``fatal_error`` attribute after start-up (e.g. from its worker thread): the spin loop looks at
      it every :data:`FATAL_POLL_S` (a multi-threaded executor re-raises callback errors only when a later callback
      runs).
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor

    try:
        rclpy.init(args=args)
    except Exception as err:  # noqa: BLE001 - rcl's argument errors: report them in one line
        _exit(name, ERROR_EXIT_CODE, f"--ros-args: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
    node, executor, code, message = None, None, 0, ""
    try:
        node = factory()
        if rclpy.ok():  # else a signal came while the node was being built
            executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
            executor.add_node(node)
            while rclpy.ok():
                try:
                    executor.spin_once(timeout_sec=FATAL_POLL_S)
                except Exception:  # noqa: BLE001 - a signal shut the context down between ok() and the wait
                    if rclpy.ok():  # (rcl then fails "context is not valid" instead of ExternalShutdownException)
                        raise
                    break
                fatal = getattr(node, "fatal_error", None)
                if fatal is not None:
                    raise fatal
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except MickeyError as err:
        code, message = ERROR_EXIT_CODE, str(err)
    finally:
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C while shutting down
            if executor is not None:
                executor.shutdown(timeout_sec=0)
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
            context = rclpy.utilities.get_default_context()
            if hasattr(context, "destroy"):  # leave the DDS graph now (rclpy >= Kilted), not at interpreter exit
                context.destroy()
    _exit(name, code, message)


def _exit(name: str, code: int, message: str = "") -> None:
    """End the process now: everything the node held is released, and interpreter teardown (torch, DDS
    libraries: seconds on a loaded machine) or a worker thread still inside an inference must not delay it."""
    if message:
        print(f"{name}: error: {message}", file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
