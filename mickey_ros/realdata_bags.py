"""Real photographs with metric ground truth -> rosbag2 recordings shaped like a robot's (mcap; rclpy-free).

The development sets of ``shared/realdata`` (its README gives sources, licences and ground-truth conventions),
written as a robot would record them, so that the project's own readers take them as they take a robot's bags:
training (``training/data/bag_index.py``: images, CameraInfo, poses from TF) and ``mickey-ros bag``::

    OUT/kitti_seq1/, OUT/kitti_seq2/   one single-camera bag per sequence (training, evaluation)
    OUT/middlebury/<scene>/            one two-camera bag per scene: one stereo frame each (mickey-ros bag)
    OUT/euroc_stereo/                  one two-camera bag: every image of cam0/ and cam1/ at its EuRoC stamp
    OUT/<set>.json                     what was written: topics, frames, extrinsics, K, ground truth, source

The data are for research use only (KITTI: CC BY-NC-SA 3.0): OUT belongs outside the repository
(:func:`mickey_ros.realdata.check_out_dir`), and a network trained on them must say so in its provenance.

**KITTI** (``calib.txt``, ``poses.txt``, ``image_l/NNNNNN.png``): ``/camera/image_raw`` (``mono8``: the grey
rectified frames as stored), ``/camera/camera_info`` (K = ``P0[:, :3]``, ``P`` = P0, ``plumb_bob`` with zero
distortion: the frames are rectified), ``/tf_static`` ``base_link -> camera_optical_frame``
(:data:`KITTI_T_BASE_CAMERA`: the camera 1.65 m above ``base_link``, optical axes x right, y down, z forward, looking
along base_link's x) and ``/tf`` ``map -> base_link`` at every frame, so that ``map -> camera_optical_frame`` is
frame i's ``poses.txt`` pose (camera-to-world; ``map`` = KITTI's world = frame 0's camera frame, so map's axes are
optical ones, y down, not REP 103's z up: only relative poses matter to the readers). TF carries quaternions, so
the published rotations (7 significant digits, up to ~1e-6 from orthonormal) are written as their nearest rotations
(SVD), which the bag then reproduces to float64 precision; the JSON records the largest change. Stamps are nominal
(the shared sets carry no ``times.txt``): frame i at :data:`START_NS` + i x 100 ms (KITTI records at 10 Hz).

**Middlebury** (``<scene>/calib.txt``, ``im0.png``, ``im1.png``): ``/cam0/image_raw``, ``/cam1/image_raw``
(``rgb8``), their CameraInfo (K0, K1 of ``calib.txt``, zero distortion: rectified), ``/tf_static``
``base_link -> cam0_optical_frame`` and ``-> cam1_optical_frame`` with camera 1 ``baseline`` metres along camera
0's x axis (``T_0to1 = [I | (-baseline, 0, 0)]``), and one ``/tf`` ``map -> base_link`` (identity) at the frame's
stamp :data:`START_NS`.

**EuRoC** (``cam0/``, ``cam1/``: ``sensor.yaml``, ``data/<stamp>.png``): ``/cam0/image_raw``, ``/cam1/image_raw``
(``mono8``, distorted: as the VI-sensor recorded them), CameraInfo with the real ``plumb_bob`` distortion
``(k1, k2, p1, p2, 0)`` and ``P = [K | 0]``, ``/tf_static`` ``base_link`` (the body / IMU frame) ``->
cam{0,1}_optical_frame`` = ``T_BS`` of each camera, so ``T_0to1 = inv(T_BS_cam1) @ T_BS_cam0``; ``/tf``
``map -> base_link`` (identity) at every stamp. Each image keeps its EuRoC stamp (nanoseconds); a stamp with an
image of one camera only is written as recorded (``mickey-ros bag`` counts it as unpaired).
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mickey_ros.errors import DatasetError, InputError
from mickey_ros.geometry.se3 import invert_T, make_T
from mickey_ros.realdata import euroc_sensor, kitti_poses, kitti_projection, middlebury_calib
from mickey_ros.ros.recording import (BASE_FRAME, MAP_FRAME, R_BASE_OPTICAL, SINGLE_CAMERA, TF_STATIC_TOPIC, TF_TOPIC,
                                      TWO_CAMERAS, CameraTopics, RecordingWriter, mcap_writer)

BAG_SETS = ("kitti_seq1", "kitti_seq2", "middlebury", "euroc_stereo")
START_NS = 1_700_000_000 * 10**9  # nominal stamp of the first KITTI frame and of each Middlebury frame
KITTI_PERIOD_NS = 100_000_000  # 10 Hz
KITTI_CAMERA_HEIGHT_M = 1.65
KITTI_T_BASE_CAMERA = make_T(R_BASE_OPTICAL, [0.0, 0.0, KITTI_CAMERA_HEIGHT_M])
"""``[4, 4]`` camera optical frame -> ``base_link`` of the KITTI bags: 1.65 m above the base, looking along x."""
KITTI_CAMERAS = tuple(CameraTopics(c.image, c.info, "", c.frame) for c in SINGLE_CAMERA)  # no depth topic
STEREO_CAMERAS = tuple(CameraTopics(c.image, c.info, "", c.frame) for c in TWO_CAMERAS)
MAX_ROTATION_PROJECTION = 1e-3  # a published rotation farther than this from its nearest rotation is refused
LICENCE_NOTE = ("research data (shared/realdata/README.md: KITTI CC BY-NC-SA 3.0, Middlebury and EuRoC research "
                "use): never copy into a repository or ship a network trained on it without saying so")


@dataclass(frozen=True)
class WrittenSet:
    """One converted set: its bag folders, the number of stamps with images, and its JSON record."""

    name: str
    bags: tuple[Path, ...]
    stamps: int
    record: Path
    cameras: tuple[CameraTopics, ...]


# -- entry point ---------------------------------------------------------------------------------------------------
def write_bags(names: Sequence[str], realdata: str | Path, out: str | Path,
               overwrite: bool = False) -> list[WrittenSet]:
    """Write each named set of ``realdata`` as ``out/<set>`` (module docstring); ``out`` is created if missing.

    Args:
        overwrite: replace an existing ``out/<set>`` bag (or folder of bags) and its JSON; without it an existing one
            is an error. Only folders holding nothing but rosbag2 files are ever removed.

    Raises:
        InputError: an unknown set name, or an existing output without ``overwrite`` (or one that is not a bag).
        DatasetError: a set's folder is missing or one of its files is malformed (one line naming the file).
    """
    writers = {"kitti_seq1": write_kitti_bag, "kitti_seq2": write_kitti_bag, "middlebury": write_middlebury_bags,
               "euroc_stereo": write_euroc_bag}
    out = Path(out)
    for name in names:  # every check before the first bag is written
        if name not in writers:
            raise InputError(f"set: expected one of {', '.join(BAG_SETS)}, got {name!r}")
        if not (Path(realdata) / name).is_dir():
            raise DatasetError(f"{realdata}: no {name}/ folder (expected the sets of shared/realdata/README.md)")
        if (out / name).exists() and not overwrite:
            raise InputError(f"OUT: {out / name} exists (pass --overwrite to replace it)")
        if (out / name).exists():
            _check_bag_folder(out / name)
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for name in names:
        if (out / name).exists():
            shutil.rmtree(out / name)
        done.append(writers[name](Path(realdata) / name, out / name, name))
    return done


def _check_bag_folder(path: Path) -> None:
    """Raise InputError unless ``path`` is a rosbag2 folder or a folder of rosbag2 folders (safe to replace)."""
    def bag_like(folder: Path) -> bool:
        return (folder / "metadata.yaml").is_file() and all(
            f.is_file() and (f.name == "metadata.yaml" or f.suffix == ".mcap") for f in folder.iterdir())

    if not path.is_dir() or not (bag_like(path) or all(p.is_dir() and bag_like(p) for p in path.iterdir())):
        raise InputError(f"OUT: {path} exists and is not a bag written here (expected rosbag2 folders only); "
                         "remove it or pick another OUT")


# -- KITTI ---------------------------------------------------------------------------------------------------------
def nearest_rotation(R: np.ndarray) -> np.ndarray:
    """``[..., 3, 3]`` the nearest rotations (Frobenius norm; SVD with the determinant fixed to +1)."""
    U, _, Vt = np.linalg.svd(R)
    D = np.ones(R.shape[:-1])
    D[..., -1] = np.sign(np.linalg.det(U @ Vt))
    return (U * D[..., None, :]) @ Vt


def kitti_camera_poses(path: Path) -> tuple[np.ndarray, float]:
    """``([N, 4, 4] camera-to-world poses with their rotations made orthonormal, largest change)`` of a KITTI
    ``poses.txt``; the change is the largest absolute element difference of a rotation.

    Raises:
        DatasetError: a malformed line, or a 3x3 block that is not near a rotation (change above
            :data:`MAX_ROTATION_PROJECTION`, or a reflection).
    """
    poses = kitti_poses(path)
    R = poses[:, :3, :3]
    fixed = nearest_rotation(R)
    change = np.abs(fixed - R).max(axis=(1, 2))
    bad = np.flatnonzero((change > MAX_ROTATION_PROJECTION) | (np.linalg.det(R) <= 0))
    if len(bad):
        raise DatasetError(f"{path}:{bad[0] + 1}: expected a rotation in the pose's 3x3 block, got one "
                           f"{change[bad[0]]:.2g} from the nearest rotation (det {np.linalg.det(R[bad[0]]):.3g})")
    poses[:, :3, :3] = fixed
    return poses, float(change.max())


def write_kitti_bag(src: Path, out: Path, name: str = "kitti") -> WrittenSet:
    """KITTI odometry folder -> one single-camera bag at ``out`` (module docstring), ``out.json`` beside it."""
    P0 = kitti_projection(src / "calib.txt")
    K = P0[:, :3]
    poses, change = kitti_camera_poses(src / "poses.txt")
    paths = [src / "image_l" / f"{i:06d}.png" for i in range(len(poses))]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"{missing[0]}: file not found (expected one image per line of {src / 'poses.txt'}: "
                           f"{len(poses)})")
    stamps = START_NS + KITTI_PERIOD_NS * np.arange(len(poses), dtype=np.int64)
    camera = KITTI_CAMERAS[0]
    size = None
    with mcap_writer(out) as writer:
        rec = RecordingWriter(writer, KITTI_CAMERAS)
        rec.tf(TF_STATIC_TOPIC, stamps[0], BASE_FRAME, [(camera.frame, KITTI_T_BASE_CAMERA)])
        base_camera = invert_T(KITTI_T_BASE_CAMERA)
        for stamp, T_map_camera, path in zip(stamps.tolist(), poses, paths):
            pixels, encoding = read_image(path)
            if size is None:
                size = pixels.shape[1], pixels.shape[0]
            elif (pixels.shape[1], pixels.shape[0]) != size:
                raise DatasetError(f"{path}: expected {size[0]}x{size[1]} like the first frame, got "
                                   f"{pixels.shape[1]}x{pixels.shape[0]}")
            rec.tf(TF_TOPIC, stamp, MAP_FRAME, [(BASE_FRAME, T_map_camera @ base_camera)])
            rec.camera_info(stamp, K, size[0], size[1], camera.info, camera.frame, P=P0)
            rec.image(camera.image, stamp, pixels, encoding, camera.frame)
    assert size is not None
    record = {"set": name, "source": str(src.resolve()), "licence": LICENCE_NOTE, "bags": [out.name],
              "cameras": [vars(camera)], "width": size[0], "height": size[1], "K": K.tolist(), "P": P0.tolist(),
              "world_frame": MAP_FRAME, "T_base_camera": KITTI_T_BASE_CAMERA.tolist(),
              "stamps_ns": stamps.tolist(), "T_map_camera": poses.tolist(),
              "notes": ["T_map_camera: poses.txt (camera-to-world, map = frame 0's camera frame) with each rotation "
                        f"replaced by its nearest rotation (largest element change {change:.2g})",
                        "stamps nominal: 10 Hz from START_NS"]}
    return _finish(name, (out,), len(stamps), out, record, KITTI_CAMERAS)


# -- two-camera sets -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StereoCamera:
    """One camera of a two-camera bag: ``K [3, 3]`` pixels, plumb_bob ``D [5]``, pose ``T_base_camera [4, 4]``
    (optical frame -> base_link, metres)."""

    K: np.ndarray
    D: np.ndarray
    T_base_camera: np.ndarray


def write_stereo_bag(out: Path, cameras: tuple[StereoCamera, StereoCamera],
                     images: Sequence[tuple[int, Path | None, Path | None]]) -> int:
    """A two-camera bag (:data:`STEREO_CAMERAS` topics) at ``out``: ``/tf_static`` with both extrinsics, then per
    ``(stamp_ns, image0 path or None, image1 path or None)`` (in stamp order) ``/tf`` ``map -> base_link``
    (identity) and each present camera's CameraInfo and image. Returns the number of stamps."""
    with mcap_writer(out) as writer:
        rec = RecordingWriter(writer, STEREO_CAMERAS)
        rec.tf(TF_STATIC_TOPIC, images[0][0], BASE_FRAME,
               [(topics.frame, cam.T_base_camera) for topics, cam in zip(STEREO_CAMERAS, cameras)])
        for stamp, *paths in sorted(images, key=lambda item: item[0]):
            rec.tf(TF_TOPIC, stamp, MAP_FRAME, [(BASE_FRAME, np.eye(4))])
            for topics, cam, path in zip(STEREO_CAMERAS, cameras, paths):
                if path is None:
                    continue
                pixels, encoding = read_image(path)
                rec.camera_info(stamp, cam.K, pixels.shape[1], pixels.shape[0], topics.info, topics.frame, D=cam.D)
                rec.image(topics.image, stamp, pixels, encoding, topics.frame)
    return len(images)


