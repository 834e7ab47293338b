"""Training pairs from an indexed set of posed frames (Map-free style: pairs stay within a place).

Candidates are every ordered pair of frames of one recording (earlier frame first, at least
``min_frame_gap`` frames apart) and every pair across two recordings of the same place. A candidate is
kept when its baseline (distance between the camera centres, metres) lies in
``[min_baseline_m, max_baseline_m]`` and the angle between the two optical axes (camera z axes) is at
most ``max_angle_deg``. Vectorised over blocks of frames; deterministic for a given seed.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from mickey_ros.errors import DatasetError, InputError


class PosedFrame(Protocol):
    """What pairing reads of a frame: its camera -> world pose ``[4, 4]`` (metres)."""

    T_world_cam: np.ndarray


class PosedFrames(Protocol):
    """What pairing reads of an index (e.g. :class:`training.data.bag_index.BagIndex`): the frames, their
    recordings (id -> frame indices, in order) and places (id -> recording ids). This module does not import
    the bag index (which imports and re-exports this module)."""

    frames: Sequence[PosedFrame]

    def __len__(self) -> int: ...

    def recordings(self) -> dict[str, np.ndarray]: ...

    def places(self) -> dict[str, list[str]]: ...


_BLOCK_ELEMENTS = 2_000_000  # candidate matrix entries evaluated at once (memory bound)


@dataclass(frozen=True)
class PairConfig:
    """Pair selection limits (metres, degrees, frames)."""

    min_baseline_m: float = 0.1
    max_baseline_m: float = 2.0
    max_angle_deg: float = 45.0
    within_recording: bool = True
    across_recordings: bool = True
    min_frame_gap: int = 1
    max_pairs_per_place: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.min_baseline_m <= self.max_baseline_m:
            raise InputError(f"PairConfig: expected 0 <= min_baseline_m <= max_baseline_m, got "
                             f"{self.min_baseline_m} and {self.max_baseline_m}")
        if not 0 <= self.max_angle_deg <= 180:
            raise InputError(f"PairConfig.max_angle_deg: expected degrees in [0, 180], got {self.max_angle_deg}")
        if self.min_frame_gap < 1:
            raise InputError(f"PairConfig.min_frame_gap: expected an integer >= 1, got {self.min_frame_gap}")
        if self.max_pairs_per_place is not None and self.max_pairs_per_place < 1:
            raise InputError(f"PairConfig.max_pairs_per_place: expected None or >= 1, got {self.max_pairs_per_place}")
        if not (self.within_recording or self.across_recordings):
            raise InputError("PairConfig: within_recording and across_recordings are both False; no pair can form")


@dataclass(frozen=True)
class Pair:
    """Two frames of a :class:`BagIndex` (indices into ``index.frames``); ``index.T_0to1(frame0, frame1)``
    maps camera-0 points into camera 1."""

    frame0: int
    frame1: int
    place: str
    baseline_m: float
    angle_deg: float


def _block(C: np.ndarray, Z: np.ndarray, ia: np.ndarray, ib: np.ndarray, within: bool, cfg: PairConfig,
           counts: Counter) -> list[tuple[np.ndarray, ...]]:
    """Kept ``(i0, i1, baseline, angle)`` of frames ``ia`` x ``ib``; exclusions added to ``counts``."""
    out = []
    step = max(1, _BLOCK_ELEMENTS // max(len(ib), 1))
    cols = np.arange(len(ib))[None, :]
    for s in range(0, len(ia), step):
        ra = ia[s:s + step]
        dist = np.linalg.norm(C[ra, None, :] - C[None, ib, :], axis=-1)  # [n, m] metres
        angle = np.degrees(np.arccos(np.clip(Z[ra] @ Z[ib].T, -1.0, 1.0)))  # [n, m] degrees
        if within:  # ia == ib: the upper triangle, j - i >= gap
            rows = np.arange(s, s + len(ra))[:, None]
            cand = cols > rows
            near = cand & (cols - rows < cfg.min_frame_gap)
        else:
            cand = np.ones(dist.shape, dtype=bool)
            near = np.zeros(dist.shape, dtype=bool)
        low, high = cand & (dist < cfg.min_baseline_m), cand & (dist > cfg.max_baseline_m)
        wide = cand & (angle > cfg.max_angle_deg)
        ok = cand & ~(near | low | high | wide)
        counts.update(candidates=int(cand.sum()), near=int(near.sum()), low=int(low.sum()), high=int(high.sum()),
                      wide=int(wide.sum()))
        r, c = np.nonzero(ok)
        out.append((ra[r], ib[c], dist[r, c], angle[r, c]))
    return out


def make_pairs(index: PosedFrames, config: PairConfig = PairConfig(),
               place_configs: Mapping[str, PairConfig] | None = None) -> list[Pair]:
    """Pairs of frames with a useful baseline and view overlap, grouped by place.

    Args:
        index: from :func:`training.data.bag_index.index_bags`.
        config: limits; ``max_pairs_per_place`` keeps a seeded random subset per place (``config.seed``).
        place_configs: other limits for some places (place id -> config; e.g. streets, whose useful baselines are
            metres where a room's are decimetres); their ``seed`` is not used.

    Returns:
        Pairs sorted by place, then by (frame0, frame1) in index order.

    Raises:
        DatasetError: no candidate survives the limits (one line: how many each limit excluded).
    """
    if not len(index):
        raise DatasetError("pairs: the index holds no frames")
    T = np.stack([f.T_world_cam for f in index.frames])  # [N, 4, 4] camera -> world
    C, Z = T[:, :3, 3], T[:, :3, 2]  # camera centres (metres), optical axes, in the world
    recordings = index.recordings()
    rng = np.random.default_rng(config.seed)
    counts: Counter = Counter()
    pairs: list[Pair] = []
    for place, recs in index.places().items():
        cfg = (place_configs or {}).get(place, config)
        parts: list[tuple[np.ndarray, ...]] = []
        for a, rec_a in enumerate(recs):
            if cfg.within_recording:
                parts += _block(C, Z, recordings[rec_a], recordings[rec_a], True, cfg, counts)
            if cfg.across_recordings:
                for rec_b in recs[a + 1:]:
                    parts += _block(C, Z, recordings[rec_a], recordings[rec_b], False, cfg, counts)
        if not parts:
            continue
        i0, i1, dist, angle = (np.concatenate(x) for x in zip(*parts))
        keep = np.lexsort((i1, i0))
        if cfg.max_pairs_per_place is not None and len(keep) > cfg.max_pairs_per_place:
            keep = keep[np.sort(rng.choice(len(keep), size=cfg.max_pairs_per_place, replace=False))]
        pairs += [Pair(int(i0[k]), int(i1[k]), place, float(dist[k]), float(angle[k])) for k in keep]
    if not pairs:
        raise DatasetError(
            f"pairs: no valid pairs among {counts['candidates']} candidates in {len(recordings)} recordings: "
            f"{counts['low']} below min_baseline_m={config.min_baseline_m:g}, {counts['high']} above "
            f"max_baseline_m={config.max_baseline_m:g}, {counts['wide']} above max_angle_deg={config.max_angle_deg:g}, "
            f"{counts['near']} closer than min_frame_gap={config.min_frame_gap} (a candidate may fail several)")
    return pairs
