"""Reference mode of relocalize_node with real rclpy: one live camera against a stored reference image.

Checks the pose against ``Relocalizer.estimate_query`` on the same images and seed, the map-frame TF against the
composition ``T_map_query = T_map_ref @ inv(T_0to1)`` computed here, that the network runs once per query, the
``~/set_reference`` service through a real client, and the one-line exit-2 errors of bad reference parameters
through the console script.
"""
from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("std_srvs.srv")

from conftest import DEMO  # noqa: E402
from node_harness import (  # noqa: E402
    K_MATRIX,
    FakeBroadcaster,
    Harness,
    assert_one_line_exit_2,
    demo_rgb,
    pose_matrix,
    subprocess_ros_env,  # noqa: F401 - a fixture
    transform_matrix,
)

from mickey_ros.geometry.se3 import invert_T, make_T, quat_wxyz_to_matrix  # noqa: E402

REFERENCE = {"reference_image": str(DEMO / "im0.png"), "reference_fx": 220.0, "reference_fy": 220.0,
             "reference_cx": 146.5, "reference_cy": 111.5}
# T_map_ref: the reference camera 2 m along x, 1 m up, turned about z; [x, y, z, qx, qy, qz, qw]
Q_REF = np.array([0.1, -0.2, 0.3, 0.9]) / np.linalg.norm([0.1, -0.2, 0.3, 0.9])
REFERENCE_POSE = [2.0, 0.5, 1.0, *Q_REF.tolist()]


def _expected_query_pose(net, reference: str, query: str) -> np.ndarray:
    from mickey_ros.pipeline import Relocalizer

    reloc = Relocalizer(net, device="cpu", seed=0)
    reloc.set_reference(demo_rgb(reference), K_MATRIX)
    res = reloc.estimate_query(demo_rgb(query), K_MATRIX)
    assert res.success, res.reason
    return res.T_0to1


def test_reference_file_pose_equals_estimate_query_and_map_tf_is_the_composition(ros, tiny_net, monkeypatch):
    expected = _expected_query_pose(tiny_net, "im0.png", "im1.png")
    calls = []
    forward = tiny_net.backbone_features
    monkeypatch.setattr(tiny_net, "backbone_features", lambda *a, **k: calls.append(1) or forward(*a, **k))
    h = Harness(ros, tiny_net, **REFERENCE, reference_pose_frame="map", reference_pose=REFERENCE_POSE)
    h.node.tf = FakeBroadcaster()
    try:
        assert h.node.reference_mode and h.node.pub_map_pose is not None
        assert sorted(s.topic_name for s in h.node.subscriptions if "image" in s.topic_name or "camera_info"
                      in s.topic_name) == ["/camera_info1", "/image1"]  # camera 1 only
        assert h.spin_until(lambda: h.node.has_reference), "reference features never extracted"
        assert len(calls) == 1  # the reference file, once
        h.wait_connected(cams=("1",))
        stamps = [h.now_ns(), h.now_ns() + 10**8]
        for i, stamp in enumerate(stamps):
            h.publish("1", "im1.png", stamp)
            assert h.spin_until(lambda: len(h.got["pose"]) > i and len(h.got["map_pose"]) > i), h.node.stats
        assert len(calls) == 1 + len(stamps)  # one network run per query: the reference is not recomputed

        T_map_ref = make_T(quat_wxyz_to_matrix([Q_REF[3], *Q_REF[:3]]), REFERENCE_POSE[:3])
        T_map_query = T_map_ref @ invert_T(expected)  # query camera -> reference camera -> map
        for pose, map_pose, stamp in zip(h.got["pose"], h.got["map_pose"], stamps):
            assert pose.header.frame_id == "mickey_reference"  # frame0 empty: the reference's default frame
            assert (pose.header.stamp.sec, pose.header.stamp.nanosec) == divmod(stamp, 10**9)  # the query's stamp
            np.testing.assert_allclose(pose_matrix(pose.pose.pose), invert_T(expected), atol=1e-9)
            assert map_pose.header.frame_id == "map" and map_pose.header.stamp == pose.header.stamp
            np.testing.assert_allclose(pose_matrix(map_pose.pose.pose), T_map_query, atol=1e-9)
        # TF: one parent for the query child, the map (not the reference frame as well)
        assert [(t.header.frame_id, t.child_frame_id) for t in h.node.tf.sent] == \
            [("map", "cam1_optical_frame_mickey")] * len(stamps)
        np.testing.assert_allclose(transform_matrix(h.node.tf.sent[-1]), T_map_query, atol=1e-9)
        # a point seen by the query camera lands in the map where the reference camera, moved by T_0to1, sees it
        X_query = np.array([0.3, -0.2, 4.0, 1.0])
        np.testing.assert_allclose(transform_matrix(h.node.tf.sent[-1]) @ X_query,
                                   T_map_ref @ (np.linalg.inv(expected) @ X_query), atol=1e-9)
        assert h.got["cloud0"][0].header.frame_id == "mickey_reference"
        assert h.got["cloud1"][0].header.frame_id == "cam1_optical_frame"
        assert h.node.stats["succeeded"] == len(stamps) and h.node.reference_source.startswith("file ")
    finally:
        h.close()


