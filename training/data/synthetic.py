"""Rosbag2 (mcap) recordings of seeded synthetic rooms, for training and tests.

Scenes and their rendering are in :mod:`training.data.synthetic_render` (rooms in the ``map`` frame, REP 103,
textured with photographs shipped by scikit-image; re-exported here). Each scene is visited twice (``rec0``, ``rec1``, 100 s apart, like Map-free's
reference and query): a robot base drives a smooth path on the floor, looking around a point of
interest both visits share, with a camera on a fixed extrinsic ``base_link -> camera_optical_frame``
(optical axes: x right, y down, z forward).

Each recording is one rosbag2 folder: ``/camera/image_raw`` (rgb8), ``/camera/camera_info``,
``/camera/depth/image_raw`` (32FC1, metres along z, NaN = no hit), ``/tf`` (``map -> base_link`` at 50 Hz,
every image stamp included) and ``/tf_static`` (the extrinsic, once), written with
:class:`mickey_ros.ros.recording.RecordingWriter` (shared with the real-data converters). ``scene.json`` beside them
holds the seed, K, the image size and the ground-truth ``T_map_camera`` of every image.

Two-camera recordings (``two_camera=True``, ``make_synthetic.py --two-camera``) carry a rig instead: camera 1
0.1-0.5 m to the right of camera 0 and turned by a few degrees (:func:`make_rig`), both with the same K and the
same image stamps, on ``/cam0/{image_raw,camera_info,depth/image_raw}`` (frame ``cam0_optical_frame``) and
``/cam1/...`` (``cam1_optical_frame``); ``/tf_static`` holds both extrinsics, so the rig's relative pose is in
the TF tree (and in ``scene.json``).
Everything in scene ``i`` follows from ``numpy.random.default_rng((seed, i))``: one scene can be
regenerated alone, and runs with different seeds share no scene (``seed + i`` would make seed 1's
scene 0 seed 0's scene 1).
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mickey_ros.errors import InputError, MickeyError
from mickey_ros.geometry.se3 import invert_T, make_T
from mickey_ros.ros.recording import (BASE_FRAME, MAP_FRAME, R_BASE_OPTICAL, SINGLE_CAMERA, TF_STATIC_TOPIC,
                                      TF_TOPIC, TWO_CAMERAS, CameraTopics, RecordingWriter, mcap_writer)
from training.data.synthetic_render import Scene, cast_depth, make_scene, render
from training.data.synthetic_street import make_street, make_street_intrinsics, road_half_width

__all__ = ["Scene", "cast_depth", "make_scene", "render", "make_intrinsics", "make_extrinsic", "make_rig",
           "make_trajectory", "make_recordings", "covisibility", "write_recording", "write_scene", "generate",
           "Summary", "CameraTopics", "SINGLE_CAMERA", "TWO_CAMERAS"]

KINDS = ("room", "street")  # what write_scene generates
START_NS = 1_700_000_000 * 10**9  # stamp of the first image of rec0
REVISIT_NS = 100 * 10**9  # rec1 starts this much later
FRAME_PERIOD_NS = 100_000_000  # 10 Hz images
TF_PERIOD_NS = 20_000_000  # 50 Hz /tf; a multiple of it is FRAME_PERIOD_NS, so every image stamp has a sample
TF_MARGIN_NS = 100_000_000  # /tf also covers this long before the first and after the last image


# -- trajectories ----------------------------------------------------------------------------------------
def _rotation_zyx(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """``[N, 3, 3]`` rotations Rz(yaw) Ry(pitch) Rx(roll) (radians; positive pitch tips x down)."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    return np.stack([
        np.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr], -1),
        np.stack([sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr], -1),
        np.stack([-sp, cp * sr, cp * cr], -1),
    ], -2)


