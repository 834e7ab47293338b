"""`mickey-ros bag` on hostile recordings: good frames around one bad frame; the output bag is always readable.

Each bag is written here with rosbags; outputs are read back with rosbags' AnyReader. The network is a
random-init ``tiny`` preset (fast); the poses do not matter, only which pairs were processed and counted.
"""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

typesys = pytest.importorskip("rosbags.typesys")
rosbag2 = pytest.importorskip("rosbags.rosbag2")
highlevel = pytest.importorskip("rosbags.highlevel")

import cv2  # noqa: E402

from mickey_ros.cli import main  # noqa: E402

from conftest import DEMO, REPO  # noqa: E402

TS = typesys.get_typestore(typesys.Stores.ROS2_HUMBLE)
T = TS.types
K = [220.0, 0, 146.5, 0, 220.0, 111.5, 0, 0, 1]
MS = 1_000_000
IMAGE0, INFO0, IMAGE1, INFO1 = "/cam0/image_raw", "/cam0/camera_info", "/cam1/image_raw/compressed", "/cam1/camera_info"
TYPES = {IMAGE0: "sensor_msgs/msg/Image", INFO0: "sensor_msgs/msg/CameraInfo",
         IMAGE1: "sensor_msgs/msg/CompressedImage", INFO1: "sensor_msgs/msg/CameraInfo"}
TOPICS = ["--image0", IMAGE0, "--info0", INFO0, "--image1", IMAGE1, "--info1", INFO1]
RUN = ["--preset", "tiny", "--device", "cpu", "--quiet"]
FULL = "/mickey/relative_pose_full"


def _header(t_ns: int, frame: str, sec: int | None = None, nanosec: int | None = None):
    stamp = T["builtin_interfaces/msg/Time"](sec=t_ns // 10**9 if sec is None else sec,
                                             nanosec=t_ns % 10**9 if nanosec is None else nanosec)
    return T["std_msgs/msg/Header"](stamp=stamp, frame_id=frame)


def _info(header, d=None):
    roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return T["sensor_msgs/msg/CameraInfo"](header=header, height=224, width=294, distortion_model="plumb_bob",
                                           d=np.zeros(5) if d is None else np.asarray(d, float), k=np.array(K), r=np.eye(3).reshape(-1), p=np.zeros(12),
                                           binning_x=0, binning_y=0, roi=roi)


_IMAGES: dict[str, np.ndarray] = {}


def frame(t_ms: int, *, bad: dict[str, dict] | None = None, infos: bool = True) -> list[tuple[str, int, object]]:
    """One frame of both cameras at ``t_ms`` (camera 1 10 ms later): ``(topic, log time, message)``.

    ``bad`` overrides header fields per topic, e.g. ``{IMAGE0: {"sec": -1}}``; ``infos=False`` leaves the
    CameraInfo messages out.
    """
    if not _IMAGES:
        _IMAGES["im0"] = cv2.imread(str(DEMO / "im0.png"))[:, :, ::-1].copy()
        _IMAGES["png1"] = cv2.imencode(".png", cv2.imread(str(DEMO / "im1.png")))[1]
    bad = bad or {}
    t0, t1 = t_ms * MS, (t_ms + 10) * MS
    msgs = [
        (IMAGE0, t0, T["sensor_msgs/msg/Image"](header=_header(t0, "cam0_optical_frame", **bad.get(IMAGE0, {})),
                                               height=224, width=294, encoding="rgb8", is_bigendian=0, step=294 * 3,
                                               data=_IMAGES["im0"].reshape(-1))),
        (IMAGE1, t1, T["sensor_msgs/msg/CompressedImage"](
            header=_header(t1, "cam1_optical_frame", **bad.get(IMAGE1, {})), format="png",
            data=_IMAGES["png1"].reshape(-1))),
    ]
    if infos:
        msgs += [(INFO0, t0, _info(_header(t0, "cam0_optical_frame", **bad.get(INFO0, {})))),
                 (INFO1, t1, _info(_header(t1, "cam1_optical_frame", **bad.get(INFO1, {}))))]
    return msgs


