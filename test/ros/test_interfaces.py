"""RelativePose.msg: one definition, a buildable interface package, and rosbags can (de)serialise it."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

typesys = pytest.importorskip("rosbags.typesys")

from mickey_ros.cli import main  # noqa: E402
from mickey_ros.ros.interfaces import make_interface_package, message_definition, register_in_typestore  # noqa: E402

from conftest import REPO  # noqa: E402


def test_top_level_msg_equals_the_packaged_definition():
    assert (REPO / "msg" / "RelativePose.msg").read_text() == message_definition()


def test_registered_type_round_trips_through_cdr():
    ts = typesys.get_typestore(typesys.Stores.ROS2_HUMBLE)
    register_in_typestore(ts)
    RP = ts.types["mickey_ros_msgs/msg/RelativePose"]
    assert RP.STATUS_OK == 0 and RP.STATUS_NO_POSE == 1
    T = ts.types
    hdr = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=3, nanosec=4), frame_id="cam0_optical_frame")
    pose = T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=1.0, y=2.0, z=3.0),
                                       orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
    msg = RP(header=hdr, child_frame_id="cam1_optical_frame", stamp1=T["builtin_interfaces/msg/Time"](sec=3, nanosec=9),
             pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
             num_matches=2048, num_inliers=900, confidence=np.float32(0.5), status=0, reason="")
    back = ts.deserialize_cdr(ts.serialize_cdr(msg, RP.__msgtype__), RP.__msgtype__)
    assert (back.num_inliers, back.stamp1.nanosec, back.pose.pose.position.z) == (900, 9, 3.0)


def test_make_interfaces_writes_an_ament_cmake_package(tmp_path, capsys):
    assert main(["make-interfaces", str(tmp_path)]) == 0
    root = tmp_path / "mickey_ros_msgs"
    xml = ET.parse(root / "package.xml").getroot()
    assert xml.findtext("name") == "mickey_ros_msgs" and xml.find("export/build_type").text == "ament_cmake"
    assert xml.findtext("member_of_group") == "rosidl_interface_packages"
    cmake = (root / "CMakeLists.txt").read_text()
    assert 'rosidl_generate_interfaces(${PROJECT_NAME}\n  "msg/RelativePose.msg"' in cmake
    assert (root / "msg" / "RelativePose.msg").read_text() == message_definition()
    assert make_interface_package(tmp_path) == root  # rewriting its own output is fine
    (tmp_path / "other" / "mickey_ros_msgs").mkdir(parents=True)
    assert main(["make-interfaces", str(tmp_path / "other")]) == 2
    assert "exists and is not a mickey_ros_msgs package" in capsys.readouterr().err
