"""The output half of ``relocalize_node``: its publishers, one pose's messages, ``/diagnostics``.

:class:`PublishingMixin` is mixed into :class:`~mickey_ros.ros.relocalize_node.RelocalizeNode` and uses the node's
state (``params``, ``stats``, ``reloc``, ``sync``, ``anchor``, ``types``, ``tf_naming``, ``_output_lock``,
``_active``); the publishers it creates (``pub_pose``, ``pub_map_pose``, ``pub_cloud0`` / ``pub_cloud1``,
``pub_inliers``, ``pub_diag``, ``pub_full``, ``tf``) are the node's attributes. Outputs are published only while the
node is active (the node's ``_output_lock`` orders them against deactivate).
"""
from __future__ import annotations

from typing import Any

from mickey_ros.ros.node_common import relative_pose_class
from mickey_ros.ros.outputs import OutputFrames, pose_messages
from mickey_ros.ros.reference import DEFAULT_REFERENCE_FRAME
from mickey_ros.ros.triggering import Job


def inliers_message(num_inliers: Any) -> Any:
    """``~/num_inliers``: ``std_msgs/UInt32``."""
    from std_msgs.msg import UInt32

    return UInt32(data=int(num_inliers))


def diagnostic_array(message: str, ok: bool, values: list[tuple[str, Any]], hardware_id: str, stamp: Any) -> Any:
    """One ``/diagnostics`` status named ``mickey_ros: relocalizer``: OK or WARN, ``message``, ``values`` as strings."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    level = DiagnosticStatus.OK if ok else DiagnosticStatus.WARN
    status = DiagnosticStatus(level=level, name="mickey_ros: relocalizer", message=str(message),
                              hardware_id=str(hardware_id),
                              values=[KeyValue(key=str(k), value=str(v)) for k, v in values])
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    return array


class PublishingMixin:
    """Publishers and publishing of :class:`~mickey_ros.ros.relocalize_node.RelocalizeNode` (see the module)."""

    def _create_outputs(self) -> None:
        """Lifecycle publishers (they publish only while active) and the TF broadcaster, for the node's lifetime:
        destroying a publisher while a multi-threaded executor builds its wait set can raise in the executor
        (rclpy issues 1206, 1284: its QoS event handlers), and TF's publisher is tf2_ros's."""
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from sensor_msgs.msg import PointCloud2
        from std_msgs.msg import UInt32

        publisher = self.create_lifecycle_publisher
        self.pub_pose = publisher(PoseWithCovarianceStamped, "~/relative_pose", 10)
        self.pub_map_pose = (publisher(PoseWithCovarianceStamped, "~/map_pose", 10)
                             if self.anchor is not None else None)
        self.pub_cloud0 = publisher(PointCloud2, "~/keypoints0", 10)
        self.pub_cloud1 = publisher(PointCloud2, "~/keypoints1", 10)
        self.pub_inliers = publisher(UInt32, "~/num_inliers", 10)
        self.pub_diag = self._diagnostics_publisher()
        self.relative_pose_class = self._relative_pose_class()
        self.pub_full = (publisher(self.relative_pose_class, "~/relative_pose_full", 10)
                         if self.relative_pose_class is not None else None)
        self.tf = self._tf_broadcaster(warn=self.params["tf_mode"] != "none")

    def _tf_description(self) -> str:
        naming = self.tf_naming
        if naming.mode == "none":
            return "none (tf_mode: none)"
        if self.reference_mode:
            parent = self.anchor.frame if self.anchor is not None else self.params["frame0"] or DEFAULT_REFERENCE_FRAME
        else:
            parent = self.params["frame0"] or "<image0 frame_id>"
        child = naming.child(self.params["frame1"] or "<image1 frame_id>")
        what = " (query camera in the map)" if self.anchor is not None else ""
        where = "" if self.tf is not None else " (not broadcast: tf2_ros is not importable)"
        return f"{naming.mode}, {parent} -> {child}{what}{where}"

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
        return self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 10)

    def _publish_if_active(self, job: Job, res: Any) -> None:
        with self._output_lock:  # deactivate takes this lock to clear _active: no output after it returns
            if self._active:
                self._publish(job, res)

    def _publish(self, job: Job, res: Any) -> None:
        if job.kind == "pair":
            pair = job.item
            frames = OutputFrames(self.params["frame0"] or pair.image0.header.frame_id, pair.stamp0,
                                  self.params["frame1"] or pair.image1.header.frame_id, pair.stamp1)
        else:
            frames = OutputFrames(self.params["frame0"] or DEFAULT_REFERENCE_FRAME, job.stamp,
                                  self.params["frame1"] or job.item.image.header.frame_id, job.stamp)
        out = pose_messages(self.types, frames, res, self.tf_naming, anchor=self.anchor,
                            clouds=self.params["publish_clouds"], relative_pose_class=self.relative_pose_class)
        # TF first: a consumer woken by the pose can already look the transform up
        if self.tf is not None and out.transforms:
            child = out.transforms[0].child_frame_id
            if child in (frames.frame0, out.transforms[0].header.frame_id):
                self._warn_once(f"TF: child frame {child} is the parent's or camera 0's own frame; no TF published")
            else:
                self.tf.sendTransform(out.transforms)
        self.pub_pose.publish(out.pose)
        if self.pub_map_pose is not None:
            self.pub_map_pose.publish(out.map_pose)
        if out.cloud0 is not None:
            self.pub_cloud0.publish(out.cloud0)
            self.pub_cloud1.publish(out.cloud1)
        self.pub_inliers.publish(inliers_message(res.num_inliers))
        if self.pub_full is not None:
            self.pub_full.publish(out.full)

    def _warn_once(self, text: str) -> None:
        if text not in self._warned:
            self._warned.add(text)
            self.get_logger().warning(text)

    def _diagnose(self, message: str) -> None:
        """One ``/diagnostics`` status: OK after a pose (``ok``) or a new reference, WARN otherwise.

        Values: the counters of ``stats`` (``received_pairs``; ``processed`` = inferences, of which ``succeeded`` and
        ``failed`` (no pose); drops by reason: ``dropped_rate`` (max_rate), ``dropped_replaced`` (busy: a newer input
        replaced it), ``dropped_stale`` (max_age), ``dropped_no_reference``; ``ignored_idle`` (on_demand, no call
        waiting); ``rejected`` (bad input); ``requests``, ``request_timeouts``, ``reference_updates``), execution
        time ``last_latency_s`` / ``mean_latency_s`` (s per inference), ``last_input_age_s``, ``last_inliers``,
        ``info_substituted`` (images paired with their camera's cached CameraInfo, none at their stamp), and
        ``device``, ``mode``, ``max_rate_hz``, ``inputs`` (``pair`` or ``reference``), ``reference``.
        """
        reloc = self.reloc
        if self.pub_diag is None or reloc is None or not self._active:
            return
        values = [*self.stats.items(), ("info_substituted", self.sync.info_substituted), ("device", reloc.device),
                  ("mode", self.params["mode"]), ("max_rate_hz", self.params["max_rate"]),
                  ("inputs", "reference" if self.reference_mode else "pair"), ("reference", self.reference_source)]
        array = diagnostic_array(message, message in ("ok", "reference set"), values, str(reloc.device),
                                 self.get_clock().now().to_msg())
        with self._output_lock:
            if self._active and self.pub_diag is not None:
                self.pub_diag.publish(array)
