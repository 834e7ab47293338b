"""Offline bag-to-bag processing: the node's job over a recorded rosbag2 (mcap or sqlite3), no ROS needed.

Reads two camera streams (Image or CompressedImage) and their CameraInfo with rosbags, runs the
Relocalizer on each pair and writes, per processed pair, a ``mickey_ros_msgs/msg/RelativePose``
(schema embedded) and, when a pose was found, ``/tf``, the PoseWithCovarianceStamped, both keypoint
clouds and the inlier count (stamps = input image stamps).

The whole bag is available, so pairing is offline, in two passes (``bag_plan``). Pass 1 reads every
message's header (and keeps the CameraInfo messages, de-duplicated); each image gets the CameraInfo of
its camera nearest in stamp (a late-starting driver loses no frames), and camera-0 images are paired
one-to-one with camera-1 images within ``slop``, closest first. Pass 2 reads the images again and
processes the planned pairs. Every message, pair or image that is not used is counted in the summary
with its reason.

Robustness rules: bad arguments, unreadable inputs and inputs without any synchronised pair raise
:class:`InputError` before any output is written; any error on one pair is a counted skip; the output bag
is always closed (``metadata.yaml`` written), also on an error or SIGINT/SIGTERM after writing started, so
what was processed stays readable.
"""
from __future__ import annotations

import signal
import threading
import traceback
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mickey_ros import deps
from mickey_ros.errors import InputError
from mickey_ros.progress import ProgressLine
from mickey_ros.ros import builders
from mickey_ros.ros.bag_plan import (BagSummary, Plan, Skip, describe, first_line, no_pairs_reason, plan_pairs,
                                     read_index, read_messages, valid_stamp)
from mickey_ros.ros.convert import Undistorter, camera_info_to_model, check_image_matches_info, message_to_rgb
from mickey_ros.ros.interfaces import register_in_typestore
from mickey_ros.ros.sync import SyncedPair

__all__ = ["BagSummary", "Skip", "check_bag", "process_bag", "progress_bar"]

RELATIVE_POSE_TYPE = "mickey_ros_msgs/msg/RelativePose"
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
INFO_TYPES = ("sensor_msgs/msg/CameraInfo",)
STREAM_TYPES = {"image0": IMAGE_TYPES, "info0": INFO_TYPES, "image1": IMAGE_TYPES, "info1": INFO_TYPES}
# files a rosbag2 writer leaves in its folder (also after a crash); --overwrite replaces only such folders
_BAG_FILE_NAMES = ("metadata.yaml", "metadata.yaml.tmp")
_BAG_FILE_SUFFIXES = (".mcap", ".db3", ".db3-shm", ".db3-wal", ".db3-journal", ".mcap.zstd", ".db3.zstd")