def write_middlebury_bags(src: Path, out: Path, name: str = "middlebury") -> WrittenSet:
    """Middlebury scenes -> ``out/<scene>/`` two-camera bags (module docstring), ``out.json`` beside ``out``."""
    scenes = sorted(p.parent.name for p in src.glob("*/calib.txt"))
    if not scenes:
        raise DatasetError(f"{src}: no <scene>/calib.txt (expected Middlebury 2014 scene folders)")
    T_base_cam0 = make_T(R_BASE_OPTICAL, [0.0, 0.0, 0.0])
    bags, per_scene = [], {}
    out.mkdir(parents=True)
    for scene in scenes:
        K0, K1, baseline_m = middlebury_calib(src / scene / "calib.txt")
        T_cam0_cam1 = make_T(np.eye(3), [baseline_m, 0.0, 0.0])  # camera 1's pose in camera 0
        cams = (StereoCamera(K0, np.zeros(5), T_base_cam0), StereoCamera(K1, np.zeros(5), T_base_cam0 @ T_cam0_cam1))
        write_stereo_bag(out / scene, cams, [(START_NS, src / scene / "im0.png", src / scene / "im1.png")])
        bags.append(out / scene)
        per_scene[scene] = {"K0": K0.tolist(), "K1": K1.tolist(), "baseline_m": baseline_m,
                            "T_base_camera0": cams[0].T_base_camera.tolist(),
                            "T_base_camera1": cams[1].T_base_camera.tolist(),
                            "T_0to1": invert_T(T_cam0_cam1).tolist()}
    record = {"set": name, "source": str(src.resolve()), "licence": LICENCE_NOTE,
              "bags": [f"{name}/{s}" for s in scenes], "cameras": [vars(c) for c in STEREO_CAMERAS],
              "stamps_ns": [START_NS], "scenes": per_scene,
              "notes": ["T_0to1: camera-0 points into camera 1 (X1 = R X0 + t, metres) = [I | (-baseline, 0, 0)]",
                        "ArtL, Teddy and Computer have nominal calibration only (up to ~1.5 deg off)"]}
    return _finish(name, tuple(bags), len(scenes), out, record, STEREO_CAMERAS)