def write_bag(path: Path, messages: list[tuple[str, int, object]], storage: str = "mcap") -> Path:
    """A rosbag2 with the four topics (always all four connections) holding ``messages``."""
    plugin = rosbag2.StoragePlugin.MCAP if storage == "mcap" else rosbag2.StoragePlugin.SQLITE3
    with rosbag2.Writer(path, version=9, storage_plugin=plugin) as w:
        conns = {topic: w.add_connection(topic, msgtype, typestore=TS) for topic, msgtype in TYPES.items()}
        for topic, log_ns, msg in sorted(messages, key=lambda m: m[1]):
            w.write(conns[topic], log_ns, TS.serialize_cdr(msg, TYPES[topic]))
    return path


def read_bag(path: Path) -> dict[str, list[tuple[int, object]]]:
    """``{topic: [(log time, message)]}`` read with rosbags (fails unless the bag was closed properly)."""
    assert (path / "metadata.yaml").is_file()
    out: dict[str, list] = {}
    with highlevel.AnyReader([path], default_typestore=TS) as reader:
        for conn, log_ns, raw in reader.messages():
            out.setdefault(conn.topic, []).append((log_ns, reader.deserialize(raw, conn.msgtype)))
    return out


def _stdout_lines(capsys) -> list[str]:
    return capsys.readouterr().out.strip().splitlines()


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_invalid_stamps_mid_bag_are_counted_and_every_good_pair_is_written(tmp_path, capsys, storage):
    # frame 300: camera 0's image has a negative stamp (was: OverflowError when writing, nothing readable);
    # frame 500: camera 1's CameraInfo has nanosec >= 1e9 (that image uses the nearest valid CameraInfo instead)
    msgs = [m for t in (0, 100, 200, 400, 600) for m in frame(t)]
    msgs += frame(300, bad={IMAGE0: {"sec": -1}}) + frame(500, bad={INFO1: {"nanosec": 2_000_000_000}})
    src, dst = write_bag(tmp_path / "in", msgs, storage), tmp_path / "out"
    assert main(["bag", str(src), str(dst), *TOPICS, *RUN]) == 0
    lines = _stdout_lines(capsys)
    assert "pairs found 6, processed 6" in lines[0] and "skipped 2, unpaired images 1" in lines[0]
    assert lines[1].strip() == ("skipped 2: invalid header stamp (negative, or nanosec outside [0, 1e9)) (first: "
                                f"{IMAGE0} message logged at {300 * MS} ns: sec=-1, nanosec={300 * MS})")
    assert lines[2].strip() == (f"unpaired 1: no camera-0 image within --slop 0.05 s (first: {IMAGE1} image at "
                                f"{310 * MS} ns)")
    out = read_bag(dst)
    assert [stamp for stamp, _ in out[FULL]] == [t * MS for t in (0, 100, 200, 400, 500, 600)]
    assert [msg.stamp1.nanosec for _, msg in out[FULL]] == [(t + 10) * MS for t in (0, 100, 200, 400, 500, 600)]


def test_distorted_camera_is_a_counted_skip_naming_the_camera(tmp_path, capsys):
    # frame 100: camera 1's CameraInfo has plumb_bob distortion; the reason names camera_info1 and the model
    msgs = [m for t in (0, 200) for m in frame(t)]
    msgs += [m for m in frame(100) if m[0] != INFO1]
    msgs.append((INFO1, 110 * MS, _info(_header(110 * MS, "cam1_optical_frame"), d=[-0.1, 0.01, 0, 0, 0])))
    src, dst = write_bag(tmp_path / "in", msgs), tmp_path / "out"
    assert main(["bag", str(src), str(dst), *TOPICS, *RUN]) == 0
    lines = _stdout_lines(capsys)
    assert "pairs found 3, processed 2" in lines[0] and "skipped 1" in lines[0]
    assert lines[1].strip().startswith("skipped 1: camera_info1: non-zero distortion (plumb_bob); record rectified "
                                       "images (image_rect) or pass --undistort")
    assert [stamp for stamp, _ in read_bag(dst)[FULL]] == [0, 200 * MS]
    # --undistort: the same pair is undistorted to its K and processed
    assert main(["bag", str(src), str(dst), *TOPICS, *RUN, "--undistort", "--overwrite"]) == 0
    assert "pairs found 3, processed 3" in _stdout_lines(capsys)[0]
    assert [stamp for stamp, _ in read_bag(dst)[FULL]] == [0, 100 * MS, 200 * MS]