def process_bag(in_path: str | Path, out_path: str | Path, reloc: Any, topics: dict[str, str], *,
                prefix: str = "/mickey", slop: float = 0.05, storage: str = "mcap",
                frame0: str | None = None, frame1: str | None = None, progress: bool = True,
                overwrite: bool = False, debug: bool = False, batch: int = 1, undistort: bool = False) -> BagSummary:
    """Run the relocaliser over a bag and write the outputs to a new bag.

    Args:
        in_path: input rosbag2 folder (mcap or sqlite3).
        out_path: output bag folder (must not exist unless ``overwrite``).
        reloc: a ``Relocalizer``.
        topics: ``{"image0": ..., "info0": ..., "image1": ..., "info1": ...}`` input topic names.
        prefix: namespace of the output topics (``<prefix>/relative_pose``, ...); ``/tf`` stays ``/tf``.
        slop: seconds allowed between the two cameras' stamps.
        storage: ``mcap`` or ``sqlite3`` for the output.
        frame0, frame1: optical frame ids overriding the images' ``header.frame_id``.
        progress: print a progress line on stderr.
        overwrite: replace an existing ``out_path`` that holds only rosbag2 files.
        debug: print the traceback of unexpected per-pair errors (they are skipped either way).
        batch: pairs whose images go through the network together (``Relocalizer.estimate_batch``; the same poses
            and the same output as 1, faster where the backbone dominates).
        undistort: undistort images whose CameraInfo has non-zero distortion (to its K: plumb_bob and other OpenCV
            models, equidistant as a fisheye); without it such pairs are counted skips.

    Returns:
        The summary. On SIGINT/SIGTERM (in the main thread) the run stops, the output is closed with the
        pairs done so far and ``summary.interrupted`` holds the signal number.

    Raises:
        InputError: bad arguments, an unreadable input or no synchronised pair in it (all before any output is
            written), or the input becoming unreadable part-way (the output is closed first).
    """
    deps.require("rosbags.rosbag2", None, "mickey-ros bag")  # a core dependency; one line if the install lacks it
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    in_path, out_path = Path(in_path), Path(out_path)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InputError(f"--batch: expected a positive number of pairs, got {batch!r}")
    check_bag(in_path, topics, out_path=out_path, overwrite=overwrite, slop=slop, storage=storage)
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    ts = get_typestore(Stores.ROS2_HUMBLE)
    register_in_typestore(ts)
    types = builders.MessageTypes.from_typestore(ts)
    summary = BagSummary()
    bar = ProgressLine(progress)
    with _StopOnSignal() as stop:
        try:
            reader = _open_reader(in_path, ts)
            try:
                conns = _check_topics(reader, in_path, topics)
                index = read_index(reader, in_path, conns, summary, lambda done, total: bar.show(
                    f"{progress_bar(done, total)} reading {done}/{total} messages"))
                bar.end()
                plan = plan_pairs(index, topics, int(round(slop * 1e9)), summary)
                if not plan.pairs:  # before writing: no empty output bag, an old OUT is left as it was
                    raise InputError(no_pairs_reason(in_path, index, topics, int(round(slop * 1e9)), summary))
                _remove_old_output(out_path)
                writer = Writer(out_path, version=9, storage_plugin=plugin)
                try:
                    writer.open()
                except Exception as err:  # noqa: BLE001 - permissions, read-only disk, ...
                    with suppress(Exception):
                        _remove_old_output(out_path)  # a folder left half-made is no bag
                    raise InputError(f"OUT: cannot create {out_path}: {first_line(err)}") from err
                summary.wrote_output = True
                try:
                    out = _Outputs(writer, ts, types, prefix)
                    _run_pairs(reader, in_path, conns, plan, reloc, out, types, summary, stop,
                               frames=(frame0, frame1), bar=bar, debug=debug, batch_size=batch,
                               undistort=_Undistort() if undistort else None)
                except InputError as err:
                    raise InputError(f"{err}; {out_path} holds the {summary.processed} pairs processed before") from err
                finally:
                    with stop.deferred():
                        _finalise(writer)
            finally:
                reader.close()
        except _Interrupted as err:
            summary.interrupted = err.signum
        finally:
            bar.end()
    return summary


def progress_bar(done: int, total: int, width: int = 30) -> str:
    """``mickey-ros bag [#########.....]  64%``: a text bar for ``done`` of ``total`` items."""
    frac = min(max(done / total, 0.0), 1.0) if total > 0 else 1.0
    filled = int(round(frac * width))
    return f"mickey-ros bag [{'#' * filled}{'.' * (width - filled)}] {100 * frac:3.0f}%"


