"""Relocalizer: two images + intrinsics -> metric relative pose (the one entry point everything uses)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RelativePose:
    """Metric relative pose between camera 0 (reference) and camera 1 (query).

    ``T_0to1`` maps points from camera-0 coordinates into camera-1 coordinates: ``X1 = R X0 + t``
    (metres, OpenCV optical axes: x right, y down, z forward). On failure ``success`` is False,
    ``reason`` says why, ``T_0to1`` is the identity and the counts are 0.

    Attributes:
        success: True when a pose was estimated.
        reason: empty on success, otherwise a one-line reason ("too few matches: ...").
        T_0to1: ``[4, 4]`` float64 homogeneous transform camera 0 -> camera 1.
        confidence: soft-inlier count of the final pose (tau 0.15 m) / num_matches, in [0, 1].
        soft_inliers: the soft-inlier count itself (the official ``inliers`` value, <= 2048).
        num_inliers: hard inliers (residual <= 0.15 m) of the final pose among the sampled matches.
        num_matches: correspondences sampled in the winning draw (<= 2048).
        kpts3d0, kpts3d1: ``[M, 3]`` float64 metres, the sampled matches' 3D keypoints, each in its
            own camera frame (M = num_matches), ordered by sampling weight (descending).
        kpts2d0, kpts2d1: ``[M, 2]`` float64 pixels (x, y) in the *caller's* image (before crop/resize).
        inliers: ``[M]`` bool, hard-inlier mask of the final pose.
        match_weights: ``[M]`` float64, the matching probability each sampled match was drawn with.
        depth0, depth1: ``[h, w]`` float32 depth maps (metres) on the 14-px grid, for visualisation.
        scores0, scores1: ``[h, w]`` float32 keypoint score maps on the 14-px grid.
    """

    success: bool
    reason: str
    T_0to1: np.ndarray
    confidence: float = 0.0
    soft_inliers: float = 0.0
    num_inliers: int = 0
    num_matches: int = 0
    kpts3d0: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    kpts3d1: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    kpts2d0: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    kpts2d1: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    inliers: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=bool))
    match_weights: np.ndarray = field(default_factory=lambda: np.zeros((0,)))
    depth0: np.ndarray | None = None
    depth1: np.ndarray | None = None
    scores0: np.ndarray | None = None
    scores1: np.ndarray | None = None

    @property
    def R(self) -> np.ndarray:
        """``[3, 3]`` float64 rotation camera 0 -> camera 1."""
        return self.T_0to1[:3, :3]

    @property
    def t(self) -> np.ndarray:
        """``[3]`` float64 translation camera 0 -> camera 1, metres."""
        return self.T_0to1[:3, 3]
