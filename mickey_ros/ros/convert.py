"""Message <-> numpy conversions, written against message *field names* only.

The same functions serve rclpy message classes and rosbags dataclasses (and anything with the same
fields), so the CLI and training use them without ROS. Nothing here imports rclpy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from mickey_ros.errors import ImageError, IntrinsicsError
from mickey_ros.image_bytes import imdecode_quiet, png_problem

# sensor_msgs/PointField datatypes
FLOAT32 = 7
UINT8_ENCODINGS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
SUPPORTED_ENCODINGS = (*UINT8_ENCODINGS, "mono16")
MAX_DECODE_PIXELS = 64_000_000  # compressed images larger than this (e.g. 8000 x 8000) are refused before decoding
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # frame headers


def _as_bytes(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    return np.frombuffer(bytes(data), dtype=np.uint8)


def image_to_rgb(msg: Any, name: str = "image") -> np.ndarray:
    """``sensor_msgs/Image`` -> uint8 ``[H, W, 3]`` RGB.

    Encodings: rgb8, bgr8, rgba8, bgra8 (alpha dropped), mono8 (replicated), mono16 (scaled to 8 bit,
    big- or little-endian). Row padding (``step`` > ``width * bytes per pixel``) is handled.

    Raises:
        ImageError: unknown encoding, or ``data`` too short for ``height x step``.
    """
    encoding = str(msg.encoding).lower()
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if encoding not in SUPPORTED_ENCODINGS:
        raise ImageError(f"{name}: unsupported encoding {msg.encoding!r}, expected one of {', '.join(SUPPORTED_ENCODINGS)}")
    bpp = 2 if encoding == "mono16" else UINT8_ENCODINGS[encoding]
    data = _as_bytes(msg.data)
    if height <= 0 or width <= 0 or step < width * bpp or data.size != height * step:
        raise ImageError(
            f"{name}: expected {height} rows of step {step} >= {width * bpp} bytes ({msg.encoding} {width}x{height}), "
            f"i.e. exactly {max(height, 0) * max(step, 0)} bytes, got {data.size} bytes"
        )
    rows = data[: height * step].reshape(height, step)[:, : width * bpp]
    if encoding == "mono16":
        dtype = ">u2" if int(msg.is_bigendian) else "<u2"
        grey16 = np.ascontiguousarray(rows).view(dtype).reshape(height, width).astype(np.uint32)
        grey = ((grey16 + 128) // 257).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    pixels = rows.reshape(height, width, bpp)
    if encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    if encoding.startswith("bgr"):
        pixels = pixels[:, :, 2::-1]
    return np.ascontiguousarray(pixels[:, :, :3])


def compressed_dimensions(data: bytes | np.ndarray) -> tuple[int, int] | None:
    """``(W, H)`` read from a PNG (IHDR) or JPEG (frame header) without decoding; None for other bytes."""
    head = bytes(data[:8])
    if head == _PNG_SIGNATURE and len(data) >= 24 and bytes(data[12:16]) == b"IHDR":
        return int.from_bytes(bytes(data[16:20]), "big"), int.from_bytes(bytes(data[20:24]), "big")
    if head[:2] != b"\xff\xd8":
        return None
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = int(data[pos + 1])
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        length = int(data[pos + 2]) << 8 | int(data[pos + 3])
        if marker in _JPEG_SOF and pos + 9 <= n:
            height = int(data[pos + 5]) << 8 | int(data[pos + 6])
            width = int(data[pos + 7]) << 8 | int(data[pos + 8])
            return width, height
        pos += 2 + length
    return None


def compressed_to_rgb(msg: Any, name: str = "image", max_pixels: int = MAX_DECODE_PIXELS) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (jpeg or png) -> uint8 ``[H, W, 3]`` RGB.

    The dimensions are read from the header first: an image of more than ``max_pixels`` pixels is refused
    before any decoding (a small PNG can inflate to gigabytes).

    Raises:
        ImageError: the bytes do not decode as an image, or the image exceeds ``max_pixels``.
    """
    data = _as_bytes(msg.data)
    size = compressed_dimensions(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageError(f"{name}: CompressedImage of {size[0]}x{size[1]} pixels exceeds the decode budget of "
                         f"{max_pixels / 1e6:g} MP; skipped without decoding")
    problem = png_problem(data)
    if problem:
        raise ImageError(f"{name}: cannot decode CompressedImage (format {msg.format!r}): {problem}")
    image = imdecode_quiet(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(f"{name}: cannot decode CompressedImage (format {msg.format!r}), expected jpeg or png bytes")
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(image, code)


def message_to_rgb(msg: Any, name: str = "image") -> np.ndarray:
    """Image or CompressedImage (told apart by their fields) -> uint8 ``[H, W, 3]`` RGB."""
    return compressed_to_rgb(msg, name) if hasattr(msg, "format") else image_to_rgb(msg, name)


@dataclass(frozen=True)
class CameraModel:
    """What the pipeline needs from a CameraInfo: K of the *delivered* image and its size."""

    K: np.ndarray  # [3, 3] float64, pixels of the delivered (binned / ROI) image
    width: int
    height: int
    distortion_model: str
    D: np.ndarray  # distortion coefficients as sent

    @property
    def distorted(self) -> bool:
        return bool(np.any(self.D != 0))


def camera_info_to_model(msg: Any, name: str = "camera_info") -> CameraModel:
    """``sensor_msgs/CameraInfo`` -> :class:`CameraModel`, honouring ROI and binning.

    With ROI offset (x0, y0) and binning (bx, by): ``fx' = fx / bx``, ``cx' = (cx - x0) / bx``
    (same for y); the delivered size is ``(roi size or full size) / binning``.

    Raises:
        IntrinsicsError: K is not 9 finite numbers, or a focal length is <= 0.
    """
    k = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    if k.size != 9 or not np.all(np.isfinite(k)):
        raise IntrinsicsError(f"{name}: expected k with 9 finite numbers, got {k.tolist()}")
    K = k.reshape(3, 3).copy()
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise IntrinsicsError(f"{name}: expected focal lengths fx > 0 and fy > 0 in k, got fx={K[0, 0]:g}, fy={K[1, 1]:g}")
    bx, by = max(int(msg.binning_x), 1), max(int(msg.binning_y), 1)
    roi = msg.roi
    width, height = int(msg.width), int(msg.height)
    if int(roi.width) > 0 and int(roi.height) > 0:
        K[0, 2] -= int(roi.x_offset)
        K[1, 2] -= int(roi.y_offset)
        width, height = int(roi.width), int(roi.height)
    K[0] /= bx
    K[1] /= by
    return CameraModel(K=K, width=width // bx, height=height // by, distortion_model=str(msg.distortion_model),
                       D=np.asarray(msg.d, dtype=np.float64).reshape(-1))


def check_image_matches_info(image: np.ndarray, camera: CameraModel, name: str = "camera_info") -> None:
    """Raise IntrinsicsError when the image size differs from the size its CameraInfo describes."""
    height, width = image.shape[:2]
    if (width, height) != (camera.width, camera.height):
        raise IntrinsicsError(
            f"{name}: CameraInfo describes {camera.width}x{camera.height} images (after ROI/binning), "
            f"got an image of {width}x{height}"
        )


class Undistorter:
    """Undistorts images to the pinhole K of their CameraInfo; remap tables cached per camera model."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._maps: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, image: np.ndarray, camera: CameraModel) -> np.ndarray:
        key = (camera.width, camera.height, camera.distortion_model, camera.K.tobytes(), camera.D.tobytes())
        if key != self._key:
            size = (camera.width, camera.height)
            if camera.distortion_model == "equidistant":
                maps = cv2.fisheye.initUndistortRectifyMap(camera.K, camera.D[:4], np.eye(3), camera.K, size,
                                                           cv2.CV_32FC1)
            else:
                maps = cv2.initUndistortRectifyMap(camera.K, camera.D, np.eye(3), camera.K, size, cv2.CV_32FC1)
            self._key, self._maps = key, maps
        assert self._maps is not None
        return cv2.remap(image, self._maps[0], self._maps[1], cv2.INTER_LINEAR)


# -- PointCloud2 ------------------------------------------------------------------------------------------
def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """uint8 ``[N, 3]`` colours -> ``[N]`` float32 holding 0x00RRGGBB bits (RViz's ``rgb`` field)."""
    rgb = np.asarray(rgb, dtype=np.uint32)
    return ((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]).astype(np.uint32).view(np.float32)


def encode_points(points: np.ndarray, rgb: np.ndarray | None = None,
                  intensity: np.ndarray | None = None) -> tuple[list[tuple[str, int, int, int]], int, bytes]:
    """Little-endian PointCloud2 payload for ``[N, 3]`` points (metres) plus rgb or intensity.

    Returns:
        ``(fields, point_step, data)`` with fields ``(name, offset, datatype, count)``: x, y, z float32 at
        0/4/8 and then ``rgb`` (packed float32) or ``intensity`` (float32) at 12; point_step 16 (12 without).
    """
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    names = ["x", "y", "z"]
    columns = [points[:, 0], points[:, 1], points[:, 2]]
    if rgb is not None:
        names.append("rgb")
        columns.append(pack_rgb(np.asarray(rgb).reshape(-1, 3)))
    elif intensity is not None:
        names.append("intensity")
        columns.append(np.asarray(intensity, dtype=np.float32).reshape(-1))
    dtype = np.dtype({"names": names, "formats": ["<f4"] * len(names), "offsets": [4 * i for i in range(len(names))]})
    record = np.zeros(len(points), dtype=dtype)
    for n, c in zip(names, columns):
        record[n] = c
    fields = [(n, 4 * i, FLOAT32, 1) for i, n in enumerate(names)]
    return fields, dtype.itemsize, record.tobytes()