def check_bag(in_path: str | Path, topics: dict[str, str], *, out_path: str | Path | None = None,
              overwrite: bool = False, slop: float = 0.05, storage: str = "mcap") -> None:
    """Check everything that can be checked before a network is loaded and before any output is written.

    The bag opens, the four topics exist, have messages and the expected types, the two cameras' image topics
    (and CameraInfo topics) differ, ``slop`` and ``storage`` are valid, and ``out_path`` is new (or, with
    ``overwrite``, a bag folder that is not the input). Whether any pair is found is known only after pass 1
    (:func:`process_bag` raises then, still before writing).

    Raises:
        InputError: one line naming the flag (``--image0``, ``OUT``, ...) and what was expected.
    """
    deps.require("rosbags.typesys", None, "mickey-ros bag")
    from rosbags.typesys import Stores, get_typestore

    if storage not in ("mcap", "sqlite3"):
        raise InputError(f"--storage: expected mcap or sqlite3, got {storage!r}")
    if not 0 <= slop < float("inf"):
        raise InputError(f"--slop: expected seconds >= 0, got {slop!r}")
    for kind, what in (("image", "image"), ("info", "CameraInfo")):
        if topics[f"{kind}0"] == topics[f"{kind}1"]:
            raise InputError(f"--{kind}0/--{kind}1: both are {topics[f'{kind}0']}; expected camera 0's and camera 1's "
                             f"own {what} topics")
    in_path = Path(in_path)
    if out_path is not None:
        _check_output(Path(out_path), in_path, overwrite)
    reader = _open_reader(in_path, get_typestore(Stores.ROS2_HUMBLE))
    try:
        _check_topics(reader, in_path, topics)
    finally:
        reader.close()


# -- checks -------------------------------------------------------------------------------------------------------
def _open_reader(in_path: Path, ts: Any) -> Any:
    from rosbags.highlevel import AnyReader

    if not in_path.exists():
        raise InputError(f"IN: {in_path} does not exist")
    try:
        reader = AnyReader([in_path], default_typestore=ts)
        reader.open()
    except Exception as err:  # noqa: BLE001 - rosbags raises several types for broken bags
        raise InputError(f"IN: cannot read {in_path} as a rosbag2 (mcap or sqlite3): {first_line(err)}") from err
    return reader


def _check_topics(reader: Any, in_path: Path, topics: dict[str, str]) -> dict[str, list[Any]]:
    """``{stream: [connections]}`` after checking each topic exists, has messages and has the expected type."""
    by_topic: dict[str, list[Any]] = {}
    for conn in reader.connections:
        by_topic.setdefault(conn.topic, []).append(conn)
    conns = {}
    for stream, topic in topics.items():
        flag = f"--{stream}"
        if topic not in by_topic:
            raise InputError(f"{flag}: topic {topic} is not in {in_path} (topics: {', '.join(sorted(by_topic))})")
        for conn in by_topic[topic]:
            if conn.msgtype not in STREAM_TYPES[stream]:
                raise InputError(f"{flag}: topic {topic} has type {conn.msgtype}; expected "
                                 f"{' or '.join(STREAM_TYPES[stream])}")
        if sum(int(conn.msgcount) for conn in by_topic[topic]) == 0:
            what = "images" if stream.startswith("image") else "CameraInfo messages (needed to pair the images)"
            raise InputError(f"{flag}: topic {topic} has no messages in {in_path}; expected {what}")
        conns[stream] = by_topic[topic]
    return conns


def _is_bag_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink() and (
        path.name in _BAG_FILE_NAMES or path.name.endswith(_BAG_FILE_SUFFIXES))


def _check_output(out_path: Path, in_path: Path, overwrite: bool) -> None:
    if not (out_path.exists() or out_path.is_symlink()):
        return
    if not overwrite:
        raise InputError(f"OUT: {out_path} exists; pass --overwrite to replace it (rosbag2 writers need a new folder)")
    resolved_out = out_path.resolve()
    if in_path.resolve() == resolved_out or resolved_out in in_path.resolve().parents:
        raise InputError(f"OUT: {out_path} is (or holds) the input bag; --overwrite never replaces the input")
    if out_path.is_symlink() or not out_path.is_dir():
        raise InputError(f"OUT: {out_path} is not a folder; --overwrite replaces only a rosbag2 folder")
    others = sorted(p.name for p in out_path.iterdir() if not _is_bag_file(p))
    if others:
        raise InputError(f"OUT: {out_path} holds files that are not rosbag2 files ({', '.join(others[:3])}); "
                         "--overwrite replaces only a rosbag2 folder")


