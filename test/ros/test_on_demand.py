"""Triggering of relocalize_node with real rclpy: ``mode: on_demand`` with the ``~/relocalize`` service (real
client), its timeout and solver-failure answers, ``max_rate`` drops in continuous mode (by image stamp, so the
counts are exact whatever the machine's load), the diagnostics keys, and bad values through the console script.
"""
from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("std_srvs.srv")

from node_harness import Harness, assert_one_line_exit_2, subprocess_ros_env  # noqa: E402, F401 - a fixture


def test_relocalize_runs_the_next_pair_only_when_called(ros, tiny_net):
    h = Harness(ros, tiny_net, mode="on_demand")
    try:
        client = h.client("relocalize")
        h.wait_connected()
        stats = h.node.stats
        for i in range(2):  # nobody asked: ignored, no inference, no pose
            h.publish_pair(h.now_ns())
            assert h.spin_until(lambda: stats["ignored_idle"] == i + 1, 60), stats
        assert stats["processed"] == 0 and h.got["pose"] == []

        future = h.call(client)
        assert h.spin_until(lambda: h.node.requests.waiting("relocalize"), 60)
        stamp = h.now_ns()
        h.publish_pair(stamp)
        assert h.spin_until(future.done), "~/relocalize never answered"
        answer = future.result()
        assert answer.success and answer.message.startswith("pose with "), answer
        assert h.spin_until(lambda: h.got["pose"], 60)
        assert (h.got["pose"][0].header.stamp.sec, h.got["pose"][0].header.stamp.nanosec) == divmod(stamp, 10**9)

        h.publish_pair(h.now_ns())  # after the answer: ignored again
        assert h.spin_until(lambda: stats["ignored_idle"] == 3, 60), stats
        h.spin_for(1.0)
        assert len(h.got["pose"]) == 1 and stats["processed"] == 1 and stats["requests"] == 1
    finally:
        h.close()


def test_relocalize_without_a_pair_answers_no_pair_after_the_timeout(ros, tiny_net):
    h = Harness(ros, tiny_net, mode="on_demand", request_timeout_s=1.0)
    try:
        future = h.call(h.client("relocalize"))
        assert h.spin_until(future.done, 120)
        answer = future.result()
        assert not answer.success and answer.message == "no pair within 1 s"
        assert h.node.stats["request_timeouts"] == 1 and not h.node.requests.waiting("relocalize")
        # the node still answers the next call (nothing left pending)
        h.wait_connected()
        future = h.call(h.client("relocalize"))
        assert h.spin_until(lambda: h.node.requests.waiting("relocalize"), 60)
        h.publish_pair(h.now_ns())
        assert h.spin_until(future.done) and future.result().success
    finally:
        h.close()


def test_relocalize_answers_the_solver_reason_when_there_is_no_pose(ros, tiny_net):
    from mickey_ros.pipeline import RelativePose

    h = Harness(ros, tiny_net, mode="on_demand")
    h.node.reloc.estimate = lambda *args: RelativePose(success=False, reason="too few matches: 2 < 3",
                                                       T_0to1=np.eye(4))
    try:
        client = h.client("relocalize")
        h.wait_connected()
        future = h.call(client)
        assert h.spin_until(lambda: h.node.requests.waiting("relocalize"), 60)
        h.publish_pair(h.now_ns())
        assert h.spin_until(future.done)
        answer = future.result()
        assert not answer.success and answer.message == "too few matches: 2 < 3"
        assert h.node.stats["failed"] == 1 and h.node.stats["succeeded"] == 0 and h.got["pose"] == []
    finally:
        h.close()


def test_max_rate_drops_pairs_closer_than_the_period_by_stamp(ros, tiny_net):
    # stamps 0.1 s apart, max_rate 3 Hz (period 0.333 s): pairs 0, 4 and 8 pass, the 7 others are dropped
    h = Harness(ros, tiny_net, max_rate=3.0)
    try:
        h.wait_connected()
        stats, base = h.node.stats, h.now_ns()
        for i in range(10):
            h.publish_pair(base + i * 100_000_000)
            assert h.spin_until(lambda: stats["received_pairs"] == i + 1, 60), stats  # one at a time: none lost
        assert stats["dropped_rate"] == 7
        accepted = stats["received_pairs"] - stats["dropped_rate"]

        def settled() -> bool:
            return h.node._slot is None and stats["processed"] + stats["dropped_replaced"] + stats["rejected"] \
                + stats["dropped_stale"] == accepted

        assert h.spin_until(settled), stats
        assert accepted == 3 and stats["succeeded"] == stats["processed"] >= 1  # busy drops are counted apart
        assert h.spin_until(lambda: len(h.got["pose"]) == stats["succeeded"] and h.got["diagnostics"], 60)
        (status,) = h.got["diagnostics"][-1].status
        values = {kv.key: kv.value for kv in status.values}
        for key in ("mode", "device", "max_rate_hz", "inputs", "dropped_rate", "dropped_replaced", "succeeded",
                    "failed", "last_latency_s", "mean_latency_s", "requests", "request_timeouts"):
            assert key in values, key
        assert (values["mode"], values["device"], values["inputs"], values["max_rate_hz"]) == \
            ("continuous", "cpu", "pair", "3.0")
        assert float(values["mean_latency_s"]) > 0
    finally:
        h.close()


def test_max_rate_can_be_changed_at_run_time(ros, tiny_net):
    from rclpy.parameter import Parameter

    h = Harness(ros, tiny_net)
    try:
        assert h.node.rate_gate.period_ns == 0
        assert h.node.set_parameters([Parameter("max_rate", value=4.0)])[0].successful
        assert h.node.rate_gate.period_ns == 250_000_000
        assert not h.node.set_parameters([Parameter("max_rate", value=-1.0)])[0].successful
        assert not h.node.set_parameters([Parameter("mode", value="on_demand")])[0].successful  # read-only
    finally:
        h.close()


@pytest.mark.parametrize(("param", "parameter", "expected"), [
    ("mode:=sometimes", "mode", "expected one of continuous, on_demand, got 'sometimes'"),
    ("max_rate:=-1.0", "max_rate", "expected a value in [0.0, 1000.0], got -1.0"),
    ("request_timeout_s:=0.0", "request_timeout_s", "expected a value in [0.01, 3600.0], got 0.0"),
])
def test_bad_trigger_parameter_is_one_stderr_line_and_exit_2(subprocess_ros_env, param, parameter, expected):
    assert_one_line_exit_2(["checkpoint:=random", "device:=cpu", param], parameter, expected)
