"""``relocalize_node``: two camera streams + CameraInfo in, the metric relative pose out (rclpy).

Inputs (relative names, remap them): ``image0``, ``camera_info0``, ``image1``, ``camera_info1``
(``sensor_msgs/Image``, or ``CompressedImage`` with ``compressed: true``). Outputs: TF as ``tf_mode`` says
(default ``relative``: camera-0 optical -> camera-1 optical + ``child_frame_suffix``, so a frame of the robot's
tree never gets a second parent; needs tf2_ros), ``~/relative_pose`` (PoseWithCovarianceStamped),
``~/keypoints0`` / ``~/keypoints1`` (PointCloud2, each in its own optical frame), ``~/num_inliers``
(std_msgs/UInt32), ``/diagnostics`` and, when the ``mickey_ros_msgs`` interface package is built,
``~/relative_pose_full`` (``mickey_ros_msgs/RelativePose``: pose, confidence, counts, both stamps). Stamps are the input image stamps.

Subscription callbacks only feed the synchroniser and keep the newest complete pair; one worker thread runs
the model, so the executor never blocks on inference. Pairs older than ``max_age`` when the worker takes
them, and pairs replaced by a newer one before the worker got to them, are dropped and counted.

Every parameter is checked at start-up and on ``set_parameters`` (:mod:`mickey_ros.ros.node_common`). Start-up
logs the network, device, precision, inputs with their QoS and the TF frames, runs one warm-up inference
(``warmup``), then logs ``ready``.
"""
from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from mickey_ros.errors import MickeyError
from mickey_ros.model import PRESETS
from mickey_ros.pipeline import PRECISIONS
from mickey_ros.ros import builders
from mickey_ros.ros.convert import Undistorter, camera_info_to_model, check_image_matches_info, message_to_rgb
from mickey_ros.ros.node_common import (
    STOP_TIMEOUT_S,
    ParameterError,
    ParameterRules,
    check_frame_id,
    declare_parameters,
    relative_pose_class,
    run_node,
    warn_unknown_overrides,
    watch_parameters,
)
from mickey_ros.ros.sync import PairSynchronizer, SyncedPair

PARAMETERS: dict[str, tuple[Any, str]] = {
    "checkpoint": ("", "mickey_ros or official checkpoint; empty = the bundled default network; "
                       "'random' = a random-init preset (testing only)"),
    "backbone_weights": ("", "dinov2_vitl14_pretrain.pth for the official mickey.ckpt"),
    "preset": ("tiny", "network preset used with checkpoint 'random'"),
    "device": ("auto", "auto, cpu, cuda, cuda:N"),
    "precision": ("auto", "auto, fp32, bf16, fp16 (backbone autocast)"),
    "seed": (0, "solver seed"),
    "slop": (0.05, "s, largest stamp difference between the two cameras"),
    "max_age": (1.0, "s, pairs older than this when inference starts are dropped"),
    "frame0": ("", "optical frame of camera 0 (empty: image header frame_id)"),
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
}
RANGES = {"slop": (0.0, 10.0), "max_age": (0.0, 3600.0)}
INT_RANGES = {"seed": (0, 2**31 - 1)}
RELIABILITIES = ("best_effort", "reliable")
QOS_DEPTH = 5
WARMUP_HW = (224, 294)  # synthetic warm-up pair (pixels); loads the kernels, the result is ignored
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _check_configuration(p: Mapping[str, Any]) -> None:
    """Rules beyond single values: files exist, the device is there, the TF child is a frame of its own."""
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
    for name in ("frame0", "frame1", "child_frame"):
        check_frame_id(name, p[name])
    check_frame_id("child_frame_suffix", p["child_frame_suffix"])
    if p["tf_mode"] == "relative" and not p["child_frame"] and not p["child_frame_suffix"]:
        raise ParameterError("child_frame_suffix: expected a non-empty suffix while child_frame is empty (an empty "
                             "one makes camera 1's own optical frame the TF child, a second parent in a robot's "
                             "tree); set child_frame to name the child explicitly")
    if p["child_frame"] and p["child_frame"] in (p["frame0"], p["frame1"]):
        raise ParameterError(f"child_frame: expected a frame other than frame0 and frame1, got {p['child_frame']!r}")


RULES = ParameterRules(
    float_ranges=RANGES, int_ranges=INT_RANGES,
    choices={"reliability": RELIABILITIES, "tf_mode": builders.TF_MODES, "precision": PRECISIONS,
             "preset": tuple(PRESETS)},
    read_only=frozenset({"checkpoint", "backbone_weights", "preset", "device", "precision", "reliability",
                         "compressed", "warmup"}),
    check=_check_configuration,
)
RENAMED = {"publish_tf": "tf_mode: none | relative"}


