"""training.data.bag_index: poses from TF / PoseStamped / Odometry in bags written here, pairs, cache, errors.

The bags hold a constant-velocity, constant-yaw-rate base trajectory, so linear + slerp interpolation is
exact and every indexed pose can be compared with the analytic one (1e-9).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

typesys = pytest.importorskip("rosbags.typesys")
rosbag2 = pytest.importorskip("rosbags.rosbag2")

from mickey_ros.errors import DatasetError, InputError  # noqa: E402
from mickey_ros.geometry.se3 import invert_T, make_T, matrix_to_quat_wxyz  # noqa: E402
from training.data import bag_index as bi  # noqa: E402
from training.data.bag_index import BagSource, PairConfig, PoseSource, index_bags, make_pairs  # noqa: E402
from training.data.tf_tree import slerp  # noqa: E402

TS = typesys.get_typestore(typesys.Stores.ROS2_HUMBLE)
T = TS.types
SEC = 1_000_000_000
W, H = 60, 45
K = np.array([[40.0, 0.0, 29.5], [0.0, 41.0, 22.0], [0.0, 0.0, 1.0]])
CAM = "camera_optical_frame"


def Rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def Rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


# Static links of the chain map -> odom -> base_link -> camera_link -> camera_optical_frame.
T_MAP_ODOM = make_T(Rz(0.3), [1.0, -2.0, 0.0])
T_BASE_LINK = make_T(Rz(0.1) @ Rx(0.05), [0.2, 0.0, 0.5])
T_LINK_OPT = make_T(np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), [0.0, 0.0, 0.0])  # REP 103
T_BASE_CAM = T_BASE_LINK @ T_LINK_OPT


def T_odom_base(t_ns: int, v=(0.5, 0.1, 0.0), yaw_rate: float = 0.4, t0_ns: int = 0) -> np.ndarray:
    """Constant velocity (m/s) and yaw rate (rad/s) from the origin at ``t0_ns``."""
    t = (t_ns - t0_ns) / SEC
    return make_T(Rz(yaw_rate * t), np.asarray(v) * t)


def T_world_cam(t_ns: int, **kw) -> np.ndarray:
    return T_MAP_ODOM @ T_odom_base(t_ns, **kw) @ T_BASE_CAM


def image_pixels(i: int, w: int = W, h: int = H) -> np.ndarray:
    return np.random.default_rng(100 + i).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _header(t_ns: int, frame: str):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=t_ns // SEC, nanosec=t_ns % SEC),
                                   frame_id=frame)


def _transform(parent: str, child: str, t_ns: int, M: np.ndarray):
    q = matrix_to_quat_wxyz(M[:3, :3])
    return T["geometry_msgs/msg/TransformStamped"](
        header=_header(t_ns, parent), child_frame_id=child,
        transform=T["geometry_msgs/msg/Transform"](
            translation=T["geometry_msgs/msg/Vector3"](x=M[0, 3], y=M[1, 3], z=M[2, 3]),
            rotation=T["geometry_msgs/msg/Quaternion"](x=q[1], y=q[2], z=q[3], w=q[0])))


def _pose(M: np.ndarray):
    q = matrix_to_quat_wxyz(M[:3, :3])
    return T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=M[0, 3], y=M[1, 3], z=M[2, 3]),
                                       orientation=T["geometry_msgs/msg/Quaternion"](x=q[1], y=q[2], z=q[3], w=q[0]))


def camera_info(t_ns: int, k: np.ndarray = K, size=(W, H)):
    roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return T["sensor_msgs/msg/CameraInfo"](header=_header(t_ns, CAM), height=size[1], width=size[0],
                                           distortion_model="plumb_bob", d=np.zeros(5), k=k.reshape(-1).copy(),
                                           r=np.eye(3).reshape(-1), p=np.zeros(12), binning_x=0, binning_y=0, roi=roi)


def image_msg(t_ns: int, rgb: np.ndarray, compressed: bool = False):
    if compressed:
        import cv2

        ok, png = cv2.imencode(".png", rgb[:, :, ::-1])
        return T["sensor_msgs/msg/CompressedImage"](header=_header(t_ns, CAM), format="png", data=png.reshape(-1))
    h, w = rgb.shape[:2]
    return T["sensor_msgs/msg/Image"](header=_header(t_ns, CAM), height=h, width=w, encoding="rgb8",
                                      is_bigendian=0, step=w * 3, data=rgb.reshape(-1))


def write_bag(path: Path, *, storage: str = "mcap", image_stamps=None, tf_stamps=None, pose: str = "tf",
              info: bool = True, info_size=(W, H), compressed: bool = False, static_chain: bool = True,
              traj: dict | None = None) -> Path:
    """A bag with images (pixels ``image_pixels(i)``), CameraInfo and poses of ``T_odom_base``.

    pose: ``"tf"`` (map->odom static, odom->base_link dynamic, base_link->camera_link->optical static),
    ``"pose_stamped"`` (``/pose``: map -> base_link) or ``"odometry"`` (``/odom``, child base_link; the
    static chain base_link -> camera is still written to /tf_static).
    """
    traj = traj or {}
    image_stamps = [int(0.05 * SEC + 0.2 * SEC * k) for k in range(10)] if image_stamps is None else image_stamps
    tf_stamps = [int(0.1 * SEC * k) for k in range(21)] if tf_stamps is None else tf_stamps
    plugin = rosbag2.StoragePlugin.MCAP if storage == "mcap" else rosbag2.StoragePlugin.SQLITE3
    msgs = []  # (topic, msgtype, log time, msg)
    for i, t in enumerate(image_stamps):
        rgb = image_pixels(i)
        msgs.append(("/camera/image_raw" + ("/compressed" if compressed else ""),
                     "sensor_msgs/msg/" + ("CompressedImage" if compressed else "Image"), t,
                     image_msg(t, rgb, compressed)))
        if info:
            msgs.append(("/camera/camera_info", "sensor_msgs/msg/CameraInfo", t, camera_info(t, size=info_size)))
    static = [_transform("base_link", "camera_link", 0, T_BASE_LINK), _transform("camera_link", CAM, 0, T_LINK_OPT)]
    if not static_chain:
        static = static[1:]
    if pose == "tf":
        static.append(_transform("map", "odom", 0, T_MAP_ODOM))
    msgs.append(("/tf_static", "tf2_msgs/msg/TFMessage", 0, T["tf2_msgs/msg/TFMessage"](transforms=static)))
    for t in tf_stamps:
        M = T_odom_base(t, **traj)
        if pose == "tf":
            msg = T["tf2_msgs/msg/TFMessage"](transforms=[_transform("odom", "base_link", t, M)])
            msgs.append(("/tf", "tf2_msgs/msg/TFMessage", t, msg))
        elif pose == "pose_stamped":
            msg = T["geometry_msgs/msg/PoseStamped"](header=_header(t, "map"), pose=_pose(T_MAP_ODOM @ M))
            msgs.append(("/pose", "geometry_msgs/msg/PoseStamped", t, msg))
        else:
            cov = T["geometry_msgs/msg/PoseWithCovariance"](pose=_pose(T_MAP_ODOM @ M), covariance=np.zeros(36))
            twist = T["geometry_msgs/msg/TwistWithCovariance"](
                twist=T["geometry_msgs/msg/Twist"](linear=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
                                                   angular=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)),
                covariance=np.zeros(36))
            msg = T["nav_msgs/msg/Odometry"](header=_header(t, "map"), child_frame_id="base_link", pose=cov,
                                             twist=twist)
            msgs.append(("/odom", "nav_msgs/msg/Odometry", t, msg))
    path.parent.mkdir(parents=True, exist_ok=True)
    with rosbag2.Writer(path, version=9, storage_plugin=plugin) as w:
        conns = {}
        for topic, msgtype, t, msg in sorted(msgs, key=lambda m: m[2]):
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msgtype, typestore=TS)
            w.write(conns[topic], t, TS.serialize_cdr(msg, msgtype))
    return path


# -- poses ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_tf_chain_interpolated_equals_analytic_pose(tmp_path, storage):
    stamps = [int(0.05 * SEC + 0.2 * SEC * k) for k in range(9)] + [int(1.9 * SEC)]  # last one on a sample
    bag = write_bag(tmp_path / "place" / "rec0", storage=storage, image_stamps=stamps)
    index = index_bags(BagSource(bag))
    assert len(index) == len(stamps)
    assert index.stats["place/rec0/camera/image_raw"] == {"images": 10, "kept": 10, "dropped_no_pose": 0,
                                                          "dropped_camera_info": 0, "dropped_size": 0}
    for f, t in zip(index.frames, stamps):
        assert f.stamp_ns == t and f.log_time_ns == t and f.ordinal == 0
        assert (f.width, f.height, f.place, f.bag) == (W, H, "place", str(bag.resolve()))
        np.testing.assert_array_equal(f.K, K)
        np.testing.assert_allclose(f.T_world_cam, T_world_cam(t), atol=1e-9, rtol=0)


def test_slerp_is_exact_for_large_constant_rate(tmp_path):
    """Samples 1 s apart, 1.5 rad/s about z: slerp (not a normalised lerp) gives the exact poses between samples."""
    traj = {"yaw_rate": 1.5, "v": (1.0, -0.5, 0.2)}
    bag = write_bag(tmp_path / "p" / "r", image_stamps=[int(0.5 * SEC), int(1.25 * SEC)],
                    tf_stamps=[0, SEC, 2 * SEC], traj=traj)
    index = index_bags(BagSource(bag, max_interp_gap_s=1.0))
    for f in index.frames:
        np.testing.assert_allclose(f.T_world_cam, T_world_cam(f.stamp_ns, **traj), atol=1e-9, rtol=0)
    q = slerp(np.array([1.0, 0, 0, 0]), -np.array([math.cos(0.5), 0, 0, math.sin(0.5)]), 0.5)  # sign flip
    np.testing.assert_allclose(q, [math.cos(0.25), 0, 0, math.sin(0.25)], atol=1e-15)


@pytest.mark.parametrize("kind", ["pose_stamped", "odometry"])
def test_pose_topics_with_fixed_extrinsic_match_tf(tmp_path, kind):
    tf_index = index_bags(BagSource(write_bag(tmp_path / "a" / "tf")))
    topic = {"pose_stamped": "/pose", "odometry": "/odom"}[kind]
    bag = write_bag(tmp_path / "a" / kind, storage="sqlite3", pose=kind)
    fixed = index_bags(BagSource(bag, pose=PoseSource(kind, topic=topic, T_body_camera=T_BASE_CAM)))
    from_tf = index_bags(BagSource(bag, pose=PoseSource(kind, topic=topic, extrinsic_from_tf_static=True,
                                                        body_frame="base_link" if kind == "pose_stamped" else None)))
    assert len(fixed) == len(from_tf) == len(tf_index) == 10
    for a, b, c in zip(tf_index.frames, fixed.frames, from_tf.frames):
        np.testing.assert_allclose(b.T_world_cam, a.T_world_cam, atol=1e-9, rtol=0)
        np.testing.assert_allclose(c.T_world_cam, a.T_world_cam, atol=1e-9, rtol=0)
    ident = index_bags(BagSource(bag, pose=PoseSource(kind, topic=topic)))  # default extrinsic: identity
    np.testing.assert_allclose(ident.frames[0].T_world_cam, T_MAP_ODOM @ T_odom_base(ident.frames[0].stamp_ns),
                               atol=1e-9)


def test_late_images_without_poses_are_dropped_and_counted(tmp_path, caplog):
    bag = write_bag(tmp_path / "p" / "r", tf_stamps=[int(0.1 * SEC * k) for k in range(11)])  # TF ends at 1.0 s
    index = index_bags(BagSource(bag))
    stats = index.stats["p/r/camera/image_raw"]
    assert stats["images"] == 10 and stats["kept"] == 5 and stats["dropped_no_pose"] == 5
    assert [f.stamp_ns for f in index.frames] == [int(0.05 * SEC + 0.2 * SEC * k) for k in range(5)]
    assert "dropped 5 of 10 images" in caplog.text


def test_pose_gap_limit(tmp_path):
    """TF samples at 0, 0.1 and 1.0 s: an image at 0.5 s is 0.4 s from both samples."""
    bag = write_bag(tmp_path / "p" / "r", image_stamps=[int(0.05 * SEC), int(0.5 * SEC)],
                    tf_stamps=[0, int(0.1 * SEC), SEC])
    assert len(index_bags(BagSource(bag))) == 1
    assert len(index_bags(BagSource(bag, max_interp_gap_s=0.5))) == 2


def test_camera_info_pairing_and_size_mismatch(tmp_path):
    bag = write_bag(tmp_path / "p" / "r", info_size=(W + 2, H))
    with pytest.raises(DatasetError, match=r"no usable images on /camera/image_raw: 10 images.* 10 of another size"):
        index_bags(BagSource(bag))
    # CameraInfo at other stamps than the images: the latest one is used when K is the same around the stamp
    bag2 = tmp_path / "p" / "r2"
    with rosbag2.Writer(bag2, version=9, storage_plugin=rosbag2.StoragePlugin.MCAP) as w:
        ci = w.add_connection("/camera/camera_info", "sensor_msgs/msg/CameraInfo", typestore=TS)
        im = w.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=TS)
        st = w.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=TS)
        w.write(st, 0, TS.serialize_cdr(T["tf2_msgs/msg/TFMessage"](transforms=[_transform("map", CAM, 0, T_BASE_CAM)]),
                                        "tf2_msgs/msg/TFMessage"))
        K2 = K.copy()
        K2[0, 0] = 50.0
        for t, k in ((1, K), (3, K), (5, K2)):
            w.write(ci, t * SEC, TS.serialize_cdr(camera_info(t * SEC, k), ci.msgtype))
        for t in (2, 4, 6):
            w.write(im, t * SEC + 7, TS.serialize_cdr(image_msg(t * SEC + 7, image_pixels(t)), im.msgtype))
    index = index_bags(BagSource(bag2))  # all-static chain: poses at any stamp
    assert [f.stamp_ns for f in index.frames] == [2 * SEC + 7, 6 * SEC + 7]
    assert index.stats["p/r2/camera/image_raw"]["dropped_camera_info"] == 1  # K changes between 3 s and 5 s
    np.testing.assert_array_equal(index.frames[1].K, K2)
    np.testing.assert_allclose(index.frames[0].T_world_cam, T_BASE_CAM, atol=1e-12)


def test_compressed_images_take_their_size_from_camera_info(tmp_path):
    bag = write_bag(tmp_path / "p" / "r", compressed=True)
    index = index_bags(BagSource(bag, image_topic="/camera/image_raw/compressed"))
    assert len(index) == 10 and (index.frames[0].width, index.frames[0].height) == (W, H)


# -- errors -----------------------------------------------------------------------------------------------------
def test_errors_are_typed_one_line_and_name_the_bag(tmp_path):
    bag = write_bag(tmp_path / "p" / "r")
    with pytest.raises(DatasetError, match=r"bag .*/p/r: image topic /nope not found \(topics: /camera/camera_info, "
                                           r"/camera/image_raw, /tf, /tf_static\)"):
        index_bags(BagSource(bag, image_topic="/nope"))
    with pytest.raises(DatasetError, match=r"TF frame 'earth' is not in /tf or /tf_static \(frames: base_link, "
                                           r"camera_link, camera_optical_frame, map, odom\)"):
        index_bags(BagSource(bag, pose=PoseSource(world_frame="earth")))
    with pytest.raises(DatasetError, match=r"pose topic /odom not found"):
        index_bags(BagSource(bag, pose=PoseSource("odometry", topic="/odom")))
    with pytest.raises(DatasetError, match=r"pose topic /tf has type tf2_msgs/msg/TFMessage, expected nav_msgs"):
        index_bags(BagSource(bag, pose=PoseSource("odometry", topic="/tf")))
    with pytest.raises(DatasetError, match=r"does not exist"):
        index_bags(BagSource(tmp_path / "missing"))
    with pytest.raises(InputError, match=r"PoseSource.topic: required"):
        PoseSource("pose_stamped")
    with pytest.raises(InputError, match=r"recording id 'p/r/camera/image_raw' is used twice"):
        index_bags([BagSource(bag), BagSource(bag)])


def test_broken_tf_chain_names_the_frames(tmp_path):
    bag = write_bag(tmp_path / "p" / "r", static_chain=False)  # no base_link -> camera_link
    with pytest.raises(DatasetError, match=r"broken TF chain between 'map' and 'camera_optical_frame': "
                                           r"camera_optical_frame -> camera_link and map share no root"):
        index_bags(BagSource(bag))


def test_missing_camera_info(tmp_path):
    bag = write_bag(tmp_path / "p" / "r", info=False)
    with pytest.raises(DatasetError, match=r"CameraInfo missing for image topic /camera/image_raw: no topic "
                                           r"/camera/camera_info") as exc:
        index_bags(BagSource(bag))
    assert "\n" not in str(exc.value)


def test_no_poses_near_any_image_stamp(tmp_path):
    bag = write_bag(tmp_path / "p" / "r", tf_stamps=[int(5 * SEC + 0.1 * SEC * k) for k in range(10)])
    with pytest.raises(DatasetError, match=r"/p/r: no usable images on /camera/image_raw: 10 images, 10 with no "
                                           r"poses near image stamps \(max_interp_gap_s=0.1; images 0.050..1.850 s, "
                                           r"poses 5.000..5.900 s\)"):
        index_bags(BagSource(bag))


@pytest.mark.parametrize("victim", ["mcap", "metadata"])
def test_corrupt_bag(tmp_path, victim):
    bag = write_bag(tmp_path / "p" / "r")
    target = next(bag.glob("*.mcap")) if victim == "mcap" else bag / "metadata.yaml"
    target.write_bytes(b"\x00garbage" * 50 if victim == "mcap" else b"rosbag2_bagfile_information: [oops\n")
    with pytest.raises(DatasetError, match=r"bag .*/p/r: cannot read it as a rosbag2 \(mcap or sqlite3\): ") as exc:
        index_bags(BagSource(bag))
    assert exc.value.__cause__ is not None


# -- cache ------------------------------------------------------------------------------------------------------
def test_cache_hit_and_invalidation(tmp_path, monkeypatch):
    bag = write_bag(tmp_path / "p" / "r")
    opened = []
    real_open = bi.open_bag
    monkeypatch.setattr(bi, "open_bag", lambda path: opened.append(path) or real_open(path))
    cache = tmp_path / "cache"
    first = index_bags(BagSource(bag), cache_dir=cache)
    assert len(opened) == 1 and len(list(cache.glob("*.json"))) == 1
    second = index_bags(BagSource(bag), cache_dir=cache)
    assert len(opened) == 1  # loaded without reading the bag
    assert second.stats == first.stats and len(second) == len(first)
    for a, b in zip(first.frames, second.frames):
        assert (a.bag, a.topic, a.log_time_ns, a.ordinal, a.stamp_ns, a.width, a.height, a.recording, a.place) == \
               (b.bag, b.topic, b.log_time_ns, b.ordinal, b.stamp_ns, b.width, b.height, b.recording, b.place)
        np.testing.assert_array_equal(a.T_world_cam, b.T_world_cam)
        np.testing.assert_array_equal(a.K, b.K)
    index_bags(BagSource(bag, max_interp_gap_s=0.2), cache_dir=cache)  # other settings
    assert len(opened) == 2
    storage = next(bag.glob("*.mcap"))
    st = storage.stat()
    os.utime(storage, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched bag
    index_bags(BagSource(bag), cache_dir=cache)
    assert len(opened) == 3
    index_bags(BagSource(bag), cache_dir=cache)
    assert len(opened) == 3
    assert len(list(cache.glob("*.json"))) == 1  # stale entries of the stream replaced
    next(cache.glob("*.json")).write_text("{not json")  # unreadable cache: re-index, no crash
    index_bags(BagSource(bag), cache_dir=cache)
    assert len(opened) == 4


# -- pairs ------------------------------------------------------------------------------------------------------
def _three_recordings(tmp_path):
    sources = [
        BagSource(write_bag(tmp_path / "scene_a" / "rec0")),
        BagSource(write_bag(tmp_path / "scene_a" / "rec1", storage="sqlite3", traj={"v": (0.4, 0.3, 0.0)})),
        BagSource(write_bag(tmp_path / "scene_b" / "rec0", traj={"yaw_rate": -0.6})),
    ]
    return index_bags(sources)


def test_pairs_respect_limits_and_places(tmp_path):
    index = _three_recordings(tmp_path)
    assert index.places() == {"scene_a": ["scene_a/rec0/camera/image_raw", "scene_a/rec1/camera/image_raw"],
                              "scene_b": ["scene_b/rec0/camera/image_raw"]}
    cfg = PairConfig(min_baseline_m=0.15, max_baseline_m=0.6, max_angle_deg=20.0, min_frame_gap=2)
    pairs = make_pairs(index, cfg)
    # brute force over all frame pairs
    expected = set()
    for i, a in enumerate(index.frames):
        for j, b in enumerate(index.frames):
            if a.place != b.place or (a.recording == b.recording and j - i < 2) or (a.recording > b.recording):
                continue
            if a.recording != b.recording or j > i:
                d = np.linalg.norm(a.T_world_cam[:3, 3] - b.T_world_cam[:3, 3])
                ang = math.degrees(math.acos(np.clip(a.T_world_cam[:3, 2] @ b.T_world_cam[:3, 2], -1, 1)))
                if 0.15 <= d <= 0.6 and ang <= 20.0:
                    expected.add((i, j))
    assert {(p.frame0, p.frame1) for p in pairs} == expected and len(pairs) == len(expected)
    assert any(index.frames[p.frame0].recording != index.frames[p.frame1].recording for p in pairs)
    for p in pairs:
        f0, f1 = index.frames[p.frame0], index.frames[p.frame1]
        assert f0.place == f1.place == p.place
        assert 0.15 <= p.baseline_m <= 0.6 and p.angle_deg <= 20.0
    assert [(p.place, p.frame0, p.frame1) for p in pairs] == sorted((p.place, p.frame0, p.frame1) for p in pairs)
    within = make_pairs(index, PairConfig(min_baseline_m=0.15, max_baseline_m=0.6, max_angle_deg=20.0,
                                          min_frame_gap=2, across_recordings=False))
    assert all(index.frames[p.frame0].recording == index.frames[p.frame1].recording for p in within)
    sub = make_pairs(index, PairConfig(max_pairs_per_place=3, seed=1))
    assert len(sub) == 6 and sub == make_pairs(index, PairConfig(max_pairs_per_place=3, seed=1))


def test_pair_T_0to1_maps_a_world_point_between_cameras(tmp_path):
    index = _three_recordings(tmp_path)
    pairs = make_pairs(index)
    X_world = np.array([2.0, 1.0, 0.7, 1.0])
    for p in pairs[:: max(1, len(pairs) // 20)]:
        f0, f1 = index.frames[p.frame0], index.frames[p.frame1]
        trajs = {"scene_a/rec1/camera/image_raw": {"v": (0.4, 0.3, 0.0)}, "scene_b/rec0/camera/image_raw":
                 {"yaw_rate": -0.6}}
        X0 = invert_T(T_world_cam(f0.stamp_ns, **trajs.get(f0.recording, {}))) @ X_world  # analytic
        X1 = invert_T(T_world_cam(f1.stamp_ns, **trajs.get(f1.recording, {}))) @ X_world
        np.testing.assert_allclose(index.T_0to1(p.frame0, p.frame1) @ X0, X1, atol=1e-9)


def test_no_valid_pairs_says_which_limits_excluded_what(tmp_path):
    index = index_bags(BagSource(write_bag(tmp_path / "p" / "r")))
    with pytest.raises(DatasetError, match=r"^pairs: no valid pairs among 45 candidates in 1 recordings: 45 below "
                                           r"min_baseline_m=50, 0 above max_baseline_m=60, 0 above max_angle_deg=45, "
                                           r"0 closer than min_frame_gap=1"):
        make_pairs(index, PairConfig(min_baseline_m=50.0, max_baseline_m=60.0))
    with pytest.raises(InputError, match="min_baseline_m <= max_baseline_m"):
        PairConfig(min_baseline_m=3.0, max_baseline_m=2.0)