@dataclass(frozen=True)
class Trajectory:
    """Planar motion of ``base_link`` in ``map`` over ``[t0, t1]`` seconds (relative to the recording start).

    The position follows a Catmull-Rom curve through ``waypoints`` at uniform parameter speed; the yaw
    points at ``target`` (or, when it is ``None``, along the path: a vehicle) plus a slow sinusoid; pitch and roll
    are small sinusoids (body sway).
    """

    waypoints: np.ndarray  # [M, 2] metres
    t0: float
    t1: float
    target: tuple[float, float] | None
    waves: np.ndarray  # [3, 3]: (amplitude rad, frequency Hz, phase rad) of yaw offset, pitch, roll

    def position(self, t: np.ndarray) -> np.ndarray:
        """``[N, 2]`` base position (metres) at times ``t [N]`` (seconds, clipped to ``[t0, t1]``)."""
        p = np.concatenate([self.waypoints[:1], self.waypoints, self.waypoints[-1:]])
        segments = len(self.waypoints) - 1
        x = np.clip((np.asarray(t, np.float64) - self.t0) / (self.t1 - self.t0), 0.0, 1.0) * segments
        k = np.minimum(x.astype(np.int64), segments - 1)
        tau = (x - k)[:, None]
        p0, p1, p2, p3 = p[k], p[k + 1], p[k + 2], p[k + 3]
        return 0.5 * (2 * p1 + (p2 - p0) * tau + (2 * p0 - 5 * p1 + 4 * p2 - p3) * tau**2
                      + (3 * p1 - p0 - 3 * p2 + p3) * tau**3)

    def poses(self, t: np.ndarray) -> np.ndarray:
        """``[N, 4, 4]`` ``T_map_base`` (base -> map) at times ``t [N]`` seconds."""
        t = np.atleast_1d(np.asarray(t, np.float64))
        xy = self.position(t)
        amp, freq, phase = self.waves.T
        wave = amp[:, None] * np.sin(2 * np.pi * freq[:, None] * t[None] + phase[:, None])  # [3, N]
        if self.target is None:
            ahead = self.position(t + 1e-3) - self.position(t - 1e-3)  # the path's direction (clipped at the ends)
            yaw = np.arctan2(ahead[:, 1], ahead[:, 0]) + wave[0]
        else:
            yaw = np.arctan2(self.target[1] - xy[:, 1], self.target[0] - xy[:, 0]) + wave[0]
        T = np.tile(np.eye(4), (len(t), 1, 1))
        T[:, :3, :3] = _rotation_zyx(yaw, wave[1], wave[2])
        T[:, :2, 3] = xy
        return T


@dataclass(frozen=True)
class Recording:
    """One visit of a scene: ``frames`` images at 10 Hz from ``start_ns``, a trajectory and the extrinsic; with
    ``T_camera0_camera1``, a second camera rigidly mounted beside the first (a rig; same stamps, same K)."""

    name: str
    start_ns: int
    frames: int
    trajectory: Trajectory
    T_base_camera: np.ndarray  # [4, 4] optical frame -> base_link (camera 0 of a rig)
    gain: float  # exposure of this visit
    T_camera0_camera1: np.ndarray | None = None  # [4, 4] camera-1 optical frame -> camera-0 optical frame

    @property
    def T_base_cameras(self) -> tuple[np.ndarray, ...]:
        """``[4, 4]`` optical frame -> base_link of each camera (one, or two for a rig)."""
        if self.T_camera0_camera1 is None:
            return (self.T_base_camera,)
        return self.T_base_camera, self.T_base_camera @ self.T_camera0_camera1

    @property
    def frame_stamps_ns(self) -> np.ndarray:
        """``[F]`` int64 image stamps (nanoseconds)."""
        return self.start_ns + FRAME_PERIOD_NS * np.arange(self.frames, dtype=np.int64)

    @property
    def tf_stamps_ns(self) -> np.ndarray:
        """``[M]`` int64 ``/tf`` stamps at 50 Hz, a superset of the image stamps, with a margin each side."""
        last = self.frame_stamps_ns[-1] + TF_MARGIN_NS
        return np.arange(self.start_ns - TF_MARGIN_NS, last + 1, TF_PERIOD_NS, dtype=np.int64)

    def T_map_base(self, stamps_ns: np.ndarray) -> np.ndarray:
        """``[N, 4, 4]`` base -> map at the given stamps."""
        return self.trajectory.poses((np.asarray(stamps_ns, np.int64) - self.start_ns) * 1e-9)

    def T_map_camera(self, stamps_ns: np.ndarray) -> np.ndarray:
        """``[N, 4, 4]`` optical frame -> map at the given stamps."""
        return self.T_map_base(stamps_ns) @ self.T_base_camera