def write_euroc_bag(src: Path, out: Path, name: str = "euroc_stereo") -> WrittenSet:
    """EuRoC ``cam0``/``cam1`` -> one two-camera bag at ``out`` with the real distortion (module docstring)."""
    sensors = [euroc_sensor(src / cam / "sensor.yaml") for cam in ("cam0", "cam1")]
    files = [{int(p.stem): p for p in (src / cam / "data").glob("*.png") if p.stem.isdigit()}
             for cam in ("cam0", "cam1")]
    stamps = sorted(set(files[0]) | set(files[1]))
    if not set(files[0]) & set(files[1]):
        raise DatasetError(f"{src}: no stamp with an image in both cam0/data and cam1/data (expected <stamp>.png "
                           "pairs, stamps in nanoseconds)")
    cams = tuple(StereoCamera(K, np.append(dist, 0.0), T_BS) for K, dist, T_BS in sensors)
    write_stereo_bag(out, cams, [(s, files[0].get(s), files[1].get(s)) for s in stamps])
    record = {"set": name, "source": str(src.resolve()), "licence": LICENCE_NOTE, "bags": [out.name],
              "cameras": [vars(c) for c in STEREO_CAMERAS], "stamps_ns": stamps,
              "stereo_stamps_ns": sorted(set(files[0]) & set(files[1])),
              "K0": cams[0].K.tolist(), "K1": cams[1].K.tolist(), "D0": cams[0].D.tolist(), "D1": cams[1].D.tolist(),
              "T_base_camera0": cams[0].T_base_camera.tolist(), "T_base_camera1": cams[1].T_base_camera.tolist(),
              "T_0to1": (invert_T(cams[1].T_base_camera) @ cams[0].T_base_camera).tolist(),
              "notes": ["images distorted as recorded (plumb_bob k1 k2 p1 p2 0 in CameraInfo)",
                        "base_link = EuRoC's body (IMU) frame; T_base_camera = sensor.yaml T_BS"]}
    return _finish(name, (out,), len(stamps), out, record, STEREO_CAMERAS)