@pytest.mark.parametrize(("flag", "topic", "found", "expected"), [
    ("--image0", INFO0, "sensor_msgs/msg/CameraInfo", "sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage"),
    ("--info0", IMAGE0, "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo"),
])
def test_topic_of_the_wrong_type_is_one_line_exit_2_and_no_output(tmp_path, capsys, flag, topic, found, expected):
    src, dst = write_bag(tmp_path / "in", frame(0)), tmp_path / "out"
    args = list(TOPICS)
    args[args.index(flag) + 1] = topic
    assert main(["bag", str(src), str(dst), *args, *RUN]) == 2
    assert _one_error_line(capsys) == f"mickey-ros: error: {flag}: topic {topic} has type {found}; expected {expected}"
    assert not dst.exists()


def test_info_topic_without_messages_is_one_line_exit_2(tmp_path, capsys):
    src, dst = write_bag(tmp_path / "in", [m for m in frame(0) if m[0] != INFO1]), tmp_path / "out"
    assert main(["bag", str(src), str(dst), *TOPICS, *RUN]) == 2
    assert _one_error_line(capsys) == (f"mickey-ros: error: --info1: topic {INFO1} has no messages in {src}; "
                                       "expected CameraInfo messages (needed to pair the images)")
    assert not dst.exists()


def test_camera_info_with_only_invalid_stamps_is_no_pairs_exit_2_and_no_output(tmp_path, capsys):
    msgs = [m for t in (0, 100) for m in frame(t, bad={INFO1: {"sec": -5}})]
    src, dst = write_bag(tmp_path / "in", msgs), tmp_path / "out"
    assert main(["bag", str(src), str(dst), *TOPICS, *RUN]) == 2
    assert _one_error_line(capsys) == (
        f"mickey-ros: error: --info1: no usable message on {INFO1} in {src} (2 skipped; first: invalid header stamp "
        "(negative, or nanosec outside [0, 1e9))); expected CameraInfo messages with valid header stamps")
    assert not dst.exists()


def test_streams_that_never_overlap_in_time_are_no_pairs_exit_2_and_old_output_kept(tmp_path, capsys):
    # camera 1 was recorded 5 s after camera 0 (two recordings merged, or a clock offset): nothing within --slop
    msgs = [m for t in (0, 100) for m in frame(t) if m[0] in (IMAGE0, INFO0)]
    msgs += [m for t in (5000, 5100) for m in frame(t) if m[0] in (IMAGE1, INFO1)]
    src, dst = write_bag(tmp_path / "in", msgs), tmp_path / "out"
    assert main(["bag", str(src), str(dst), *TOPICS, *RUN]) == 2
    assert _one_error_line(capsys) == (
        f"mickey-ros: error: --slop: no synchronised pairs in {src}: the closest {IMAGE0} and {IMAGE1} stamps are "
        "4.910 s apart, more than --slop 0.05 s (camera 0 images at 0.000-0.100 s, camera 1 at 5.010-5.110 s)")
    assert not dst.exists()
    # with --overwrite, an earlier output survives a run that finds nothing to write
    old = write_bag(dst, frame(0))
    assert main(["bag", str(src), str(dst), *TOPICS, *RUN, "--overwrite"]) == 2
    assert "no synchronised pairs" in _one_error_line(capsys)
    assert len(read_bag(old)[IMAGE0]) == 1


@pytest.mark.parametrize(("flags", "expected"), [
    (("--image1", IMAGE0), f"--image0/--image1: both are {IMAGE0}; expected camera 0's and camera 1's own image "
                           "topics"),
    (("--info1", INFO0), f"--info0/--info1: both are {INFO0}; expected camera 0's and camera 1's own CameraInfo "
                         "topics"),
])
def test_the_same_topic_for_both_cameras_is_one_line_exit_2_in_a_real_process(tmp_path, flags, expected):
    src, dst = write_bag(tmp_path / "in", frame(0)), tmp_path / "out"
    args = list(TOPICS)
    args[args.index(flags[0]) + 1] = flags[1]
    proc = subprocess.run([sys.executable, "-m", "mickey_ros.cli", "bag", str(src), str(dst), *args, *RUN],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"mickey-ros: error: {expected}"]
    assert proc.stdout == "" and not dst.exists()