def _load_network(p: Mapping[str, Any]) -> tuple[Any, str]:
    """The network the parameters name, and how to say which it is in the start-up log."""
    from mickey_ros.errors import CheckpointError
    from mickey_ros.model import build_model, load_checkpoint
    from mickey_ros.model.default import DEFAULT_WEIGHTS, load_default_network

    if p["checkpoint"] == "random":
        return build_model(p["preset"]), f"random-init preset '{p['preset']}' (checkpoint 'random', testing only)"
    try:
        if p["checkpoint"]:
            backbone = f", backbone {p['backbone_weights']}" if p["backbone_weights"] else ""
            net = load_checkpoint(p["checkpoint"], backbone_weights=p["backbone_weights"] or None)
            return net, f"checkpoint {p['checkpoint']}{backbone}"
        return load_default_network(), f"bundled default network {DEFAULT_WEIGHTS.name}"
    except CheckpointError as err:
        text = str(err)
        raise ParameterError(text if text.startswith(("checkpoint", "backbone")) else f"checkpoint: {text}") from err


def _precision_in_effect(precision: str, device: Any) -> str:
    if precision != "auto":
        return f"{precision} backbone"
    return "auto (fp16 backbone)" if device.type == "cuda" else "auto (fp32)"


class RelocalizeNode(Node):
    """The relocalisation node; ``net`` may be given directly (tests), else it is loaded from parameters."""

    def __init__(self, net: Any = None, **kwargs: Any) -> None:
        super().__init__("mickey_relocalizer", **kwargs)
        # first, so that destroy_node works on a node whose construction failed (rclpy destroys it at shutdown)
        self._lock = threading.Condition()
        self._slot: SyncedPair | None = None
        self._running = False
        self._worker: threading.Thread | None = None
        self._warned: set[str] = set()
        self.fatal_error: MickeyError | None = None  # set by the worker when start-up fails after __init__
        p = self.params = declare_parameters(self, PARAMETERS, RULES)  # ParameterError before anything is logged
        from mickey_ros.model.mickey import preset_name
        from mickey_ros.pipeline import Relocalizer

        net, network = _load_network(p) if net is None else (net, "given by the caller")
        self.reloc = Relocalizer(net, device=p["device"], seed=p["seed"], precision=p["precision"])
        self.types = builders.MessageTypes.from_rclpy()
        self.sync = PairSynchronizer(slop=p["slop"])
        self.undistort = Undistorter()
        self.tf_naming = self._tf_naming()
        self.stats = {"received_pairs": 0, "processed": 0, "succeeded": 0, "dropped_stale": 0,
                      "dropped_replaced": 0, "rejected": 0, "last_latency_s": float("nan"),
                      "last_input_age_s": float("nan"), "last_inliers": 0}

        from geometry_msgs.msg import PoseWithCovarianceStamped
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
        from std_msgs.msg import UInt32

        qos = QoSProfile(depth=QOS_DEPTH, reliability=ReliabilityPolicy.RELIABLE) \
            if p["reliability"] == "reliable" else qos_profile_sensor_data
        image_type = CompressedImage if p["compressed"] else Image
        subs = [self.create_subscription(msg_type, topic, lambda msg, s=stream: self._on_message(s, msg), qos)
                for stream, topic, msg_type in (("image0", "image0", image_type), ("info0", "camera_info0", CameraInfo),
                                                ("image1", "image1", image_type), ("info1", "camera_info1", CameraInfo))]
        self.pub_pose = self.create_publisher(PoseWithCovarianceStamped, "~/relative_pose", 10)
        self.pub_cloud0 = self.create_publisher(PointCloud2, "~/keypoints0", 10)
        self.pub_cloud1 = self.create_publisher(PointCloud2, "~/keypoints1", 10)
        self.pub_inliers = self.create_publisher(UInt32, "~/num_inliers", 10)
        self.pub_diag = self._diagnostics_publisher()
        self.relative_pose_class = self._relative_pose_class()
        self.pub_full = (self.create_publisher(self.relative_pose_class, "~/relative_pose_full", 10)
                         if self.relative_pose_class is not None else None)
        self.tf = self._tf_broadcaster(warn=p["tf_mode"] != "none")

        log = self.get_logger()
        log.info(f"network: {network}, preset {preset_name(self.reloc.net.config)}")
        log.info(f"device: {self.reloc.device}, precision: {_precision_in_effect(p['precision'], self.reloc.device)}")
        log.info("inputs: " + ", ".join(f"{s.topic_name} ({s.msg_type.__name__})" for s in subs)
                 + f"; QoS {p['reliability']}, depth {qos.depth}")
        log.info(f"TF: {self._tf_description()}")
        watch_parameters(self, PARAMETERS, RULES, self.params, self._apply_parameters)
        warn_unknown_overrides(self, RENAMED)
        # the worker warms up, then logs "ready": the executor (and so SIGINT/SIGTERM) is never held by inference
        self._fatal = self.create_guard_condition(self._raise_fatal_error)
        self._running = True
        self._worker = threading.Thread(target=self._work, name="mickey_worker", daemon=True)
        self._worker.start()

    # -- start-up and parameters ----------------------------------------------------------------------------
    def _start_up(self) -> bool:
        """Worker thread, once: the warm-up inference, then "ready". A failure is re-raised on the executor thread
        (:meth:`_raise_fatal_error`), so the console script reports it in one line and exits non-zero."""
        try:
            if self.params["warmup"]:
                self._warm_up()
        except MickeyError as err:
            self.fatal_error = err
            self._fatal.trigger()
            return False
        if self._running:
            self.get_logger().info("ready")
        return True

    def _raise_fatal_error(self) -> None:
        if self.fatal_error is not None:
            raise self.fatal_error

    def _warm_up(self) -> None:
        """One inference on a synthetic pair: the first one pays for kernel loading and allocator growth."""
        h, w = WARMUP_HW
        rng = np.random.default_rng(0)
        image0, image1 = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2))
        K = np.array([[0.8 * w, 0.0, w / 2], [0.0, 0.8 * w, h / 2], [0.0, 0.0, 1.0]])
        start = time.perf_counter()
        try:
            self.reloc.estimate(image0, K, image1, K)
        except RuntimeError as err:  # e.g. CUDA out of memory, no kernel image for this GPU
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ParameterError(f"device: warm-up inference on {self.reloc.device} failed: {first}") from err
        self.get_logger().info(f"warm-up inference: {time.perf_counter() - start:.2f} s")

    def _tf_naming(self) -> builders.TfNaming:
        p = self.params
        return builders.TfNaming(mode=p["tf_mode"], child_suffix=p["child_frame_suffix"], child_frame=p["child_frame"])

    def _tf_description(self) -> str:
        naming = self.tf_naming
        if naming.mode == "none":
            return "none (tf_mode: none)"
        parent = self.params["frame0"] or "<image0 frame_id>"
        child = naming.child(self.params["frame1"] or "<image1 frame_id>")
        where = "" if self.tf is not None else " (not broadcast: tf2_ros is not importable)"
        return f"{naming.mode}, {parent} -> {child}{where}"

    def _apply_parameters(self, changed: set[str]) -> None:
        """Parameters accepted by ``set_parameters`` take effect from the next pair on."""
        if "slop" in changed:
            self.sync.slop_ns = int(round(self.params["slop"] * 1e9))
        if "seed" in changed:
            self.reloc.seed = self.params["seed"]
        if changed & {"tf_mode", "child_frame_suffix", "child_frame", "frame0", "frame1"}:
            self.tf_naming = self._tf_naming()
            self.get_logger().info(f"TF: {self._tf_description()}")

    # -- optional outputs ---------------------------------------------------------------------------------
    def _tf_broadcaster(self, warn: bool) -> Any:
        """A broadcaster whenever tf2_ros is there (``tf_mode`` may change at run time), else ``None``."""
        try:
            from tf2_ros import TransformBroadcaster
        except ImportError:
            if warn:
                self.get_logger().warning("tf2_ros is not importable: TF output disabled (pose topics still "
                                          "published)")
            return None
        return TransformBroadcaster(self)

    def _relative_pose_class(self) -> Any:
        cls = relative_pose_class()
        if cls is None:
            self.get_logger().info("mickey_ros_msgs is not built: ~/relative_pose_full (RelativePose) is not published "
                                   "(build it with `mickey-ros make-interfaces DIR` and colcon)")
        return cls

    def _diagnostics_publisher(self) -> Any:
        try:
            from diagnostic_msgs.msg import DiagnosticArray
        except ImportError:
            self.get_logger().warning("diagnostic_msgs is not importable: diagnostics disabled")
            return None
        return self.create_publisher(DiagnosticArray, "/diagnostics", 10)

    # -- callbacks (executor thread): only bookkeeping -------------------------------------------------------
    def _on_message(self, stream: str, msg: Any) -> None:
        stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
        pair = self.sync.add(stream, stamp, msg)
        if pair is None:
            return
        with self._lock:
            self.stats["received_pairs"] += 1
            if self._slot is not None:
                self.stats["dropped_replaced"] += 1
            self._slot = pair
            self._lock.notify()

    # -- worker thread -----------------------------------------------------------------------------------
    def _work(self) -> None:
        if not self._start_up():
            return
        while self._running:
            with self._lock:
                while self._slot is None and self._running:
                    self._lock.wait(timeout=0.5)
                if not self._running:
                    return
                pair, self._slot = self._slot, None
            try:
                self._process(pair)
            except Exception as err:  # noqa: BLE001 - the node must never die on one pair
                self._warn_once(f"internal error on a pair: {type(err).__name__}: {err}")

    def _process(self, pair: SyncedPair) -> None:
        age = self.get_clock().now().nanoseconds * 1e-9 - pair.stamp0 * 1e-9
        self.stats["last_input_age_s"] = age
        if age > self.params["max_age"]:
            self.stats["dropped_stale"] += 1
            self._diagnose(f"dropped a pair {age:.2f} s old (max_age {self.params['max_age']} s)")
            return
        self.get_logger().debug(f"inference on the pair at {pair.stamp0} ns")
        start = time.perf_counter()
        try:
            images, Ks = [], []
            for image_msg, info_msg, cam in ((pair.image0, pair.info0, "0"), (pair.image1, pair.info1, "1")):
                image = message_to_rgb(image_msg, f"image{cam}")
                model = camera_info_to_model(info_msg, f"camera_info{cam}")
                check_image_matches_info(image, model, f"camera_info{cam}")
                if model.distorted:
                    if not self.params["undistort"]:
                        raise MickeyError(f"camera_info{cam}: non-zero distortion {model.D.tolist()} with undistort off; "
                                          "use rectified images or set undistort: true")
                    image = self.undistort(image, model)
                images.append(image)
                Ks.append(model.K)
            res = self.reloc.estimate(images[0], Ks[0], images[1], Ks[1])
            if not self._running:  # stopped during the inference: publishers may be gone
                return
        except MickeyError as err:
            self.stats["rejected"] += 1
            self._warn_once(str(err))
            self._diagnose(str(err))
            return
        self.stats["processed"] += 1
        self.stats["last_latency_s"] = time.perf_counter() - start
        if not res.success:
            self._diagnose(f"no pose: {res.reason}")
            return
        self.stats["succeeded"] += 1
        self.stats["last_inliers"] = res.num_inliers
        self._publish(pair, res)
        self._diagnose("ok")

    def _publish(self, pair: SyncedPair, res: Any) -> None:
        from std_msgs.msg import UInt32

        f0 = self.params["frame0"] or pair.image0.header.frame_id
        f1 = self.params["frame1"] or pair.image1.header.frame_id
        hdr0 = builders.header(self.types, pair.stamp0, f0)
        # TF first: a consumer woken by the pose can already look the transform up
        transforms = self.tf_naming.transforms(self.types, hdr0, f1, res.T_0to1)
        if self.tf is not None and transforms:
            if transforms[0].child_frame_id == f0:
                self._warn_once(f"TF: child frame {f0} is camera 0's own frame; no TF published")
            else:
                self.tf.sendTransform(transforms)
        self.pub_pose.publish(builders.pose_with_covariance_from_relative_pose(self.types, hdr0, res.T_0to1))
        if self.params["publish_clouds"]:
            colours = (255 * np.stack([~res.inliers, res.inliers, np.zeros_like(res.inliers)], 1)).astype(np.uint8)
            self.pub_cloud0.publish(builders.pointcloud2(self.types, hdr0, res.kpts3d0, rgb=colours))
            hdr1 = builders.header(self.types, pair.stamp1, f1)
            self.pub_cloud1.publish(builders.pointcloud2(self.types, hdr1, res.kpts3d1, rgb=colours))
        self.pub_inliers.publish(UInt32(data=int(res.num_inliers)))
        if self.pub_full is not None:
            self.pub_full.publish(builders.relative_pose_message(self.types, self.relative_pose_class, hdr0, f1,
                                                                 pair.stamp1, res))

    def _warn_once(self, text: str) -> None:
        if text not in self._warned:
            self._warned.add(text)
            self.get_logger().warning(text)

    def _diagnose(self, message: str) -> None:
        if self.pub_diag is None:
            return
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        level = DiagnosticStatus.OK if message == "ok" else DiagnosticStatus.WARN
        values = [KeyValue(key=k, value=str(v)) for k, v in self.stats.items()]
        values.append(KeyValue(key="device", value=str(self.reloc.device)))
        status = DiagnosticStatus(level=level, name="mickey_ros: relocalizer", message=message,
                                  hardware_id=str(self.reloc.device), values=values)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(array)

    def destroy_node(self) -> None:
        """Stop the worker (waiting at most ``STOP_TIMEOUT_S`` for an inference in progress), then the node.

        A worker still inside an inference exits without publishing once the inference returns."""
        with self._lock:
            self._running = False
            self._lock.notify_all()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=STOP_TIMEOUT_S)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(RelocalizeNode, "relocalize_node", args)