def _remove_old_output(out_path: Path) -> None:
    """Delete the rosbag2 folder ``out_path`` (``check_bag`` allowed it), re-checked file by file just before."""
    if not out_path.exists():
        return
    if out_path.is_symlink() or not out_path.is_dir() or not all(_is_bag_file(p) for p in out_path.iterdir()):
        raise InputError(f"OUT: {out_path} changed since it was checked; it is no longer a rosbag2 folder")
    for path in out_path.iterdir():
        path.unlink()
    out_path.rmdir()


# -- pass 2: processing -------------------------------------------------------------------------------------------
def _run_pairs(reader: Any, in_path: Path, conns: dict[str, list[Any]], plan: Plan, reloc: Any, out: _Outputs,
               types: builders.MessageTypes, summary: BagSummary, stop: _StopOnSignal, *,
               frames: tuple[str | None, str | None], bar: ProgressLine, debug: bool, batch_size: int = 1,
               undistort: _Undistort | None = None) -> None:
    cam_of = {id(conn): stream[-1] for stream in ("image0", "image1") for conn in conns[stream]}
    batch: list[SyncedPair] = []
    image_conns = [conn for stream in ("image0", "image1") for conn in conns[stream]]
    pending: dict[int, dict[str, Any]] = {}
    taken: set[tuple[str, int]] = set()
    finished: set[int] = set()
    done, total = 0, len(plan.pairs)
    bar.show(f"{progress_bar(0, total)} 0/{total} pairs")
    if total == 0:
        return
    for _, conn, _, raw in read_messages(reader, image_conns, in_path, "processing"):
        cam = cam_of[id(conn)]
        try:  # read and checked in pass 1: a failure here was counted there
            msg = reader.deserialize(raw, conn.msgtype)
            stamp = valid_stamp(msg)
        except Exception:  # noqa: BLE001
            continue
        slot = plan.slot.get((cam, stamp)) if stamp is not None else None
        if slot is None or (cam, stamp) in taken:
            continue
        taken.add((cam, stamp))
        pending.setdefault(slot, {})[cam] = msg
        if len(pending[slot]) < 2:
            continue
        images = pending.pop(slot)
        s0, s1 = plan.pairs[slot]
        batch.append(SyncedPair(images["0"], plan.info[("0", s0)], images["1"], plan.info[("1", s1)], s0, s1))
        finished.add(slot)
        if len(batch) < batch_size and len(finished) < total:
            continue
        if batch_size == 1:
            _process_pair(batch[0], reloc, out, types, summary, stop, frames, debug, undistort=undistort)
        else:
            _process_batch(batch, reloc, out, types, summary, stop, frames, debug, undistort)
        done += len(batch)
        batch = []
        bar.show(f"{progress_bar(done, total)} {done}/{total} pairs")
        if done == total:
            return
    if batch:  # the bag ended with pairs still buffered (an image not found again): run them
        _process_batch(batch, reloc, out, types, summary, stop, frames, debug, undistort)
    for slot, (s0, _) in enumerate(plan.pairs):  # not expected: the bag read differently the second time
        if slot not in finished:
            summary.skipped.append(Skip("an image of this pair was not found again in pass 2", f"pair at {s0} ns"))


