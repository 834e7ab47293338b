"""Parameters of ``relocalize_node``: names, defaults, descriptions and the rules they are checked by (no ROS
needed: the rules are pure; std_srvs is only looked up).

Every rule raises :class:`~mickey_ros.ros.node_common.ParameterError` with one line naming the parameter; the node
applies them at start-up (exit code 2 from the console script) and on every ``set_parameters``. File contents (the
reference image, its CameraInfo YAML) are checked once at start-up by :func:`mickey_ros.ros.reference.load_reference`.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mickey_ros.model import PRESETS
from mickey_ros.pipeline import DEFAULT_COVARIANCE_SCALE, PRECISIONS, REFINE_MODES
from mickey_ros.ros import builders
from mickey_ros.ros.node_common import ParameterError, ParameterRules, check_frame_id
from mickey_ros.ros.reference import IDENTITY_POSE, check_reference_parameters

PARAMETERS: dict[str, tuple[Any, str]] = {
    "checkpoint": ("", "mickey_ros or official checkpoint; empty = the bundled default network; "
                       "'random' = a random-init preset (testing only)"),
    "backbone_weights": ("", "dinov2_vitl14_pretrain.pth for the official mickey.ckpt"),
    "preset": ("tiny", "network preset used with checkpoint 'random'"),
    "device": ("auto", "auto, cpu, cuda, cuda:N"),
    "precision": ("auto", "auto, fp32, bf16, fp16 (backbone autocast)"),
    "depth_flip": (False, "average each image's depth with its mirror image's (twice the network time)"),
    "refine": ("auto", "two-view bundle adjustment of the solver's pose: auto (on for every network but the "
                       "official one), on, off"),
    "min_confidence": (-1.0, "no pose below this confidence (out of the network's domain; a diagnostic instead): "
                             "negative = auto (the value calibrated for the bundled network, 0 for any other), "
                             "0 = keep every pose"),
    "seed": (0, "solver seed"),
    "covariance_scale": (DEFAULT_COVARIANCE_SCALE, "factor on the propagated pose covariance (calibrated for the "
                                                   "bundled network; training/evaluate.py reports another one's)"),
    "slop": (0.05, "s, largest stamp difference between the two cameras"),
    "max_age": (1.0, "s, pairs older than this when inference starts are dropped"),
    "frame0": ("", "optical frame of camera 0 (empty: image header frame_id; reference mode: mickey_reference)"),
    "frame1": ("", "optical frame of camera 1 (empty: image header frame_id)"),
    "reliability": ("best_effort", "input QoS reliability: best_effort or reliable"),
    "compressed": (False, "subscribe to sensor_msgs/CompressedImage instead of Image"),
    "undistort": (False, "undistort images with non-zero distortion (else they are rejected)"),
    "tf_mode": ("relative", "TF output: none, or relative (camera-0 optical -> the TF child below)"),
    "child_frame_suffix": (builders.DEFAULT_CHILD_SUFFIX,
                           "TF child = camera 1's optical frame + this suffix (never camera 1's own frame)"),
    "child_frame": ("", "explicit TF child frame (overrides camera 1's optical frame + child_frame_suffix)"),
    "publish_clouds": (True, "publish the keypoint clouds"),
    "warmup": (True, "run one inference on a synthetic pair at start-up, before 'ready'"),
    "autostart": (True, "configure and activate at start-up (lifecycle node); false: stay unconfigured until a "
                        "lifecycle manager (or ros2 lifecycle set) calls ~/change_state"),
    "mode": ("continuous", "continuous: process pairs as they come (max_rate); on_demand: only the next pair after "
                           "each ~/relocalize call"),
    "max_rate": (0.0, "Hz of image-stamp time, continuous mode: pairs closer than 1/max_rate to the last accepted one "
                      "are dropped and counted; 0 = every pair"),
    "request_timeout_s": (10.0, "s that ~/relocalize and ~/set_reference wait for the next pair or image before "
                                "answering failure"),
    "reference_mode": (False, "one live camera (image1, camera_info1) against a reference image (reference_image or "
                              "~/set_reference); on whenever reference_image is set"),
    "reference_image": ("", "reference image file (camera 0 of every pose); empty: none (two live cameras unless "
                            "reference_mode)"),
    "reference_camera_info": ("", "CameraInfo YAML file (camera_calibration format) of reference_image"),
    "reference_fx": (0.0, "px, focal length x of reference_image (instead of reference_camera_info)"),
    "reference_fy": (0.0, "px, focal length y of reference_image"),
    "reference_cx": (0.0, "px, principal point x of reference_image"),
    "reference_cy": (0.0, "px, principal point y of reference_image"),
    "reference_pose_frame": ("", "map frame of reference_pose; non-empty: TF <this frame> -> query child and "
                                 "~/map_pose"),
    "reference_pose": (list(IDENTITY_POSE), "T_map_ref, the reference camera's optical frame in reference_pose_frame: "
                                            "[x, y, z, qx, qy, qz, qw] (m, ROS quaternion order)"),
}
RANGES = {"min_confidence": (-1.0, 1.0), "covariance_scale": (1e-6, 1e9), "slop": (0.0, 10.0), "max_age": (0.0, 3600.0), "max_rate": (0.0, 1000.0), "request_timeout_s": (0.01, 3600.0),
          **{f"reference_{k}": (0.0, 1e6) for k in ("fx", "fy", "cx", "cy")}}
INT_RANGES = {"seed": (0, 2**31 - 1)}
RELIABILITIES = ("best_effort", "reliable")
MODES = ("continuous", "on_demand")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def trigger_type() -> Any:
    """``std_srvs.srv.Trigger``, or ``None`` when std_srvs is not importable."""
    try:
        from std_srvs.srv import Trigger
    except ImportError:
        return None
    return Trigger


def check_configuration(p: Mapping[str, Any]) -> None:
    """Rules beyond single values: files exist, the device is there, the TF child is a frame of its own, the
    reference parameters agree, on_demand has its service type."""
    import torch

    from mickey_ros.pipeline import resolve_device

    if p["checkpoint"] not in ("", "random") and not Path(p["checkpoint"]).is_file():
        raise ParameterError(f"checkpoint: expected an existing checkpoint file, '' (the bundled default network) "
                             f"or 'random', got {p['checkpoint']!r}")
    if p["backbone_weights"] and not Path(p["backbone_weights"]).is_file():
        raise ParameterError(f"backbone_weights: expected an existing file or '', got {p['backbone_weights']!r}")
    if not _DEVICE.fullmatch(p["device"]):
        raise ParameterError(f"device: expected auto, cpu, cuda or cuda:N, got {p['device']!r}")
    device = resolve_device(p["device"])  # InputError "device: ..." when cuda is asked for without a GPU
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ParameterError(f"device: expected a GPU index below {torch.cuda.device_count()}, got {p['device']!r}")
    for name in ("frame0", "frame1", "child_frame", "reference_pose_frame"):
        check_frame_id(name, p[name])
    check_frame_id("child_frame_suffix", p["child_frame_suffix"])
    if p["tf_mode"] == "relative" and not p["child_frame"] and not p["child_frame_suffix"]:
        raise ParameterError("child_frame_suffix: expected a non-empty suffix while child_frame is empty (an empty "
                             "one makes camera 1's own optical frame the TF child, a second parent in a robot's "
                             "tree); set child_frame to name the child explicitly")
    if p["child_frame"] and p["child_frame"] in (p["frame0"], p["frame1"]):
        raise ParameterError(f"child_frame: expected a frame other than frame0 and frame1, got {p['child_frame']!r}")
    check_reference_parameters(p)
    if p["reference_pose_frame"] and p["reference_pose_frame"] in (p["child_frame"], p["frame0"], p["frame1"]):
        raise ParameterError(f"reference_pose_frame: expected a frame other than frame0, frame1 and child_frame, got "
                             f"{p['reference_pose_frame']!r}")
    if p["mode"] == "on_demand" and trigger_type() is None:
        raise ParameterError("mode: on_demand needs std_srvs (std_srvs/srv/Trigger for ~/relocalize), which is not "
                             "importable; install ros-<distro>-std-srvs (or pip install ros-std-srvs)")


RULES = ParameterRules(
    float_ranges=RANGES, int_ranges=INT_RANGES,
    choices={"reliability": RELIABILITIES, "tf_mode": builders.TF_MODES, "precision": PRECISIONS,
             "preset": tuple(PRESETS), "mode": MODES,
             "refine": REFINE_MODES},
    read_only=frozenset({"checkpoint", "backbone_weights", "preset", "device", "precision", "refine",
                         "min_confidence", "reliability",
                         "compressed", "warmup", "autostart", "mode", "reference_mode", "reference_image",
                         "reference_camera_info", "reference_fx", "reference_fy", "reference_cx", "reference_cy",
                         "reference_pose_frame", "reference_pose"}),
    check=check_configuration,
)
RENAMED = {"publish_tf": "tf_mode: none | relative"}

SUBSCRIBES = (
    ("image0", "sensor_msgs/Image", "camera 0 (CompressedImage with compressed: true; not in reference mode)"),
    ("camera_info0", "sensor_msgs/CameraInfo", "camera 0's intrinsics (not in reference mode)"),
    ("image1", "sensor_msgs/Image", "camera 1 (the query camera in reference mode)"),
    ("camera_info1", "sensor_msgs/CameraInfo", "camera 1's intrinsics"),
)
PUBLISHES = (
    ("/tf", "tf2_msgs/TFMessage", "camera-0 optical frame -> camera-1 optical frame + child_frame_suffix "
                                  "(tf_mode relative; needs tf2_ros)"),
    ("~/relative_pose", "geometry_msgs/PoseWithCovarianceStamped", "camera 1's pose in camera 0's optical frame"),
    ("~/relative_pose_full", "mickey_ros_msgs/RelativePose",
     "the pose with confidence, counts and both stamps (when mickey_ros_msgs is built)"),
    ("~/map_pose", "geometry_msgs/PoseWithCovarianceStamped", "camera 1 in reference_pose_frame (when it is set)"),
    ("~/keypoints0", "sensor_msgs/PointCloud2", "camera 0's 3D keypoints, green = inlier (publish_clouds)"),
    ("~/keypoints1", "sensor_msgs/PointCloud2", "camera 1's 3D keypoints"),
    ("~/num_inliers", "std_msgs/UInt32", "inliers of each pose"),
    ("/diagnostics", "diagnostic_msgs/DiagnosticArray", "counters, latency, drops"),
)
SERVICES = (
    ("~/relocalize", "std_srvs/Trigger", "mode on_demand: process the next pair and answer"),
    ("~/set_reference", "std_srvs/Trigger", "reference mode: the next live image becomes the reference"),
    ("~/change_state, ~/get_state, ...", "lifecycle_msgs", "lifecycle (ros2 lifecycle set/get; autostart false)"),
)