def test_set_reference_service_takes_the_next_image(ros, tiny_net):
    expected = _expected_query_pose(tiny_net, "im0.png", "im1.png")
    h = Harness(ros, tiny_net, reference_mode=True, frame0="ref_optical", child_frame_suffix="_est")
    h.node.tf = FakeBroadcaster()
    try:
        client = h.client("set_reference")
        h.wait_connected(cams=("1",))
        stats = h.node.stats
        h.publish("1", "im1.png", h.now_ns())  # no reference yet: dropped and counted
        assert h.spin_until(lambda: stats["dropped_no_reference"] == 1, 60), stats
        assert h.got["pose"] == []

        future = h.call(client)
        assert h.spin_until(lambda: h.node.requests.waiting("set_reference"), 60)
        h.publish("1", "im0.png", h.now_ns(), frame="cam1_optical_frame")  # this image becomes the reference
        assert h.spin_until(future.done), "~/set_reference never answered"
        answer = future.result()
        assert answer.success and answer.message.startswith("reference set from the live image of cam1_optical_frame")
        assert h.node.has_reference and stats["reference_updates"] == 1 and h.got["pose"] == []

        stamp = h.now_ns()
        h.publish("1", "im1.png", stamp)
        assert h.spin_until(lambda: h.got["pose"]), stats
        pose = h.got["pose"][0]
        assert pose.header.frame_id == "ref_optical"
        np.testing.assert_allclose(pose_matrix(pose.pose.pose), invert_T(expected), atol=1e-9)
        (tf,) = h.node.tf.sent  # relative TF: reference frame -> query frame + the configured suffix
        assert (tf.header.frame_id, tf.child_frame_id) == ("ref_optical", "cam1_optical_frame_est")
        np.testing.assert_allclose(transform_matrix(tf), invert_T(expected), atol=1e-9)
    finally:
        h.close()


def test_set_reference_without_an_image_answers_failure_after_the_timeout(ros, tiny_net):
    h = Harness(ros, tiny_net, reference_mode=True, request_timeout_s=1.0)
    try:
        future = h.call(h.client("set_reference"))
        assert h.spin_until(future.done, 120)
        answer = future.result()
        assert not answer.success and answer.message == "no image within 1 s"
        assert not h.node.requests.waiting("set_reference") and not h.node.has_reference
    finally:
        h.close()


# -- bad reference parameters through the console script (one stderr line, exit code 2) ---------------------------
def _camera_info_yaml(path, width=294, height=224, fx=220.0, distortion=(0.0, 0.0, 0.0, 0.0, 0.0)):
    path.write_text(f"""image_width: {width}
image_height: {height}
camera_name: ref
camera_matrix:
  rows: 3
  cols: 3
  data: [{fx}, 0.0, 146.5, 0.0, 220.0, 111.5, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [{', '.join(str(d) for d in distortion)}]
""")
    return str(path)


@pytest.fixture()
def bad_files(tmp_path):
    (tmp_path / "not_an_image.png").write_text("hello")
    return {"text": str(tmp_path / "not_an_image.png"),
            "info_640": _camera_info_yaml(tmp_path / "ref_640.yaml", width=640, height=480),
            "info_fx0": _camera_info_yaml(tmp_path / "ref_fx0.yaml", fx=0.0)}


IM0 = str(DEMO / "im0.png")
INTRINSICS = ["reference_fx:=220.0", "reference_fy:=220.0", "reference_cx:=146.5", "reference_cy:=111.5"]


@pytest.mark.parametrize(("params", "parameter", "expected"), [
    (["reference_image:=/nonexistent/ref.png", *INTRINSICS], "reference_image", "expected an existing image file"),
    (["reference_image:={text}", *INTRINSICS], "reference_image", "cannot decode"),
    ([f"reference_image:={IM0}", "reference_fx:=0.0", *INTRINSICS[1:]], "reference_fx",
     "expected a focal length > 0 (pixels) for reference_image, got 0.0"),
    ([f"reference_image:={IM0}", "reference_camera_info:={info_640}"], "reference_camera_info",
     "describes 640x480 images, got a 294x224 reference_image"),
    ([f"reference_image:={IM0}", "reference_camera_info:={info_fx0}"], "reference_camera_info",
     "expected focal lengths fx > 0 and fy > 0"),
    ([f"reference_image:={IM0}", *INTRINSICS[:2], "reference_cx:=500.0", "reference_cy:=111.5"], "reference_cx",
     "expected a principal point inside the 294x224 reference image"),
    ([f"reference_image:={IM0}", *INTRINSICS, "reference_pose_frame:=map", "reference_pose:=[1.0, 2.0, 3.0]"],
     "reference_pose", "expected 7 numbers [x, y, z, qx, qy, qz, qw], got 3"),
], ids=["missing", "unreadable", "zero-focal", "K-size", "yaml-zero-focal", "cx-outside", "pose-length"])
def test_bad_reference_parameter_is_one_stderr_line_and_exit_2(subprocess_ros_env, bad_files, params, parameter,
                                                               expected):
    assert_one_line_exit_2(["checkpoint:=random", "device:=cpu", *[p.format(**bad_files) for p in params]],
                           parameter, expected)