def make_intrinsics(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """``[3, 3]`` pinhole K: ``fx = fy`` in 0.65-0.9 W, principal point within 2 % of the image centre."""
    f = width * rng.uniform(0.65, 0.9)
    cx = (width - 1) / 2 + width * rng.uniform(-0.02, 0.02)
    cy = (height - 1) / 2 + height * rng.uniform(-0.02, 0.02)
    return np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])


def make_extrinsic(rng: np.random.Generator) -> np.ndarray:
    """``[4, 4]`` ``T_base_camera``: optical frame 0.1 m ahead of the base at 0.8-1.6 m, tilted down -5..15 deg,
    with up to 1 deg of roll and yaw mounting error."""
    tilt = np.deg2rad([rng.uniform(-1, 1), rng.uniform(-5, 15), rng.uniform(-1, 1)])  # yaw, pitch, roll
    R = _rotation_zyx(*tilt[:, None])[0] @ R_BASE_OPTICAL
    return make_T(R, [0.1, 0.0, rng.uniform(0.8, 1.6)])


def make_rig(rng: np.random.Generator) -> np.ndarray:
    """``[4, 4]`` ``T_camera0_camera1`` (camera-1 optical frame -> camera-0 optical frame) of a two-camera rig.

    Camera 1 sits 0.1-0.5 m to the right of camera 0 (optical +x), within 3 cm of it down and forward, turned by
    up to 8 deg of yaw and 3 deg of pitch and roll relative to it. ``inv(T_camera0_camera1)`` is the rig's
    ``T_0to1`` (camera-0 coordinates -> camera-1 coordinates, metres).
    """
    yaw, pitch, roll = np.deg2rad([rng.uniform(-8, 8), rng.uniform(-3, 3), rng.uniform(-3, 3)])
    R_base = _rotation_zyx(np.array([yaw]), np.array([pitch]), np.array([roll]))[0]  # in base axes (z up)
    R = R_BASE_OPTICAL.T @ R_base @ R_BASE_OPTICAL  # the same turn in optical axes
    return make_T(R, [rng.uniform(0.1, 0.5), rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03)])


def make_trajectory(scene: Scene, rng: np.random.Generator, duration: float,
                    bearing: float | None = None) -> tuple[Trajectory, float]:
    """A collision-free smooth path of ``duration`` seconds at 0.25-0.6 m/s that looks around ``scene.target``.

    Args:
        bearing: when given, the path starts within 75 deg of this bearing (radians, seen from the target),
            so that a revisit looks at the same side of the scene.

    Returns:
        ``(trajectory over [-0.1, duration + 0.1] s, bearing of its start seen from the target)``.

    Raises:
        MickeyError: no free path was found (a room too cluttered; not seen with :func:`make_scene` rooms).
    """
    target = np.array(scene.target)
    t0, t1 = -TF_MARGIN_NS * 1e-9, duration + TF_MARGIN_NS * 1e-9
    length = rng.uniform(0.25, 0.6) * (t1 - t0)
    segments = max(2, math.ceil(length / 0.8))
    step = length / segments
    for _ in range(500):
        angle = rng.uniform(-np.pi, np.pi) if bearing is None else bearing + rng.uniform(-1.3, 1.3)
        start = target + rng.uniform(1.2, 4.0) * np.array([math.cos(angle), math.sin(angle)])
        if not scene.is_free(start)[0]:
            continue
        heading, points = rng.uniform(-np.pi, np.pi), [start]
        for _ in range(segments):
            for _ in range(30):
                heading += rng.normal(0.0, 0.6)
                nxt = points[-1] + step * np.array([math.cos(heading), math.sin(heading)])
                if scene.is_free(nxt)[0] and np.linalg.norm(nxt - target) >= 1.2:
                    points.append(nxt)
                    break
            else:
                break
        if len(points) != segments + 1:
            continue
        waves = np.column_stack([np.deg2rad([rng.uniform(5, 20), rng.uniform(0, 2), rng.uniform(0, 2)]),
                                 rng.uniform(0.05, 0.3, 3), rng.uniform(-np.pi, np.pi, 3)])
        traj = Trajectory(np.array(points), t0, t1, (float(target[0]), float(target[1])), waves)
        dense = traj.position(np.linspace(t0, t1, 20 * segments + 1))
        if scene.is_free(dense).all() and (np.linalg.norm(dense - target, axis=1) >= 1.0).all():
            return traj, angle
    raise MickeyError("synthetic scene: found no collision-free camera path (room too cluttered)")


