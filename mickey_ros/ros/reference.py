"""Reference mode of ``relocalize_node``, without ROS: the stored reference image, its intrinsics and its optional
pose in a map, read and checked from the node's parameters.

Conventions (DESIGN.md §2): the reference is camera 0 and the live query camera is camera 1; the pipeline's
``T_0to1`` maps reference-camera points into query-camera points, ``X_query = R X_ref + t`` (metres, optical axes
x right, y down, z forward). ``reference_pose`` ``[x, y, z, qx, qy, qz, qw]`` (metres, ROS quaternion order) is
``T_map_ref``: it maps reference-camera points into the ``reference_pose_frame`` (the reference camera's pose in the
map, what a TF ``map -> reference optical frame`` would carry). The query camera's pose in the map is then
``T_map_query = T_map_ref @ inv(T_0to1)`` (:func:`mickey_ros.ros.builders.query_pose_in_anchor`).

Every error is a :class:`~mickey_ros.ros.node_common.ParameterError` whose one-line message names the parameter.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mickey_ros.errors import ImageError
from mickey_ros.ros.convert import CameraModel, Undistorter
from mickey_ros.ros.node_common import ParameterError

IDENTITY_POSE = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]  # [x, y, z, qx, qy, qz, qw]
DEFAULT_REFERENCE_FRAME = "mickey_reference"  # the reference optical frame when frame0 is empty
INTRINSICS = ("reference_fx", "reference_fy", "reference_cx", "reference_cy")


@dataclass(frozen=True)
class ReferenceImage:
    """The reference view: uint8 ``[H, W, 3]`` RGB (undistorted when asked) and its ``[3, 3]`` K (pixels)."""

    image: np.ndarray
    K: np.ndarray
    source: str  # for the start-up log and diagnostics


def reference_mode(p: Mapping[str, Any]) -> bool:
    """One live camera against a reference: ``reference_mode`` or a non-empty ``reference_image``."""
    return bool(p["reference_mode"] or p["reference_image"])


def check_reference_parameters(p: Mapping[str, Any]) -> None:
    """Value-only rules of the reference parameters (no file is read; :func:`load_reference` reads them).

    Raises:
        ParameterError: naming the first offending parameter.
    """
    given = [name for name in INTRINSICS if p[name] != 0.0]
    if not p["reference_image"]:
        for name in ("reference_camera_info", *given):
            if p[name]:
                raise ParameterError(f"{name}: describes the reference image, expected reference_image to be set "
                                     f"(or leave {name} unset)")
    elif p["reference_camera_info"] and given:
        raise ParameterError(f"reference_camera_info: expected either a CameraInfo YAML file or {', '.join(INTRINSICS)}"
                             f", not both ({given[0]} is set)")
    elif not p["reference_camera_info"]:
        for name in INTRINSICS[:2]:
            if p[name] <= 0.0:
                raise ParameterError(f"{name}: expected a focal length > 0 (pixels) for reference_image, got "
                                     f"{p[name]!r} (or set reference_camera_info to a CameraInfo YAML file)")
    pose = p["reference_pose"]
    if len(pose) != 7:
        raise ParameterError(f"reference_pose: expected 7 numbers [x, y, z, qx, qy, qz, qw], got {len(pose)}: {pose}")
    if not np.all(np.isfinite(pose)) or np.linalg.norm(pose[3:]) < 1e-9:
        raise ParameterError(f"reference_pose: expected finite numbers with a non-zero quaternion (qx, qy, qz, qw), "
                             f"got {pose}")
    if p["reference_pose_frame"] and not reference_mode(p):
        raise ParameterError("reference_pose_frame: used only in reference mode, expected reference_image or "
                             "reference_mode: true (or leave reference_pose_frame empty)")
    if not p["reference_pose_frame"] and list(pose) != IDENTITY_POSE:
        raise ParameterError("reference_pose_frame: expected the map frame of reference_pose (e.g. 'map'), got ''")


def reference_pose_matrix(pose: list[float]) -> np.ndarray:
    """``[x, y, z, qx, qy, qz, qw]`` -> ``[4, 4]`` float64 ``T_map_ref`` (the quaternion is normalised)."""
    from mickey_ros.geometry.se3 import make_T, quat_wxyz_to_matrix

    x, y, z, qx, qy, qz, qw = (float(v) for v in pose)
    return make_T(quat_wxyz_to_matrix([qw, qx, qy, qz]), [x, y, z])


def read_image_file(path: str, name: str = "reference_image") -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB of an image file (PNG, JPEG, ... anything OpenCV decodes): ``mickey_ros.image_bytes.read_image``
    with the node's parameter errors.

    Raises:
        ParameterError: missing or undecodable file.
    """
    from mickey_ros.image_bytes import read_image

    if not Path(path).is_file():
        raise ParameterError(f"{name}: expected an existing image file, got {path!r} (not found)")
    try:
        return read_image(path, name)
    except ImageError as err:
        raise ParameterError(str(err)) from err


