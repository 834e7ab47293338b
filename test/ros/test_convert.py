"""Conversions against rosbags message classes and an independent decoder (rosbags-image)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

rosbags_typesys = pytest.importorskip("rosbags.typesys")
rosbags_image = pytest.importorskip("rosbags.image")

from mickey_ros.errors import ImageError, IntrinsicsError  # noqa: E402
from mickey_ros.ros.convert import (  # noqa: E402
    Undistorter,
    camera_info_to_model,
    check_image_matches_info,
    compressed_dimensions,
    compressed_to_rgb,
    encode_points,
    image_to_rgb,
    message_to_rgb,
)

TS = rosbags_typesys.get_typestore(rosbags_typesys.Stores.ROS2_HUMBLE)
Header = TS.types["std_msgs/msg/Header"]
Time = TS.types["builtin_interfaces/msg/Time"]
Image = TS.types["sensor_msgs/msg/Image"]
CompressedImage = TS.types["sensor_msgs/msg/CompressedImage"]
CameraInfo = TS.types["sensor_msgs/msg/CameraInfo"]
RegionOfInterest = TS.types["sensor_msgs/msg/RegionOfInterest"]

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
HEADER = Header(stamp=Time(sec=1, nanosec=2), frame_id="cam0_optical_frame")


def _image(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: int = 0) -> Image:
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1).view(np.uint8)
    if pad:
        rows = np.concatenate([rows, np.zeros((h, pad), np.uint8)], axis=1)
    return Image(header=HEADER, height=h, width=w, encoding=encoding, is_bigendian=bigendian,
                 step=rows.shape[1], data=rows.reshape(-1).copy())


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize(
    ("encoding", "pixels", "expected"),
    [
        ("rgb8", RGB, RGB),
        ("bgr8", RGB[:, :, ::-1].copy(), RGB),
        ("rgba8", np.dstack([RGB, np.full((5, 7), 9, np.uint8)]), RGB),
        ("bgra8", np.dstack([RGB[:, :, ::-1], np.full((5, 7), 9, np.uint8)]), RGB),
        ("mono8", RGB[:, :, 0].copy(), np.repeat(RGB[:, :, :1], 3, 2)),
    ],
)
def test_every_uint8_encoding(encoding, pixels, expected, pad):
    msg = _image(pixels, encoding, pad)
    np.testing.assert_array_equal(image_to_rgb(msg), expected)
    if encoding != "mono8" and not pad:  # the independent decoder agrees (it ignores row padding itself)
        np.testing.assert_array_equal(image_to_rgb(msg), rosbags_image.message_to_cvimage(msg, "rgb8"))


@pytest.mark.parametrize("bigendian", [0, 1])
def test_mono16_both_endiannesses(bigendian):
    grey = RNG.integers(0, 65536, (5, 7), dtype=np.uint16)
    pixels = grey.astype(">u2" if bigendian else "<u2")
    out = image_to_rgb(_image(pixels, "mono16", bigendian=bigendian))
    np.testing.assert_array_equal(out[:, :, 0], np.round(grey / 257.0).astype(np.uint8))
    assert np.array_equal(out[:, :, 0], out[:, :, 2])


def test_unknown_encoding_and_short_data():
    with pytest.raises(ImageError, match=r"image0: unsupported encoding 'yuv422', expected one of rgb8"):
        image_to_rgb(_image(RGB, "yuv422"), "image0")
    msg = _image(RGB, "rgb8")
    msg.data = msg.data[:-5]
    with pytest.raises(ImageError, match=r"image1: expected 5 rows of step 21"):
        image_to_rgb(msg, "image1")


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_matches_rosbags_image(fmt):
    smooth = cv2.GaussianBlur(RNG.integers(0, 256, (40, 48, 3), dtype=np.uint8), (5, 5), 0)
    ok, buf = cv2.imencode(".png" if fmt == "png" else ".jpg", smooth[:, :, ::-1])
    assert ok
    msg = CompressedImage(header=HEADER, format=f"rgb8; {fmt} compressed bgr8", data=buf.reshape(-1))
    ours = message_to_rgb(msg)
    np.testing.assert_array_equal(ours, rosbags_image.message_to_cvimage(msg, "rgb8"))
    if fmt == "png":
        np.testing.assert_array_equal(ours, smooth)
    with pytest.raises(ImageError, match=r"cannot decode CompressedImage"):
        compressed_to_rgb(CompressedImage(header=HEADER, format="jpeg", data=np.zeros(10, np.uint8)))


def test_extra_bytes_after_the_last_row_are_refused():
    msg = _image(RGB, "rgb8")
    msg.data = np.concatenate([msg.data, np.zeros(4, np.uint8)])
    with pytest.raises(ImageError, match=r"image0: expected 5 rows of step 21 >= 21 bytes \(rgb8 7x5\), i\.e\. "
                                         r"exactly 105 bytes, got 109 bytes"):
        image_to_rgb(msg, "image0")


@pytest.mark.parametrize("ext, flags", [(".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])])
def test_compressed_dimensions_come_from_the_header(ext, flags):
    ok, buf = cv2.imencode(ext, RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8), flags)
    assert ok and compressed_dimensions(buf.reshape(-1)) == (53, 37)
    assert compressed_dimensions(np.zeros(30, np.uint8)) is None
    assert compressed_dimensions(buf.reshape(-1)[:3]) is None  # truncated: unknown, left to the decoder


def _huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit grey PNG of ``width x height`` (all black): ~100 KB that decodes to width*height bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row * 1000) for _ in range(height // 1000)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_from_its_header_without_decoding(monkeypatch):
    import mickey_ros.ros.convert as convert

    bomb = _huge_png(30000, 30000)
    assert len(bomb) < 2_000_000 and compressed_dimensions(np.frombuffer(bomb, np.uint8)) == (30000, 30000)
    small = _huge_png(3000, 2000)  # the same kind of file within the budget decodes as usual
    assert compressed_to_rgb(CompressedImage(header=HEADER, format="png", data=np.frombuffer(small, np.uint8))
                             ).shape == (2000, 3000, 3)

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded")

    monkeypatch.setattr(convert.cv2, "imdecode", no_decode)
    msg = CompressedImage(header=HEADER, format="png", data=np.frombuffer(bomb, np.uint8))
    with pytest.raises(ImageError, match=r"image1: CompressedImage of 30000x30000 pixels exceeds the decode budget "
                                         r"of 64 MP; skipped without decoding"):
        compressed_to_rgb(msg, "image1")


def _info(k, width=640, height=480, binning=(0, 0), roi=(0, 0, 0, 0), d=(0.0,) * 5, model="plumb_bob"):
    return CameraInfo(
        header=HEADER, height=height, width=width, distortion_model=model, d=np.array(d, dtype=np.float64),
        k=np.array(k, dtype=np.float64), r=np.eye(3).reshape(-1), p=np.zeros(12),
        binning_x=binning[0], binning_y=binning[1],
        roi=RegionOfInterest(x_offset=roi[0], y_offset=roi[1], height=roi[2], width=roi[3], do_rectify=False),
    )


K = [500.0, 0, 320, 0, 480.0, 240, 0, 0, 1]


def test_camera_info_roi_and_binning():
    cam = camera_info_to_model(_info(K))
    np.testing.assert_array_equal(cam.K, np.array(K).reshape(3, 3))
    assert (cam.width, cam.height) == (640, 480) and not cam.distorted
    cam = camera_info_to_model(_info(K, binning=(2, 2), roi=(100, 40, 200, 300)))
    np.testing.assert_allclose(cam.K, [[250, 0, 110], [0, 240, 100], [0, 0, 1]])
    assert (cam.width, cam.height) == (150, 100)
    check_image_matches_info(np.zeros((100, 150, 3), np.uint8), cam)
    with pytest.raises(IntrinsicsError, match=r"camera_info1: CameraInfo describes 150x100 images .* got an image of 640x480"):
        check_image_matches_info(np.zeros((480, 640, 3), np.uint8), cam, "camera_info1")


def test_camera_info_zero_focal_length():
    with pytest.raises(IntrinsicsError, match=r"camera_info0: expected focal lengths fx > 0 and fy > 0 in k, got fx=0"):
        camera_info_to_model(_info([0.0] * 9), "camera_info0")


def test_undistortion_inverts_opencv_distortion_and_caches_maps():
    d = (-0.2, 0.05, 0.001, -0.001, 0.0)
    cam = camera_info_to_model(_info(K, d=d))
    assert cam.distorted
    # a distorted picture of a checkerboard: undistorting gives straight lines back near the centre
    board = (np.indices((480, 640)).sum(0) // 40 % 2 * 255).astype(np.uint8)
    board = np.repeat(board[:, :, None], 3, 2)
    pts = np.stack(np.meshgrid(np.arange(640.0), np.arange(480.0)), -1).reshape(-1, 1, 2)
    undist = cv2.undistortPoints(pts, cam.K, cam.D, P=cam.K).reshape(480, 640, 2).astype(np.float32)
    distorted = cv2.remap(board, undist[..., 0], undist[..., 1], cv2.INTER_LINEAR)
    und = Undistorter()
    restored = und(distorted, cam)
    inner = (slice(20, 460), slice(20, 620))
    assert np.mean(np.abs(restored[inner].astype(int) - board[inner])) < 0.1 * np.mean(
        np.abs(distorted[inner].astype(int) - board[inner]))
    maps = und._maps
    und(distorted, cam)
    assert und._maps is maps  # cached for the same CameraInfo


def test_pointcloud_bytes_decode_independently():
    pts = RNG.normal(size=(6, 3)).astype(np.float32)
    rgb = RNG.integers(0, 256, (6, 3), dtype=np.uint8)
    fields, step, data = encode_points(pts, rgb=rgb)
    assert [f[0] for f in fields] == ["x", "y", "z", "rgb"] and step == 16 and len(data) == 6 * 16
    raw = np.frombuffer(data, dtype=np.uint8).reshape(6, 16)
    xyz = raw[:, :12].copy().view("<f4")
    np.testing.assert_array_equal(xyz, pts)
    packed = raw[:, 12:16].copy().view("<u4").reshape(-1)
    np.testing.assert_array_equal(np.stack([packed >> 16 & 255, packed >> 8 & 255, packed & 255], 1), rgb)
    fields, step, data = encode_points(pts, intensity=np.arange(6))
    assert fields[3] == ("intensity", 12, 7, 1)
    np.testing.assert_array_equal(np.frombuffer(data, "<f4").reshape(6, 4)[:, 3], np.arange(6))
