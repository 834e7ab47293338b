"""Offline pairing for ``mickey-ros bag``: the index of a bag (pass 1), the pair plan, and the run's summary.

The whole bag is available, so each image gets the CameraInfo of its camera nearest in stamp (CameraInfo
rarely changes; a late-starting driver loses no frames), and camera-0 images are paired one-to-one with
camera-1 images within ``slop``, closest first. Whatever is not used (a message with an invalid stamp, an
image without a partner) is counted with its reason. rclpy-free, like the rest of the bag tool.
"""
from __future__ import annotations

import bisect
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from mickey_ros.errors import InputError, MickeyError, first_line  # noqa: F401 (re-exported)
from mickey_ros.errors import describe_error as describe  # noqa: F401 (re-exported)

EXACT_INFO_NS = 1_000_000  # a CameraInfo within 1 ms of an image is "at its stamp"


@dataclass(frozen=True)
class Skip:
    """Something that was not used: ``reason`` (equal reasons are grouped) and ``where`` (message or pair)."""

    reason: str
    where: str


@dataclass
class BagSummary:
    """Counts of a bag run, with the reason of everything that was not used."""

    pairs_found: int = 0
    processed: int = 0
    succeeded: int = 0
    skipped: list[Skip] = field(default_factory=list)  # messages rejected and pairs that could not be processed
    unpaired: list[Skip] = field(default_factory=list)  # valid images that got no partner
    confidences: list[float] = field(default_factory=list)
    nearest_info: int = 0  # paired images with no CameraInfo at their stamp (the nearest one of the bag used)
    interrupted: int | None = None  # number of the signal that stopped the run
    wrote_output: bool = False  # the output bag was created (and is closed: always readable)

    @property
    def median_confidence(self) -> float:
        return statistics.median(self.confidences) if self.confidences else float("nan")

    def line(self) -> str:
        return (f"pairs found {self.pairs_found}, processed {self.processed}, succeeded {self.succeeded}, "
                f"skipped {len(self.skipped)}, unpaired images {len(self.unpaired)}, "
                f"median confidence {self.median_confidence:.3f}")

    def reason_lines(self) -> list[str]:
        """One line per distinct reason, in order of first occurrence: ``skipped 2: <reason> (first: <where>)``."""
        groups: dict[tuple[str, str], list[Skip]] = {}
        for kind, items in (("skipped", self.skipped), ("unpaired", self.unpaired)):
            for item in items:
                groups.setdefault((kind, item.reason), []).append(item)
        lines = [f"{kind} {len(items)}: {reason} (first: {items[0].where})" for (kind, reason), items in groups.items()]
        if self.nearest_info:
            lines.append(f"note: {self.nearest_info} images had no CameraInfo at their stamp and used the nearest "
                         "CameraInfo of their camera")
        return lines


# -- pass 1: the index --------------------------------------------------------------------------------------------
@dataclass
class BagIndex:
    images: dict[str, list[int]] = field(default_factory=lambda: {"0": [], "1": []})  # valid stamps, per camera
    info_stamps: dict[str, list[int]] = field(default_factory=lambda: {"0": [], "1": []})
    info_msgs: dict[str, list[Any]] = field(default_factory=lambda: {"0": [], "1": []})


def valid_stamp(msg: Any) -> int | None:
    """The header stamp in ns, or ``None`` when it is negative or its nanosec is outside [0, 1e9)."""
    sec, nanosec = int(msg.header.stamp.sec), int(msg.header.stamp.nanosec)
    if sec < 0 or not 0 <= nanosec < 1_000_000_000:
        return None
    return sec * 1_000_000_000 + nanosec


def stamp_or_skip(msg: Any, where: str, summary: BagSummary) -> int | None:
    """The header stamp in ns, or ``None`` (counted) when it is negative or malformed."""
    try:
        stamp = valid_stamp(msg)
    except Exception as err:  # noqa: BLE001
        summary.skipped.append(Skip(f"no header stamp ({describe(err)})", where))
        return None
    if stamp is None:
        summary.skipped.append(Skip("invalid header stamp (negative, or nanosec outside [0, 1e9))",
                                    f"{where}: sec={msg.header.stamp.sec}, nanosec={msg.header.stamp.nanosec}"))
    return stamp


