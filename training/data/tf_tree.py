"""Camera poses over time: rigid-transform tracks with interpolation, and a TF tree (numpy, no ROS).

A :class:`PoseTrack` holds time-stamped ``T_parent_child`` samples (one dynamic TF edge, or a pose topic)
and interpolates between the two samples bracketing a stamp: translation linearly, rotation by slerp.
A :class:`TfTree` holds the ``/tf`` tracks and ``/tf_static`` edges of a bag and composes any chain
between two frames through their common ancestor, interpolating each dynamic edge at the stamp.
Frames follow tf2: one parent per frame, leading ``/`` ignored. Transforms map child points into the
parent frame (``X_parent = R X_child + t``, metres).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mickey_ros.errors import DatasetError
from mickey_ros.geometry.se3 import invert_T, make_T, quat_wxyz_to_matrix


def stamp_ns(header: Any) -> int:
    """``std_msgs/Header`` stamp in integer nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def clean_frame(name: str) -> str:
    """A frame id without tf2's ignored leading ``/``."""
    return str(name).lstrip("/")


# -- interpolation and the TF tree ----------------------------------------------------------------------------
def slerp(q0: np.ndarray, q1: np.ndarray, a: float) -> np.ndarray:
    """Unit-quaternion slerp (``[4]`` wxyz) along the shorter arc, ``a`` in [0, 1]."""
    q1 = -q1 if float(np.dot(q0, q1)) < 0 else q1
    theta = 2.0 * np.arctan2(np.linalg.norm(q0 - q1), np.linalg.norm(q0 + q1))  # angle between the 4-vectors
    if theta < 1e-9:
        q = q0 + a * (q1 - q0)
    else:
        q = (np.sin((1.0 - a) * theta) * q0 + np.sin(a * theta) * q1) / np.sin(theta)
    return q / np.linalg.norm(q)


@dataclass
class PoseTrack:
    """Time-stamped rigid transforms ``T_parent_child`` (a dynamic TF edge or a pose topic)."""

    stamps: np.ndarray  # [N] int64 ns, strictly increasing
    quats: np.ndarray  # [N, 4] unit wxyz
    trans: np.ndarray  # [N, 3] metres

    @classmethod
    def build(cls, samples: dict[int, tuple[np.ndarray, np.ndarray]]) -> "PoseTrack":
        stamps = np.array(sorted(samples), dtype=np.int64)
        return cls(stamps, np.array([samples[s][0] for s in stamps]).reshape(-1, 4),
                   np.array([samples[s][1] for s in stamps]).reshape(-1, 3))

    def at(self, t_ns: int, gap_ns: int) -> np.ndarray | None:
        """``[4, 4]`` interpolated at ``t_ns``; None outside the span or without a sample within
        ``gap_ns`` on both sides."""
        j = int(np.searchsorted(self.stamps, t_ns, side="left"))
        if j < len(self.stamps) and self.stamps[j] == t_ns:
            return make_T(quat_wxyz_to_matrix(self.quats[j]), self.trans[j])
        if j == 0 or j == len(self.stamps):
            return None
        t0, t1 = int(self.stamps[j - 1]), int(self.stamps[j])
        if t_ns - t0 > gap_ns or t1 - t_ns > gap_ns:
            return None
        a = (t_ns - t0) / (t1 - t0)
        q = slerp(self.quats[j - 1], self.quats[j], a)
        return make_T(quat_wxyz_to_matrix(q), (1.0 - a) * self.trans[j - 1] + a * self.trans[j])

    def span(self) -> tuple[int, int]:
        return int(self.stamps[0]), int(self.stamps[-1])


def rigid(translation: Any, rotation: Any) -> tuple[np.ndarray, np.ndarray]:
    """(unit wxyz quaternion, translation) from message fields (ROS xyzw order)."""
    q = np.array([rotation.w, rotation.x, rotation.y, rotation.z], dtype=np.float64)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"invalid quaternion (x, y, z, w) = {q[[1, 2, 3, 0]].tolist()}")
    return q / n, np.array([translation.x, translation.y, translation.z], dtype=np.float64)