def make_street_trajectory(scene: Scene, rng: np.random.Generator, duration: float,
                           start_x: float | None = None) -> tuple[Trajectory, float]:
    """A drive along the street of ``duration`` seconds (plus the TF margins) at 3-12 m/s.

    The vehicle keeps a lane (``|y|`` up to 35 % of the road's half-width) with a slow lateral weave; its heading
    follows the path (``Trajectory.target`` ``None``) with a yaw weave of 1-6 deg.

    Args:
        start_x: where the drive starts along the street (metres); random when ``None`` (a revisit passes the
            first visit's start so that the two overlap).

    Returns:
        ``(trajectory, start_x)``.
    """
    length, width, _ = scene.size
    road = road_half_width(scene)
    t0, t1 = -TF_MARGIN_NS * 1e-9, duration + TF_MARGIN_NS * 1e-9
    speed = rng.uniform(3.0, 12.0)
    travel = speed * (t1 - t0)
    if start_x is None:
        start_x = rng.uniform(-length / 2 + 10, length / 2 - 10 - travel)
    else:
        start_x = float(np.clip(start_x + rng.uniform(-0.6, 0.2) * travel, -length / 2 + 5, length / 2 - 5 - travel))
    segments = max(2, math.ceil(travel / 4.0))
    xs = start_x + np.linspace(0, travel, segments + 1)
    lane = rng.uniform(-0.3, 0.3) * road
    ys = np.clip(lane + np.cumsum(rng.normal(0, 0.1, segments + 1)), -0.35 * road, 0.35 * road)
    waves = np.column_stack([np.deg2rad([rng.uniform(1, 6), rng.uniform(0, 1.5), rng.uniform(0, 1.5)]),
                             rng.uniform(0.05, 0.3, 3), rng.uniform(-np.pi, np.pi, 3)])
    return Trajectory(np.column_stack([xs, ys]), t0, t1, None, waves), float(start_x)


def _road_half_width(scene: Scene) -> float:
    """The road's half-width: the first rect of a street is the road."""
    return float(scene.rects[0].hi[1])


def make_street_extrinsic(rng: np.random.Generator) -> np.ndarray:
    """``[4, 4]`` ``T_base_camera`` of a vehicle camera: 1.2-2.0 m above the road, 0.5-1.5 m ahead of the base,
    pitched -3..6 deg down, with up to 1 deg of roll and yaw mounting error."""
    tilt = np.deg2rad([rng.uniform(-1, 1), rng.uniform(-3, 6), rng.uniform(-1, 1)])  # yaw, pitch, roll
    R = _rotation_zyx(*tilt[:, None])[0] @ R_BASE_OPTICAL
    return make_T(R, [rng.uniform(0.5, 1.5), 0.0, rng.uniform(1.2, 2.0)])


def _probe_pixels(width: int, height: int, step: int = 8) -> np.ndarray:
    """``[N, 2]`` pixel grid (every ``step`` px) used to check views without rendering them."""
    u, v = np.meshgrid(np.arange(step / 2, width, step), np.arange(step / 2, height, step))
    return np.stack([u.ravel(), v.ravel()], axis=1)


