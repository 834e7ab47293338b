"""Pictures of a MicKey result, like Figure 4 of the paper: matches, depth and score maps, legend.

Layout (one uint8 RGB canvas):
    [ image0            | image1            ]   inlier matches drawn as lines across both
    [ depth0 (magma)    | depth1 (magma)    ]   brighter = closer (DPT style), depth <= 1 mm black
    [ scores0 (green)   | scores1 (green)   ]   keypoint scores over the grey image
    [ legend: R (angle, axis), t (m), |t|, confidence, inliers / matches, or the failure reason ]
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from mickey_ros.errors import InputError

if TYPE_CHECKING:
    from mickey_ros.pipeline import RelativePose

GAP = 6  # px between the two columns
LEGEND_ROW = 20  # px per legend text line
MIN_DEPTH = 1e-3  # m, depths below are masked (as the official demo)
WRITABLE = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def colorize_depth(depth: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """``[h, w]`` depth (m) -> ``[H, W, 3]`` uint8 RGB magma map, brighter = closer, invalid = black."""
    valid = np.isfinite(depth) & (depth > MIN_DEPTH)
    inv = np.zeros_like(depth, dtype=np.float64)
    inv[valid] = 1.0 / depth[valid]
    if valid.any():
        lo, hi = inv[valid].min(), inv[valid].max()
        inv[valid] = (inv[valid] - lo) / (hi - lo) if hi > lo else 1.0
    grey = (inv * 255).astype(np.uint8)
    rgb = cv2.applyColorMap(grey, cv2.COLORMAP_MAGMA)[:, :, ::-1].copy()
    rgb[~valid] = 0
    return cv2.resize(rgb, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_NEAREST)


def overlay_scores(image: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Scores ``[h, w]`` as green (255 tanh(normalised / 0.5)) blended 0.6 over the grey image ``[H, W, 3]``."""
    s = scores.astype(np.float64)
    s = (s - s.min()) / (s.max() - s.min()) if s.max() > s.min() else np.zeros_like(s)
    green = (255 * np.tanh(s / 0.5)).astype(np.float32)
    green = cv2.resize(green, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    out = np.repeat(grey[:, :, None], 3, axis=2) * 0.4
    out[:, :, 1] += 0.6 * green
    return np.clip(out, 0, 255).astype(np.uint8)


def _legend(result: RelativePose) -> list[str]:
    if not result.success:
        return ["no pose", f"reason: {result.reason}"]
    R, t = result.R, result.t
    angle = np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1)))
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    axis = axis / np.linalg.norm(axis) if np.linalg.norm(axis) > 1e-12 else np.array([0.0, 0.0, 1.0])
    return [
        f"T_0to1: R = {angle:.2f} deg about [{axis[0]:+.2f} {axis[1]:+.2f} {axis[2]:+.2f}]",
        f"t = [{t[0]:+.3f} {t[1]:+.3f} {t[2]:+.3f}] m   |t| = {np.linalg.norm(t):.3f} m",
        f"confidence = {result.confidence:.3f}   inliers = {result.num_inliers} / {result.num_matches}",
    ]


def _pad(image: np.ndarray, height: int, width: int) -> np.ndarray:
    out = np.zeros((height, width, 3), dtype=np.uint8)
    out[: image.shape[0], : image.shape[1]] = image
    return out


def render_result(image0: np.ndarray, image1: np.ndarray, result: RelativePose, max_lines: int = 300) -> np.ndarray:
    """Draw a result.

    Args:
        image0, image1: uint8 ``[H, W, 3]`` RGB images the result was computed on (sizes may differ).
        result: a ``RelativePose`` (keypoints in the images' pixels).
        max_lines: at most this many inlier lines (the highest-weight ones).

    Returns:
        uint8 ``[H', W', 3]`` RGB picture.
    """
    h = max(image0.shape[0], image1.shape[0])
    w0, w1 = image0.shape[1], image1.shape[1]
    width = w0 + GAP + w1
    rows = []
    top = np.zeros((h, width, 3), np.uint8)
    top[: image0.shape[0], :w0] = image0
    top[: image1.shape[0], w0 + GAP:] = image1
    if result.success and result.num_matches:
        keep = np.flatnonzero(result.inliers)[:max_lines]  # matches are sorted by weight, descending
        hues = np.linspace(0, 179, max(len(keep), 1), endpoint=False).astype(np.uint8)
        palette = cv2.cvtColor(np.stack([hues, np.full_like(hues, 255), np.full_like(hues, 255)], -1)[None],
                               cv2.COLOR_HSV2RGB)[0]
        for colour, i in zip(palette, keep):
            p0 = tuple(int(round(c)) for c in result.kpts2d0[i])
            p1 = (int(round(result.kpts2d1[i][0])) + w0 + GAP, int(round(result.kpts2d1[i][1])))
            cv2.line(top, p0, p1, tuple(int(c) for c in colour), 1, cv2.LINE_AA)
            cv2.circle(top, p0, 2, tuple(int(c) for c in colour), -1)
            cv2.circle(top, p1, 2, tuple(int(c) for c in colour), -1)
    rows.append(top)
    for maps, render in (((result.depth0, result.depth1), "depth"), ((result.scores0, result.scores1), "scores")):
        if maps[0] is None or maps[1] is None:
            continue
        row = np.zeros((h, width, 3), np.uint8)
        for k, (img, m, x0) in enumerate(((image0, maps[0], 0), (image1, maps[1], w0 + GAP))):
            size = (img.shape[0], img.shape[1])
            tile = colorize_depth(m, size) if render == "depth" else overlay_scores(img, m)
            row[: size[0], x0: x0 + size[1]] = tile
        rows.append(row)
    lines = _legend(result)
    legend = np.full((LEGEND_ROW * len(lines) + 8, width, 3), 255, np.uint8)
    for k, text in enumerate(lines):
        cv2.putText(legend, text, (6, LEGEND_ROW * (k + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    rows.append(legend)
    return np.concatenate([_pad(r, r.shape[0], width) for r in rows], axis=0)


def save_visualization(path: str | Path, image0: np.ndarray, image1: np.ndarray, result: RelativePose) -> None:
    """Render and write the picture (PNG/JPEG/...).

    Raises:
        InputError: unknown extension or the file cannot be written.
    """
    p = Path(path)
    if p.suffix.lower() not in WRITABLE:
        raise InputError(f"--viz: expected a file name ending in {', '.join(WRITABLE)}, got {p}")
    picture = render_result(image0, image1, result)
    ok = False
    try:
        ok = p.parent.is_dir() and cv2.imwrite(str(p), np.ascontiguousarray(picture[:, :, ::-1]))
    except cv2.error as err:
        raise InputError(f"--viz: cannot write {p}: {err}") from err
    if not ok:
        raise InputError(f"--viz: cannot write {p} (does the folder exist and is it writable?)")
