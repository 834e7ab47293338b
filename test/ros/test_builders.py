"""Message builders: serialised by rosbags (CDR) and decoded back, values and conventions checked."""
from __future__ import annotations

import numpy as np
import pytest

typesys = pytest.importorskip("rosbags.typesys")

from mickey_ros.geometry.se3 import make_T, quat_wxyz_to_matrix  # noqa: E402
from mickey_ros.ros.builders import (  # noqa: E402
    MessageTypes,
    header,
    pointcloud2,
    pose_with_covariance_from_relative_pose,
    transform_stamped_from_relative_pose,
)

TS = typesys.get_typestore(typesys.Stores.ROS2_HUMBLE)
TYPES = MessageTypes.from_typestore(TS)


def _roundtrip(msg, name):
    return TS.deserialize_cdr(TS.serialize_cdr(msg, name), name)


def _T_0to1() -> np.ndarray:
    return make_T(quat_wxyz_to_matrix([0.9, 0.1, -0.3, 0.2]), [0.4, -0.1, 1.5])


def test_header_stamp_split():
    h = header(TYPES, 1_700_000_000_123_456_789, "cam0_optical_frame")
    assert (h.stamp.sec, h.stamp.nanosec, h.frame_id) == (1_700_000_000, 123_456_789, "cam0_optical_frame")


def test_pointcloud2_serialises_and_decodes():
    pts = np.random.default_rng(0).normal(size=(9, 3))
    rgb = np.random.default_rng(1).integers(0, 256, (9, 3), dtype=np.uint8)
    msg = _roundtrip(pointcloud2(TYPES, header(TYPES, 5, "cam1_optical_frame"), pts, rgb=rgb),
                     "sensor_msgs/msg/PointCloud2")
    assert msg.header.frame_id == "cam1_optical_frame" and (msg.height, msg.width, msg.point_step) == (1, 9, 16)
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb"] and msg.row_step == 9 * 16
    rec = np.frombuffer(msg.data.tobytes(), dtype=np.dtype({"names": ["x", "y", "z", "rgb"], "formats": ["<f4", "<f4", "<f4", "<u4"]}))
    np.testing.assert_allclose(np.stack([rec["x"], rec["y"], rec["z"]], 1), pts, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(rec["rgb"] >> 16 & 255, rgb[:, 0])


def test_tf_is_the_pose_of_camera1_in_camera0():
    T = _T_0to1()
    msg = _roundtrip(transform_stamped_from_relative_pose(TYPES, header(TYPES, 7, "cam0_optical_frame"),
                                                          "cam1_optical_frame", T),
                     "geometry_msgs/msg/TransformStamped")
    r, tr = msg.transform.rotation, msg.transform.translation
    T_1to0 = make_T(quat_wxyz_to_matrix([r.w, r.x, r.y, r.z]), [tr.x, tr.y, tr.z])
    np.testing.assert_allclose(T_1to0 @ T, np.eye(4), atol=1e-9)
    # camera 1's centre expressed in camera 0 is the TF translation
    c1_in_0 = -T[:3, :3].T @ T[:3, 3]
    np.testing.assert_allclose([tr.x, tr.y, tr.z], c1_in_0, atol=1e-9)
    assert msg.child_frame_id == "cam1_optical_frame"


def test_pose_with_covariance_matches_tf_and_carries_covariance():
    T = _T_0to1()
    cov = np.diag([0.01, 0.01, 0.02, 0.001, 0.001, 0.001])
    msg = _roundtrip(pose_with_covariance_from_relative_pose(TYPES, header(TYPES, 7, "cam0_optical_frame"), T, cov),
                     "geometry_msgs/msg/PoseWithCovarianceStamped")
    p, o = msg.pose.pose.position, msg.pose.pose.orientation
    np.testing.assert_allclose([p.x, p.y, p.z], -T[:3, :3].T @ T[:3, 3], atol=1e-9)
    # orientation = rotation of camera 1 in camera 0 = R_0to1^T, i.e. the conjugate of the quaternion T was built
    # from, in ROS order (x, y, z, w) and with w >= 0 (matrix_to_quat_wxyz's documented sign)
    q = np.array([0.9, 0.1, -0.3, 0.2]) / np.linalg.norm([0.9, 0.1, -0.3, 0.2])
    np.testing.assert_allclose([o.x, o.y, o.z, o.w], [-q[1], -q[2], -q[3], q[0]], atol=1e-12)
    np.testing.assert_allclose(quat_wxyz_to_matrix([o.w, o.x, o.y, o.z]), T[:3, :3].T, atol=1e-12)
    tf = transform_stamped_from_relative_pose(TYPES, header(TYPES, 7, "cam0_optical_frame"), "c1", T).transform
    assert (o.x, o.y, o.z, o.w) == (tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w)
    np.testing.assert_array_equal(np.asarray(msg.pose.covariance).reshape(6, 6), cov)
    unknown = pose_with_covariance_from_relative_pose(TYPES, header(TYPES, 7, "c"), T)
    assert unknown.pose.covariance[0] == -1.0


_PYTHON_TYPES = {"float32": float, "float64": float, "bool": bool, "string": str,
                 **{f"{s}int{n}": int for s in ("", "u") for n in (8, 16, 32, 64)}}


def _rosidl_type_errors(msg, name: str, store, path: str = "") -> list[str]:
    """Fields whose value is not of the Python type rosidl's generated code wants (float for float32/64, never a
    numpy scalar: its C converter asserts PyFloat_Check and aborts the process); arrays as rosbags needs them."""
    errors = []
    for field, (kind, spec) in store.fielddefs[name][1]:
        value, where = getattr(msg, field), f"{path}{field}"
        if kind.name == "NAME":
            errors += _rosidl_type_errors(value, spec, store, f"{where}.")
        elif kind.name == "BASE":
            if type(value) is not _PYTHON_TYPES[spec[0]]:
                errors.append(f"{name} {where}: {spec[0]} wants {_PYTHON_TYPES[spec[0]].__name__}, got "
                              f"{type(value).__module__}.{type(value).__name__}")
        elif spec[0][0].name == "NAME":  # array or sequence of messages
            for i, item in enumerate(value):
                errors += _rosidl_type_errors(item, spec[0][1], store, f"{where}[{i}].")
        elif not (isinstance(value, np.ndarray) and value.dtype == np.dtype(spec[0][1][0])):
            errors.append(f"{name} {where}: wants a numpy {spec[0][1][0]} array, got {type(value).__name__}")
    return errors


def test_every_built_message_has_the_python_types_the_generated_code_wants():
    """issue 29: np.float32 in RelativePose.confidence aborted the node (the generated C converter's assertion)."""
    from message_samples import built_messages

    from mickey_ros.ros.interfaces import register_in_typestore

    store = typesys.get_typestore(typesys.Stores.ROS2_HUMBLE)
    register_in_typestore(store)
    messages = built_messages(MessageTypes.from_typestore(store), store.types["mickey_ros_msgs/msg/RelativePose"])
    assert {name for name, _ in messages} == {
        "geometry_msgs/msg/TransformStamped", "geometry_msgs/msg/PoseWithCovarianceStamped",
        "sensor_msgs/msg/PointCloud2", "mickey_ros_msgs/msg/RelativePose"}
    errors = [e for name, msg in messages for e in _rosidl_type_errors(msg, name, store)]
    assert not errors, errors
    for name, msg in messages:  # and rosbags writes them
        store.deserialize_cdr(store.serialize_cdr(msg, name), name)