def covisibility(scene: Scene, K: np.ndarray, width: int, height: int, T_map_a: np.ndarray,
                 T_map_b: np.ndarray, step: int = 8) -> float:
    """Share of view A's surface points (on a pixel grid every ``step`` px) that view B sees unoccluded.

    Args:
        K: ``[3, 3]`` intrinsics of both views; ``width, height``: their size in pixels.
        T_map_a, T_map_b: ``[4, 4]`` optical frame -> ``map`` of the two views.

    Returns:
        A fraction in ``[0, 1]`` (exact ray casts, no depth map involved).
    """
    uv = _probe_pixels(width, height, step)
    z_a = cast_depth(scene, K, T_map_a, uv)
    hit = np.isfinite(z_a)
    X_a = np.concatenate([uv[hit], np.ones((int(hit.sum()), 1))], axis=1) @ np.linalg.inv(K).T * z_a[hit, None]
    T_b_a = invert_T(T_map_b) @ T_map_a
    X_b = X_a @ T_b_a[:3, :3].T + T_b_a[:3, 3]
    z_b = X_b[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv_b = (X_b / z_b[:, None]) @ K.T[:, :2]
    inside = (z_b > 1e-3) & (uv_b[:, 0] >= -0.5) & (uv_b[:, 0] <= width - 0.5) & (uv_b[:, 1] >= -0.5) & (
        uv_b[:, 1] <= height - 0.5)
    seen = np.abs(cast_depth(scene, K, T_map_b, uv_b[inside]) - z_b[inside]) < 1e-4 * (1 + z_b[inside])
    return float(seen.sum() / len(uv))


def make_recordings(scene: Scene, rng: np.random.Generator, frames: int, K: np.ndarray, width: int, height: int,
                    min_depth: float = 0.5, min_covisibility: float = 0.3,
                    two_camera: bool = False) -> tuple[Recording, Recording]:
    """The two visits ``rec0`` (at :data:`START_NS`) and ``rec1`` (100 s later, from the same side of the target;
    on a street (``scene.sky`` set) two drives along it, the second passing the first's start).

    Paths are redrawn until no image sees a surface closer than ``min_depth`` metres and, for ``rec1``, until
    one of its images sees at least ``min_covisibility`` of one of ``rec0``'s (checked at the first, middle and
    last images of each), so that cross-visit pairs with overlap exist. With ``two_camera`` each visit has a rig
    (:func:`make_rig`, drawn after the extrinsic and gain): the depth rule holds for both cameras, and camera 1
    sees at least ``min_covisibility`` of camera 0's view at those key images.

    Raises:
        MickeyError: no such paths were found.
    """
    duration = (frames - 1) * FRAME_PERIOD_NS * 1e-9
    probe = _probe_pixels(width, height)
    keys = sorted({0, (frames - 1) // 2, frames - 1})
    recordings: list[Recording] = []
    bearing = None  # rooms: the first visit's bearing from the target; streets: where its drive starts
    outdoor = scene.sky is not None
    for k in range(2):
        extrinsic = make_street_extrinsic(rng) if outdoor else make_extrinsic(rng)
        gain = float(rng.uniform(0.8, 1.2))
        rig = make_rig(rng) if two_camera else None
        for _ in range(100):
            if outdoor:
                trajectory, start_bearing = make_street_trajectory(scene, rng, duration, bearing)
            else:
                trajectory, start_bearing = make_trajectory(scene, rng, duration, bearing)
            recording = Recording(f"rec{k}", START_NS + k * REVISIT_NS, frames, trajectory, extrinsic, gain, rig)
            T_map_base = recording.T_map_base(recording.frame_stamps_ns)
            views = [T_map_base @ T_base_camera for T_base_camera in recording.T_base_cameras]
            poses = views[0]
            if min(cast_depth(scene, K, T, probe).min() for camera in views for T in camera) < min_depth:
                continue
            if two_camera and min(covisibility(scene, K, width, height, views[0][i], views[1][i]) for i in keys) \
                    < min_covisibility:
                continue
            if k == 0:
                break
            previous = recordings[0].T_map_camera(recordings[0].frame_stamps_ns)
            if max(covisibility(scene, K, width, height, previous[i], poses[j]) for i in keys for j in keys) \
                    >= min_covisibility:
                break
        else:
            raise MickeyError(f"synthetic scene: found no camera path for rec{k} that keeps {min_depth} m from "
                              f"surfaces and overlaps the other visit")
        recordings.append(recording)
        bearing = start_bearing
    return recordings[0], recordings[1]


# -- bags ------------------------------------------------------------------------------------------------
def write_recording(path: Path, scene: Scene, K: np.ndarray, width: int, height: int, recording: Recording,
                    rng: np.random.Generator, depth: bool = True) -> list[dict[str, Any]]:
    """Render a recording and write it as a new rosbag2 folder (mcap) at ``path``.

    Images get Gaussian noise (sigma 1.5 grey levels, from ``rng``). Messages are written in stamp order;
    ``/tf_static`` first. A rig recording (``recording.T_camera0_camera1`` set) goes to :data:`TWO_CAMERAS`:
    both cameras share each stamp and K, and one ``/tf_static`` message holds both extrinsics.

    Returns:
        ``[{"stamp_ns": int, "T_map_camera": [4, 4] nested list}]`` per image (ground truth); for a rig also
        ``"T_map_camera1"`` (``"T_map_camera"`` is camera 0's).
    """
    frame_stamps = recording.frame_stamps_ns
    is_frame = set(frame_stamps.tolist())
    tf_stamps = recording.tf_stamps_ns
    T_map_base = recording.T_map_base(tf_stamps)
    extrinsics = recording.T_base_cameras
    cameras = SINGLE_CAMERA if len(extrinsics) == 1 else TWO_CAMERAS
    truth = []
    with mcap_writer(path) as writer:
        out = RecordingWriter(writer, cameras)
        out.tf(TF_STATIC_TOPIC, tf_stamps[0], BASE_FRAME,
               [(camera.frame, T_base_camera) for camera, T_base_camera in zip(cameras, extrinsics)])
        for stamp, T in zip(tf_stamps.tolist(), T_map_base):
            out.tf(TF_TOPIC, stamp, MAP_FRAME, [(BASE_FRAME, T)])
            if stamp not in is_frame:
                continue
            item: dict[str, Any] = {"stamp_ns": stamp}
            for i, (camera, T_base_camera) in enumerate(zip(cameras, extrinsics)):
                T_map_camera = T @ T_base_camera
                image, z = render(scene, K, T_map_camera, width, height, recording.gain)
                noisy = np.clip(image + rng.normal(0.0, 1.5, image.shape), 0, 255).astype(np.uint8)
                out.camera_info(stamp, K, width, height, camera.info, camera.frame)
                out.image(camera.image, stamp, noisy, "rgb8", camera.frame)
                if depth:
                    out.image(camera.depth, stamp, np.where(np.isfinite(z), z, np.nan).astype("<f4"), "32FC1",
                              camera.frame)
                item["T_map_camera" if i == 0 else "T_map_camera1"] = T_map_camera.tolist()
            truth.append(item)
    return truth


def write_scene(out: Path, seed: int, index: int, frames: int, width: int, height: int, depth: bool = True,
                two_camera: bool = False, kind: str = "room") -> Path:
    """Generate scene ``index`` (rng ``default_rng((seed, index))``) into ``out/scene_NNN/`` (returned), which must
    not exist: ``rec0/``, ``rec1/`` (bags) and ``scene.json``.

    With ``two_camera`` the bags hold a rig (:data:`TWO_CAMERAS`), and each recording in ``scene.json`` also has
    ``T_base_camera1``, ``T_camera0_camera1`` (pose of camera 1 in camera 0) and ``T_0to1`` (its inverse: camera-0
    coordinates -> camera-1 coordinates, what ``mickey-ros bag`` estimates), and ``cameras`` lists the topics.
    ``kind`` is ``room`` (:func:`make_scene`) or ``street`` (:func:`~training.data.synthetic_street.make_street`:
    outdoor, depths to 300 m, a vehicle's drives; ``room_size`` then holds the street's length, width and height).
    """
    if kind not in KINDS:
        raise InputError(f"--kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    rng = np.random.default_rng((seed, index))
    scene = make_street(rng) if kind == "street" else make_scene(rng)
    K = (make_street_intrinsics if kind == "street" else make_intrinsics)(rng, width, height)
    folder = out / f"scene_{index:03d}"
    folder.mkdir(parents=True)
    record: dict[str, Any] = {"seed": seed, "scene_index": index, "kind": kind, "K": K.tolist(), "width": width,
                              "height": height, "room_size": list(scene.size), "recordings": {}}
    if two_camera:
        record["cameras"] = [vars(camera) for camera in TWO_CAMERAS]
    for recording in make_recordings(scene, rng, frames, K, width, height, two_camera=two_camera):
        truth = write_recording(folder / recording.name, scene, K, width, height, recording, rng, depth)
        record["recordings"][recording.name] = {"T_base_camera": recording.T_base_camera.tolist(), "frames": truth}
        if recording.T_camera0_camera1 is not None:
            record["recordings"][recording.name].update(
                T_base_camera1=recording.T_base_cameras[1].tolist(),
                T_camera0_camera1=recording.T_camera0_camera1.tolist(),
                T_0to1=invert_T(recording.T_camera0_camera1).tolist())
    (folder / "scene.json").write_text(json.dumps(record, indent=1))
    return folder


@dataclass(frozen=True)
class Summary:
    """What :func:`generate` wrote."""

    scenes: int
    bags: int
    frames: int  # stamps with images (one image per camera each)
    seconds: float
    cameras: int = 1  # per bag

    def line(self) -> str:
        cameras = f" x {self.cameras} cameras" if self.cameras > 1 else ""
        return (f"scenes {self.scenes}, bags {self.bags}, frames {self.frames}{cameras}, {self.seconds:.1f} s "
                f"({self.frames / max(self.seconds, 1e-9):.1f} frames/s)")


def generate(out: str | Path, *, scenes: int = 4, frames: int = 30, width: int = 294, height: int = 224,
             seed: int = 0, depth: bool = True, overwrite: bool = False, two_camera: bool = False,
             kind: str = "room", progress: Callable[[int, int], None] | None = None) -> Summary:
    """Write ``scenes`` scenes (two bags each, ``frames`` images per bag and camera) under ``out``.

    Args:
        out: output folder; created if missing. An existing non-empty folder needs ``overwrite``, which
            replaces the ``scene_NNN`` folders this run writes (and nothing else).
        two_camera: bags of a two-camera rig (:data:`TWO_CAMERAS` topics, see :func:`write_scene`) instead of
            the single ``/camera/*`` stream.
        kind: ``room`` or ``street`` (:func:`write_scene`).
        progress: called as ``progress(scenes_done, scenes)`` after each scene.

    Raises:
        InputError: a count or size out of range, a negative seed, or an ``out`` that is a file, cannot be
            created, or is a non-empty folder without ``overwrite``.
    """
    for name, value, low in (("--scenes", scenes, 1), ("--frames", frames, 1), ("--width", width, 8),
                             ("--height", height, 8), ("--seed", seed, 0)):
        if int(value) != value or value < low:
            raise InputError(f"{name}: expected an integer >= {low}, got {value}")
    if kind not in KINDS:
        raise InputError(f"--kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    if width > 4096 or height > 4096:
        raise InputError(f"--width/--height: expected at most 4096 pixels, got {width} x {height}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"OUT: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"OUT: {out} exists and is not empty (pass --overwrite to replace its scene folders)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"OUT: cannot create {out}: {err.strerror}") from err
    start = time.perf_counter()
    for index in range(scenes):
        if overwrite and (out / f"scene_{index:03d}").exists():
            shutil.rmtree(out / f"scene_{index:03d}")
        write_scene(out, seed, index, frames, width, height, depth, two_camera, kind)
        if progress is not None:
            progress(index + 1, scenes)
    return Summary(scenes, 2 * scenes, 2 * scenes * frames, time.perf_counter() - start, 2 if two_camera else 1)
