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
them, and pairs replaced by a newer one before the worker got to them (``dropped_replaced``: the worker was
busy), are dropped and counted.

Reference mode (``reference_image`` set, or ``reference_mode: true``): camera 0 is a stored reference and only
camera 1 is live (``image1``, ``camera_info1``). The reference's features are extracted once (from the file at
start-up, or from the next live image when ``~/set_reference`` (std_srvs/Trigger) is called) and each query runs
the network once (``Relocalizer.estimate_query``). Outputs are the same, with camera 0 = the reference: its
optical frame is ``frame0`` (default ``mickey_reference``), stamps are the query image's. With
``reference_pose_frame`` (e.g. ``map``) and ``reference_pose`` = ``T_map_ref`` (reference optical frame -> map),
the TF is ``map -> <query optical frame><child_frame_suffix>`` carrying ``T_map_query = T_map_ref @ inv(T_0to1)``
(``T_0to1``: ``X_query = R X_ref + t``; see :mod:`mickey_ros.ros.reference`) instead of the reference-relative
one (a TF child has one parent), and ``~/map_pose`` (PoseWithCovarianceStamped in the map frame) carries it too.

Triggering (``mode``): ``continuous`` processes pairs as they come, at most ``max_rate`` per second of image-stamp
time (faster ones are dropped and counted as ``dropped_rate``); ``on_demand`` processes only the next pair (or
query) after a ``~/relocalize`` call (std_srvs/Trigger), which answers success and the reason (the solver's
reason when it finds no pose; "no pair within N s" after ``request_timeout_s``). Service calls wait for the
worker in a callback group of their own on a multi-threaded executor, so subscriptions keep flowing meanwhile.

Lifecycle (a managed node, ``rclpy.lifecycle``; ``~/change_state``, ``~/get_state``):

- configure: loads the network (``checkpoint``) and the reference file, creates the outputs on the first configure
  (lifecycle publishers and the TF broadcaster; they exist until the node is destroyed and publish only while
  active), starts the worker thread and waits for its warm-up inference (``warmup``) and the reference features
  (that wait never holds SIGINT/SIGTERM, which shut the context down). A failure (bad checkpoint, failed warm-up)
  releases everything and leaves the node unconfigured, the reason logged and in ``transition_error``.
- activate: subscribes to the inputs, offers ``~/relocalize`` / ``~/set_reference``, enables the outputs, logs
  ``ready``.
- deactivate: unsubscribes, removes the services (waiting calls answer failure), disables the outputs; an input
  waiting for the worker is dropped and an inference in progress publishes nothing.