def _numbers(data: Any, key: str, count: int, name: str, path: str) -> np.ndarray:
    block = data.get(key) if isinstance(data, dict) else None
    values = block.get("data") if isinstance(block, dict) else None
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        array = np.zeros(0)
    if values is None or (count and array.size != count) or not np.all(np.isfinite(array)):
        raise ParameterError(f"{name}: expected {key}.data with {count or 'some'} finite numbers in {path}, "
                             f"got {values!r}")
    return array


def read_camera_info_yaml(path: str, name: str = "reference_camera_info") -> CameraModel:
    """A CameraInfo YAML file in the ROS ``camera_calibration`` format -> :class:`CameraModel`.

    Reads ``image_width``, ``image_height``, ``camera_matrix.data`` (9 numbers, row-major K), ``distortion_model``
    (default ``plumb_bob``) and ``distortion_coefficients.data`` (default: none). ``rectification_matrix`` and
    ``projection_matrix`` are not used (the image is taken as given; distortion is undone with K).

    Raises:
        ParameterError: missing file, not YAML, missing or malformed keys, focal length <= 0.
    """
    import yaml

    file = Path(path)
    if not file.is_file():
        raise ParameterError(f"{name}: expected an existing CameraInfo YAML file, got {path!r} (not found)")
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ParameterError(f"{name}: cannot read {path!r} as YAML: {first}") from err
    if not isinstance(data, dict):
        raise ParameterError(f"{name}: expected a CameraInfo YAML mapping (image_width, camera_matrix, ...) in "
                             f"{path}, got {type(data).__name__}")
    size = [data.get("image_width"), data.get("image_height")]
    if not all(type(v) is int and v > 0 for v in size):
        raise ParameterError(f"{name}: expected positive integers image_width and image_height in {path}, got {size}")
    K = _numbers(data, "camera_matrix", 9, name, path).reshape(3, 3)
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ParameterError(f"{name}: expected focal lengths fx > 0 and fy > 0 in camera_matrix of {path}, got "
                             f"fx={K[0, 0]:g}, fy={K[1, 1]:g}")
    D = _numbers(data, "distortion_coefficients", 0, name, path) if "distortion_coefficients" in data else np.zeros(0)
    model = str(data.get("distortion_model", "plumb_bob"))
    return CameraModel(K=K, width=size[0], height=size[1], distortion_model=model, D=D)


def _intrinsics_from_parameters(p: Mapping[str, Any], width: int, height: int) -> np.ndarray:
    fx, fy, cx, cy = (float(p[name]) for name in INTRINSICS)
    for name, value, size in (("reference_cx", cx, width), ("reference_cy", cy, height)):
        if not 0.0 <= value <= size:
            raise ParameterError(f"{name}: expected a principal point inside the {width}x{height} reference image "
                                 f"(0 <= {name[-2:]} <= {size}), got {value!r}")
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def load_reference(p: Mapping[str, Any]) -> ReferenceImage | None:
    """The reference image the parameters name, checked against its intrinsics; ``None`` when
    ``reference_image`` is empty. Run :func:`check_reference_parameters` first.

    Raises:
        ParameterError: missing or unreadable file, an image too small for the network, a CameraInfo YAML whose
            size differs from the image's, a principal point outside the image, distortion with ``undistort`` off.
    """
    from mickey_ros.pipeline import check_network_size

    path = p["reference_image"]
    if not path:
        return None
    image = read_image_file(path)
    height, width = image.shape[:2]
    try:
        check_network_size(height, width, "reference_image")
    except ImageError as err:
        raise ParameterError(str(err)) from err
    if not p["reference_camera_info"]:
        return ReferenceImage(image=image, K=_intrinsics_from_parameters(p, width, height), source=f"file {path}")
    camera = read_camera_info_yaml(p["reference_camera_info"])
    if (camera.width, camera.height) != (width, height):
        raise ParameterError(f"reference_camera_info: describes {camera.width}x{camera.height} images, got a "
                             f"{width}x{height} reference_image {path}")
    if camera.distorted:
        if not p["undistort"]:
            raise ParameterError(f"reference_camera_info: non-zero distortion {camera.D.tolist()} with undistort off; "
                                 "give a rectified reference_image or set undistort: true")
        image = Undistorter()(image, camera)
    return ReferenceImage(image=image, K=camera.K, source=f"file {path}")
