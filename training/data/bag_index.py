"""Index rosbag2 recordings into posed camera frames, and form training pairs from them.

:func:`index_bags` reads each bag once (rosbags ``AnyReader``; mcap and sqlite3) and keeps, per image,
what is needed to re-read it later (bag, topic, bag timestamp) plus its header stamp, K (from the
CameraInfo, ROI/binning applied), size and ``T_world_cam`` (``[4, 4]`` float64, pose of the optical
frame in the world, i.e. camera -> world, metres; Map-free's ``T_w2c`` is its inverse). Images are not
decoded here.

Poses come from TF (``/tf`` interpolated per edge, ``/tf_static``, any chain depth), from a PoseStamped
(or PoseWithCovarianceStamped) topic or from an Odometry topic plus a fixed body -> camera extrinsic.
Each dynamic edge is interpolated at the image stamp (translation linear, rotation slerp between the two
bracketing samples), then the chain is composed.

:func:`make_pairs` forms Map-free-style pairs; ``BagIndex.T_0to1(i0, i1) = inv(T_world_cam1) @
T_world_cam0`` maps camera-0 points into camera 1. Errors are one-line :class:`DatasetError` (data) or
:class:`InputError` (settings).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mickey_ros import deps
from mickey_ros.errors import DatasetError, InputError, MickeyError
from mickey_ros.geometry.se3 import invert_T
from mickey_ros.ros.convert import CameraModel, camera_info_to_model
from training.data.pairs import Pair, PairConfig, make_pairs  # noqa: F401  (re-exported)
from training.data.tf_tree import PoseTrack, TfTree, clean_frame, rigid, stamp_ns

logger = logging.getLogger("training.data.bag_index")

INDEX_VERSION = 1
POSE_KINDS = ("tf", "pose_stamped", "odometry")
POSE_MSGTYPES = {
    "pose_stamped": ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped"),
    "odometry": ("nav_msgs/msg/Odometry",),
}


# -- settings -------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class PoseSource:
    """Where camera poses come from.

    Attributes:
        kind: ``"tf"``, ``"pose_stamped"`` (PoseStamped or PoseWithCovarianceStamped) or ``"odometry"``.
        world_frame: (tf) the fixed frame poses are expressed in, e.g. ``map``.
        camera_frame: (tf) the camera's optical frame; None = each image's ``header.frame_id``.
        topic: (pose_stamped, odometry) the pose topic; its messages give the body pose in the world.
        T_body_camera: (pose_stamped, odometry) ``[4, 4]`` pose of the camera optical frame in the body
            frame (maps camera points into the body frame); None = identity.
        extrinsic_from_tf_static: (pose_stamped, odometry) take ``T_body_camera`` from ``/tf_static``
            between ``body_frame`` and the camera frame instead.
        body_frame: the body frame for ``extrinsic_from_tf_static``; None = the Odometry messages'
            ``child_frame_id`` (required for pose_stamped).
        tf_topic, tf_static_topic: the TF topics.
    """

    kind: str = "tf"
    world_frame: str = "map"
    camera_frame: str | None = None
    topic: str | None = None
    T_body_camera: np.ndarray | None = None
    extrinsic_from_tf_static: bool = False
    body_frame: str | None = None
    tf_topic: str = "/tf"
    tf_static_topic: str = "/tf_static"

    def __post_init__(self) -> None:
        if self.kind not in POSE_KINDS:
            raise InputError(f"PoseSource.kind: expected one of {', '.join(POSE_KINDS)}, got {self.kind!r}")
        if self.kind != "tf" and not self.topic:
            raise InputError(f"PoseSource.topic: required for kind {self.kind!r}, e.g. /odom")
        if self.T_body_camera is not None:
            T = np.asarray(self.T_body_camera, dtype=np.float64)
            R = T[:3, :3] if T.shape == (4, 4) else None
            if R is None or not np.all(np.isfinite(T)) or not np.allclose(R @ R.T, np.eye(3), atol=1e-6) \
                    or not np.allclose(T[3], [0, 0, 0, 1]):
                raise InputError("PoseSource.T_body_camera: expected a finite rigid 4x4 transform")
            self.T_body_camera = T

    def settings(self) -> dict[str, Any]:
        """JSON-able settings (part of the cache key)."""
        d = asdict(self)
        d["T_body_camera"] = None if self.T_body_camera is None else self.T_body_camera.tolist()
        return d


@dataclass(eq=False)
class BagSource:
    """One camera stream of one rosbag2 recording.

    Attributes:
        path: the rosbag2 directory (``metadata.yaml`` + ``.mcap`` or ``.db3``).
        image_topic: ``sensor_msgs/Image`` or ``CompressedImage`` topic.
        info_topic: its ``sensor_msgs/CameraInfo`` topic.
        pose: where poses come from.
        max_interp_gap_s: an image needs a pose sample within this many seconds before and after its stamp
            (per dynamic edge); otherwise it is dropped and counted.
        place: place id shared by recordings of the same place; None = the bag's parent directory name.
        recording: recording id; None = ``<parent>/<bag><image_topic>``.
    """

    path: str | Path
    image_topic: str = "/camera/image_raw"
    info_topic: str = "/camera/camera_info"
    pose: PoseSource = field(default_factory=PoseSource)
    max_interp_gap_s: float = 0.1
    place: str | None = None
    recording: str | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path).expanduser().resolve()
        if not self.max_interp_gap_s >= 0:
            raise InputError(f"BagSource.max_interp_gap_s: expected seconds >= 0, got {self.max_interp_gap_s}")
        if self.place is None:
            self.place = self.path.parent.name
        if self.recording is None:
            self.recording = f"{self.path.parent.name}/{self.path.name}{self.image_topic}"

    def settings(self) -> dict[str, Any]:
        return {"path": str(self.path), "image_topic": self.image_topic, "info_topic": self.info_topic,
                "pose": self.pose.settings(), "max_interp_gap_s": float(self.max_interp_gap_s),
                "place": self.place, "recording": self.recording}


# -- the index ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Frame:
    """One indexed image.

    Attributes:
        bag: bag directory; topic: its image topic.
        log_time_ns: the bag (receive) timestamp, to re-read the message with a time window.
        ordinal: position among messages of ``topic`` sharing ``log_time_ns`` (normally 0).
        stamp_ns: ``header.stamp`` (the bag timestamp where the header stamp is 0).
        K: ``[3, 3]`` float64 intrinsics of the delivered image (pixels).
        width, height: image size (pixels).
        T_world_cam: ``[4, 4]`` float64 camera -> world (metres).
        recording, place: ids.
    """

    bag: str
    topic: str
    log_time_ns: int
    ordinal: int
    stamp_ns: int
    K: np.ndarray = field(repr=False)
    width: int
    height: int
    T_world_cam: np.ndarray = field(repr=False)
    recording: str
    place: str

    @property
    def name(self) -> str:
        """``<recording>@<stamp_ns>``, used in ``pair_names``."""
        return f"{self.recording}@{self.stamp_ns}"


@dataclass
class BagIndex:
    """Frames of all recordings (each recording's frames contiguous, in stamp order) and per-recording stats.

    ``stats[recording]`` counts ``images``, ``kept``, ``dropped_no_pose``, ``dropped_camera_info`` (no
    CameraInfo with a matching stamp / unambiguous K) and ``dropped_size`` (image size != CameraInfo size).
    """

    frames: list[Frame]
    stats: dict[str, dict[str, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    def T_0to1(self, i0: int, i1: int) -> np.ndarray:
        """``[4, 4]`` float64 ``inv(T_world_cam1) @ T_world_cam0``: camera-0 points into camera 1."""
        return invert_T(self.frames[i1].T_world_cam) @ self.frames[i0].T_world_cam

    def recordings(self) -> dict[str, np.ndarray]:
        """Recording id -> frame indices (in order)."""
        out: dict[str, list[int]] = defaultdict(list)
        for i, f in enumerate(self.frames):
            out[f.recording].append(i)
        return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}

    def places(self) -> dict[str, list[str]]:
        """Place id -> its recording ids (sorted)."""
        out: dict[str, set[str]] = defaultdict(set)
        for f in self.frames:
            out[f.place].add(f.recording)
        return {p: sorted(r) for p, r in sorted(out.items())}


# -- bag access -----------------------------------------------------------------------------------------------
def open_bag(path: str | Path) -> Any:
    """Open a rosbag2 directory with rosbags ``AnyReader`` (Humble typestore for bags without definitions).

    Raises:
        DatasetError: the path does not exist or is not a readable rosbag2. DependencyError: rosbags is missing.
    """
    deps.require("rosbags.highlevel", None, "reading training bags")
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    path = Path(path)
    if not path.exists():
        raise DatasetError(f"bag {path}: does not exist")
    try:
        reader = AnyReader([path], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
        reader.open()
    except Exception as err:  # noqa: BLE001 - rosbags raises several types for broken bags
        raise DatasetError(f"bag {path}: cannot read it as a rosbag2 (mcap or sqlite3): {_first_line(err)}") from err
    return reader


def topic_connections(reader: Any, path: Path, topic: str, what: str) -> list[Any]:
    """Connections of ``topic``; DatasetError listing the bag's topics if it has none."""
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        raise DatasetError(f"bag {path}: {what} topic {topic} not found (topics: {_topics_line(reader)})")
    return conns


def _topics_line(reader: Any) -> str:
    return ", ".join(sorted({c.topic for c in reader.connections})) or "none"


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


# -- one pass over a bag --------------------------------------------------------------------------------------
@dataclass
class _Scan:
    images: list[tuple[int, int, int, str, int | None, int | None]]  # log, ordinal, stamp, frame_id, W, H
    infos: dict[int, CameraModel]
    tree: TfTree
    poses: dict[int, tuple[np.ndarray, np.ndarray]]
    pose_children: set[str]


def _scan(src: BagSource, reader: Any) -> _Scan:
    where, pose = f"bag {src.path}", src.pose
    conns = topic_connections(reader, src.path, src.image_topic, "image")
    info_conns = [c for c in reader.connections if c.topic == src.info_topic]
    if not info_conns:
        raise DatasetError(f"{where}: CameraInfo missing for image topic {src.image_topic}: no topic {src.info_topic} "
                           f"(topics: {_topics_line(reader)})")
    conns += info_conns
    tf_topics = {pose.tf_static_topic: True} if pose.kind != "tf" and pose.extrinsic_from_tf_static else {}
    if pose.kind == "tf":
        tf_topics = {pose.tf_topic: False, pose.tf_static_topic: True}
        if not any(c.topic in tf_topics for c in reader.connections):
            raise DatasetError(f"{where}: TF topics {pose.tf_topic} and {pose.tf_static_topic} not found "
                               f"(topics: {_topics_line(reader)})")
    elif pose.extrinsic_from_tf_static:
        topic_connections(reader, src.path, pose.tf_static_topic, "TF static")
    conns += [c for c in reader.connections if c.topic in tf_topics]
    if pose.kind != "tf":
        pose_conns = topic_connections(reader, src.path, str(pose.topic), "pose")
        bad = [c.msgtype for c in pose_conns if c.msgtype not in POSE_MSGTYPES[pose.kind]]
        if bad:
            raise DatasetError(f"{where}: pose topic {pose.topic} has type {bad[0]}, expected "
                               f"{' or '.join(POSE_MSGTYPES[pose.kind])} for kind {pose.kind!r}")
        conns += pose_conns
    scan = _Scan([], {}, TfTree(where), {}, set())
    ordinals: Counter[int] = Counter()
    topic = "?"
    try:
        for conn, log_ns, raw in reader.messages(connections=conns):
            topic = conn.topic
            msg = reader.deserialize(raw, conn.msgtype)
            if topic == src.image_topic:
                stamp = stamp_ns(msg.header) or int(log_ns)
                size = (int(msg.width), int(msg.height)) if hasattr(msg, "width") else (None, None)
                scan.images.append((int(log_ns), ordinals[log_ns], stamp, clean_frame(msg.header.frame_id), *size))
                ordinals[log_ns] += 1
            elif topic == src.info_topic:
                scan.infos[stamp_ns(msg.header)] = camera_info_to_model(msg, f"{where} {topic}")
            elif topic in tf_topics:
                scan.tree.add(msg, static=tf_topics[topic])
            else:
                body = msg.pose.pose if hasattr(msg.pose, "pose") else msg.pose
                scan.poses[stamp_ns(msg.header)] = rigid(body.position, body.orientation)
                if hasattr(msg, "child_frame_id"):
                    scan.pose_children.add(clean_frame(msg.child_frame_id))
    except DatasetError:
        raise
    except MickeyError as err:
        raise DatasetError(f"{where}: {err}") from err
    except Exception as err:  # noqa: BLE001 - corrupt chunks, undecodable messages, bad quaternions
        raise DatasetError(f"{where}: cannot read messages of {topic}: {_first_line(err)}") from err
    return scan


def _pose_function(src: BagSource, scan: _Scan) -> tuple[Any, tuple[int, int] | None]:
    """``(pose_at(camera_frame, t_ns) -> T_world_cam or None, pose time span)`` for the source."""
    pose, tree, where = src.pose, scan.tree, f"bag {src.path}"
    gap_ns = int(round(src.max_interp_gap_s * 1e9))
    if pose.kind == "tf":
        chains: dict[str, tuple[list[str], list[str]]] = {}

        def tf_at(camera: str, t_ns: int) -> np.ndarray | None:
            if camera not in chains:
                chains[camera] = tree.chain(pose.world_frame, camera)
            return tree.lookup(chains[camera], t_ns, gap_ns)

        cams = {pose.camera_frame or img[3] for img in scan.images}
        spans = [s for s in (tree.span(tree.chain(pose.world_frame, c)) for c in sorted(cams) if c) if s]
        span = (max(s[0] for s in spans), min(s[1] for s in spans)) if spans else None
        return tf_at, span
    if not scan.poses:
        raise DatasetError(f"{where}: pose topic {pose.topic} has no messages")
    track = PoseTrack.build(scan.poses)
    T_body_cam = np.eye(4) if pose.T_body_camera is None else pose.T_body_camera
    extrinsics: dict[str, np.ndarray] = {}

    def body_camera(camera: str) -> np.ndarray:
        if not pose.extrinsic_from_tf_static:
            return T_body_cam
        if camera not in extrinsics:
            body = pose.body_frame or (next(iter(scan.pose_children)) if len(scan.pose_children) == 1 else None)
            if body is None:
                raise InputError(f"PoseSource.body_frame: required to read the extrinsic of {pose.topic} from "
                                 f"{pose.tf_static_topic} (child frames seen: {sorted(scan.pose_children)})")
            extrinsics[camera] = tree.lookup(tree.chain(body, camera, static_only=True), 0, 0)
        return extrinsics[camera]

    def topic_at(camera: str, t_ns: int) -> np.ndarray | None:
        T_world_body = track.at(t_ns, gap_ns)
        return None if T_world_body is None else T_world_body @ body_camera(camera)

    return topic_at, track.span()


def _same_camera(a: CameraModel, b: CameraModel) -> bool:
    return (a.width, a.height) == (b.width, b.height) and np.array_equal(a.K, b.K)


def _index_source(src: BagSource) -> tuple[list[Frame], dict[str, int]]:
    """Read one bag and build its frames (in stamp order) and drop counts."""
    reader = open_bag(src.path)
    try:
        scan = _scan(src, reader)
    finally:
        reader.close()
    where, topic = f"bag {src.path}", src.image_topic
    if not scan.images:
        raise DatasetError(f"{where}: image topic {topic} has no messages")
    if not scan.infos:
        raise DatasetError(f"{where}: CameraInfo missing for image topic {topic}: no messages on {src.info_topic}")
    pose_at, span = _pose_function(src, scan)
    info_stamps = np.array(sorted(scan.infos), dtype=np.int64)
    stats = Counter(images=len(scan.images), kept=0, dropped_no_pose=0, dropped_camera_info=0, dropped_size=0)
    frames = []
    for log_ns, ordinal, stamp, frame_id, width, height in sorted(scan.images, key=lambda x: (x[2], x[0], x[1])):
        cam = scan.infos.get(stamp)
        if cam is None:  # the latest CameraInfo before the stamp, if K does not change across the stamp
            j = int(np.searchsorted(info_stamps, stamp, side="right"))
            near = [scan.infos[int(info_stamps[k])] for k in (j - 1, j) if 0 <= k < len(info_stamps)]
            cam = near[0] if all(_same_camera(near[0], m) for m in near) else None
        if cam is None:
            stats["dropped_camera_info"] += 1
            continue
        if width is not None and (width, height) != (cam.width, cam.height):
            stats["dropped_size"] += 1
            continue
        camera = src.pose.camera_frame or frame_id
        if not camera:
            raise DatasetError(f"{where}: images on {topic} have an empty header.frame_id; set PoseSource.camera_frame")
        T_world_cam = pose_at(camera, stamp)
        if T_world_cam is None:
            stats["dropped_no_pose"] += 1
            continue
        frames.append(Frame(str(src.path), topic, log_ns, ordinal, stamp, cam.K.copy(), cam.width, cam.height,
                            T_world_cam, str(src.recording), str(src.place)))
    stats["kept"] = len(frames)
    if not frames:
        stamps = [img[2] for img in scan.images]
        img_span = f"{min(stamps) / 1e9:.3f}..{max(stamps) / 1e9:.3f} s"
        pose_span = "static" if span is None else f"{span[0] / 1e9:.3f}..{span[1] / 1e9:.3f} s"
        raise DatasetError(
            f"{where}: no usable images on {topic}: {stats['images']} images, {stats['dropped_no_pose']} with no poses "
            f"near image stamps (max_interp_gap_s={src.max_interp_gap_s:g}; images {img_span}, poses {pose_span}), "
            f"{stats['dropped_camera_info']} without a matching CameraInfo, {stats['dropped_size']} of another size "
            f"than their CameraInfo")
    dropped = stats["images"] - stats["kept"]
    if dropped:
        logger.warning("%s %s: dropped %d of %d images (%d no pose, %d no CameraInfo, %d size mismatch)", where,
                       topic, dropped, stats["images"], stats["dropped_no_pose"], stats["dropped_camera_info"],
                       stats["dropped_size"])
    return frames, dict(stats)


# -- cache and entry point ------------------------------------------------------------------------------------
def _cache_key(src: BagSource) -> str:
    """Hash of the settings and of every file of the bag directory (name, size, mtime)."""
    entries = sorted(src.path.iterdir()) if src.path.is_dir() else [src.path]
    files = [[e.name, e.stat().st_size, e.stat().st_mtime_ns] for e in entries if e.is_file()]
    blob = json.dumps({"version": INDEX_VERSION, "settings": src.settings(), "files": files}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _cache_path(cache_dir: Path, src: BagSource, key: str) -> Path:
    stream = hashlib.sha256(f"{src.path}\n{src.image_topic}".encode()).hexdigest()[:12]
    return cache_dir / f"{src.path.name}-{stream}-{key[:20]}.json"


def _save(path: Path, key: str, src: BagSource, frames: list[Frame], stats: dict[str, int]) -> None:
    rows = [[f.log_time_ns, f.ordinal, f.stamp_ns, f.width, f.height, f.K.reshape(-1).tolist(),
             f.T_world_cam.reshape(-1).tolist()] for f in frames]
    data = {"version": INDEX_VERSION, "key": key, "settings": src.settings(), "stats": stats, "frames": rows}
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = path.name.rsplit("-", 1)[0] + "-"
    for old in path.parent.iterdir():  # stale entries of this stream
        if old.name.startswith(stream) and old.suffix == ".json":
            old.unlink(missing_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _load(path: Path, key: str, src: BagSource) -> tuple[list[Frame], dict[str, int]] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data["version"] != INDEX_VERSION or data["key"] != key:
            return None
        frames = [Frame(str(src.path), src.image_topic, int(log), int(o), int(st), np.array(K).reshape(3, 3),
                        int(w), int(h), np.array(T).reshape(4, 4), str(src.recording), str(src.place))
                  for log, o, st, w, h, K, T in data["frames"]]
        return frames, {k: int(v) for k, v in data["stats"].items()}
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning("ignoring unreadable index cache %s: %s", path, _first_line(err))
        return None


def index_bags(sources: BagSource | Sequence[BagSource], cache_dir: str | Path | None = None) -> BagIndex:
    """Index bags into posed frames (each bag read once; images not decoded).

    Args:
        sources: one or more camera streams; the same bag may appear with different image topics.
        cache_dir: where to keep one JSON index per source, keyed by a hash of the source settings and
            the bag files' names, sizes and mtimes; a matching entry is loaded without opening the bag.

    Returns:
        The index; frames grouped by source (in ``sources`` order), in stamp order.

    Raises:
        InputError: no sources, or two sources with the same recording id.
        DatasetError: a missing/corrupt bag, a missing topic or TF frame, no CameraInfo, no poses near
            the image stamps of a whole bag, ... (one line naming the bag and topic).
    """
    sources = [sources] if isinstance(sources, BagSource) else list(sources)
    if not sources:
        raise InputError("sources: expected at least one BagSource")
    seen = Counter(str(s.recording) for s in sources)
    if dup := [r for r, n in seen.items() if n > 1]:
        raise InputError(f"sources: recording id {dup[0]!r} is used twice; set BagSource.recording")
    frames: list[Frame] = []
    stats: dict[str, dict[str, int]] = {}
    for src in sources:
        if not src.path.exists():
            raise DatasetError(f"bag {src.path}: does not exist")
        key = _cache_key(src) if cache_dir is not None else ""
        cached = _load(_cache_path(Path(cache_dir), src, key), key, src) if cache_dir is not None else None
        if cached is None:
            cached = _index_source(src)
            if cache_dir is not None:
                _save(_cache_path(Path(cache_dir), src, key), key, src, *cached)
        frames += cached[0]
        stats[str(src.recording)] = cached[1]
    return BagIndex(frames, stats)

