"""relocalize_node as a lifecycle node, driven through its real ``~/change_state`` and ``~/get_state`` services
(lifecycle_msgs, real rclpy) from a client node: what exists and what flows in each state, the network released on
cleanup (and CUDA's cache emptied), shutdown from every state, configure failures, and the console script:
without autostart, with a damaged checkpoint, and signalled during the warm-up of autostart.
"""
from __future__ import annotations

import gc
import signal
import subprocess
import threading
import weakref

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("rclpy.lifecycle")
pytest.importorskip("std_srvs.srv")

from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from node_harness import NODE, WAIT_S, Harness, assert_one_line_exit_2, subprocess_ros_env  # noqa: E402, F401

INPUTS = {"/image0", "/camera_info0", "/image1", "/camera_info1"}
OWN_NETWORK = {"checkpoint": "random", "preset": "tiny"}  # configure builds (and cleanup drops) its own network


class Lifecycle:
    """A client of the node's lifecycle services, on the harness's tester node."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.change = h.tester.create_client(ChangeState, f"{NODE}/change_state")
        self.get = h.tester.create_client(GetState, f"{NODE}/get_state")
        assert h.spin_until(lambda: self.change.service_is_ready() and self.get.service_is_ready(), 60)

    def state(self) -> str:
        future = self.get.call_async(GetState.Request())
        assert self.h.spin_until(future.done, 60), "~/get_state never answered"
        return future.result().current_state.label

    def transition(self, transition_id: int) -> bool:
        request = ChangeState.Request()
        request.transition.id = transition_id
        future = self.change.call_async(request)
        assert self.h.spin_until(future.done, WAIT_S), f"~/change_state {transition_id} never answered"
        return future.result().success


def _graph_inputs(h: Harness) -> set[str]:
    """The input topics the graph shows a subscription of the node on."""
    return {topic for topic, _ in h.tester.get_subscriber_names_and_types_by_node("mickey_relocalizer", "/")} & INPUTS


def _own_inputs(h: Harness) -> set[str]:
    return {s.topic_name for s in h.node.subscriptions} & INPUTS


def _pose_after_a_pair(h: Harness) -> None:
    """Inputs matched both ways, one pair published, its pose received (stamp = the pair's)."""
    h.wait_connected()
    n, stamp = len(h.got["pose"]), h.now_ns()
    h.publish_pair(stamp)
    assert h.spin_until(lambda: len(h.got["pose"]) > n), h.node.stats
    assert (h.got["pose"][-1].header.stamp.sec, h.got["pose"][-1].header.stamp.nanosec) == divmod(stamp, 10**9)


def test_configure_activate_deactivate_cleanup_configure_again_and_shutdown_from_active(ros):
    h = Harness(ros, None, autostart=False, **OWN_NETWORK)
    try:
        lc = Lifecycle(h)
        assert lc.state() == "unconfigured" and h.node.reloc is None and h.node.pub_pose is None
        assert _own_inputs(h) == set() and h.node.trigger_services == []

        assert lc.transition(Transition.TRANSITION_CONFIGURE)
        assert lc.state() == "inactive" and h.node.reloc is not None
        network = weakref.ref(h.node.reloc.net)
        assert _own_inputs(h) == set() and _graph_inputs(h) == set()  # loaded, not yet listening
        waitables = len(list(h.node.waitables))

        assert lc.transition(Transition.TRANSITION_ACTIVATE)
        assert lc.state() == "active" and _own_inputs(h) == INPUTS
        # inputs without QoS event handlers: deactivate destroys them while the executor spins (rclpy issue 1284)
        assert len(list(h.node.waitables)) == waitables
        assert h.spin_until(lambda: _graph_inputs(h) == INPUTS, 60)
        _pose_after_a_pair(h)
        received = h.node.stats["received_pairs"]

        assert lc.transition(Transition.TRANSITION_DEACTIVATE)
        assert lc.state() == "inactive" and _own_inputs(h) == set() and h.node.trigger_services == []
        assert h.spin_until(lambda: _graph_inputs(h) == set() and h.tester.count_subscribers("/image0") == 0, 60)
        h.publish_pair(h.now_ns())
        h.spin_for(2.0)
        assert len(h.got["pose"]) == 1 and h.node.stats["received_pairs"] == received  # nothing taken, nothing out

        assert lc.transition(Transition.TRANSITION_CLEANUP)
        assert lc.state() == "unconfigured" and h.node.reloc is None and not h.node.pub_pose.is_activated
        assert not h.node._worker.is_alive()
        gc.collect()
        assert network() is None, gc.get_referrers(network())  # nothing keeps the network (or its memory)

        assert lc.transition(Transition.TRANSITION_CONFIGURE)  # a second life: a new network, same behaviour
        assert h.node.reloc is not None and h.node.reloc.net is not None and h.node.stats["received_pairs"] == 0
        assert lc.transition(Transition.TRANSITION_ACTIVATE)
        _pose_after_a_pair(h)

        assert lc.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert lc.state() == "finalized" and h.node.reloc is None and _own_inputs(h) == set()
        assert not h.node._worker.is_alive()
    finally:
        h.close()


@pytest.mark.parametrize(("start", "shutdown"), [("unconfigured", Transition.TRANSITION_UNCONFIGURED_SHUTDOWN),
                                                 ("inactive", Transition.TRANSITION_INACTIVE_SHUTDOWN)])
def test_shutdown_from_unconfigured_and_inactive(ros, tiny_net, start, shutdown):
    h = Harness(ros, tiny_net, autostart=False)
    try:
        lc = Lifecycle(h)
        if start == "inactive":
            assert lc.transition(Transition.TRANSITION_CONFIGURE)
        assert lc.state() == start
        assert lc.transition(shutdown)
        assert lc.state() == "finalized" and h.node.reloc is None
        assert h.node._worker is None or not h.node._worker.is_alive()
        assert not lc.transition(Transition.TRANSITION_CONFIGURE)  # finalized is final
    finally:
        h.close()


def test_cleanup_gives_cuda_cached_memory_back_on_a_gpu_only(ros, tiny_net, monkeypatch):
    import torch

    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    h = Harness(ros, tiny_net, autostart=False)
    try:
        lc = Lifecycle(h)
        assert lc.transition(Transition.TRANSITION_CONFIGURE)
        h.node.reloc.device = torch.device("cuda", 0)  # as on a GPU (nothing runs on it before the cleanup)
        assert lc.transition(Transition.TRANSITION_CLEANUP)
        assert emptied == [1] and h.node.reloc is None
        assert lc.transition(Transition.TRANSITION_CONFIGURE) and lc.transition(Transition.TRANSITION_CLEANUP)
        assert emptied == [1]  # on the CPU: nothing to give back
    finally:
        h.close()


def test_a_destroyed_node_leaves_the_graph_with_its_lifecycle_services(ros, tiny_net):
    """rclpy's lifecycle state machine would keep the node (and unanswered ~/change_state, ~/get_state) on the graph
    until garbage collection, where a later node of the same name meets them."""
    h = Harness(ros, tiny_net, autostart=False)

    def lifecycle_services() -> set[str]:
        return {name for name, _ in h.tester.get_service_names_and_types()} & {f"{NODE}/change_state",
                                                                               f"{NODE}/get_state"}

    try:
        assert h.spin_until(lambda: len(lifecycle_services()) == 2, 30)
        h.node.destroy_node()
        assert h.spin_until(lambda: "mickey_relocalizer" not in h.tester.get_node_names()
                            and not lifecycle_services(), 30), lifecycle_services()
    finally:
        h.executor.shutdown()
        h.tester.destroy_node()


def test_autostart_by_default_gives_an_active_node(ros, tiny_net):
    h = Harness(ros, tiny_net)
    try:
        assert Lifecycle(h).state() == "active"
        assert h.node.get_parameter("autostart").value is True and h.node.describe_parameter("autostart").read_only
        assert _own_inputs(h) == INPUTS
    finally:
        h.close()


def test_deactivate_during_an_inference_publishes_nothing_and_removes_the_service(ros, tiny_net):
    h = Harness(ros, tiny_net, mode="on_demand")
    entered, release, returned = threading.Event(), threading.Event(), threading.Event()
    real_estimate = h.node.reloc.estimate

    def held_estimate(*args, **kwargs):  # the first inference waits until the node has been deactivated
        entered.set()
        assert release.wait(120)
        try:
            return real_estimate(*args, **kwargs)
        finally:
            returned.set()

    h.node.reloc.estimate = held_estimate
    try:
        lc = Lifecycle(h)
        client = h.client("relocalize")
        h.wait_connected()
        future = h.call(client)
        assert h.spin_until(lambda: h.node.requests.waiting("relocalize"), 60)
        h.publish_pair(h.now_ns())
        assert h.spin_until(entered.is_set, 60)
        diagnostics = len(h.got["diagnostics"])

        assert lc.transition(Transition.TRANSITION_DEACTIVATE)  # does not wait for the inference
        assert h.spin_until(future.done, 60)
        answer = future.result()
        assert not answer.success and answer.message == "node deactivated"
        release.set()
        assert h.spin_until(returned.is_set, WAIT_S)
        h.spin_for(1.0)
        assert h.got["pose"] == [] and len(h.got["diagnostics"]) == diagnostics and h.node.stats["succeeded"] == 0
        assert h.spin_until(lambda: not client.service_is_ready(), 60)  # ~/relocalize is gone
        assert lc.state() == "inactive"

        assert lc.transition(Transition.TRANSITION_ACTIVATE)  # back: the service answers with a pose again
        client = h.client("relocalize")
        h.wait_connected()
        future = h.call(client)
        assert h.spin_until(lambda: h.node.requests.waiting("relocalize"), 60)
        h.publish_pair(h.now_ns())
        assert h.spin_until(future.done) and future.result().success, future.result()
        assert h.spin_until(lambda: len(h.got["pose"]) == 1, 60)
    finally:
        release.set()
        h.close()


def test_a_configure_failure_is_logged_and_leaves_the_node_unconfigured(ros, tiny_net, tmp_path, capfd):
    bad = tmp_path / "damaged.ckpt"
    bad.write_bytes(b"not a checkpoint")
    h = Harness(ros, None, autostart=False, checkpoint=str(bad))
    try:
        lc = Lifecycle(h)
        capfd.readouterr()
        assert not lc.transition(Transition.TRANSITION_CONFIGURE)
        assert lc.state() == "unconfigured" and h.node.reloc is None and h.node.pub_pose is None
        error = str(h.node.transition_error)
        assert error.startswith(f"checkpoint {bad}: not a readable PyTorch checkpoint"), error
        captured = capfd.readouterr()
        errors = [line for line in (captured.err + captured.out).splitlines() if "ERROR" in line]
        assert len(errors) == 1 and errors[0].endswith(f"configure failed: {error}"), errors
        assert not lc.transition(Transition.TRANSITION_CONFIGURE)  # still the same file: fails the same way
    finally:
        h.close()


def test_a_failing_warm_up_fails_configure_and_stops_the_worker(ros, tiny_net, monkeypatch):
    from mickey_ros.pipeline import Relocalizer

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    h = Harness(ros, tiny_net, autostart=False, warmup=True)
    try:
        lc = Lifecycle(h)
        monkeypatch.setattr(Relocalizer, "estimate", out_of_memory)
        assert not lc.transition(Transition.TRANSITION_CONFIGURE)
        assert lc.state() == "unconfigured" and h.node.reloc is None and not h.node._worker.is_alive()
        assert str(h.node.transition_error) == "device: warm-up inference on cpu failed: CUDA out of memory. " \
                                               "Tried to allocate 2.00 GiB"
        monkeypatch.undo()
        assert lc.transition(Transition.TRANSITION_CONFIGURE) and lc.state() == "inactive"  # the cause gone: works
    finally:
        h.close()


@pytest.mark.slow  # a console-script process (torch import)
def test_console_script_with_a_damaged_checkpoint_is_one_line_and_exit_2(subprocess_ros_env, tmp_path):
    bad = tmp_path / "damaged.ckpt"
    bad.write_bytes(b"not a checkpoint")
    # the parameter check passes (the file exists); configure, run by autostart, finds it unreadable
    assert_one_line_exit_2([f"checkpoint:={bad}", "device:=cpu"], f"checkpoint {bad}",
                           "not a readable PyTorch checkpoint")


@pytest.mark.slow  # a console-script process (torch import)
def test_console_script_without_autostart_waits_for_a_lifecycle_manager(ros):
    """``autostart:=false``: unconfigured until ~/change_state (across processes, as ``ros2 lifecycle set``), then
    ready; SIGTERM ends it with exit code 0."""
    from rclpy.executors import SingleThreadedExecutor
    from test_node_process import NodeProcess

    node = NodeProcess("relocalize_node", ["checkpoint:=random", "preset:=tiny", "device:=cpu", "autostart:=false"])
    tester = rclpy.create_node("lifecycle_manager", context=ros)
    executor = SingleThreadedExecutor(context=ros)
    executor.add_node(tester)
    spin = lambda: executor.spin_once(timeout_sec=0.1)  # noqa: E731
    try:
        assert node.wait_for("waiting for ~/change_state configure", spin=spin), node.log()
        change = tester.create_client(ChangeState, f"{NODE}/change_state")
        assert change.wait_for_service(timeout_sec=60), node.log()
        assert not any("ready" in line or "warm-up" in line for line in node.stderr), node.log()
        for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            request = ChangeState.Request()
            request.transition.id = transition
            future = change.call_async(request)
            executor.spin_until_future_complete(future, timeout_sec=WAIT_S)
            assert future.done() and future.result().success, node.log()
        assert node.wait_for("ready", spin=spin), node.log()
        code, _ = node.signal_and_wait(signal.SIGTERM)
        assert code == 0 and "Traceback" not in "\n".join(node.stderr + node.stdout), node.log()
        assert [line for line in node.stderr if "warm-up inference" in line], node.log()
    finally:
        node.kill()
        executor.shutdown()
        tester.destroy_node()


@pytest.mark.slow  # a console-script process (torch import)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_warm_up_of_autostart_exits_0_at_once(subprocess_ros_env, sig):
    """configure (in the constructor) waits for the worker's warm-up without holding the signal: here the warm-up
    never ends, and the process still exits cleanly within the bound."""
    import sys
    import time

    from conftest import REPO
    from test_node_process import STOP_BOUND_S

    code = ("import time; from mickey_ros.pipeline import Relocalizer; "
            "Relocalizer.warmup = lambda self, *a, **k: time.sleep(3600); "
            "from mickey_ros.ros.relocalize_node import main; "
            "main(['relocalize_node', '--ros-args', '-p', 'checkpoint:=random', '-p', 'device:=cpu'])")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in proc.stderr), daemon=True)
    reader.start()
    try:
        end = time.monotonic() + 300
        while time.monotonic() < end and proc.poll() is None and not any("device: cpu" in x for x in lines):
            time.sleep(0.1)
        assert any("device: cpu" in x for x in lines), lines  # configure runs, the worker is in the warm-up
        time.sleep(0.5)
        start = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(timeout=STOP_BOUND_S + 5) == 0
        assert time.monotonic() - start <= STOP_BOUND_S
        reader.join(timeout=5)
        assert not any("ready" in x or "Traceback" in x or "error" in x for x in lines), lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