def info_key(msg: Any) -> Any:
    """What the pipeline reads from a CameraInfo, hashable (equal CameraInfo messages are stored once)."""
    try:
        arrays = tuple(np.asarray(getattr(msg, name), dtype=np.float64).tobytes() for name in ("k", "d"))
        roi = msg.roi
        return (int(msg.height), int(msg.width), str(msg.distortion_model), *arrays, int(msg.binning_x),
                int(msg.binning_y), int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height))
    except Exception:  # noqa: BLE001 - malformed: kept as is, its own error shows when a pair uses it
        return id(msg)


def read_messages(reader: Any, conns: list[Any], in_path: Path, what: str) -> Iterator[tuple[int, Any, int, bytes]]:
    """``(count, connection, log time, raw)``; a reader failure part-way is one InputError line."""
    count = 0
    iterator = iter(reader.messages(connections=conns))
    while True:
        try:
            conn, log_ns, raw = next(iterator)
        except StopIteration:
            return
        except Exception as err:  # noqa: BLE001 - truncated chunk, corrupt database page, ...
            raise InputError(f"IN: cannot read {in_path} past message {count} ({what}): {first_line(err)}") from err
        count += 1
        yield count, conn, log_ns, raw


def read_index(reader: Any, in_path: Path, conns: dict[str, list[Any]], summary: BagSummary,
               report: Callable[[int, int], None]) -> BagIndex:
    """Pass 1: every message of the four topics; rejected ones are counted, ``report(done, total)`` now and then."""
    index = BagIndex()
    streams_of: dict[int, list[str]] = {}
    unique: list[Any] = []
    for stream, stream_conns in conns.items():
        for conn in stream_conns:
            if id(conn) not in streams_of:
                unique.append(conn)
            streams_of.setdefault(id(conn), []).append(stream)
    total = sum(int(conn.msgcount) for conn in unique)
    seen: set[tuple[str, int]] = set()
    infos: dict[str, dict[Any, Any]] = {"0": {}, "1": {}}
    for count, conn, log_ns, raw in read_messages(reader, unique, in_path, "reading the index"):
        where = f"{conn.topic} message logged at {log_ns} ns"
        try:
            msg = reader.deserialize(raw, conn.msgtype)
        except Exception as err:  # noqa: BLE001
            summary.skipped.append(Skip(f"undecodable message ({first_line(err)})", where))
            continue
        stamp = stamp_or_skip(msg, where, summary)
        if stamp is not None:
            for stream in streams_of[id(conn)]:
                cam = stream[-1]
                if stream.startswith("image"):
                    if (stream, stamp) in seen:
                        summary.skipped.append(Skip("duplicate header stamp on the same image topic",
                                                    f"{where}: stamp {stamp} ns"))
                        continue
                    seen.add((stream, stamp))
                    index.images[cam].append(stamp)
                else:
                    index.info_stamps[cam].append(stamp)
                    index.info_msgs[cam].append(infos[cam].setdefault(info_key(msg), msg))
        if count % 50 == 0 or count == total:
            report(count, total)
    for cam in "01":
        order = sorted(range(len(index.info_stamps[cam])), key=index.info_stamps[cam].__getitem__)
        index.info_stamps[cam] = [index.info_stamps[cam][i] for i in order]
        index.info_msgs[cam] = [index.info_msgs[cam][i] for i in order]
        index.images[cam].sort()
    return index


# -- pairing ------------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    pairs: list[tuple[int, int]]  # (stamp0, stamp1), ordered by stamp0
    slot: dict[tuple[str, int], int]  # (camera, image stamp) -> index into pairs
    info: dict[tuple[str, int], Any]  # (camera, image stamp) -> its CameraInfo


def nearest(stamps: list[int], stamp: int) -> int:
    """Index of the element of sorted, non-empty ``stamps`` nearest to ``stamp`` (the earlier one on a tie)."""
    i = bisect.bisect_left(stamps, stamp)
    if i == len(stamps) or (i > 0 and stamp - stamps[i - 1] <= stamps[i] - stamp):
        return i - 1
    return i


