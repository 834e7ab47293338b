"""``relocalize_node``: two camera streams + CameraInfo in, the metric relative pose out (rclpy).

Inputs (relative names, remap them): ``image0``, ``camera_info0``, ``image1``, ``camera_info1``
(``sensor_msgs/Image``, or ``CompressedImage`` with ``compressed: true``). Outputs: TF camera-0 optical ->
camera-1 optical (when tf2_ros is importable), ``~/relative_pose`` (PoseWithCovarianceStamped),
``~/keypoints0`` / ``~/keypoints1`` (PointCloud2, each in its own optical frame), ``~/num_inliers``
(std_msgs/UInt32), ``/diagnostics`` and, when the ``mickey_ros_msgs`` interface package is built,
``~/relative_pose_full`` (``mickey_ros_msgs/RelativePose``: pose, confidence, counts, both stamps). Stamps are the input image stamps.

Subscription callbacks only feed the synchroniser and keep the newest complete pair; one worker thread runs
the model, so the executor never blocks on inference. Pairs older than ``max_age`` when the worker takes
them, and pairs replaced by a newer one before the worker got to them, are dropped and counted.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from mickey_ros.errors import MickeyError
from mickey_ros.ros import builders
from mickey_ros.ros.convert import Undistorter, camera_info_to_model, check_image_matches_info, message_to_rgb
from mickey_ros.ros.node_common import declare_parameters, relative_pose_class, run_node
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
    "publish_tf": (True, "broadcast TF camera-0 optical -> camera-1 optical"),
    "publish_clouds": (True, "publish the keypoint clouds"),
}
RANGES = {"slop": (0.0, 10.0), "max_age": (0.0, 3600.0)}


def _load_network(p: dict[str, Any]) -> Any:
    from mickey_ros.model import build_model, load_checkpoint
    from mickey_ros.model.default import load_default_network

    if p["checkpoint"] == "random":
        return build_model(p["preset"])
    if p["checkpoint"]:
        return load_checkpoint(p["checkpoint"], backbone_weights=p["backbone_weights"] or None)
    return load_default_network()


class RelocalizeNode(Node):
    """The relocalisation node; ``net`` may be given directly (tests), else it is loaded from parameters."""

    def __init__(self, net: Any = None, **kwargs: Any) -> None:
        super().__init__("mickey_relocalizer", **kwargs)
        p = declare_parameters(self, PARAMETERS, RANGES, {"seed": (0, 2**31 - 1)})
        self.params = p
        from mickey_ros.pipeline import Relocalizer

        if net is None:
            net = _load_network(p)
        self.reloc = Relocalizer(net, device=p["device"], seed=p["seed"], precision=p["precision"])
        self.types = builders.MessageTypes.from_rclpy()
        self.sync = PairSynchronizer(slop=p["slop"])
        self.undistort = Undistorter()
        self.stats = {"received_pairs": 0, "processed": 0, "succeeded": 0, "dropped_stale": 0,
                      "dropped_replaced": 0, "rejected": 0, "last_latency_s": float("nan"),
                      "last_input_age_s": float("nan"), "last_inliers": 0}
        self._lock = threading.Condition()
        self._slot: SyncedPair | None = None
        self._running = True
        self._warned: set[str] = set()

        from geometry_msgs.msg import PoseWithCovarianceStamped
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
        from std_msgs.msg import UInt32

        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE) if p["reliability"] == "reliable" \
            else qos_profile_sensor_data
        image_type = CompressedImage if p["compressed"] else Image
        for stream, topic, msg_type in (("image0", "image0", image_type), ("info0", "camera_info0", CameraInfo),
                                        ("image1", "image1", image_type), ("info1", "camera_info1", CameraInfo)):
            self.create_subscription(msg_type, topic, lambda msg, s=stream: self._on_message(s, msg), qos)
        self.pub_pose = self.create_publisher(PoseWithCovarianceStamped, "~/relative_pose", 10)
        self.pub_cloud0 = self.create_publisher(PointCloud2, "~/keypoints0", 10)
        self.pub_cloud1 = self.create_publisher(PointCloud2, "~/keypoints1", 10)
        self.pub_inliers = self.create_publisher(UInt32, "~/num_inliers", 10)
        self.pub_diag = self._diagnostics_publisher()
        self.relative_pose_class = self._relative_pose_class()
        self.pub_full = (self.create_publisher(self.relative_pose_class, "~/relative_pose_full", 10)
                         if self.relative_pose_class is not None else None)
        self.tf = self._tf_broadcaster() if p["publish_tf"] else None
        self._worker = threading.Thread(target=self._work, name="mickey_worker", daemon=True)
        self._worker.start()

    # -- optional outputs ---------------------------------------------------------------------------------
    def _tf_broadcaster(self) -> Any:
        try:
            from tf2_ros import TransformBroadcaster
        except ImportError:
            self.get_logger().warning("tf2_ros is not importable: TF output disabled (pose topics still published)")
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
        while True:
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
        if self.tf is not None:
            self.tf.sendTransform(builders.transform_stamped_from_relative_pose(self.types, hdr0, f1, res.T_0to1))

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
        with self._lock:
            self._running = False
            self._lock.notify_all()
        self._worker.join(timeout=5.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(RelocalizeNode, "relocalize_node", args)
