"""``mickey_ros.realdata_bags``: real photographs -> robot-style rosbag2 recordings, read back with rosbags and with the
training bag index (poses, K, encodings, stamps); small fake sets written here, and the shared sets themselves where
``../shared/realdata`` exists."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

pytest.importorskip("rosbags.rosbag2")

from conftest import REPO  # noqa: E402
from mickey_ros.errors import DatasetError, InputError  # noqa: E402
from mickey_ros.geometry.se3 import invert_T, make_T, quat_wxyz_to_matrix  # noqa: E402
from mickey_ros.realdata import kitti_poses, kitti_projection  # noqa: E402
from mickey_ros.realdata_bags import (KITTI_T_BASE_CAMERA, START_NS, kitti_camera_poses, nearest_rotation,  # noqa: E402
                                      write_bags)
from training.data.bag_index import BagSource, PoseSource, index_bags  # noqa: E402

REALDATA = REPO.parent / "shared" / "realdata"
needs_realdata = pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata not found (real photographs)")


def _rot(axis: int, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    i, j = [k for k in range(3) if k != axis]
    R = np.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def _row(values: np.ndarray) -> str:
    return " ".join(f"{v:.17g}" for v in np.asarray(values).ravel())


def _read(bag: Path) -> dict[str, list[tuple[int, Any]]]:
    """topic -> [(bag time ns, message)] read back with rosbags' AnyReader."""
    from rosbags.highlevel import AnyReader

    out: dict[str, list[tuple[int, Any]]] = {}
    with AnyReader([bag]) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, reader.deserialize(raw, conn.msgtype)))
    return out


def _stamp(msg: Any) -> int:
    header = msg.transforms[0].header if hasattr(msg, "transforms") else msg.header
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _tf_T(tf: Any) -> np.ndarray:
    q, t = tf.transform.rotation, tf.transform.translation
    return make_T(quat_wxyz_to_matrix([q.w, q.x, q.y, q.z]), [t.x, t.y, t.z])


# -- KITTI ----------------------------------------------------------------------------------------------------------
K_KITTI = np.array([[70.0, 0.0, 60.5], [0.0, 71.0, 18.25], [0.0, 0.0, 1.0]])
# a drive: 1.2 m per frame along the camera's z, turning about y and tipping a little about x (camera-to-world)
POSES = [make_T(_rot(1, 3.0 * i) @ _rot(0, 0.5 * i), [0.1 * i, -0.01 * i, 1.2 * i]) for i in range(8)]
SIZE = (122, 37)  # W x H: KITTI's 3.3:1