- cleanup: stops the worker and drops the network and the reference features (CUDA's cached memory is given back);
  a network given to the constructor stays the caller's.
- shutdown (from any state) does what the state needs of deactivate and cleanup; errorprocessing does the same and
  returns to unconfigured.

``autostart`` (default true) configures and activates in the constructor, so ``ros2 run`` needs no lifecycle
manager; a configure failure is then raised (:class:`~mickey_ros.errors.MickeyError`; the console script prints its
one line and exits with code 2). Every parameter is checked at construction and on ``set_parameters``
(:mod:`mickey_ros.ros.node_common`). Configure logs the network, device and precision, activate the inputs with
their QoS, the mode and the TF frames.

The publishing half (publishers, one pose's messages, ``/diagnostics``) is :mod:`mickey_ros.ros.relocalize_publishing`;
network loading and the counters are :mod:`mickey_ros.ros.relocalize_setup`; the parameter tables
:mod:`mickey_ros.ros.relocalize_config`.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # rclpy before Iron (Humble)
    from rclpy.qos_event import SubscriptionEventCallbacks

from mickey_ros.errors import MickeyError
from mickey_ros.ros import builders
from mickey_ros.ros.convert import Undistorter, camera_info_to_model, check_image_matches_info, message_to_rgb
from mickey_ros.ros.node_common import (
    STOP_TIMEOUT_S,
    ParameterError,
    declare_parameters,
    run_node,
    warn_unknown_overrides,
    watch_parameters,
)
from mickey_ros.ros.reference import load_reference, reference_mode, reference_pose_matrix
from mickey_ros.ros.relocalize_config import (  # noqa: F401 - the parameter tables are part of this module's API
    INT_RANGES,
    MODES,
    PARAMETERS,
    RANGES,
    RELIABILITIES,
    RENAMED,
    RULES,
    trigger_type,
)
from mickey_ros.ros.relocalize_publishing import PublishingMixin
from mickey_ros.ros.relocalize_setup import (
    Interrupted,
    as_mickey_error,
    load_network,
    new_stats,
    precision_in_effect,
    without_frames,
)
from mickey_ros.ros.sync import FrameSynchronizer, PairSynchronizer, SyncedFrame, SyncedPair
from mickey_ros.ros.triggering import Job, RateGate, RequestBoard

QOS_DEPTH = 5
EXECUTOR_THREADS = 3  # a service callback waiting for the worker + subscriptions + parameter services
WAIT_POLL_S = 0.5  # a service waiting for an inference in progress re-checks the node is still running this often
STARTUP_POLL_S = 0.1  # configure, waiting for the worker's warm-up, looks at the context (a signal) this often
SUCCESS, FAILURE, ERROR = (TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE,
                           TransitionCallbackReturn.ERROR)


class RelocalizeNode(PublishingMixin, LifecycleNode):
    """The relocalisation node, a lifecycle node (see the module docstring for its transitions); ``net`` may be
    given directly (tests), else configure loads it from the parameters.

    Raises:
        ParameterError: a parameter the node cannot run with; with ``autostart``, also a configure failure (bad
            checkpoint, failed warm-up, unusable reference file).
    """

    def __init__(self, net: Any = None, **kwargs: Any) -> None:
        super().__init__("mickey_relocalizer", **kwargs)
        # first, so that destroy_node works on a node whose construction failed (rclpy destroys it at shutdown)
        self._lock = threading.Condition()  # the worker's input slot, and ``_active`` for the input callbacks
        self._output_lock = threading.RLock()  # held while publishing: once deactivate has it, nothing is published
        self._slot: Job | None = None
        self.requests = RequestBoard()  # service calls waiting for an input
        self._running = False  # the worker thread runs: configured (inactive or active)
        self._active = False  # inputs are processed and outputs published
        self._worker: threading.Thread | None = None
        self._startup_error: MickeyError | None = None
        self._given_net = net
        self.reloc: Any = None  # the Relocalizer, from configure to cleanup
        self.pub_pose = self.pub_map_pose = self.pub_cloud0 = self.pub_cloud1 = self.pub_inliers = None
        self.pub_diag = self.pub_full = self.tf = self.relative_pose_class = None
        self.input_subscriptions: list[Any] = []
        self.trigger_services: list[Any] = []
        self._service_group = MutuallyExclusiveCallbackGroup()
        self._warned: set[str] = set()
        self.transition_error: MickeyError | None = None  # why the last transition failed
        self._autostarting = False
        self.stats, self._latency_sum = new_stats(), 0.0
        p = self.params = declare_parameters(self, PARAMETERS, RULES)  # ParameterError before anything is logged
        self.reference_mode = reference_mode(p)
        self._reference_file: Any = None
        self.has_reference = False  # True once the reference features are extracted (worker thread)
        self.reference_source = "none"
        self.anchor = (builders.Anchor(p["reference_pose_frame"], reference_pose_matrix(p["reference_pose"]))
                       if p["reference_pose_frame"] else None)
        self.types = builders.MessageTypes.from_rclpy()
        self.sync = self._new_synchronizer()
        self.rate_gate = RateGate(p["max_rate"])
        self.undistort = Undistorter()
        self.tf_naming = self._tf_naming()
        watch_parameters(self, PARAMETERS, RULES, self.params, self._apply_parameters)
        warn_unknown_overrides(self, RENAMED)
        if p["autostart"]:
            self._autostart()
        else:
            self.get_logger().info("unconfigured (autostart false): waiting for ~/change_state configure")

    def _autostart(self) -> None:
        """configure + activate now; a failure is raised (the console script: one stderr line, exit code 2) instead
        of logged. Returns quietly when a signal interrupted the configuration."""
        self._autostarting = True
        try:
            for name, trigger in (("configure", self.trigger_configure), ("activate", self.trigger_activate)):
                if trigger() != SUCCESS:
                    if self.transition_error is None and not self.context.ok():
                        return  # SIGINT/SIGTERM during the warm-up
                    raise self.transition_error or MickeyError(f"{name}: the transition failed")
        finally:
            self._autostarting = False

    # -- lifecycle transitions (an executor thread, or the constructor with autostart) -------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Network, reference file, outputs (inactive) and the worker's warm-up; a failure leaves nothing behind."""
        self.transition_error = None
        try:
            self._configure()
        except Interrupted:
            self._release(wait=False)
            return FAILURE
        except MickeyError as err:
            self._release()
            self._report("configure", err)
            return FAILURE
        except Exception as err:  # noqa: BLE001 - rclpy would swallow it: report it, on_error releases
            self._report("configure", err)
            return ERROR
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        super().on_activate(state)  # the lifecycle publishers
        return self._guarded("activate", self._activate)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = self._guarded("deactivate", self._deactivate)
        super().on_deactivate(state)
        return result

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = self._guarded("cleanup", self._release)
        if result == SUCCESS:
            self.get_logger().info("cleaned up: network released")
        return result

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From unconfigured, inactive or active: whatever of deactivate and cleanup the state needs."""
        result = self._guarded("shutdown", self._stop_everything)
        super().on_shutdown(state)
        if result == SUCCESS:
            self.get_logger().info(f"shut down (from {state.label})")
        return result

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: release everything and go back to unconfigured."""
        result = self._guarded("error processing", self._stop_everything)
        super().on_error(state)
        return result

    def _guarded(self, name: str, action: Any) -> TransitionCallbackReturn:
        try:
            action()
        except Exception as err:  # noqa: BLE001 - rclpy turns it into ERROR without a word: report it first
            self._report(name, err)
            return ERROR
        return SUCCESS

    def _report(self, name: str, err: Exception) -> None:
        """Keep the reason of a failed transition (``transition_error``) and log it, except during autostart (the
        constructor raises it: one line from the console script)."""
        error = as_mickey_error(name, err)
        self.transition_error = without_frames(error)
        if not self._autostarting:
            self.get_logger().error(f"{name} failed: {error}")

    def _configure(self) -> None:
        from mickey_ros.model.mickey import preset_name
        from mickey_ros.pipeline import Relocalizer, refine_mode

        p = self.params
        self._reference_file = load_reference(p)  # ParameterError (file, size, K) before the network is loaded
        net, network = load_network(p) if self._given_net is None else (self._given_net, "given by the caller")
        self.reloc = Relocalizer(net, device=p["device"], seed=p["seed"], precision=p["precision"],
                                 covariance_scale=p["covariance_scale"], depth_flip=p["depth_flip"],
                                 refine=refine_mode(p["refine"]),
                                 min_confidence="auto" if p["min_confidence"] < 0 else p["min_confidence"])
        del net
        self.stats, self._latency_sum = new_stats(), 0.0
        if self.pub_pose is None:
            self._create_outputs()
        log = self.get_logger()
        log.info(f"network: {network}, preset {preset_name(self.reloc.net.config)}")
        log.info(f"device: {self.reloc.device}, precision: {precision_in_effect(p['precision'], self.reloc.device)}")
        # the worker warms up and extracts the reference features; waiting for it here never holds SIGINT/SIGTERM
        started = threading.Event()
        self._startup_error = None
        self._running = True
        self._worker = threading.Thread(target=self._work, args=(started,), name="mickey_worker", daemon=True)
        self._worker.start()
        while not started.wait(STARTUP_POLL_S):
            if not self.context.ok():
                raise Interrupted
        if self._startup_error is not None:
            raise self._startup_error

    def _activate(self) -> None:
        """Subscriptions and services; the synchroniser and the rate gate start empty."""
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        p = self.params
        qos = QoSProfile(depth=QOS_DEPTH, reliability=ReliabilityPolicy.RELIABLE) \
            if p["reliability"] == "reliable" else qos_profile_sensor_data
        image_type = CompressedImage if p["compressed"] else Image
        streams = ((("image", "image1", image_type), ("info", "camera_info1", CameraInfo)) if self.reference_mode else
                   (("image0", "image0", image_type), ("info0", "camera_info0", CameraInfo),
                    ("image1", "image1", image_type), ("info1", "camera_info1", CameraInfo)))
        self.sync = self._new_synchronizer()
        self.rate_gate = RateGate(p["max_rate"])
        with self._lock:
            self._active = True
        # no QoS event handlers (rclpy's incompatible-QoS warning): destroying a subscription that has them, as
        # deactivate does, races with the executor building its wait set (rclpy issues 1206, 1284)
        events = SubscriptionEventCallbacks(use_default_callbacks=False)
        subs = self.input_subscriptions = [
            self.create_subscription(msg_type, topic, lambda msg, s=stream: self._on_message(s, msg), qos,
                                     event_callbacks=events)
            for stream, topic, msg_type in streams]
        self.trigger_services = self._create_services()
        log = self.get_logger()
        log.info("inputs: " + ", ".join(f"{s.topic_name} ({s.msg_type.__name__})" for s in subs)
                 + f"; QoS {p['reliability']}, depth {qos.depth}")
        log.info(f"mode: {self._mode_description()}")
        if self.reference_mode:
            source = self._reference_file.source if self._reference_file is not None else "none yet"
            log.info(f"reference mode: camera 0 = the reference ({source}; ~/set_reference takes the next image), "
                     f"camera 1 = {subs[0].topic_name}")
        log.info(f"TF: {self._tf_description()}")
        log.info("ready")

    def _deactivate(self) -> None:
        """No input processed, nothing published from here on: an input waiting for the worker is dropped, an
        inference in progress is not published, waiting service calls answer failure."""
        with self._output_lock, self._lock:
            self._active = False
            self._slot = None
        self.requests.close_all("node deactivated")
        for sub in self.input_subscriptions:
            self.destroy_subscription(sub)
        self.input_subscriptions = []
        self._destroy_services()
        self.get_logger().info("deactivated: inputs unsubscribed, outputs paused")

    def _destroy_services(self) -> None:
        """Remove ``~/relocalize`` / ``~/set_reference`` while holding their callback group: a call's response is
        sent after its callback returns, and must not meet a destroyed service."""
        if not self.trigger_services:
            return
        held, end = self.trigger_services[0], time.monotonic() + STOP_TIMEOUT_S
        while not self._service_group.beginning_execution(held):  # a call in progress: it answers at once now
            if time.monotonic() > end:
                self._warn_once("a service call did not end: ~/relocalize, ~/set_reference kept (they refuse calls)")
                return
            time.sleep(0.01)
        try:
            for service in self.trigger_services:
                self.destroy_service(service)
        finally:
            self._service_group.ending_execution(held)
        self.trigger_services = []

    def _release(self, wait: bool = True) -> None:
        """Cleanup: stop the worker, drop the network and the reference features, and give CUDA's cached memory
        back. A network given to the constructor stays referenced by its caller."""
        self._stop_worker(wait)
        device = getattr(self.reloc, "device", None)
        self.reloc = self._reference_file = None
        self.has_reference, self.reference_source = False, "none"
        if device is not None and device.type == "cuda":
            import gc

            import torch

            gc.collect()  # the network's tensors, if a reference cycle holds them
            torch.cuda.empty_cache()

    def _stop_everything(self) -> None:
        if self._active:
            self._deactivate()
        self._release()

    def _stop_worker(self, wait: bool = True) -> None:
        """Stop the worker thread, waiting at most ``STOP_TIMEOUT_S`` for an inference in progress (which then
        publishes nothing)."""
        with self._lock:
            self._running = False
            self._slot = None
            self._lock.notify_all()
        self.requests.close_all("node is shutting down")
        if wait and self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=STOP_TIMEOUT_S)

    def _new_synchronizer(self) -> FrameSynchronizer | PairSynchronizer:
        return FrameSynchronizer() if self.reference_mode else PairSynchronizer(slop=self.params["slop"])

    # -- start-up and parameters ----------------------------------------------------------------------------
    def _warm_up(self) -> None:
        """One inference on a synthetic pair: the first one pays for kernel loading and allocator growth."""
        try:
            seconds = self.reloc.warmup()
        except RuntimeError as err:  # e.g. CUDA out of memory, no kernel image for this GPU
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ParameterError(f"device: warm-up inference on {self.reloc.device} failed: {first}") from err
        self.get_logger().info(f"warm-up inference: {seconds:.2f} s")

    def _extract_reference_file(self) -> None:
        """The reference file's features, once (each query then runs the network on the query image only)."""
        ref = self._reference_file
        assert ref is not None
        start = time.perf_counter()
        try:
            self.reloc.set_reference(ref.image, ref.K)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ParameterError(f"device: reference feature extraction on {self.reloc.device} failed: "
                                 f"{first}") from err
        except MickeyError as err:
            raise ParameterError(f"reference_image: {err}") from err
        self._set_reference_state(ref.source)
        height, width = ref.image.shape[:2]
        fx, fy, cx, cy = ref.K[0, 0], ref.K[1, 1], ref.K[0, 2], ref.K[1, 2]
        self.get_logger().info(f"reference: {ref.source}, {width}x{height}, fx {fx:g} fy {fy:g} cx {cx:g} cy {cy:g}; "
                               f"features in {time.perf_counter() - start:.2f} s")

    def _set_reference_state(self, source: str) -> None:
        self.reference_source = source
        self.has_reference = True
        self.stats["reference_updates"] += 1

    def _tf_naming(self) -> builders.TfNaming:
        p = self.params
        return builders.TfNaming(mode=p["tf_mode"], child_suffix=p["child_frame_suffix"], child_frame=p["child_frame"])

    def _mode_description(self) -> str:
        p = self.params
        if p["mode"] == "on_demand":
            return f"on_demand (~/relocalize runs the next input; request_timeout_s {p['request_timeout_s']:g} s)"
        rate = f"at most {p['max_rate']:g} Hz of image-stamp time" if p["max_rate"] > 0 else "every input (max_rate 0)"
        return f"continuous, {rate}"

    def _apply_parameters(self, changed: set[str]) -> None:
        """Parameters accepted by ``set_parameters`` take effect from the next pair on."""
        if "slop" in changed and isinstance(self.sync, PairSynchronizer):
            self.sync.slop_ns = int(round(self.params["slop"] * 1e9))
        if "max_rate" in changed:
            self.rate_gate.set_rate(self.params["max_rate"])
        if "seed" in changed and self.reloc is not None:  # unconfigured: configure reads the parameter
            self.reloc.seed = self.params["seed"]
        if "covariance_scale" in changed and self.reloc is not None:
            self.reloc.covariance_scale = float(self.params["covariance_scale"])
        if "depth_flip" in changed and self.reloc is not None:
            self.reloc.depth_flip = bool(self.params["depth_flip"])
        if changed & {"tf_mode", "child_frame_suffix", "child_frame", "frame0", "frame1"}:
            self.tf_naming = self._tf_naming()
            if self.reloc is not None:
                self.get_logger().info(f"TF: {self._tf_description()}")

    def _create_services(self) -> list[Any]:
        """``~/set_reference`` (reference mode) and ``~/relocalize`` (on_demand), std_srvs/Trigger, in one callback
        group of their own: a call blocks its executor thread until the worker answers, while the subscriptions
        (default group) keep delivering the input it waits for (needs a multi-threaded executor)."""
        Trigger = trigger_type()
        wanted = [name for name, on in (("set_reference", self.reference_mode),
                                        ("relocalize", self.params["mode"] == "on_demand")) if on]
        if Trigger is None:  # on_demand without std_srvs is refused by the parameter check
            if wanted:
                self.get_logger().warning("std_srvs is not importable: ~/set_reference is not offered (reference "
                                          "from reference_image only)")
            return []
        if self.trigger_services:  # kept by a deactivation that could not remove them
            return self.trigger_services
        return [self.create_service(Trigger, f"~/{name}", lambda req, resp, k=name: self._serve(k, resp),
                                    callback_group=self._service_group) for name in wanted]

    # -- callbacks (executor threads): only bookkeeping ------------------------------------------------------
    def _serve(self, kind: str, response: Any) -> Any:
        """A ``~/relocalize`` or ``~/set_reference`` call: wait (at most ``request_timeout_s`` for the input, then
        for its inference) and answer ``success`` and ``message``."""
        what = "image" if kind == "set_reference" or self.reference_mode else "pair"
        with self._lock:  # deactivate clears _active under this lock, then answers every open request
            request = self.requests.open(kind) if self._active else None
        if request is None:
            response.success = False
            response.message = "node is not active" if not self._active else f"busy: another ~/{kind} call waits"
            return response
        self.stats["requests"] += 1
        timeout = self.params["request_timeout_s"]
        response.success, response.message, timed_out = self.requests.wait(
            request, timeout, f"no {what} within {timeout:g} s", WAIT_POLL_S)
        if timed_out:
            self.stats["request_timeouts"] += 1
            self._diagnose(f"~/{kind}: {response.message}")
        return response

    def _on_message(self, stream: str, msg: Any) -> None:
        if not self._active:  # a message taken just before deactivation
            return
        stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
        item = self.sync.add(stream, stamp, msg)
        if item is not None:
            self._offer(item)

    def _offer(self, item: SyncedPair | SyncedFrame) -> None:
        """A complete input: the reference a ``~/set_reference`` call waits for, the input a ``~/relocalize`` call
        waits for (on_demand; else ignored), or (continuous) the next input if ``max_rate`` lets it pass."""
        kind = "query" if self.reference_mode else "pair"
        request = self.requests.take("set_reference")
        job = Job("reference", item, request) if request is not None else None
        if job is None and self.params["mode"] == "on_demand":
            request = self.requests.take("relocalize")
            job = Job(kind, item, request) if request is not None else None
        elif job is None:
            job = Job(kind, item)
        with self._lock:
            if not self._active:
                return
            self.stats["received_pairs"] += 1
            if job is None:
                self.stats["ignored_idle"] += 1  # on_demand, nobody asked
                return
            if job.request is None and not self.rate_gate.accept(job.stamp):
                self.stats["dropped_rate"] += 1
                return
            if self._slot is not None:  # the worker is busy: the newest input wins, a requested one is kept
                self.stats["dropped_replaced"] += 1
                if self._slot.request is not None and job.request is None:
                    return
            self._slot = job
            self._lock.notify()

    # -- worker thread -----------------------------------------------------------------------------------
    def _work(self, started: threading.Event) -> None:
        """Configure to cleanup: the warm-up inference and the reference file's features (configure waits for
        ``started``; a failure is left in ``_startup_error``), then one input at a time."""
        try:
            if self.params["warmup"]:
                self._warm_up()
            if self._running and self._reference_file is not None:
                self._extract_reference_file()
        except Exception as err:  # noqa: BLE001 - configure reports it
            self._startup_error = as_mickey_error("start-up", err)
            return
        finally:
            started.set()
        while self._running:
            with self._lock:
                while self._slot is None and self._running:
                    self._lock.wait(timeout=0.5)
                if not self._running:
                    return
                job, self._slot = self._slot, None
            try:
                success, message = self._process(job)
            except Exception as err:  # noqa: BLE001 - the node must never die on one pair
                success, message = False, f"internal error: {type(err).__name__}: {err}"
                self._warn_once(f"internal error on a pair: {type(err).__name__}: {err}")
            if job.request is not None:
                self.requests.close(job.request, success, message)

    def _camera_input(self, image_msg: Any, info_msg: Any, cam: str) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB image and its K (pixels) from one camera's messages, undistorted when asked.

        Raises:
            MickeyError: naming ``image<cam>`` / ``camera_info<cam>`` and what was expected.
        """
        image = message_to_rgb(image_msg, f"image{cam}")
        model = camera_info_to_model(info_msg, f"camera_info{cam}")
        check_image_matches_info(image, model, f"camera_info{cam}")
        if model.distorted:
            if not self.params["undistort"]:
                raise MickeyError(f"camera_info{cam}: non-zero distortion {model.D.tolist()} with undistort off; "
                                  "use rectified images or set undistort: true")
            image = self.undistort(image, model)
        return image, model.K

    def _process(self, job: Job) -> tuple[bool, str]:
        """Run one input; ``(success, message)`` is the answer of the service call waiting for it, if any."""
        age = self.get_clock().now().nanoseconds * 1e-9 - job.stamp * 1e-9
        self.stats["last_input_age_s"] = age
        if age > self.params["max_age"]:
            self.stats["dropped_stale"] += 1
            message = f"dropped a pair {age:.2f} s old (max_age {self.params['max_age']} s)"
            self._diagnose(message)
            return False, message
        if job.kind == "query" and not self.has_reference:
            self.stats["dropped_no_reference"] += 1
            message = "no reference yet: set reference_image or call ~/set_reference"
            self._diagnose(message)
            return False, message
        self.get_logger().debug(f"inference on the pair at {job.stamp} ns")
        start = time.perf_counter()
        try:
            if job.kind == "reference":
                return self._take_reference(job.item)
            if job.kind == "query":
                res = self.reloc.estimate_query(*self._camera_input(job.item.image, job.item.info, "1"))
            else:
                pair = job.item
                image0, K0 = self._camera_input(pair.image0, pair.info0, "0")
                image1, K1 = self._camera_input(pair.image1, pair.info1, "1")
                res = self.reloc.estimate(image0, K0, image1, K1)
            if not self._active:  # deactivated (or stopped) during the inference: nothing is published
                return False, "node is not active"
        except MickeyError as err:
            self.stats["rejected"] += 1
            self._warn_once(str(err))
            self._diagnose(str(err))
            return False, str(err)
        latency = time.perf_counter() - start
        self.stats["processed"] += 1
        self._latency_sum += latency
        self.stats["last_latency_s"] = latency
        self.stats["mean_latency_s"] = self._latency_sum / self.stats["processed"]
        if not res.success:
            self.stats["failed"] += 1
            self._diagnose(f"no pose: {res.reason}")
            return False, res.reason
        self.stats["succeeded"] += 1
        self.stats["last_inliers"] = res.num_inliers
        self._publish_if_active(job, res)
        self._diagnose("ok")
        return True, (f"pose with {res.num_inliers} inliers of {res.num_matches} matches, confidence "
                      f"{res.confidence:.3f}, latency {latency:.2f} s")

    def _take_reference(self, frame: SyncedFrame) -> tuple[bool, str]:
        """``~/set_reference``: this live frame's features become the reference (the old one stays on failure)."""
        image, K = self._camera_input(frame.image, frame.info, "1")
        self.reloc.set_reference(image, K)
        sec, nanosec = divmod(frame.stamp, 1_000_000_000)
        height, width = image.shape[:2]
        source = f"live image of {frame.image.header.frame_id or '<no frame_id>'} stamped {sec}.{nanosec:09d}"
        self._set_reference_state(source)
        self.get_logger().info(f"reference: {source}, {width}x{height}")
        self._diagnose("reference set")
        return True, f"reference set from the {source} ({width}x{height})"

    def destroy_node(self) -> None:
        """In any lifecycle state: stop the worker (waiting at most ``STOP_TIMEOUT_S`` for an inference in
        progress), answer waiting service calls with failure, then destroy the node.

        A worker still inside an inference exits without publishing once the inference returns."""
        with self._output_lock, self._lock:
            self._active = False
        self._stop_worker()
        super().destroy_node()
        # rclpy's lifecycle state machine holds the node: without this, the node and its lifecycle services stay on
        # the graph (unanswered) until garbage collection
        state_machine = getattr(self, "_state_machine", None)
        if state_machine is not None:
            state_machine.destroy_when_not_in_use()


def main(args: list[str] | None = None) -> None:
    run_node(RelocalizeNode, "relocalize_node", args, threads=EXECUTOR_THREADS)
