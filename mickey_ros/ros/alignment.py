"""Multi-robot map alignment from repeated MicKey measurements (pure numpy, no ROS).

Each measurement k pairs a camera of robot A and one of robot B:
  ``T_mapa_ca`` (pose of A's camera in map_a), ``T_mapb_cb`` (pose of B's camera in map_b) and the MicKey
  relative pose ``T_0to1`` with camera 0 = A's camera, camera 1 = B's (``X_cb = T_0to1 X_ca``).
It implies the transform taking map_b coordinates into map_a coordinates (the pose of map_b in map_a, the
TF ``map_a -> map_b``):  ``T_mapa_mapb = T_mapa_ca @ inv(T_0to1) @ inv(T_mapb_cb)``.
The fusion gates by confidence, starts from the robust medoid of the candidates and refines with
iteratively reweighted (Cauchy) means, rejecting gross outliers, information-weighted by the measurements'
covariances where they all carry one; the covariance is the inliers' spread over their count (x, y, z, rotX,
rotY, rotZ; metres, radians).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mickey_ros.errors import InputError
from mickey_ros.geometry.se3 import invert_T, make_T


@dataclass(frozen=True)
class AlignmentConfig:
    min_confidence: float = 0.2  # measurements below are not used (MicKey confidence in [0, 1])
    rotation_scale_deg: float = 2.0  # deg of rotation residual that counts like translation_scale_m
    translation_scale_m: float = 0.2  # m, Cauchy scale of the combined residual
    outlier_factor: float = 3.0  # residual > factor * scale -> outlier (weight 0)
    min_inliers: int = 3
    iterations: int = 30


@dataclass
class Alignment:
    success: bool
    reason: str
    T_mapa_mapb: np.ndarray  # [4, 4] float64, X_mapa = T X_mapb
    covariance: np.ndarray  # [6, 6] (x, y, z, rotX, rotY, rotZ), m^2 / rad^2
    inliers: np.ndarray  # [K] bool over all measurements (False for gated ones)


def candidate(T_mapa_ca: np.ndarray, T_0to1: np.ndarray, T_mapb_cb: np.ndarray) -> np.ndarray:
    """``T_mapa_mapb`` implied by one measurement."""
    return np.asarray(T_mapa_ca, float) @ invert_T(T_0to1) @ invert_T(T_mapb_cb)


def _log_so3(R: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle, radians) of ``[..., 3, 3]`` rotations."""
    cos = np.clip((np.trace(R, axis1=-2, axis2=-1) - 1) / 2, -1, 1)
    angle = np.arccos(cos)
    v = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    sin = np.sin(angle)
    scale = np.where(sin > 1e-9, angle / (2 * np.maximum(sin, 1e-12)), 0.5)
    return v * scale[..., None]