def plan_pairs(index: BagIndex, topics: dict[str, str], slop_ns: int, summary: BagSummary) -> Plan:
    """One-to-one pairs of camera-0 and camera-1 images within ``slop_ns``, closest first; the rest counted."""
    usable = {cam: bool(index.info_stamps[cam]) for cam in "01"}
    stamps0 = index.images["0"] if all(usable.values()) else []
    stamps1 = index.images["1"] if all(usable.values()) else []
    candidates = []
    for s0 in stamps0:
        lo, hi = bisect.bisect_left(stamps1, s0 - slop_ns), bisect.bisect_right(stamps1, s0 + slop_ns)
        candidates.extend((abs(s0 - s1), s0, s1) for s1 in stamps1[lo:hi])
    candidates.sort()
    used: dict[str, set[int]] = {"0": set(), "1": set()}
    pairs = []
    for _, s0, s1 in candidates:
        if s0 not in used["0"] and s1 not in used["1"]:
            used["0"].add(s0)
            used["1"].add(s1)
            pairs.append((s0, s1))
    had_candidate = {"0": {c[1] for c in candidates}, "1": {c[2] for c in candidates}}
    for cam, other in (("0", "1"), ("1", "0")):
        for stamp in index.images[cam]:
            if stamp in used[cam]:
                continue
            if not usable[cam] or not usable[other]:
                missing = cam if not usable[cam] else other
                reason = (f"camera {missing} has no usable CameraInfo ({topics['info' + missing]}: all its messages "
                          "were skipped)")
            elif stamp in had_candidate[cam]:
                reason = f"its camera-{other} images within --slop were paired with closer camera-{cam} images"
            else:
                reason = f"no camera-{other} image within --slop {slop_ns / 1e9:g} s"
            summary.unpaired.append(Skip(reason, f"{topics['image' + cam]} image at {stamp} ns"))
    pairs.sort()
    plan = Plan(pairs=pairs, slot={}, info={})
    for i, (s0, s1) in enumerate(pairs):
        for cam, stamp in (("0", s0), ("1", s1)):
            plan.slot[(cam, stamp)] = i
            j = nearest(index.info_stamps[cam], stamp)
            plan.info[(cam, stamp)] = index.info_msgs[cam][j]
            if abs(index.info_stamps[cam][j] - stamp) > EXACT_INFO_NS:
                summary.nearest_info += 1
    summary.pairs_found = len(pairs)
    return plan


def no_pairs_reason(in_path: Path, index: BagIndex, topics: dict[str, str], slop_ns: int, summary: BagSummary) -> str:
    """Why :func:`plan_pairs` found no pair, as one error line naming the option: a stream none of whose messages
    was usable (with the first reason), else the smallest gap between the two cameras' stamps versus ``slop_ns``."""
    for stream in ("image0", "info0", "image1", "info1"):
        cam, topic = stream[-1], topics[stream]
        if (index.images if stream.startswith("image") else index.info_stamps)[cam]:
            continue
        skips = [s for s in summary.skipped if s.where.startswith(f"{topic} message")]
        first = f"; first: {skips[0].reason}" if skips else ""
        what = "images" if stream.startswith("image") else "CameraInfo messages"
        return (f"--{stream}: no usable message on {topic} in {in_path} ({len(skips)} skipped{first}); expected "
                f"{what} with valid header stamps")
    stamps0, stamps1 = index.images["0"], index.images["1"]
    gap = min(abs(s - stamps1[nearest(stamps1, s)]) for s in stamps0)
    return (f"--slop: no synchronised pairs in {in_path}: the closest {topics['image0']} and {topics['image1']} stamps "
            f"are {gap / 1e9:.3f} s apart, more than --slop {slop_ns / 1e9:g} s (camera 0 images at "
            f"{stamps0[0] / 1e9:.3f}-{stamps0[-1] / 1e9:.3f} s, camera 1 at {stamps1[0] / 1e9:.3f}-"
            f"{stamps1[-1] / 1e9:.3f} s)")