def test_an_exception_in_one_pair_is_a_counted_skip_and_the_run_goes_on(tmp_path, capsys, monkeypatch):
    from mickey_ros.pipeline import Relocalizer

    estimate, calls = Relocalizer.estimate, []

    def flaky(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # call 1 is the warm-up inference, call 2 the first pair: fail the second pair
            raise RuntimeError("injected failure\nsecond line")
        return estimate(self, *args, **kwargs)

    monkeypatch.setattr(Relocalizer, "estimate", flaky)
    src, dst = write_bag(tmp_path / "in", [m for t in (0, 100, 200, 300) for m in frame(t)]), tmp_path / "out"
    assert main(["bag", str(src), str(dst), *TOPICS, *RUN]) == 0
    lines = _stdout_lines(capsys)
    assert "pairs found 4, processed 3" in lines[0] and "skipped 1, unpaired images 0" in lines[0]
    assert lines[1].strip() == f"skipped 1: RuntimeError: injected failure (first: pair at {100 * MS} ns)"
    assert [stamp for stamp, _ in read_bag(dst)[FULL]] == [0, 200 * MS, 300 * MS]


def test_a_fatal_error_after_writing_started_still_leaves_a_readable_bag(tmp_path, capsys, monkeypatch):
    from mickey_ros.ros import bag

    write, pairs = bag._Outputs.write, []

    def failing_write(self, key, stamp, data):
        if key == "full":
            pairs.append(stamp)
        if len(pairs) == 3:
            raise OSError(28, "No space left on device")
        write(self, key, stamp, data)

    monkeypatch.setattr(bag._Outputs, "write", failing_write)
    src, dst = write_bag(tmp_path / "in", [m for t in (0, 100, 200, 300) for m in frame(t)]), tmp_path / "out"
    assert main(["bag", str(src), str(dst), *TOPICS, *RUN]) == 3
    assert "internal error: OSError" in _one_error_line(capsys)
    assert [stamp for stamp, _ in read_bag(dst)[FULL]] == [0, 100 * MS]


def test_late_camera_info_loses_no_frame(tmp_path, capsys):
    # the CameraInfo driver starts late: no CameraInfo for the first 5 frames, and every CameraInfo is logged
    # 400 ms after its stamp (was: 5 of 15 good frames dropped without a count)
    msgs = []
    for i in range(15):
        msgs += frame(100 * i, infos=False)
        if i >= 5:
            msgs += [(topic, log_ns + 400 * MS, msg) for topic, log_ns, msg in frame(100 * i) if "info" in topic]
    src, dst = write_bag(tmp_path / "in", msgs), tmp_path / "out"
    assert main(["bag", str(src), str(dst), *TOPICS, *RUN]) == 0
    lines = _stdout_lines(capsys)
    assert "pairs found 15, processed 15" in lines[0] and "skipped 0, unpaired images 0" in lines[0]
    assert lines[1].strip() == ("note: 10 images had no CameraInfo at their stamp and used the nearest CameraInfo "
                                "of their camera")
    assert [stamp for stamp, _ in read_bag(dst)[FULL]] == [100 * i * MS for i in range(15)]


def test_overwrite(tmp_path, capsys):
    src = write_bag(tmp_path / "in", frame(0))
    dst = tmp_path / "out"
    assert main(["bag", str(src), str(dst), *TOPICS, *RUN]) == 0
    capsys.readouterr()
    assert main(["bag", str(src), str(dst), *TOPICS, *RUN]) == 2
    assert _one_error_line(capsys) == (f"mickey-ros: error: OUT: {dst} exists; pass --overwrite to replace it "
                                       "(rosbag2 writers need a new folder)")
    src2 = write_bag(tmp_path / "in2", frame(0) + frame(100))
    assert main(["bag", str(src2), str(dst), *TOPICS, *RUN, "--overwrite"]) == 0
    assert len(read_bag(dst)[FULL]) == 2

    crashed = tmp_path / "crashed"  # what a killed writer leaves: a stub mcap, no metadata.yaml
    crashed.mkdir()
    (crashed / "crashed_0.mcap").write_bytes(b"\x89MCAP0\r\n" + bytes(35))
    assert main(["bag", str(src), str(crashed), *TOPICS, *RUN, "--overwrite"]) == 0
    assert len(read_bag(crashed)[FULL]) == 1
    capsys.readouterr()

    mine = tmp_path / "mine"  # not a bag folder: never deleted
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["bag", str(src), str(mine), *TOPICS, *RUN, "--overwrite"]) == 2
    assert "holds files that are not rosbag2 files (notes.txt)" in _one_error_line(capsys)
    assert (mine / "notes.txt").read_text() == "keep me"
    assert main(["bag", str(src), str(src), *TOPICS, *RUN, "--overwrite"]) == 2
    assert "is (or holds) the input bag" in _one_error_line(capsys)
    assert len(read_bag(src)[IMAGE0]) == 1