class TfTree:
    """``/tf`` (dynamic, one :class:`PoseTrack` per child frame) and ``/tf_static`` edges of one bag."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._dyn: dict[str, tuple[str, dict[int, tuple[np.ndarray, np.ndarray]]]] = {}
        self._static: dict[str, tuple[str, np.ndarray]] = {}
        self._tracks: dict[str, PoseTrack] = {}

    def add(self, msg: Any, static: bool) -> None:
        """Add a ``tf2_msgs/TFMessage``."""
        for tf in msg.transforms:
            parent, child = clean_frame(tf.header.frame_id), clean_frame(tf.child_frame_id)
            q, t = rigid(tf.transform.translation, tf.transform.rotation)
            if static:
                self._static[child] = (parent, make_T(quat_wxyz_to_matrix(q), t))
                continue
            old_parent, samples = self._dyn.setdefault(child, (parent, {}))
            if old_parent != parent:
                raise DatasetError(f"{self.where}: TF frame '{child}' has two parents in /tf ('{old_parent}' and "
                                   f"'{parent}'); expected a tree")
            samples[stamp_ns(tf.header)] = (q, t)

    def _parent(self, child: str) -> str | None:
        if child in self._static:
            return self._static[child][0]
        return self._dyn[child][0] if child in self._dyn else None

    def frames(self) -> set[str]:
        edges = [(c, p) for c, (p, _) in self._static.items()] + [(c, p) for c, (p, _) in self._dyn.items()]
        return {f for e in edges for f in e}

    def _ancestors(self, frame: str) -> list[str]:
        chain = [frame]
        while (parent := self._parent(chain[-1])) is not None:
            if parent in chain:
                raise DatasetError(f"{self.where}: TF loop through '{parent}' ({' -> '.join(chain + [parent])})")
            chain.append(parent)
        return chain

    def chain(self, target: str, source: str, static_only: bool = False) -> tuple[list[str], list[str]]:
        """Frames from ``source`` and from ``target`` up to their common ancestor (both lists end with it).

        Raises:
            DatasetError: a frame is in no TF message, the frames are not connected, or (static_only) the
                path crosses a /tf edge.
        """
        known = self.frames()
        for f in (source, target):
            if f not in known and source != target:
                raise DatasetError(f"{self.where}: TF frame '{f}' is not in /tf or /tf_static "
                                   f"(frames: {', '.join(sorted(known)) or 'none'})")
        up_s, up_t = self._ancestors(source), self._ancestors(target)
        common = next((f for f in up_s if f in set(up_t)), None)
        if common is None:
            raise DatasetError(f"{self.where}: broken TF chain between '{target}' and '{source}': "
                               f"{' -> '.join(up_s)} and {' -> '.join(up_t)} share no root")
        up_s, up_t = up_s[: up_s.index(common) + 1], up_t[: up_t.index(common) + 1]
        if static_only:
            dyn = [f for f in up_s[:-1] + up_t[:-1] if f not in self._static]
            if dyn:
                raise DatasetError(f"{self.where}: TF from '{target}' to '{source}' is not static: "
                                   f"'{dyn[0]}' comes from /tf")
        for f in up_s[:-1] + up_t[:-1]:
            if f not in self._static and f not in self._tracks:
                self._tracks[f] = PoseTrack.build(self._dyn[f][1])
        return up_s, up_t

    def _to_root(self, path: list[str], t_ns: int, gap_ns: int) -> np.ndarray | None:
        T = np.eye(4)
        for f in path[:-1]:  # child frames, from the leaf upwards
            edge = self._static[f][1] if f in self._static else self._tracks[f].at(t_ns, gap_ns)
            if edge is None:
                return None
            T = edge @ T
        return T

    def lookup(self, chain: tuple[list[str], list[str]], t_ns: int, gap_ns: int) -> np.ndarray | None:
        """``T_target_source`` (``[4, 4]``) at ``t_ns``; None where a dynamic edge has no pose near it."""
        T_root_source, T_root_target = self._to_root(chain[0], t_ns, gap_ns), self._to_root(chain[1], t_ns, gap_ns)
        if T_root_source is None or T_root_target is None:
            return None
        return invert_T(T_root_target) @ T_root_source

    def span(self, chain: tuple[list[str], list[str]]) -> tuple[int, int] | None:
        """Time span where every dynamic edge of the chain has samples (None if all static)."""
        spans = [self._tracks[f].span() for f in chain[0][:-1] + chain[1][:-1] if f in self._tracks]
        return (max(s[0] for s in spans), min(s[1] for s in spans)) if spans else None
