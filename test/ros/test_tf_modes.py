"""TF modes through the TF message builder (tf2_ros is not pip-installable): frame ids for none / relative /
child_frame, the transform itself, with rosbags classes (CDR round trip) and real rclpy classes."""
from __future__ import annotations

import numpy as np
import pytest

from mickey_ros.geometry.se3 import invert_T, make_T, quat_wxyz_to_matrix
from mickey_ros.ros.builders import DEFAULT_CHILD_SUFFIX, TF_MODES, MessageTypes, TfNaming, header

T_0to1 = make_T(quat_wxyz_to_matrix([0.9, 0.1, -0.3, 0.2]), [0.4, -0.1, 1.5])


def _typestore_types():
    typesys = pytest.importorskip("rosbags.typesys")
    ts = typesys.get_typestore(typesys.Stores.ROS2_HUMBLE)
    return ts, MessageTypes.from_typestore(ts)


@pytest.mark.parametrize(("naming", "expected"), [
    (TfNaming(mode="none"), []),
    (TfNaming(), [("cam0_optical_frame", "cam1_optical_frame_mickey")]),
    (TfNaming(mode="relative", child_suffix="_est"), [("cam0_optical_frame", "cam1_optical_frame_est")]),
    (TfNaming(child_frame="robot_b/camera_mickey"), [("cam0_optical_frame", "robot_b/camera_mickey")]),
    (TfNaming(mode="none", child_frame="robot_b/camera_mickey"), []),
])
def test_frame_ids_per_mode(naming, expected):
    ts, types = _typestore_types()
    out = naming.transforms(types, header(types, 1_700_000_000_000_000_123, "cam0_optical_frame"),
                            "cam1_optical_frame", T_0to1)
    out = [ts.deserialize_cdr(ts.serialize_cdr(t, "geometry_msgs/msg/TransformStamped"),
                              "geometry_msgs/msg/TransformStamped") for t in out]
    assert [(t.header.frame_id, t.child_frame_id) for t in out] == expected
    for t in out:  # the image-0 stamp, and the pose of (estimated) camera 1 in camera 0
        assert (t.header.stamp.sec, t.header.stamp.nanosec) == (1_700_000_000, 123)
        r, tr = t.transform.rotation, t.transform.translation
        np.testing.assert_allclose(make_T(quat_wxyz_to_matrix([r.w, r.x, r.y, r.z]), [tr.x, tr.y, tr.z]),
                                   invert_T(T_0to1), atol=1e-9)


def test_the_child_is_never_camera1s_own_frame_by_default():
    assert DEFAULT_CHILD_SUFFIX == "_mickey" and TF_MODES == ("none", "relative")
    assert TfNaming().child("cam1_optical_frame") != "cam1_optical_frame"
    assert TfNaming(child_frame="x").child("cam1_optical_frame") == "x"  # explicit override wins over the suffix


def test_unknown_mode_is_refused():
    _, types = _typestore_types()
    with pytest.raises(ValueError, match="tf_mode: expected one of none, relative"):
        TfNaming(mode="map").transforms(types, header(types, 0, "c0"), "c1", T_0to1)


def test_rclpy_message_classes():
    pytest.importorskip("rclpy")
    from geometry_msgs.msg import TransformStamped

    types = MessageTypes.from_rclpy()
    (tf,) = TfNaming().transforms(types, header(types, 5, "front_optical"), "rear_optical", T_0to1)
    assert isinstance(tf, TransformStamped)
    assert (tf.header.frame_id, tf.child_frame_id, tf.header.stamp.nanosec) == ("front_optical", "rear_optical_mickey", 5)