def test_sigint_mid_bag_leaves_a_readable_bag_with_the_pairs_done(tmp_path):
    n = 60  # minutes of work on a CPU: the signal always comes mid-bag
    src, dst = write_bag(tmp_path / "in", [m for i in range(n) for m in frame(100 * i)]), tmp_path / "out"
    cmd = [sys.executable, "-m", "mickey_ros.cli", "bag", str(src), str(dst), *TOPICS, "--preset", "tiny",
           "--device", "cpu"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stderr = bytearray()

    def collect() -> None:
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):
            stderr.extend(chunk)

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not re.search(rb"[1-9]\d*/%d pairs" % n, stderr):
        time.sleep(0.05)
    assert proc.poll() is None, bytes(stderr).decode()
    proc.send_signal(signal.SIGINT)
    stdout, rest = proc.communicate(timeout=120)  # communicate() also reads stderr: keep what it took
    reader.join(timeout=10)
    err = bytes(stderr + (rest or b"")).decode()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    kept = re.search(rf"interrupted by SIGINT; {re.escape(str(dst))} holds the (\d+) pairs processed so far", err)
    assert kept, err
    written = read_bag(dst)[FULL]
    assert 1 <= len(written) == int(kept.group(1)) < n
    assert [stamp for stamp, _ in written] == [100 * i * MS for i in range(len(written))]
    assert f"processed {len(written)}," in stdout.decode()


def test_sigterm_during_a_pair_s_writes_finishes_that_pair_then_stops(tmp_path, capsys, monkeypatch):
    import os

    from mickey_ros.ros import bag

    write, keys = bag._Outputs.write, []

    def write_then_signal(self, key, stamp, data):
        keys.append(key)
        if keys.count("full") == 2 and key == "full":
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while the second pair's messages are being written
        write(self, key, stamp, data)

    monkeypatch.setattr(bag._Outputs, "write", write_then_signal)
    handler = signal.getsignal(signal.SIGTERM)
    src, dst = write_bag(tmp_path / "in", [m for t in range(0, 1000, 100) for m in frame(t)]), tmp_path / "out"
    assert main(["bag", str(src), str(dst), *TOPICS, *RUN]) == 143
    assert _one_error_line(capsys).endswith(f"interrupted by SIGTERM; {dst} holds the 2 pairs processed so far")
    out = read_bag(dst)
    assert [stamp for stamp, _ in out[FULL]] == [0, 100 * MS]
    written = {topic: len(msgs) for topic, msgs in out.items()}
    assert sum(written.values()) == len(keys)  # every message of the second pair was written, none of a third
    assert signal.getsignal(signal.SIGTERM) == handler  # restored


def test_pair_plan_is_one_to_one_closest_first_and_names_every_unpaired_image():
    from mickey_ros.ros.bag_plan import BagIndex, BagSummary, plan_pairs

    topics = {"image0": IMAGE0, "info0": INFO0, "image1": IMAGE1, "info1": INFO1}
    index = BagIndex(images={"0": [0, 60 * MS, 500 * MS], "1": [40 * MS]},
                     info_stamps={"0": [100 * MS], "1": [40 * MS]}, info_msgs={"0": ["info0"], "1": ["info1"]})
    summary = BagSummary()
    plan = plan_pairs(index, topics, 50 * MS, summary)
    assert plan.pairs == [(60 * MS, 40 * MS)] and summary.pairs_found == 1  # 60 ms is closer to 40 ms than 0 is
    assert plan.info == {("0", 60 * MS): "info0", ("1", 40 * MS): "info1"}
    assert summary.nearest_info == 1  # camera 0 has CameraInfo only at 100 ms
    assert [(s.reason, s.where) for s in summary.unpaired] == [
        ("its camera-1 images within --slop were paired with closer camera-0 images", f"{IMAGE0} image at 0 ns"),
        ("no camera-1 image within --slop 0.05 s", f"{IMAGE0} image at {500 * MS} ns"),
    ]