class _Outputs:
    """Output connections of the bag writer; ``serialize`` then ``write`` per message."""

    def __init__(self, writer: Any, ts: Any, types: builders.MessageTypes, prefix: str) -> None:
        self.writer, self.ts = writer, ts
        prefix = prefix.rstrip("/")
        spec = {
            "tf": ("/tf", "tf2_msgs/msg/TFMessage"),
            "pose": (f"{prefix}/relative_pose", "geometry_msgs/msg/PoseWithCovarianceStamped"),
            "full": (f"{prefix}/relative_pose_full", RELATIVE_POSE_TYPE),
            "cloud0": (f"{prefix}/keypoints0", "sensor_msgs/msg/PointCloud2"),
            "cloud1": (f"{prefix}/keypoints1", "sensor_msgs/msg/PointCloud2"),
            "inliers": (f"{prefix}/num_inliers", "std_msgs/msg/UInt32"),
        }
        self.conns = {k: (writer.add_connection(topic, msgtype, typestore=ts), msgtype)
                      for k, (topic, msgtype) in spec.items()}

    def serialize(self, key: str, msg: Any) -> bytes:
        return self.ts.serialize_cdr(msg, self.conns[key][1])

    def write(self, key: str, stamp_ns: int, data: bytes) -> None:
        self.writer.write(self.conns[key][0], stamp_ns, data)


class _Undistort:
    """One :class:`~mickey_ros.ros.convert.Undistorter` per camera (each caches its remap tables)."""

    def __init__(self) -> None:
        self.cameras = (Undistorter(), Undistorter())


def _pair_inputs(pair: SyncedPair, undistort: _Undistort | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                                np.ndarray]:
    """Decode and check one pair: ``(image0, K0, image1, K1)`` as ``Relocalizer.estimate`` takes them (distorted
    images undistorted to their K with ``undistort``, else refused)."""
    images = [message_to_rgb(pair.image0, "image0"), message_to_rgb(pair.image1, "image1")]
    cams = camera_info_to_model(pair.info0, "camera_info0"), camera_info_to_model(pair.info1, "camera_info1")
    for k, cam in enumerate(cams):
        check_image_matches_info(images[k], cam, f"camera_info{k}")
        if not cam.distorted:
            continue
        if undistort is None:
            raise InputError(f"camera_info{k}: non-zero distortion ({cam.distortion_model}); record rectified images "
                             "(image_rect) or pass --undistort")
        images[k] = undistort.cameras[k](images[k], cam)
    return images[0], cams[0].K, images[1], cams[1].K


def _pair_records(pair: SyncedPair, reloc: Any, out: _Outputs, types: builders.MessageTypes,
                  frames: tuple[str | None, str | None], res: Any = None,
                  undistort: _Undistort | None = None) -> tuple[Any, list[tuple[str, int, bytes]]]:
    """Run one pair (unless its result ``res`` is given) and serialise all its output messages (nothing is
    written yet)."""
    if res is None:
        res = reloc.estimate(*_pair_inputs(pair, undistort))
    f0 = frames[0] or pair.image0.header.frame_id or "camera0_optical_frame"
    f1 = frames[1] or pair.image1.header.frame_id or "camera1_optical_frame"
    hdr0 = builders.header(types, pair.stamp0, f0)
    full = builders.relative_pose_message(types, out.ts.types[RELATIVE_POSE_TYPE], hdr0, f1, pair.stamp1, res)
    records = [("full", pair.stamp0, out.serialize("full", full))]
    if not res.success:
        return res, records
    pose = builders.pose_with_covariance_from_relative_pose(types, hdr0, res.T_0to1, res.covariance)
    tf = builders.transform_stamped_from_relative_pose(types, hdr0, builders.TfNaming().child(f1), res.T_0to1)
    colours = (255 * np.stack([~res.inliers, res.inliers, np.zeros_like(res.inliers)], 1)).astype(np.uint8)
    cloud0 = builders.pointcloud2(types, hdr0, res.kpts3d0, rgb=colours)
    cloud1 = builders.pointcloud2(types, builders.header(types, pair.stamp1, f1), res.kpts3d1, rgb=colours)
    records += [
        ("tf", pair.stamp0, out.serialize("tf", out.ts.types["tf2_msgs/msg/TFMessage"](transforms=[tf]))),
        ("pose", pair.stamp0, out.serialize("pose", pose)),
        ("cloud0", pair.stamp0, out.serialize("cloud0", cloud0)),
        ("cloud1", pair.stamp1, out.serialize("cloud1", cloud1)),
        ("inliers", pair.stamp0, out.serialize("inliers", out.ts.types["std_msgs/msg/UInt32"](data=res.num_inliers))),
    ]
    return res, records


