"""What ``relocalize_node`` needs before and around its lifecycle: the network its parameters name, its counters,
and how errors become one line (rclpy-free, so the rules are testable without a node)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mickey_ros.errors import MickeyError, describe_error
from mickey_ros.ros.node_common import ParameterError


class Interrupted(Exception):
    """The context was shut down (SIGINT/SIGTERM) while configure waited for the worker."""



def new_stats() -> dict[str, Any]:
    return {"received_pairs": 0, "processed": 0, "succeeded": 0, "failed": 0, "dropped_stale": 0,
            "dropped_replaced": 0, "dropped_rate": 0, "dropped_no_reference": 0, "ignored_idle": 0,
            "rejected": 0, "requests": 0, "request_timeouts": 0, "reference_updates": 0,
            "last_latency_s": float("nan"), "mean_latency_s": float("nan"),
            "last_input_age_s": float("nan"), "last_inliers": 0}



def as_mickey_error(what: str, err: Exception) -> MickeyError:
    """``err`` itself when it is one of ours, else a :class:`MickeyError` ``"<what>: <Type>: <first line>"`` caused
    by it (as ``raise ... from err``)."""
    if isinstance(err, MickeyError):
        return err
    wrapped = MickeyError(f"{what}: {describe_error(err)}")
    wrapped.__cause__ = err
    return wrapped



def without_frames(err: BaseException) -> BaseException:
    """``err`` with the tracebacks of its chain dropped: their frames would keep the network (and its GPU memory)
    alive for as long as the error is kept."""
    seen: set[int] = set()
    link: BaseException | None = err
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        link.__traceback__ = None
        link = link.__cause__ or link.__context__
    return err



def load_network(p: Mapping[str, Any]) -> tuple[Any, str]:
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



def precision_in_effect(precision: str, device: Any) -> str:
    if precision != "auto":
        return f"{precision} backbone"
    return "auto (fp16 backbone)" if device.type == "cuda" else "auto (fp32)"