def _project_so3(M: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(M)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def _residuals(Ts: np.ndarray, T: np.ndarray, cfg: AlignmentConfig) -> np.ndarray:
    rot = np.degrees(np.linalg.norm(_log_so3(np.swapaxes(Ts[:, :3, :3], 1, 2) @ T[:3, :3]), axis=-1))
    trans = np.linalg.norm(Ts[:, :3, 3] - T[:3, 3], axis=-1)
    return trans / cfg.translation_scale_m + rot / cfg.rotation_scale_deg  # in units of the scale


def candidate_covariance(T_mapa_ca: np.ndarray, T_0to1: np.ndarray, T_mapb_cb: np.ndarray,
                         covariance: np.ndarray) -> np.ndarray:
    """``[6, 6]`` covariance of :func:`candidate` from the measurement's (the pose of camera B in camera A, about
    camera A's axes, as published), to first order, about map_a's axes (the camera poses taken as exact).

    With ``P = inv(T_0to1) = [Q | p]`` perturbed as ``(exp(dphi) Q, p + dp)``: the candidate's rotation moves by
    ``R_a dphi`` and its translation by ``R_a dp - R_a [Q c_b]_x dphi``, ``c_b`` = map_b's origin in camera B.
    """
    T_a, T_b = np.asarray(T_mapa_ca, dtype=np.float64), np.asarray(T_mapb_cb, dtype=np.float64)
    Q = np.asarray(T_0to1, dtype=np.float64)[:3, :3].T
    R_a = T_a[:3, :3]
    c_b = -T_b[:3, :3].T @ T_b[:3, 3]
    v = Q @ c_b
    skew = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    J = np.block([[R_a, -R_a @ skew], [np.zeros((3, 3)), R_a]])
    return J @ np.asarray(covariance, dtype=np.float64) @ J.T


def fuse(candidates: np.ndarray, confidences: np.ndarray, config: AlignmentConfig | None = None,
         covariances: np.ndarray | None = None) -> Alignment:
    """Robustly fuse ``[K, 4, 4]`` candidate ``T_mapa_mapb`` with their ``[K]`` confidences.

    ``covariances`` (optional ``[K, 6, 6]`` from :func:`candidate_covariance`, NaN where a measurement has none):
    when every used measurement has one, the means are information-weighted as well: translations by the inverse
    of their translation block, rotations by the inverse mean variance of their rotation block.
    """
    cfg = config or AlignmentConfig()
    Ts = np.asarray(candidates, dtype=np.float64).reshape(-1, 4, 4)
    conf = np.asarray(confidences, dtype=np.float64).reshape(-1)
    if len(conf) != len(Ts):
        raise InputError(f"confidences: expected {len(Ts)} values (one per measurement), got {len(conf)}")
    if covariances is not None:
        covariances = np.asarray(covariances, dtype=np.float64).reshape(-1, 6, 6)
        if len(covariances) != len(Ts):
            raise InputError(f"covariances: expected {len(Ts)} 6x6 matrices (one per measurement), "
                             f"got {len(covariances)}")
    used = np.isfinite(conf) & (conf >= cfg.min_confidence) & np.all(np.isfinite(Ts.reshape(len(Ts), -1)), axis=1)
    inliers = np.zeros(len(Ts), dtype=bool)
    if used.sum() < cfg.min_inliers:
        return Alignment(False, f"too few measurements: {int(used.sum())} with confidence >= {cfg.min_confidence}, "
                         f"need {cfg.min_inliers}", np.eye(4), np.full((6, 6), np.nan), inliers)
    idx = np.flatnonzero(used)
    sel = Ts[idx]
    info_t, info_r = np.broadcast_to(np.eye(3), (len(idx), 3, 3)), np.ones(len(idx))
    if covariances is not None and np.all(np.isfinite(covariances[idx])):
        info_t = np.linalg.inv(covariances[idx, :3, :3])
        info_r = 3.0 / np.trace(covariances[idx, 3:, 3:], axis1=1, axis2=2)
        info_t, info_r = info_t / np.mean(np.trace(info_t, axis1=1, axis2=2) / 3.0), info_r / np.mean(info_r)
    # robust start: the candidate closest (in truncated residual) to all others
    cost = [np.minimum(_residuals(sel, T, cfg), cfg.outlier_factor).sum() for T in sel]
    T = sel[int(np.argmin(cost))].copy()
    for _ in range(cfg.iterations):
        r = _residuals(sel, T, cfg)
        w = conf[idx] / (1 + r**2)
        w[r > cfg.outlier_factor] = 0
        if w.sum() <= 0:
            break
        W_t = np.einsum("k,kij->kij", w, info_t)
        t_new = np.linalg.solve(W_t.sum(0), np.einsum("kij,kj->i", W_t, sel[:, :3, 3]))
        T_new = make_T(_project_so3(np.einsum("k,kij->ij", w * info_r, sel[:, :3, :3])), t_new)
        converged = np.allclose(T_new, T, atol=1e-12)
        T = T_new
        if converged:
            break
    keep = _residuals(sel, T, cfg) <= cfg.outlier_factor
    inliers[idx[keep]] = True
    if keep.sum() < cfg.min_inliers:
        return Alignment(False, f"no consistent set: {int(keep.sum())} measurements agree, need {cfg.min_inliers}",
                         np.eye(4), np.full((6, 6), np.nan), inliers)
    res = np.concatenate([sel[keep, :3, 3] - T[:3, 3], _log_so3(np.swapaxes(T[:3, :3], 0, 1) @ sel[keep, :3, :3])], 1)
    n = len(res)
    covariance = (res.T @ res) / max(n - 1, 1) / n
    return Alignment(True, "", T, covariance, inliers)


# -- streaming helpers used by map_alignment_node (still pure numpy) -------------------------------------------
def _slerp_rotation(R_a: np.ndarray, R_b: np.ndarray, s: float) -> np.ndarray:
    """Rotation ``s`` of the way from ``R_a`` to ``R_b`` along the shortest geodesic (``s`` in [0, 1])."""
    w = _log_so3(R_a.T @ R_b) * s
    angle = np.linalg.norm(w)
    if angle < 1e-12:
        return R_a.copy()
    k = w / angle
    Kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return R_a @ (np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx)


class PoseBuffer:
    """Time-stamped poses of one camera in its map, interpolated at query stamps.

    ``add(stamp_ns, T_map_cam)`` stores ``[4, 4]`` poses (camera -> map, metres); ``at(stamp_ns)`` returns the pose
    interpolated between the two bracketing samples (linear translation, geodesic rotation), or ``None`` when the
    stamp lies outside the buffered span or either neighbour is more than ``max_gap_ns`` away.
    """

    def __init__(self, max_gap_ns: int = 200_000_000, capacity: int = 2000) -> None:
        self.max_gap_ns = int(max_gap_ns)
        self.capacity = int(capacity)
        self._stamps: list[int] = []
        self._poses: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._stamps)

    def add(self, stamp_ns: int, T_map_cam: np.ndarray) -> None:
        T = np.asarray(T_map_cam, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise InputError(f"pose at {stamp_ns} ns: expected a finite [4, 4] transform, got shape {T.shape}")
        i = int(np.searchsorted(self._stamps, stamp_ns))
        if i < len(self._stamps) and self._stamps[i] == stamp_ns:
            self._poses[i] = T
            return
        self._stamps.insert(i, int(stamp_ns))
        self._poses.insert(i, T)
        if len(self._stamps) > self.capacity:
            del self._stamps[0], self._poses[0]

    def at(self, stamp_ns: int) -> np.ndarray | None:
        i = int(np.searchsorted(self._stamps, stamp_ns))
        if i < len(self._stamps) and self._stamps[i] == stamp_ns:
            return self._poses[i].copy()
        if i == 0 or i == len(self._stamps):
            return None
        t0, t1 = self._stamps[i - 1], self._stamps[i]
        if stamp_ns - t0 > self.max_gap_ns or t1 - stamp_ns > self.max_gap_ns:
            return None
        s = (stamp_ns - t0) / (t1 - t0)
        T0, T1 = self._poses[i - 1], self._poses[i]
        return make_T(_slerp_rotation(T0[:3, :3], T1[:3, :3], s), (1 - s) * T0[:3, 3] + s * T1[:3, 3])


class AlignmentWindow:
    """The most recent ``size`` measurements and their fusion (see :func:`fuse`)."""

    def __init__(self, size: int = 200, config: AlignmentConfig | None = None) -> None:
        self.size = int(size)
        self.config = config or AlignmentConfig()
        self.candidates: list[np.ndarray] = []
        self.confidences: list[float] = []
        self.covariances: list[np.ndarray] = []

    def add(self, T_mapa_ca: np.ndarray, T_0to1: np.ndarray, T_mapb_cb: np.ndarray, confidence: float,
            covariance: np.ndarray | None = None) -> None:
        """One measurement; ``covariance``: the published ``[6, 6]`` of the relative pose, None = unknown."""
        self.candidates.append(candidate(T_mapa_ca, T_0to1, T_mapb_cb))
        self.confidences.append(float(confidence))
        self.covariances.append(np.full((6, 6), np.nan) if covariance is None
                                else candidate_covariance(T_mapa_ca, T_0to1, T_mapb_cb, covariance))
        del self.candidates[:-self.size], self.confidences[:-self.size], self.covariances[:-self.size]

    def fuse(self) -> Alignment:
        if not self.candidates:
            return Alignment(False, "no measurements yet", np.eye(4), np.full((6, 6), np.nan), np.zeros(0, bool))
        return fuse(np.stack(self.candidates), np.asarray(self.confidences), self.config, np.stack(self.covariances))


def other_tf_parent(frames_yaml: str, child: str, own_parent: str) -> str | None:
    """The parent ``child`` already has in a TF tree other than ``own_parent``, else ``None``.

    ``frames_yaml`` is ``tf2_ros.Buffer.all_frames_as_yaml()``: one mapping per child frame with its ``parent``.
    A TF frame has exactly one parent, so ``map_a -> map_b`` may only be broadcast where this returns ``None``.
    """
    import yaml

    try:
        frames = yaml.safe_load(frames_yaml) or {}
    except yaml.YAMLError as err:
        raise InputError(f"TF frames: expected the YAML of Buffer.all_frames_as_yaml(): {err}") from err
    entry = frames.get(child) if isinstance(frames, dict) else None
    parent = str(entry.get("parent", "")) if isinstance(entry, dict) else ""
    return parent if parent and parent != own_parent else None
