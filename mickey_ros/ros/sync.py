"""Approximate-time pairing of (image0, info0, image1, info1) without ROS.

Per camera, an image is paired with the CameraInfo of (nearly) the same stamp; where that CameraInfo is not
coming (a late-starting driver, an info stream with stamps of its own), with the latest CameraInfo of that camera
(cached, CameraInfo rarely changes; counted in ``info_substituted``) once the image has waited one frame: a newer
image or a newer CameraInfo of its camera has arrived. An image that arrives before any CameraInfo of its camera
waits (up to ``queue_size``) for the first one. Across cameras, a frame of camera 0 is paired with the camera-1
frame nearest in stamp within ``slop``. When a pair is emitted,
everything at or before its stamps is dropped, so pairs come out in time order and queues stay bounded
(``queue_size`` per stream). Used by the bag tool and, when message_filters is absent, by the node.
:class:`FrameSynchronizer` does the per-camera half alone (the node's reference mode: one live camera).
Stamps are integer nanoseconds.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from mickey_ros.errors import InputError

STREAMS = ("image0", "info0", "image1", "info1")


def _info_for(stamp: int, image_stamps: deque[tuple[int, Any]], infos: deque[tuple[int, Any]],
              latest: tuple[int, Any] | None, info_slop_ns: int) -> tuple[Any, bool] | None:
    """The CameraInfo for an image: ``(info, substituted)``, or None while the image should still wait.

    At its stamp (within ``info_slop_ns``) when there; else the cached ``latest`` one, once the image's own cannot
    be expected any more (a newer image or a newer CameraInfo of the camera has arrived)."""
    best = min(infos, key=lambda item: abs(item[0] - stamp), default=None)
    if best is not None and abs(best[0] - stamp) <= info_slop_ns:
        return best[1], False
    if latest is None:
        return None
    newest_image = max((item[0] for item in image_stamps), default=stamp)
    if newest_image > stamp or latest[0] > stamp + info_slop_ns:
        return latest[1], True
    return None


class _CameraQueues:
    """One camera's image and CameraInfo queues (``queue_size`` each) and its newest CameraInfo; counts drops."""

    def __init__(self, info_slop_ns: int, queue_size: int) -> None:
        self.info_slop_ns, self.queue_size = info_slop_ns, queue_size
        self.queues: dict[str, deque[tuple[int, Any]]] = {"image": deque(), "info": deque()}
        self.latest_info: tuple[int, Any] | None = None
        self.dropped = 0  # messages pushed out of a full queue or made stale by a newer emitted frame

    def push(self, kind: str, stamp_ns: int, msg: Any) -> None:
        queue = self.queues[kind]
        queue.append((stamp_ns, msg))
        if kind == "info" and (self.latest_info is None or stamp_ns >= self.latest_info[0]):
            self.latest_info = (stamp_ns, msg)
        if len(queue) > self.queue_size:
            queue.popleft()
            self.dropped += 1

    def frames(self) -> list[tuple[int, Any, Any, bool]]:
        """Images that have their CameraInfo (module docstring), oldest first: (stamp, image, info, substituted)."""
        images, infos = self.queues["image"], self.queues["info"]
        frames = []
        for stamp, image in images:
            found = _info_for(stamp, images, infos, self.latest_info, self.info_slop_ns)
            if found is not None:
                frames.append((stamp, image, found[0], found[1]))
        return frames

    def drop_until(self, stamp: int) -> None:
        """Forget what an emitted frame at ``stamp`` makes stale (its own image and CameraInfo are no drops)."""
        for kind, queue in self.queues.items():
            limit = stamp + (self.info_slop_ns if kind == "info" else 0)
            kept = deque(item for item in queue if item[0] > limit)
            self.dropped += max(len(queue) - len(kept) - 1, 0)
            self.queues[kind] = kept


def _check_sizes(slops: dict[str, float], queue_size: int) -> None:
    """``slops`` (name -> seconds, the first name is the one the error names) >= 0 and ``queue_size`` >= 1."""
    if not all(value >= 0 for value in slops.values()):
        got = ", ".join(f"{k}={v!r}" for k, v in slops.items())
        raise InputError(f"{next(iter(slops))}: expected seconds >= 0, got {got}")
    if int(queue_size) < 1:
        raise InputError(f"queue_size: expected an integer >= 1, got {queue_size!r}")


@dataclass(frozen=True)
class SyncedPair:
    """One synchronised pair: each camera's image with its CameraInfo, and the image stamps (ns)."""

    image0: Any
    info0: Any
    image1: Any
    info1: Any
    stamp0: int
    stamp1: int