def _process_batch(pairs: list[SyncedPair], reloc: Any, out: _Outputs, types: builders.MessageTypes,
                   summary: BagSummary, stop: _StopOnSignal, frames: tuple[str | None, str | None],
                   debug: bool, undistort: _Undistort | None = None) -> None:
    """Several pairs with the network run on all their images at once (``Relocalizer.estimate_batch``: the same
    poses as one by one); written in order, each with the isolation of :func:`_process_pair`."""
    inputs: list[tuple[SyncedPair, Any]] = []
    for pair in pairs:
        try:
            inputs.append((pair, _pair_inputs(pair, undistort)))
        except Exception as err:  # noqa: BLE001 - per-pair isolation
            inputs.append((pair, err))
    ready = [(pair, args) for pair, args in inputs if not isinstance(args, Exception)]
    try:
        results = iter(reloc.estimate_batch([args for _, args in ready], return_errors=True))
    except Exception:  # noqa: BLE001 - an unexpected error in the batch: each pair on its own finds its culprit
        results = None
    for pair, args in inputs:
        if isinstance(args, Exception):
            _process_pair(pair, reloc, out, types, summary, stop, frames, debug, error=args)
        elif results is None:
            _process_pair(pair, reloc, out, types, summary, stop, frames, debug, undistort=undistort)
        else:
            res = next(results)
            _process_pair(pair, reloc, out, types, summary, stop, frames, debug,
                          **({"error": res} if isinstance(res, Exception) else {"res": res}))


def _process_pair(pair: SyncedPair, reloc: Any, out: _Outputs, types: builders.MessageTypes, summary: BagSummary,
                  stop: _StopOnSignal, frames: tuple[str | None, str | None], debug: bool, res: Any = None,
                  error: Exception | None = None, undistort: _Undistort | None = None) -> None:
    """One pair (its result ``res`` or ``error`` when already known): any error before writing is a counted skip;
    the writes of a pair are not interrupted."""
    try:
        if error is not None:
            raise error
        res, records = _pair_records(pair, reloc, out, types, frames, res, undistort)
    except Exception as err:  # noqa: BLE001 - per-pair isolation: the run goes on
        if debug:
            traceback.print_exc()
        summary.skipped.append(Skip(describe(err), f"pair at {pair.stamp0} ns"))
        return
    with stop.deferred():
        for key, stamp, data in records:
            out.write(key, stamp, data)
        summary.processed += 1
        if res.success:
            summary.succeeded += 1
            summary.confidences.append(float(res.confidence))


def _finalise(writer: Any) -> None:
    """Close the writer (index and ``metadata.yaml``); if that fails, abort it and re-raise."""
    try:
        writer.close()
    except BaseException:
        with suppress(Exception):
            writer.abort()
        raise


# -- signals ------------------------------------------------------------------------------------------------------
class _Interrupted(BaseException):
    """Raised by the SIGINT/SIGTERM handler (a BaseException, so per-pair isolation does not swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _StopOnSignal:
    """While active (main thread only), SIGINT/SIGTERM raise :class:`_Interrupted`, except inside ``deferred()``
    blocks (writes, closing), where the signal is remembered and raised when the block ends."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the first signal received; later ones are ignored (already stopping)
        self._deferring = self._pending = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._old[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._old.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        if self._deferring:
            self._pending = True
        else:
            raise _Interrupted(signum)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        was, self._deferring = self._deferring, True
        try:
            yield
        finally:
            self._deferring = was
        if not was and self._pending:
            self._pending = False
            raise _Interrupted(self.signum or signal.SIGINT)