@pytest.fixture()
def realdata(tmp_path: Path) -> Path:
    """A fake shared/realdata: kitti_seq1 (8 frames), middlebury (2 scenes), euroc_stereo (a pair + a cam0 frame)."""
    root = tmp_path / "realdata"
    rng = np.random.default_rng(0)
    kitti = root / "kitti_seq1"
    (kitti / "image_l").mkdir(parents=True)
    P0 = np.hstack([K_KITTI, np.zeros((3, 1))])
    P1 = P0.copy()
    P1[0, 3] = -70.0 * 0.54
    (kitti / "calib.txt").write_text(f"P0: {_row(P0)}\nP1: {_row(P1)}\n")
    (kitti / "poses.txt").write_text("".join(f"{_row(T[:3])}\n" for T in POSES))
    for i in range(len(POSES)):
        assert cv2.imwrite(str(kitti / "image_l" / f"{i:06d}.png"), rng.integers(0, 256, SIZE[::-1], dtype=np.uint8))
    for scene, size, baseline_mm in (("Alpha", (48, 32), 193.0), ("Beta", (40, 30), 88.5)):
        folder = root / "middlebury" / scene
        folder.mkdir(parents=True)
        (folder / "calib.txt").write_text(f"cam0=[50 0 20.5; 0 50 15.5; 0 0 1]\ncam1=[50 0 24; 0 50 15.5; 0 0 1]\n"
                                          f"doffs=3.5\nbaseline={baseline_mm}\nwidth={size[0]}\nheight={size[1]}\n")
        for name in ("im0.png", "im1.png"):
            assert cv2.imwrite(str(folder / name), rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    T_BS = [make_T(_rot(2, 90.0), [-0.02, -0.06, 0.01]), make_T(_rot(2, 90.0) @ _rot(1, 0.8), [-0.02, 0.05, 0.01])]
    for cam, T in zip(("cam0", "cam1"), T_BS):
        (root / "euroc_stereo" / cam / "data").mkdir(parents=True)
        (root / "euroc_stereo" / cam / "sensor.yaml").write_text(
            "%YAML:1.0\nsensor_type: camera\nT_BS:\n  cols: 4\n  rows: 4\n  data: [" + ", ".join(map(str, T.ravel()))
            + "]\ncamera_model: pinhole\nintrinsics: [45.8, 45.7, 36.7, 24.8]\ndistortion_model: radial-tangential\n"
            "distortion_coefficients: [-0.28, 0.07, 0.0002, 1.8e-05]\n")
    for cam, stamps in (("cam0", (1403715273262142976, 1403715275012143104)), ("cam1", (1403715275012143104,))):
        for stamp in stamps:
            image = rng.integers(0, 256, (48, 75), dtype=np.uint8)
            assert cv2.imwrite(str(root / "euroc_stereo" / cam / "data" / f"{stamp}.png"), image)
    return root


def test_kitti_bag_carries_the_frames_k_and_poses_as_a_robot_records_them(realdata, tmp_path):
    (done,) = write_bags(["kitti_seq1"], realdata, tmp_path / "out")
    bag = tmp_path / "out" / "kitti_seq1"
    assert (done.bags, done.stamps, done.record) == ((bag,), 8, tmp_path / "out" / "kitti_seq1.json")
    msgs = _read(bag)
    assert sorted(msgs) == ["/camera/camera_info", "/camera/image_raw", "/tf", "/tf_static"]  # no empty depth topic
    stamps = [START_NS + 100_000_000 * i for i in range(8)]  # 10 Hz
    for topic in ("/camera/camera_info", "/camera/image_raw", "/tf"):
        assert [t for t, _ in msgs[topic]] == stamps and [_stamp(m) for _, m in msgs[topic]] == stamps, topic
    for i, (_, image) in enumerate(msgs["/camera/image_raw"]):
        png = cv2.imread(str(realdata / "kitti_seq1" / "image_l" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        assert (image.encoding, image.width, image.height, image.step) == ("mono8", *SIZE, SIZE[0])
        assert image.header.frame_id == "camera_optical_frame"
        np.testing.assert_array_equal(np.asarray(image.data).reshape(SIZE[1], SIZE[0]), png)
    _, info = msgs["/camera/camera_info"][3]
    assert (info.width, info.height, info.distortion_model, info.header.frame_id) == (*SIZE, "plumb_bob",
                                                                                    "camera_optical_frame")
    np.testing.assert_array_equal(info.k.reshape(3, 3), K_KITTI)
    np.testing.assert_array_equal(info.p.reshape(3, 4), np.hstack([K_KITTI, np.zeros((3, 1))]))
    np.testing.assert_array_equal(info.d, np.zeros(5))
    ((_, static),) = msgs["/tf_static"]
    (extrinsic,) = static.transforms
    assert (extrinsic.header.frame_id, extrinsic.child_frame_id) == ("base_link", "camera_optical_frame")
    np.testing.assert_allclose(_tf_T(extrinsic), KITTI_T_BASE_CAMERA, atol=1e-12)
    np.testing.assert_allclose(_tf_T(extrinsic)[:3, 3], [0.0, 0.0, 1.65])  # 1.65 m above base_link
    np.testing.assert_allclose(_tf_T(extrinsic)[:3, 2], [1.0, 0.0, 0.0], atol=1e-12)  # looking along base_link's x
    for (_, tf), T in zip(msgs["/tf"], POSES):  # map -> base_link -> camera_optical_frame = the KITTI pose
        (edge,) = tf.transforms
        assert (edge.header.frame_id, edge.child_frame_id) == ("map", "base_link")
        np.testing.assert_allclose(_tf_T(edge) @ _tf_T(extrinsic), T, atol=1e-9)
    record = json.loads(done.record.read_text())
    np.testing.assert_allclose(record["T_map_camera"], POSES, atol=1e-12)
    assert record["stamps_ns"] == stamps and "CC BY-NC-SA" in record["licence"]


def test_training_bag_index_reads_the_kitti_poses_k_and_pairs_of_the_finetune_config(realdata, tmp_path):
    write_bags(["kitti_seq1"], realdata, tmp_path / "out")
    bag = tmp_path / "out" / "kitti_seq1"
    index = index_bags(BagSource(bag, pose=PoseSource(world_frame="map", camera_frame="camera_optical_frame")))
    assert index.stats["out/kitti_seq1/camera/image_raw"]["kept"] == 8
    assert [f.stamp_ns for f in index.frames] == [START_NS + 100_000_000 * i for i in range(8)]
    for frame, T in zip(index.frames, POSES):
        np.testing.assert_allclose(frame.T_world_cam, T, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(frame.K, K_KITTI)
        assert (frame.width, frame.height) == SIZE
    np.testing.assert_allclose(index.T_0to1(1, 6), invert_T(POSES[6]) @ POSES[1], atol=1e-9)

    # the fine-tuning recipe's configuration on this bag: pairs 2-8 m apart (2..6 frames), 672 x 203 -> 672 x 196
    from training import config
    from training.data.build import build_dataset

    cfg = config.resolve(REPO / "training" / "configs" / "finetune_kitti.yaml",
                         [f"data.train=[{bag}]", f"train.run_dir={tmp_path / 'run'}"])
    assert (cfg["data"]["depth_topic"], cfg["aux"]["depth_weight"], cfg["aux"]["depth_shape_weight"],
            cfg["aux"]["depth_pair_scale_weight"]) == ("", 0.0, 0.0, 0.0)  # no depth topic: sensor-depth terms off
    assert cfg["model"]["checkpoint"] == "mickey_ros/data/default_small.pt"
    dataset = build_dataset(cfg, "train", tmp_path / "run")
    gaps = sorted(dataset.index.frames[p.frame1].stamp_ns - dataset.index.frames[p.frame0].stamp_ns
                  for p in dataset.pairs)
    assert sorted({g // 100_000_000 for g in gaps}) == [2, 3, 4, 5, 6]
    item = dataset[0]
    pair = dataset.pairs[0]
    assert item["image0"].shape == (3, 196, 672)  # resized to 672 x 203, cropped to multiples of 14
    assert bool((item["image0"][0] == item["image0"][1]).all())  # grey replicated into RGB
    sx, sy = 672 / SIZE[0], 203 / SIZE[1]
    K_net = np.array([[70.0 * sx, 0, (60.5 + 0.5) * sx - 0.5], [0, 71.0 * sy, (18.25 + 0.5) * sy - 0.5], [0, 0, 1]])
    np.testing.assert_allclose(item["K_color0"].numpy(), K_net, rtol=1e-6)
    T_0to1 = invert_T(POSES[pair.frame1]) @ POSES[pair.frame0]
    np.testing.assert_allclose(item["T_0to1"].numpy(), T_0to1, atol=1e-5)  # float32


def test_kitti_rotations_are_made_orthonormal_and_bad_inputs_are_one_line_errors(realdata, tmp_path):
    src = realdata / "kitti_seq1"
    noisy = [T.copy() for T in POSES]
    noisy[2][:3, :3] += 2e-7 * np.random.default_rng(1).standard_normal((3, 3))  # 7 printed digits, as KITTI's
    (src / "poses.txt").write_text("".join(f"{_row(T[:3])}\n" for T in noisy))
    poses, change = kitti_camera_poses(src / "poses.txt")
    assert 1e-7 < change < 1e-6
    np.testing.assert_allclose(poses[2][:3, :3] @ poses[2][:3, :3].T, np.eye(3), atol=1e-15)
    np.testing.assert_allclose(poses, POSES, atol=1e-6)
    np.testing.assert_allclose(nearest_rotation(np.stack(POSES)[:, :3, :3]), np.stack(POSES)[:, :3, :3], atol=1e-15)
    noisy[4][:3, :3] = np.diag([1.0, 1.0, -1.0])  # a reflection
    (src / "poses.txt").write_text("".join(f"{_row(T[:3])}\n" for T in noisy))
    with pytest.raises(DatasetError, match=r"poses.txt:5: expected a rotation in the pose's 3x3 block"):
        write_bags(["kitti_seq1"], realdata, tmp_path / "a")
    (src / "poses.txt").write_text("".join(f"{_row(T[:3])}\n" for T in POSES))
    (src / "image_l" / "000005.png").unlink()
    with pytest.raises(DatasetError, match=r"000005.png: file not found \(expected one image per line of .*: 8\)"):
        write_bags(["kitti_seq1"], realdata, tmp_path / "b")
    (src / "image_l" / "000005.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"000005.png: cannot decode the image"):
        write_bags(["kitti_seq1"], realdata, tmp_path / "c")


def test_existing_outputs_need_overwrite_and_only_bags_are_replaced(realdata, tmp_path):
    out = tmp_path / "out"
    write_bags(["kitti_seq1", "middlebury"], realdata, out)
    with pytest.raises(InputError, match=r"^OUT: .*kitti_seq1 exists \(pass --overwrite to replace it\)$"):
        write_bags(["kitti_seq1"], realdata, out)
    write_bags(["kitti_seq1", "middlebury"], realdata, out, overwrite=True)  # bags and folders of bags: replaced
    (out / "middlebury" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"middlebury exists and is not a bag written here"):
        write_bags(["middlebury"], realdata, out, overwrite=True)
    assert (out / "middlebury" / "notes.txt").read_text() == "mine"
    with pytest.raises(InputError, match=r"^set: expected one of kitti_seq1, kitti_seq2, middlebury, euroc_stereo, "
                                         r"got 'motorcycle'$"):
        write_bags(["motorcycle"], realdata, out)
    with pytest.raises(DatasetError, match=r"no kitti_seq2/ folder"):
        write_bags(["kitti_seq2"], realdata, out)


# -- two-camera sets ------------------------------------------------------------------------------------------------
def _rig_T_0to1(bag: Path, stamp: int) -> np.ndarray:
    """T_0to1 of the two cameras from the training bag index (TF map -> base_link -> cam{0,1}_optical_frame)."""
    frames = []
    for cam in (0, 1):
        src = BagSource(bag, image_topic=f"/cam{cam}/image_raw", info_topic=f"/cam{cam}/camera_info",
                        pose=PoseSource(world_frame="map"), recording=f"cam{cam}")
        (frame,) = [f for f in index_bags(src).frames if f.stamp_ns == stamp]
        frames.append(frame)
    return invert_T(frames[1].T_world_cam) @ frames[0].T_world_cam


def test_middlebury_bags_are_rectified_rigs_with_the_baseline_on_tf_static(realdata, tmp_path):
    (done,) = write_bags(["middlebury"], realdata, tmp_path / "out")
    assert [b.name for b in done.bags] == ["Alpha", "Beta"] and done.stamps == 2
    for bag, size, baseline in ((done.bags[0], (48, 32), 0.193), (done.bags[1], (40, 30), 0.0885)):
        msgs = _read(bag)
        assert sorted(msgs) == ["/cam0/camera_info", "/cam0/image_raw", "/cam1/camera_info", "/cam1/image_raw", "/tf",
                                "/tf_static"]
        for cam in (0, 1):
            ((t, image),) = msgs[f"/cam{cam}/image_raw"]
            ((_, info),) = msgs[f"/cam{cam}/camera_info"]
            png = cv2.imread(str(realdata / "middlebury" / bag.name / f"im{cam}.png"))
            assert (t, _stamp(image), image.encoding, image.header.frame_id) == (START_NS, START_NS, "rgb8",
                                                                                 f"cam{cam}_optical_frame")
            np.testing.assert_array_equal(np.asarray(image.data).reshape(size[1], size[0], 3), png[:, :, ::-1])
            np.testing.assert_array_equal(info.d, np.zeros(5))
            np.testing.assert_array_equal(info.k.reshape(3, 3)[0], [50, 0, 20.5 if cam == 0 else 24])
        np.testing.assert_allclose(_rig_T_0to1(bag, START_NS), make_T(np.eye(3), [-baseline, 0, 0]), atol=1e-12)
    record = json.loads(done.record.read_text())
    np.testing.assert_allclose(record["scenes"]["Beta"]["T_0to1"], make_T(np.eye(3), [-0.0885, 0, 0]), atol=1e-15)


def test_euroc_bag_keeps_the_distortion_the_stamps_and_the_unpaired_frame(realdata, tmp_path):
    (done,) = write_bags(["euroc_stereo"], realdata, tmp_path / "out")
    bag = done.bags[0]
    msgs = _read(bag)
    stamps0 = [1403715273262142976, 1403715275012143104]
    assert [_stamp(m) for _, m in msgs["/cam0/image_raw"]] == stamps0  # the cam0-only frame is kept, as recorded
    assert [_stamp(m) for _, m in msgs["/cam1/image_raw"]] == stamps0[1:]
    assert [t for t, _ in msgs["/tf"]] == stamps0
    for cam in (0, 1):
        _, info = msgs[f"/cam{cam}/camera_info"][-1]
        _, image = msgs[f"/cam{cam}/image_raw"][-1]
        assert (info.distortion_model, image.encoding, info.width, info.height) == ("plumb_bob", "mono8", 75, 48)
        np.testing.assert_allclose(info.d, [-0.28, 0.07, 0.0002, 1.8e-05, 0.0])  # distorted, as the sensor recorded
        np.testing.assert_allclose(info.k.reshape(3, 3), [[45.8, 0, 36.7], [0, 45.7, 24.8], [0, 0, 1]])
    T_BS = [make_T(_rot(2, 90.0), [-0.02, -0.06, 0.01]), make_T(_rot(2, 90.0) @ _rot(1, 0.8), [-0.02, 0.05, 0.01])]
    expected = invert_T(T_BS[1]) @ T_BS[0]
    np.testing.assert_allclose(_rig_T_0to1(bag, stamps0[1]), expected, atol=1e-9)
    np.testing.assert_allclose(json.loads(done.record.read_text())["T_0to1"], expected, atol=1e-12)


def test_script_refuses_an_out_inside_the_repository_and_writes_elsewhere(realdata, tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "scripts" / "realdata_bags.py"), *args],
                              capture_output=True, text=True, cwd=tmp_path, timeout=300)

    proc = run(str(REPO / "bags"), "--realdata", str(realdata), "--sets", "kitti_seq1")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("realdata_bags: error: OUT: ") and "is inside the repository" in proc.stderr
    assert not (REPO / "bags").exists()
    proc = run("out", "--realdata", str(realdata), "--sets", "kitti_seq1,euroc_stereo")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"kitti_seq1: {tmp_path / 'out' / 'kitti_seq1'}, 8 stamps")
    euroc = tmp_path / "out" / "euroc_stereo"
    assert lines[3] == (f"  run it: mickey-ros bag {euroc} OUT_BAG --image0 /cam0/image_raw --info0 /cam0/camera_info "
                        "--image1 /cam1/image_raw --info1 /cam1/camera_info")
    proc = run("out", "--realdata", str(realdata), "--sets", "kitti")
    assert proc.returncode == 2 and proc.stderr == ("realdata_bags: error: --sets: expected a comma-separated list of "
                                                    "kitti_seq1, kitti_seq2, middlebury, euroc_stereo (or all), got "
                                                    "kitti\n")


# -- the shared sets ------------------------------------------------------------------------------------------------
@needs_realdata
def test_shared_kitti_sequences_as_bags_give_the_kitti_poses_and_k(tmp_path):
    done = write_bags(["kitti_seq1", "kitti_seq2"], REALDATA, tmp_path)
    for written, size in zip(done, ((1226, 370), (1241, 376))):
        src = REALDATA / written.name
        index = index_bags(BagSource(written.bags[0], pose=PoseSource(world_frame="map")))
        poses, change = kitti_camera_poses(src / "poses.txt")
        assert len(index) == len(poses) == 51 and change < 1e-5
        T = np.stack([f.T_world_cam for f in index.frames])
        np.testing.assert_allclose(T, poses, rtol=0, atol=1e-9)  # the bag reproduces its (orthonormal) poses
        np.testing.assert_allclose(T, kitti_poses(src / "poses.txt"), rtol=0, atol=1e-5)  # and the published ones
        P0 = kitti_projection(src / "calib.txt")
        for frame in index.frames:
            np.testing.assert_array_equal(frame.K, P0[:, :3])
            assert (frame.width, frame.height) == size
        msgs = _read(written.bags[0])
        assert {m.encoding for _, m in msgs["/camera/image_raw"]} == {"mono8"}
        np.testing.assert_array_equal(msgs["/camera/camera_info"][0][1].p.reshape(3, 4), P0)


@needs_realdata
def test_shared_stereo_sets_as_rig_bags_give_their_ground_truth(tmp_path):
    from mickey_ros.realdata import euroc_sensor, middlebury_calib

    middlebury, euroc = write_bags(["middlebury", "euroc_stereo"], REALDATA, tmp_path)
    assert len(middlebury.bags) == 15
    bag = middlebury.bags[0]
    _, _, baseline = middlebury_calib(REALDATA / "middlebury" / bag.name / "calib.txt")
    np.testing.assert_allclose(_rig_T_0to1(bag, START_NS), make_T(np.eye(3), [-baseline, 0, 0]), atol=1e-12)
    (_, d0, T0), (_, _, T1) = (euroc_sensor(REALDATA / "euroc_stereo" / c / "sensor.yaml") for c in ("cam0", "cam1"))
    T_0to1 = _rig_T_0to1(euroc.bags[0], 1403715275012143104)
    np.testing.assert_allclose(T_0to1, invert_T(T1) @ T0, atol=1e-9)
    assert np.linalg.norm(T_0to1[:3, 3]) == pytest.approx(0.110, abs=0.001)
    info = _read(euroc.bags[0])["/cam0/camera_info"][0][1]
    np.testing.assert_allclose(info.d, [*d0, 0.0])


# -- mickey-ros bag on the rig bags ---------------------------------------------------------------------------------
RIG_TOPICS = ["--image0", "/cam0/image_raw", "--info0", "/cam0/camera_info", "--image1", "/cam1/image_raw",
              "--info1", "/cam1/camera_info"]


def _bag_pose(out: Path) -> np.ndarray:
    """T_0to1 of the one pose ``mickey-ros bag`` wrote (its TF carries camera 1's pose in camera 0)."""
    ((_, tf),) = _read(out)["/tf"]
    return invert_T(_tf_T(tf.transforms[0]))


def test_mickey_ros_bag_undistorts_a_distorted_rig_when_asked(realdata, tmp_path, capsys):
    from mickey_ros.cli import main

    (done,) = write_bags(["euroc_stereo"], realdata, tmp_path / "bags")
    run = ["bag", str(done.bags[0]), str(tmp_path / "out"), *RIG_TOPICS, "--device", "cpu", "--quiet"]
    assert main(run) == 0  # the cam0-only frame is unpaired; the pair is skipped: its cameras are distorted
    out = capsys.readouterr().out.splitlines()
    assert "pairs found 1, processed 0, succeeded 0, skipped 1" in out[0]
    assert any("camera_info0: non-zero distortion (plumb_bob); record rectified images (image_rect) or pass "
               "--undistort" in line for line in out[1:])
    assert main([*run, "--undistort", "--overwrite"]) == 0
    assert "pairs found 1, processed 1" in capsys.readouterr().out


@needs_realdata
def test_shared_euroc_rig_through_mickey_ros_bag_undistort_beats_no_motion(tmp_path, capsys):
    from mickey_ros.cli import main
    from mickey_ros.geometry.se3 import rotation_angle_deg

    (euroc,) = write_bags(["euroc_stereo"], REALDATA, tmp_path / "bags")
    assert main(["bag", str(euroc.bags[0]), str(tmp_path / "out"), *RIG_TOPICS, "--device", "cpu", "--quiet",
                 "--undistort"]) == 0
    assert "pairs found 1, processed 1, succeeded 1" in capsys.readouterr().out
    truth = np.array(json.loads(euroc.record.read_text())["T_0to1"])
    est = _bag_pose(tmp_path / "out")
    centre = np.linalg.norm(invert_T(est)[:3, 3] - invert_T(truth)[:3, 3])
    assert centre < np.linalg.norm(truth[:3, 3])  # below no motion's 0.110 m (0.08 m measured)
    assert rotation_angle_deg(est[:3, :3], truth[:3, :3]) < 3.0  # 1.2 deg measured (no motion: 0.8 deg)