# -- helpers -------------------------------------------------------------------------------------------------------
def read_image(path: Path) -> tuple[np.ndarray, str]:
    """``(pixels, ROS encoding)`` of an image file as stored: 8-bit grey ``mono8`` ``[H, W]``, 16-bit grey ``mono16``,
    colour ``rgb8`` ``[H, W, 3]`` (alpha dropped).

    Raises:
        DatasetError: missing, undecodable, or of another kind.
    """
    import cv2

    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f"{path}: cannot decode the image (expected a PNG)")
    if image.ndim == 2 and image.dtype in (np.uint8, np.uint16):
        return image, "mono8" if image.dtype == np.uint8 else "mono16"
    if image.ndim == 3 and image.dtype == np.uint8 and image.shape[2] in (3, 4):
        return np.ascontiguousarray(image[:, :, 2::-1]), "rgb8"
    raise DatasetError(f"{path}: expected 8-bit grey or colour (or 16-bit grey), got {image.dtype} with shape "
                       f"{image.shape}")


def _finish(name: str, bags: tuple[Path, ...], stamps: int, out: Path, record: dict[str, Any],
            cameras: tuple[CameraTopics, ...]) -> WrittenSet:
    path = out.parent / f"{name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    return WrittenSet(name, bags, stamps, path, cameras)
