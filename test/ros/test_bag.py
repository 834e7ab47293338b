"""`mickey-ros bag`: a bag written here with rosbags in, an output bag read back by an independent decoder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

typesys = pytest.importorskip("rosbags.typesys")
rosbag2 = pytest.importorskip("rosbags.rosbag2")
mcap_reader = pytest.importorskip("mcap.reader")
mcap_decoder = pytest.importorskip("mcap_ros2.decoder")

import cv2  # noqa: E402

from mickey_ros.cli import main  # noqa: E402

from conftest import DEMO  # noqa: E402

TS = typesys.get_typestore(typesys.Stores.ROS2_HUMBLE)
T = TS.types
K = [220.0, 0, 146.5, 0, 220.0, 111.5, 0, 0, 1]
MS = 1_000_000
TOPICS = ["--image0", "/cam0/image_raw", "--info0", "/cam0/camera_info",
          "--image1", "/cam1/image_raw/compressed", "--info1", "/cam1/camera_info"]


def _header(t_ns: int, frame: str):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=t_ns // 10**9, nanosec=t_ns % 10**9),
                                   frame_id=frame)


def _info(t_ns: int, frame: str, k=K):
    roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return T["sensor_msgs/msg/CameraInfo"](header=_header(t_ns, frame), height=224, width=294, distortion_model="plumb_bob",
                                           d=np.zeros(5), k=np.array(k, dtype=np.float64), r=np.eye(3).reshape(-1),
                                           p=np.zeros(12), binning_x=0, binning_y=0, roi=roi)


def write_input_bag(path: Path, storage: str = "mcap", stamps_ms=(0, 100, 200), k1=K) -> Path:
    im0 = cv2.imread(str(DEMO / "im0.png"))[:, :, ::-1].copy()
    ok, png1 = cv2.imencode(".png", cv2.imread(str(DEMO / "im1.png")))
    plugin = rosbag2.StoragePlugin.MCAP if storage == "mcap" else rosbag2.StoragePlugin.SQLITE3
    with rosbag2.Writer(path, version=9, storage_plugin=plugin) as w:
        conns = {name: w.add_connection(topic, msgtype, typestore=TS) for name, topic, msgtype in (
            ("image0", "/cam0/image_raw", "sensor_msgs/msg/Image"),
            ("info0", "/cam0/camera_info", "sensor_msgs/msg/CameraInfo"),
            ("image1", "/cam1/image_raw/compressed", "sensor_msgs/msg/CompressedImage"),
            ("info1", "/cam1/camera_info", "sensor_msgs/msg/CameraInfo"),
        )}
        for t in stamps_ms:
            t0, t1 = t * MS, (t + 10) * MS
            msgs = {
                "image0": (t0, T["sensor_msgs/msg/Image"](header=_header(t0, "cam0_optical_frame"), height=224, width=294,
                                                         encoding="rgb8", is_bigendian=0, step=294 * 3,
                                                         data=im0.reshape(-1))),
                "info0": (t0, _info(t0, "cam0_optical_frame")),
                "image1": (t1, T["sensor_msgs/msg/CompressedImage"](header=_header(t1, "cam1_optical_frame"), format="png",
                                                                   data=png1.reshape(-1))),
                "info1": (t1, _info(t1, "cam1_optical_frame", k1)),
            }
            for name, (stamp, msg) in msgs.items():
                w.write(conns[name], stamp, TS.serialize_cdr(msg, conns[name].msgtype))
    return path


def _decode_mcap(bag_dir: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    (mcap_file,) = bag_dir.glob("*.mcap")
    with open(mcap_file, "rb") as f:
        reader = mcap_reader.make_reader(f, decoder_factories=[mcap_decoder.DecoderFactory()])
        for _, channel, message, decoded in reader.iter_decoded_messages():
            out.setdefault(channel.topic, []).append((message.log_time, decoded))
    return out


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_to_bag_one_output_per_pair(tmp_path, storage, capsys):
    src = write_input_bag(tmp_path / "in", storage)
    dst = tmp_path / "out"
    assert main(["bag", str(src), str(dst), *TOPICS, "--device", "cpu", "--quiet"]) == 0
    assert "pairs found 3, processed 3, succeeded 3" in capsys.readouterr().out
    msgs = _decode_mcap(dst)
    assert len(msgs["/mickey/relative_pose_full"]) == 3
    for topic in ("/tf", "/mickey/relative_pose", "/mickey/keypoints0", "/mickey/keypoints1", "/mickey/num_inliers"):
        assert len(msgs[topic]) == 3, topic
    stamp, full = msgs["/mickey/relative_pose_full"][0]
    assert (full.header.frame_id, full.child_frame_id, full.status) == ("cam0_optical_frame", "cam1_optical_frame", 0)
    assert full.header.stamp.sec == 0 and full.header.stamp.nanosec == 0 and full.stamp1.nanosec == 10 * MS
    assert 0 < full.num_inliers <= full.num_matches <= 2048 and 0 <= full.confidence <= 1
    _, tf = msgs["/tf"][1]
    assert tf.transforms[0].header.frame_id == "cam0_optical_frame"
    assert tf.transforms[0].child_frame_id == "cam1_optical_frame_mickey"  # the node's default TF naming
    _, cloud1 = msgs["/mickey/keypoints1"][0]
    assert cloud1.header.frame_id == "cam1_optical_frame" and cloud1.header.stamp.nanosec == 10 * MS
    assert [f.name for f in cloud1.fields] == ["x", "y", "z", "rgb"] and cloud1.width == full.num_matches
    assert msgs["/mickey/num_inliers"][0][1].data == full.num_inliers
    # the values: every pair (the same two images) gives the API's pose on those images with the same network and
    # seed, and /tf, relative_pose and relative_pose_full all carry it as the pose of camera 1 in camera 0
    expected = _api_estimate()
    T_1to0 = np.linalg.inv(expected.T_0to1)
    for k in range(3):
        _, tf_k = msgs["/tf"][k]
        _, pose_k = msgs["/mickey/relative_pose"][k]
        _, full_k = msgs["/mickey/relative_pose_full"][k]
        tr = tf_k.transforms[0].transform
        for T in (_T_of(tr.translation, tr.rotation), _T_of(pose_k.pose.pose.position, pose_k.pose.pose.orientation),
                  _T_of(full_k.pose.pose.position, full_k.pose.pose.orientation)):
            np.testing.assert_allclose(T, T_1to0, atol=1e-9)
        assert (full_k.num_inliers, full_k.num_matches) == (expected.num_inliers, expected.num_matches)
        assert full_k.confidence == pytest.approx(expected.confidence, rel=1e-6)  # float32 field
        assert msgs["/mickey/num_inliers"][k][1].data == expected.num_inliers
        assert msgs["/mickey/keypoints0"][k][1].width == expected.num_matches
        stamps = {(h.stamp.sec, h.stamp.nanosec) for h in (full_k.header, pose_k.header, tf_k.transforms[0].header)}
        assert stamps == {(0, k * 100 * MS)}


def _T_of(position, orientation) -> np.ndarray:
    from mickey_ros.geometry.se3 import make_T, quat_wxyz_to_matrix

    q = [orientation.w, orientation.x, orientation.y, orientation.z]
    return make_T(quat_wxyz_to_matrix(q), [position.x, position.y, position.z])


def _api_estimate():
    """Relocalizer.estimate on the bag's pair (camera 1's PNG decodes to the same pixels): default network, seed 0."""
    from mickey_ros import Relocalizer
    from mickey_ros.model.default import load_default_network

    im0 = cv2.imread(str(DEMO / "im0.png"))[:, :, ::-1].copy()
    im1 = cv2.imread(str(DEMO / "im1.png"))[:, :, ::-1].copy()
    Km = np.array(K).reshape(3, 3)
    return Relocalizer(load_default_network(), device="cpu", seed=0).estimate(im0, Km, im1, Km)


def test_bad_pair_is_skipped_not_fatal(tmp_path, capsys):
    src = write_input_bag(tmp_path / "in", stamps_ms=(0,), k1=[0.0] * 9)  # camera 1 has a zero focal length
    assert main(["bag", str(src), str(tmp_path / "out"), *TOPICS, "--device", "cpu", "--quiet"]) == 0
    assert "pairs found 1, processed 0, succeeded 0, skipped 1" in capsys.readouterr().out


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_missing_topic_and_corrupt_bag_exit_2(tmp_path, capsys):
    src = write_input_bag(tmp_path / "in", stamps_ms=(0,))
    args = [a if a != "/cam1/camera_info" else "/cam1/nope" for a in TOPICS]
    assert main(["bag", str(src), str(tmp_path / "out"), *args, "--device", "cpu", "--quiet"]) == 2
    assert "--info1: topic /cam1/nope is not in" in _error(capsys)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.yaml").write_text("this: [is not, a rosbag2")
    assert main(["bag", str(broken), str(tmp_path / "out2"), *TOPICS, "--device", "cpu", "--quiet"]) == 2
    assert "IN: cannot read" in _error(capsys)
    assert main(["bag", str(tmp_path / "absent"), str(tmp_path / "out3"), *TOPICS, "--quiet"]) == 2
    assert "IN: " in _error(capsys)


def test_missing_topic_is_one_line_in_a_real_process(tmp_path):
    import subprocess
    import sys

    src = write_input_bag(tmp_path / "in", stamps_ms=(0,))
    args = [a if a != "/cam0/image_raw" else "/cam0/nope" for a in TOPICS]
    proc = subprocess.run([sys.executable, "-m", "mickey_ros.cli", "bag", str(src), str(tmp_path / "out"), *args,
                           "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"mickey-ros: error: --image0: topic /cam0/nope is not in {src} (topics: /cam0/camera_info, "
        "/cam0/image_raw, /cam1/camera_info, /cam1/image_raw/compressed)"]


def test_progress_bar_text():
    from mickey_ros.ros.bag import progress_bar

    assert progress_bar(0, 10, width=10) == "mickey-ros bag [..........]   0%"
    assert progress_bar(5, 10, width=10) == "mickey-ros bag [#####.....]  50%"
    assert progress_bar(10, 10, width=10) == "mickey-ros bag [##########] 100%"
    assert progress_bar(0, 0, width=4) == "mickey-ros bag [####] 100%"  # an empty bag is done