class PairSynchronizer:
    """Approximate-time synchroniser for two cameras and their CameraInfo.

    Args:
        slop: seconds; the largest stamp difference between the two cameras' images of a pair.
        info_slop: seconds; the largest stamp difference between an image and its CameraInfo
            (drivers publish both with the same stamp; default 1 ms).
        queue_size: messages kept per stream; older ones are dropped (counted in ``dropped``).
    """

    def __init__(self, slop: float = 0.05, info_slop: float = 0.001, queue_size: int = 10) -> None:
        _check_sizes({"slop": slop, "info_slop": info_slop}, queue_size)
        self.slop_ns = int(round(slop * 1e9))
        self.info_slop_ns = int(round(info_slop * 1e9))
        self.queue_size = int(queue_size)
        self._cameras = {cam: _CameraQueues(self.info_slop_ns, self.queue_size) for cam in "01"}
        self.info_substituted = 0  # frames emitted with the cached CameraInfo instead of one at their stamp

    @property
    def dropped(self) -> int:
        """Messages pushed out of a full queue or made stale by a newer pair."""
        return sum(camera.dropped for camera in self._cameras.values())

    def add(self, stream: str, stamp_ns: int, msg: Any) -> SyncedPair | None:
        """Add one message; returns the newest pair it completes, if any."""
        if stream not in STREAMS:
            raise InputError(f"stream: expected one of {', '.join(STREAMS)}, got {stream!r}")
        self._cameras[stream[-1]].push(stream[:-1], int(stamp_ns), msg)
        return self._try_pair()

    def pending(self, stream: str) -> int:
        """Messages waiting in ``stream`` (e.g. images that never got their CameraInfo)."""
        return len(self._cameras[stream[-1]].queues[stream[:-1]])

    def _try_pair(self) -> SyncedPair | None:
        frames0, frames1 = self._cameras["0"].frames(), self._cameras["1"].frames()
        best: tuple[int, int, tuple, tuple] | None = None
        for f0 in frames0:
            for f1 in frames1:
                gap = abs(f0[0] - f1[0])
                if gap <= self.slop_ns:
                    key = (max(f0[0], f1[0]), -gap)  # newest first, then closest
                    if best is None or key > (best[0], best[1]):
                        best = (key[0], key[1], f0, f1)
        if best is None:
            return None
        _, _, f0, f1 = best
        self.info_substituted += int(f0[3]) + int(f1[3])
        self._cameras["0"].drop_until(f0[0])
        self._cameras["1"].drop_until(f1[0])
        return SyncedPair(image0=f0[1], info0=f0[2], image1=f1[1], info1=f1[2], stamp0=f0[0], stamp1=f1[0])


@dataclass(frozen=True)
class SyncedFrame:
    """One camera's image with its CameraInfo, and the image stamp (ns)."""

    image: Any
    info: Any
    stamp: int


class FrameSynchronizer:
    """Pairs one camera's images with their CameraInfo (reference mode: one live camera).

    An image is emitted with the CameraInfo nearest in stamp within ``info_slop`` as soon as both are there (else
    with the cached latest CameraInfo, see the module docstring);
    everything at or before that stamp is then dropped, so frames come out in time order and each queue holds at
    most ``queue_size`` messages (older ones are dropped and counted in ``dropped``).

    Args:
        info_slop: seconds; the largest stamp difference between an image and its CameraInfo.
        queue_size: messages kept per stream.
    """

    STREAMS = ("image", "info")

    def __init__(self, info_slop: float = 0.001, queue_size: int = 10) -> None:
        _check_sizes({"info_slop": info_slop}, queue_size)
        self.info_slop_ns = int(round(info_slop * 1e9))
        self.queue_size = int(queue_size)
        self._camera = _CameraQueues(self.info_slop_ns, self.queue_size)
        self.info_substituted = 0  # frames emitted with the cached CameraInfo instead of one at their stamp

    @property
    def dropped(self) -> int:
        """Messages pushed out of a full queue or made stale by a newer frame."""
        return self._camera.dropped

    def add(self, stream: str, stamp_ns: int, msg: Any) -> SyncedFrame | None:
        """Add one message (``stream`` ``image`` or ``info``); returns the frame it completes, if any."""
        if stream not in self.STREAMS:
            raise InputError(f"stream: expected one of {', '.join(self.STREAMS)}, got {stream!r}")
        self._camera.push(stream, int(stamp_ns), msg)
        frames = self._camera.frames()
        if not frames:
            return None
        stamp, image, info, substituted = frames[-1]  # the newest complete frame
        self._camera.drop_until(stamp)
        self.info_substituted += int(substituted)
        return SyncedFrame(image=image, info=info, stamp=stamp)

    def pending(self, stream: str) -> int:
        """Messages waiting in ``stream``."""
        return len(self._camera.queues[stream])


def pair_stream(messages: Iterable[tuple[str, int, Any]], **kwargs: Any) -> Iterator[SyncedPair]:
    """Pair an offline stream of ``(stream, stamp_ns, msg)`` in arrival order (e.g. read from a bag)."""
    sync = PairSynchronizer(**kwargs)
    for stream, stamp, msg in messages:
        pair = sync.add(stream, stamp, msg)
        if pair is not None:
            yield pair
