"""When ``relocalize_node`` runs the network, without ROS: the continuous-mode rate gate and the requests its
services hand to the worker thread.

- :class:`RateGate`: ``max_rate`` by *image stamp*, so a bag replayed fast, sim time and a loaded machine all
  give the same selection: a pair is accepted when its stamp is at least ``1 / max_rate`` after the last accepted
  pair's stamp.
- :class:`Request`: one ``~/relocalize`` or ``~/set_reference`` call waiting (in the service's executor thread)
  for the worker to take the next pair or image and finish it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from mickey_ros.errors import InputError


class RateGate:
    """Accept at most ``max_rate`` inputs per second of *stamp* time; ``max_rate`` 0 accepts everything.

    A stamp earlier than the last accepted one (a bag started again, the clock reset) is accepted and restarts
    the gate.
    """

    def __init__(self, max_rate: float = 0.0) -> None:
        self._last: int | None = None
        self.period_ns = 0
        self.set_rate(max_rate)

    def set_rate(self, max_rate: float) -> None:
        """``max_rate`` in Hz (>= 0; 0 = no limit)."""
        if not max_rate >= 0:
            raise InputError(f"max_rate: expected Hz >= 0, got {max_rate!r}")
        self.period_ns = int(round(1e9 / max_rate)) if max_rate > 0 else 0

    def accept(self, stamp_ns: int) -> bool:
        """True when the input stamped ``stamp_ns`` (ns) passes; then it becomes the last accepted one."""
        stamp_ns = int(stamp_ns)
        if self.period_ns and self._last is not None and self._last <= stamp_ns < self._last + self.period_ns:
            return False
        self._last = stamp_ns
        return True


REQUEST_KINDS = ("relocalize", "set_reference")


@dataclass
class Request:
    """A service call waiting for the worker: ``kind`` ``relocalize`` (the next pair or query image) or
    ``set_reference`` (the next image becomes the reference).

    The node's input callback marks it ``assigned`` when it hands the worker the input; the worker calls
    :meth:`finish` exactly once. The answer is ``(success, message)``.
    """

    kind: str
    assigned: bool = False
    success: bool = False
    message: str = ""
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.kind not in REQUEST_KINDS:
            raise InputError(f"request: expected one of {', '.join(REQUEST_KINDS)}, got {self.kind!r}")

    def finish(self, success: bool, message: str) -> None:
        """Set the answer and wake the waiting service callback (later calls change nothing)."""
        if self.done.is_set():
            return
        self.success, self.message = bool(success), str(message)
        self.done.set()


class RequestBoard:
    """The service calls waiting for the worker: at most one per kind. Thread-safe.

    The service callback :meth:`open` s a request and :meth:`wait` s; the input callback :meth:`take` s it (it
    hands the next input to the worker); the worker :meth:`close` s it with the answer. A request nobody took
    within the timeout is withdrawn and answered with ``no_input_message``; once taken, the wait lasts until the
    worker answers (an inference always ends) or :meth:`close_all` (the node stops).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Request] = {}

    def open(self, kind: str) -> Request | None:
        """A new waiting request of ``kind``; ``None`` when one of that kind is already waiting."""
        with self._lock:
            if kind in self._pending:
                return None
            request = self._pending[kind] = Request(kind)
            return request

    def waiting(self, kind: str) -> bool:
        """True while a request of ``kind`` waits for its input (not yet taken)."""
        with self._lock:
            request = self._pending.get(kind)
            return request is not None and not request.assigned

    def take(self, kind: str) -> Request | None:
        """The request of ``kind`` still waiting for its input, now marked taken; else ``None``."""
        with self._lock:
            request = self._pending.get(kind)
            if request is None or request.assigned:
                return None
            request.assigned = True
            return request

    def close(self, request: Request, success: bool, message: str) -> None:
        """Answer ``request`` (the worker, when its input is done)."""
        with self._lock:
            if self._pending.get(request.kind) is request:
                del self._pending[request.kind]
        request.finish(success, message)

    def wait(self, request: Request, timeout_s: float, no_input_message: str,
             poll_s: float = 0.5) -> tuple[bool, str, bool]:
        """Block the calling (service) thread until ``request`` is answered: ``(success, message, timed_out)``;
        ``timed_out`` when no input came within ``timeout_s`` seconds."""
        timed_out = False
        if not request.done.wait(timeout_s):
            with self._lock:
                if not request.assigned:
                    self._pending.pop(request.kind, None)
                    request.finish(False, no_input_message)
                    timed_out = True
            while not request.done.wait(poll_s):  # taken: the worker is on it
                pass
        return request.success, request.message, timed_out

    def close_all(self, message: str) -> None:
        """Answer every waiting request with failure ``message`` (the node is stopping)."""
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        for request in pending:
            request.finish(False, message)


JOB_KINDS = ("pair", "query", "reference")


@dataclass(frozen=True)
class Job:
    """One input for the worker: ``pair`` (two live cameras, a :class:`~mickey_ros.ros.sync.SyncedPair`), ``query``
    (reference mode, a :class:`~mickey_ros.ros.sync.SyncedFrame` posed against the reference) or ``reference``
    (a frame that becomes the reference); ``request`` is the service call waiting for it, if any."""

    kind: str
    item: Any
    request: Request | None = None

    def __post_init__(self) -> None:
        if self.kind not in JOB_KINDS:
            raise InputError(f"job: expected one of {', '.join(JOB_KINDS)}, got {self.kind!r}")

    @property
    def stamp(self) -> int:
        """ns, the stamp the outputs carry: camera 0's image (pair) or the live image (query, reference)."""
        return self.item.stamp0 if self.kind == "pair" else self.item.stamp
