"""The ROS-free pieces of reference mode and triggering: CameraInfo YAML, reference loading and its rules, the
one-camera synchroniser, the stamp-based rate gate, the request board, the map composition, list parameters."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from conftest import DEMO

from mickey_ros.geometry.se3 import invert_T, make_T, quat_wxyz_to_matrix
from mickey_ros.ros.builders import Anchor, MessageTypes, TfNaming, header, query_pose_in_anchor
from mickey_ros.ros.node_common import ParameterError, ParameterRules, check_value
from mickey_ros.ros.reference import (
    IDENTITY_POSE,
    check_reference_parameters,
    load_reference,
    read_camera_info_yaml,
    reference_pose_matrix,
)
from mickey_ros.ros.sync import FrameSynchronizer
from mickey_ros.ros.triggering import RateGate, RequestBoard

BASE = {"reference_mode": False, "reference_image": "", "reference_camera_info": "", "reference_fx": 0.0,
        "reference_fy": 0.0, "reference_cx": 0.0, "reference_cy": 0.0, "reference_pose_frame": "",
        "reference_pose": list(IDENTITY_POSE), "undistort": False}
FILE = {**BASE, "reference_image": str(DEMO / "im0.png"), "reference_fx": 220.0, "reference_fy": 220.0,
        "reference_cx": 146.5, "reference_cy": 111.5}


def _yaml(path, distortion="[0.0, 0.0, 0.0, 0.0, 0.0]"):
    path.write_text("image_width: 294\nimage_height: 224\ncamera_name: ref\n"
                    "camera_matrix: {rows: 3, cols: 3, data: [220.0, 0.0, 146.5, 0.0, 221.0, 111.5, 0.0, 0.0, 1.0]}\n"
                    f"distortion_model: plumb_bob\ndistortion_coefficients: {{rows: 1, cols: 5, data: {distortion}}}\n"
                    "rectification_matrix: {rows: 3, cols: 3, data: [1, 0, 0, 0, 1, 0, 0, 0, 1]}\n")
    return str(path)


def test_camera_info_yaml_and_reference_loading(tmp_path):
    camera = read_camera_info_yaml(_yaml(tmp_path / "ok.yaml"))
    assert (camera.width, camera.height, camera.K[1, 1], camera.distorted) == (294, 224, 221.0, False)
    ref = load_reference({**BASE, "reference_image": str(DEMO / "im0.png"),
                          "reference_camera_info": str(tmp_path / "ok.yaml")})
    assert ref.image.shape == (224, 294, 3) and ref.image.dtype == np.uint8 and ref.K[1, 1] == 221.0
    ref = load_reference(FILE)
    np.testing.assert_array_equal(ref.K, [[220.0, 0, 146.5], [0, 220.0, 111.5], [0, 0, 1]])
    assert load_reference(BASE) is None

    distorted = {**BASE, "reference_image": str(DEMO / "im0.png"),
                 "reference_camera_info": _yaml(tmp_path / "d.yaml", "[-0.2, 0.05, 0.0, 0.0, 0.0]")}
    with pytest.raises(ParameterError, match=r"^reference_camera_info: non-zero distortion"):
        load_reference(distorted)
    undistorted = load_reference({**distorted, "undistort": True})
    assert undistorted.image.shape == ref.image.shape and not np.array_equal(undistorted.image, ref.image)

    (tmp_path / "bad.yaml").write_text("image_width: 294\nimage_height: 224\ncamera_matrix: {data: [1, 2]}\n")
    with pytest.raises(ParameterError, match=r"^reference_camera_info: expected camera_matrix.data with 9"):
        read_camera_info_yaml(str(tmp_path / "bad.yaml"))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ParameterError, match=r"^reference_camera_info: expected a CameraInfo YAML mapping"):
        read_camera_info_yaml(str(tmp_path / "list.yaml"))


@pytest.mark.parametrize(("changes", "message"), [
    ({"reference_fx": 220.0}, r"^reference_fx: describes the reference image, expected reference_image"),
    ({**FILE, "reference_camera_info": "x.yaml"}, r"^reference_camera_info: expected either a CameraInfo YAML"),
    ({**FILE, "reference_fy": 0.0}, r"^reference_fy: expected a focal length > 0"),
    ({**FILE, "reference_pose_frame": "map", "reference_pose": [1.0, 0.0]}, r"^reference_pose: expected 7 numbers"),
    ({**FILE, "reference_pose_frame": "map", "reference_pose": [0.0] * 7}, r"^reference_pose: .*non-zero quaternion"),
    ({"reference_pose_frame": "map"}, r"^reference_pose_frame: used only in reference mode"),
    ({**FILE, "reference_pose": [1.0, 0, 0, 0, 0, 0, 1]}, r"^reference_pose_frame: expected the map frame"),
])
def test_reference_parameter_rules(changes, message):
    with pytest.raises(ParameterError, match=message):
        check_reference_parameters({**BASE, **changes})


def test_valid_reference_parameter_sets_pass():
    for p in (BASE, FILE, {**BASE, "reference_mode": True, "reference_pose_frame": "map",
                           "reference_pose": [1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 2.0]}):
        check_reference_parameters(p)


def test_map_composition_and_anchor_tf():
    typesys = pytest.importorskip("rosbags.typesys")
    types = MessageTypes.from_typestore(typesys.get_typestore(typesys.Stores.ROS2_HUMBLE))
    T_map_ref = reference_pose_matrix([1.0, 2.0, 3.0, 0.0, 0.0, 0.7071067811865476, 0.7071067811865476])
    np.testing.assert_allclose(T_map_ref[:3, :3], quat_wxyz_to_matrix([1, 0, 0, 1]), atol=1e-12)  # 90 deg about z
    T_0to1 = make_T(quat_wxyz_to_matrix([0.95, 0.05, 0.2, -0.1]), [0.3, -0.1, 0.8])
    T_map_query = query_pose_in_anchor(T_map_ref, T_0to1)
    np.testing.assert_allclose(T_map_query, T_map_ref @ invert_T(T_0to1), atol=1e-12)
    origin_query_in_ref = invert_T(T_0to1)[:3, 3]  # where the query camera sits in reference coordinates
    np.testing.assert_allclose(T_map_query[:3, 3], T_map_ref[:3, :3] @ origin_query_in_ref + [1.0, 2.0, 3.0])
    (tf,) = TfNaming().transforms(types, header(types, 5, "mickey_reference"), "cam_optical", T_0to1,
                                  anchor=Anchor("map", T_map_ref))
    assert (tf.header.frame_id, tf.child_frame_id, tf.header.stamp.nanosec) == ("map", "cam_optical_mickey", 5)
    r, t = tf.transform.rotation, tf.transform.translation
    np.testing.assert_allclose(make_T(quat_wxyz_to_matrix([r.w, r.x, r.y, r.z]), [t.x, t.y, t.z]), T_map_query,
                               atol=1e-9)
    assert TfNaming(mode="none").transforms(types, header(types, 5, "r"), "c", T_0to1, anchor=Anchor("map", T_map_ref)) \
        == []


def test_frame_synchronizer_pairs_each_image_with_its_camera_info():
    sync = FrameSynchronizer(queue_size=3)
    assert sync.add("image", 100, "im100") is None
    assert sync.add("image", 200, "im200") is None
    frame = sync.add("info", 200, "info200")  # the newest image with its info; the older image is dropped
    assert (frame.image, frame.info, frame.stamp) == ("im200", "info200", 200)
    assert sync.pending("image") == 0 and sync.dropped == 1
    assert sync.add("info", 300, "info300") is None and sync.add("image", 300, "im300").stamp == 300
    with pytest.raises(Exception, match="stream: expected one of image, info"):
        sync.add("image0", 1, None)


def test_rate_gate_by_stamp():
    gate = RateGate(3.0)  # period 333.33 ms
    accepted = [i for i in range(10) if gate.accept(i * 100_000_000)]
    assert accepted == [0, 4, 8]
    assert gate.accept(0)  # a stamp going backwards (bag restarted) restarts the gate
    gate.set_rate(0.0)
    assert all(gate.accept(1) for _ in range(3))
    with pytest.raises(Exception, match="max_rate: expected Hz >= 0"):
        gate.set_rate(-1.0)


def test_request_board_timeout_take_and_close():
    board = RequestBoard()
    request = board.open("relocalize")
    assert request is not None and board.open("relocalize") is None and board.waiting("relocalize")
    assert board.wait(request, 0.01, "no pair within 0.01 s") == (False, "no pair within 0.01 s", True)
    assert not board.waiting("relocalize") and board.take("relocalize") is None

    request = board.open("relocalize")
    assert board.take("relocalize") is request and not board.waiting("relocalize")
    worker = threading.Timer(0.05, board.close, (request, True, "pose"))
    worker.start()
    assert board.wait(request, 0.01, "no pair", poll_s=0.01) == (True, "pose", False)  # taken: waits for the answer
    worker.join()
    pending = board.open("set_reference")
    board.close_all("node is shutting down")
    assert (pending.success, pending.message) == (False, "node is shutting down") and pending.done.is_set()


def test_list_parameters_are_lists_of_floats():
    import array

    rules = ParameterRules()
    assert check_value("p", array.array("d", [1.0, 2.0]), [0.0], rules) == [1.0, 2.0]
    assert check_value("p", [1, 2], [0.0], rules) == [1.0, 2.0]
    with pytest.raises(ParameterError, match=r"^p: expected a list of numbers, got 'x'"):
        check_value("p", "x", [0.0], rules)
