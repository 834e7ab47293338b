"""Pictures of a MicKey result, like Figure 4 of the paper, with labels and scales: matches, depth, scores, pose.

Layout (one uint8 RGB canvas; image tiles are upscaled by an integer factor so that the wider one is at least
``MIN_TILE_WIDTH`` px; every row sits under a grey label band that says what it shows):

    [ title (optional)                                                                          ]
    [ image0 (dimmed) | image1 (dimmed) ]  at most ``max_lines`` inlier matches, spread over the images
                                           (farthest-point sampling), coloured by their 3D residual
                                           ``|R X0 + t - X1|`` under the estimated pose (cm)
    [ colour bar: residual, 0 .. the solver's inlier threshold (cm), the threshold marked; larger residuals
      are clamped to its colour and counted in the label                                        ]
    [ depth0 | depth1 ]                    network depth (m), one scale for both (2nd-98th percentile),
    [ colour bar (m)  ]                    brighter = closer, no depth (<= 1 mm) black
    [ scores0 | scores1 ]                  where the network looks: each cell's share of its image's total
    [ colour bar (%)    ]                  keypoint score (%), one scale 0 .. the highest cell for both images,
                                           the uniform share marked, over the grey image
    [ text: estimate (R angle and axis, t, |t|, confidence, inliers) or the failure reason; optionally the
      ground truth, the errors of the estimate and of "no motion" (the identity pose)                ]

:func:`render_with_layout` also returns where everything is (:class:`Layout`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from mickey_ros.errors import InputError
from mickey_ros.geometry.se3 import angle_axis_deg

if TYPE_CHECKING:
    from mickey_ros.pipeline import RelativePose

GAP = 6  # px between the two columns
MIN_TILE_WIDTH = 400  # px: smaller images are upscaled by an integer factor to at least this width
MAX_LINES = 60  # default cap on the drawn inlier lines
INLIER_THRESHOLD_M = 0.15  # default top of the residual colour scale: SolverConfig().inlier_threshold (a test checks)
PERCENTILES = (2.0, 98.0)  # range of the depth colour scale
TOP_CELLS = 0.1  # the score label says which share of the total score the top 10 % of cells hold
MIN_DEPTH = 1e-3  # m, depths below are masked (as the official demo)
WRITABLE = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
FONT = cv2.FONT_HERSHEY_SIMPLEX
LABEL_BG, TEXT_BG = 225, 255  # grey levels of the label bands and of the text block
COLORMAPS = ("residual", "depth", "score")


@dataclass
class Layout:
    """Where :func:`render_with_layout` put everything, in canvas pixels.

    Attributes:
        scale: integer upscaling factor of the image tiles.
        rows: band name -> ``(y0, y1)``; names ``title``, ``matches.label``, ``matches``, ``matches.bar``,
            ``depth.label``, ``depth``, ``depth.bar``, ``scores.label``, ``scores``, ``scores.bar``, ``text``
            (rows without data are absent).
        labels: band name -> the text drawn in it (label bands, title).
        tiles: ``image0``, ``image1``, ``depth0``, ... -> ``(x0, y0, x1, y1)``.
        colorbars: ``residual``, ``depth``, ``scores`` -> ``(x0, y0, x1, y1)`` of the bar itself, its colour
            running left (low) to right (high).
        ranges: colour bar name -> ``(lo, hi)`` in its unit (cm, m, % of the image's total score).
        markers: colour bar name -> ``[(value, text), ...]`` marked on it (``residual``: the inlier threshold;
            ``scores``: the share of a uniform score map).
        num_clamped: drawn lines whose residual is above the inlier threshold (drawn in the threshold's colour).
        num_lines: inlier lines drawn.
        text: the lines of the text block.
    """

    scale: int = 1
    rows: dict[str, tuple[int, int]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    tiles: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    colorbars: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    markers: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    num_lines: int = 0
    num_clamped: int = 0
    text: list[str] = field(default_factory=list)


def _lut(cv2_map: int) -> np.ndarray:
    return cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2_map)[:, 0, ::-1].copy()


_MAGMA, _VIRIDIS = _lut(cv2.COLORMAP_MAGMA), _lut(cv2.COLORMAP_VIRIDIS)


def colormap(values: np.ndarray, lo: float, hi: float, name: str) -> np.ndarray:
    """Colours of values on a scale ``[lo, hi]`` (values outside are clipped to its ends).

    Args:
        values: any shape, float.
        lo, hi: the scale's ends (``hi > lo``; equal ends give every value the low colour).
        name: ``residual`` (green -> yellow -> red, the hue falls from 120 to 0 deg), ``depth`` (magma, brighter =
            smaller value = closer, never black so that black can mean "no depth") or ``score`` (viridis, brighter
            = higher).

    Returns:
        uint8 RGB, ``values.shape + (3,)``; NaN gets the low colour.
    """
    if name not in COLORMAPS:
        raise InputError(f"colormap: expected one of {', '.join(COLORMAPS)}, got {name!r}")
    v = np.asarray(values, dtype=np.float64)
    t = np.clip((v - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(v)
    t = np.nan_to_num(t, nan=0.0)
    if name == "residual":
        if v.size == 0:
            return np.zeros(v.shape + (3,), np.uint8)
        hue = np.round(60.0 * (1.0 - t)).astype(np.uint8)  # OpenCV hue unit = 2 deg: 60 = green, 0 = red
        hsv = np.stack([hue, np.full_like(hue, 255), np.full_like(hue, 255)], -1).reshape(-1, 1, 3)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).reshape(v.shape + (3,))
    if name == "depth":
        return _MAGMA[np.round(255 - 215 * t).astype(np.int64)]  # 255 (near, bright) .. 40 (far, dark purple)
    return _VIRIDIS[np.round(255 * t).astype(np.int64)]


def nice_ticks(lo: float, hi: float, count: int = 6) -> np.ndarray:
    """About ``count`` round tick values (steps of 1, 2, 2.5 or 5 x 10^k) inside ``[lo, hi]``."""
    if not hi > lo:
        return np.array([lo])
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10.0 ** np.floor(np.log10(raw))
    step = next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * magnitude >= raw * (1 - 1e-9))
    first = np.ceil(lo / step - 1e-9) * step + 0.0  # + 0.0: no -0
    return np.arange(first, hi + step * 1e-6, step)


def _tick_text(values: np.ndarray) -> list[str]:
    """Tick labels with as many decimals as the step needs (0.25 -> 2, 0.5 -> 1, 5 -> 0)."""
    step = float(values[1] - values[0]) if len(values) > 1 else 1.0
    decimals = 0
    while decimals < 6 and abs(round(step, decimals) - step) > 1e-9 * max(step, 1.0):
        decimals += 1
    return [f"{round(float(v), decimals) + 0.0:.{decimals}f}" for v in values]  # + 0.0: no "-0"


def percentile_range(values: np.ndarray) -> tuple[float, float]:
    """``PERCENTILES`` (2nd, 98th) of the finite values, ``(0, 1)`` without any; equal ends are widened."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = (float(x) for x in np.percentile(v, PERCENTILES))
    if not hi > lo:
        pad = max(abs(lo) * 0.05, 1e-6)
        lo, hi = lo - pad, hi + pad
    return lo, hi


def _valid_depth(depth: np.ndarray) -> np.ndarray:
    return np.isfinite(depth) & (depth > MIN_DEPTH)


def colorize_depth(depth: np.ndarray, size_hw: tuple[int, int], lo: float | None = None,
                   hi: float | None = None) -> np.ndarray:
    """``[h, w]`` depth (m) -> ``[H, W, 3]`` uint8 RGB (``colormap(..., "depth")``, brighter = closer) on the scale
    ``[lo, hi]`` m (default: its own 2nd-98th percentile); no depth (<= 1 mm or not finite) black."""
    depth = np.asarray(depth, dtype=np.float64)
    valid = _valid_depth(depth)
    if lo is None or hi is None:
        lo, hi = percentile_range(depth[valid])
    rgb = colormap(depth, lo, hi, "depth")
    rgb[~valid] = 0
    return cv2.resize(rgb, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_NEAREST)


def score_share(scores: np.ndarray) -> np.ndarray:
    """Scores ``[h, w]`` as each cell's share of the map's total, in percent (sums to 100; all 0 without any)."""
    s = np.clip(np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0), 0.0, None)
    total = float(s.sum())
    return 100.0 * s / total if total > 0 else np.zeros_like(s)


def uniform_share(scores: np.ndarray) -> float:
    """The share (%) each scored cell would hold if the network looked everywhere alike: 100 / scored cells."""
    active = int(np.count_nonzero(score_share(scores)))
    return 100.0 / active if active else 0.0


def top_cells_share(scores: np.ndarray, fraction: float = TOP_CELLS) -> float:
    """Share (%) of the total score held by the highest ``fraction`` of the scored cells (``fraction * 100`` for a
    uniform map, up to 100 for a peaked one)."""
    share = score_share(scores)
    share = np.sort(share[share > 0])[::-1]
    if share.size == 0:
        return 0.0
    return float(share[: max(1, int(round(fraction * share.size)))].sum())


def overlay_scores(image: np.ndarray, scores: np.ndarray, hi: float | None = None) -> np.ndarray:
    """Score map ``[h, w]`` as :func:`score_share` (%) on the scale ``[0, hi]`` (default: its highest cell),
    coloured with ``colormap(..., "score")`` and blended 0.7 over the grey image ``[H, W, 3]``; cells with score 0
    (masked, never a keypoint) show the grey image only, darkened. Returns ``[H, W, 3]`` uint8."""
    share = score_share(scores)
    if hi is None:
        hi = float(share.max()) if share.size else 1.0
    size = (image.shape[1], image.shape[0])
    colour = cv2.resize(colormap(share, 0.0, hi, "score").astype(np.float32), size, interpolation=cv2.INTER_NEAREST)
    active = cv2.resize((share > 0).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)[:, :, None]
    out = np.where(active[:, :, None], 0.3 * grey + 0.7 * colour, 0.45 * grey)
    return np.clip(out, 0, 255).astype(np.uint8)


def match_residuals_cm(result: RelativePose) -> np.ndarray:
    """``[M]`` 3D residual ``|R X0 + t - X1|`` of each sampled match under the estimated pose, centimetres."""
    X0, X1 = np.asarray(result.kpts3d0, np.float64), np.asarray(result.kpts3d1, np.float64)
    if X0.shape[0] == 0:
        return np.zeros(0)
    return 100.0 * np.linalg.norm(X0 @ result.R.T + result.t - X1, axis=1)


def thin_matches(kpts0: np.ndarray, kpts1: np.ndarray, max_lines: int) -> np.ndarray:
    """Indices of at most ``max_lines`` matches spread over both images.

    Farthest-point sampling on ``(x0, y0, x1, y1)``, starting from match 0 (the highest-weight one); exact
    duplicates are never picked twice. Deterministic.

    Args:
        kpts0, kpts1: ``[M, 2]`` pixel positions of the matches in image 0 and image 1.
        max_lines: the cap (>= 0).

    Returns:
        ``[K]`` int64 indices into the M matches, ``K <= min(M, max_lines)``, in picking order.
    """
    pts = np.concatenate([np.asarray(kpts0, np.float64), np.asarray(kpts1, np.float64)], axis=1)
    if max_lines <= 0 or pts.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    chosen = [0]
    dist = np.linalg.norm(pts - pts[0], axis=1)
    while len(chosen) < max_lines:
        i = int(np.argmax(dist))
        if dist[i] <= 0:
            break  # only duplicates of picked matches are left
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(pts - pts[i], axis=1))
    return np.array(chosen, dtype=np.int64)


# -- text and bands -----------------------------------------------------------------------------------
def _line_height(font: float) -> int:
    (_, h), base = cv2.getTextSize("Ag", FONT, font, 1)
    return h + base + 6


def _wrap(text: str, width: int, font: float) -> list[str]:
    """Split a line at its 3-space separators so that each piece fits ``width`` px."""
    lines: list[str] = []
    for part in text.split("   "):
        joined = f"{lines[-1]}   {part}" if lines else part
        if lines and cv2.getTextSize(joined, FONT, font, 1)[0][0] <= width:
            lines[-1] = joined
        else:
            lines.append(part)
    return lines


def _text_band(lines: list[str], width: int, font: float, background: int) -> tuple[np.ndarray, list[str]]:
    wrapped = [piece for line in lines for piece in _wrap(line, width - 12, font)]
    step = _line_height(font)
    band = np.full((step * len(wrapped) + 6, width, 3), background, np.uint8)
    for k, text in enumerate(wrapped):
        cv2.putText(band, text, (6, step * (k + 1) - 3), FONT, font, (0, 0, 0), 1, cv2.LINE_AA)
    return band, wrapped


def _bar_height(font: float) -> int:
    return max(12, int(round(24 * font)))


def _marker_height(font: float) -> int:
    """Room above a colour bar for its markers' text."""
    return _line_height(font) + 2


def _bar_band_height(font: float, markers: bool = False) -> int:
    """Height of a band holding a colour bar, its ticks and their numbers (and its markers' text)."""
    return 4 + (_marker_height(font) if markers else 0) + _bar_height(font) + 8 + _line_height(font)


def _draw_colorbar(band: np.ndarray, x0: int, x1: int, lo: float, hi: float, name: str, unit: str,
                   font: float, markers: list[tuple[float, str]] | None = None,
                   top: int = 0) -> tuple[int, int, int, int]:
    """A horizontal colour bar in ``band[:, x0:x1]`` with ticks, values and the unit, and ``markers``
    ``(value, text)``: a heavy black line across the bar with its text above it (``top`` px are left above the
    bar for that text); returns the bar's box."""
    ticks = nice_ticks(lo, hi)
    labels = _tick_text(ticks)
    half = max(cv2.getTextSize(t, FONT, font, 1)[0][0] for t in labels) // 2 + 2
    unit_w = cv2.getTextSize(unit, FONT, font, 1)[0][0] + 8
    bx0, bx1, by0, by1 = x0 + half, x1 - max(half, unit_w), 4 + top, 4 + top + _bar_height(font)
    values = lo + (hi - lo) * (np.arange(bx1 - bx0) + 0.5) / max(bx1 - bx0, 1)
    band[by0:by1, bx0:bx1] = colormap(values, lo, hi, name)[None]
    cv2.rectangle(band, (bx0 - 1, by0 - 1), (bx1, by1), (0, 0, 0), 1)
    (_, text_h), _ = cv2.getTextSize("0", FONT, font, 1)
    for value, text in zip(ticks, labels):
        x = int(round(bx0 + (value - lo) / (hi - lo) * (bx1 - bx0))) if hi > lo else bx0
        cv2.line(band, (x, by1), (x, by1 + 4), (0, 0, 0), 1)
        tw = cv2.getTextSize(text, FONT, font, 1)[0][0]
        cv2.putText(band, text, (x - tw // 2, by1 + 7 + text_h), FONT, font, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(band, unit, (bx1 + 6, by1), FONT, font, (0, 0, 0), 1, cv2.LINE_AA)
    for value, text in markers or []:
        x = int(round(bx0 + (min(max(value, lo), hi) - lo) / (hi - lo) * (bx1 - bx0))) if hi > lo else bx0
        x = min(x, bx1 - 1)
        cv2.line(band, (x, by0 - 4), (x, by1 + 3), (0, 0, 0), 3)
        tw = cv2.getTextSize(text, FONT, font, 1)[0][0]
        tx = x - tw - 4 if x - bx0 > (bx1 - bx0) / 2 else x + 4  # beside the line, towards the bar's middle
        cv2.putText(band, text, (max(tx, x0), by0 - 7), FONT, font, (0, 0, 0), 1, cv2.LINE_AA)
    return bx0, by0, bx1, by1


def _rt_text(T: np.ndarray) -> str:
    angle, axis = angle_axis_deg(T[:3, :3])
    t = T[:3, 3]
    return (f"R {angle:.2f} deg about [{axis[0]:+.2f} {axis[1]:+.2f} {axis[2]:+.2f}]   "
            f"t [{t[0]:+.3f} {t[1]:+.3f} {t[2]:+.3f}] m   |t| {np.linalg.norm(t):.3f} m")


def _value(e: Mapping[str, float], key: str, fmt: str, unit: str = "") -> str:
    v = float(e.get(key, float("nan")))
    return "n/a" if np.isnan(v) else ("inf" if np.isinf(v) else f"{v:{fmt}}{unit}")


def _errors_text(label: str, e: Mapping[str, float]) -> str:
    return (f"{label}: rotation {_value(e, 'rot_err_deg', '.2f', ' deg')}   "
            f"centre {_value(e, 'trans_err_m', '.3f', ' m')}   "
            f"direction {_value(e, 'trans_dir_err_deg', '.1f', ' deg')}   "
            f"|t|/|t_gt| {_value(e, 'scale_ratio', '.3f')}")


def _pose_text(result: RelativePose, gt_T_0to1: np.ndarray | None, errors: Mapping[str, float] | None,
               no_motion_errors: Mapping[str, float] | None) -> list[str]:
    if result.success:
        lines = [f"estimate T_0to1 (X1 = R X0 + t):   {_rt_text(result.T_0to1)}",
                 f"confidence {result.confidence:.3f}   inliers {result.num_inliers} / {result.num_matches} "
                 f"sampled matches"]
    else:
        lines = [f"no pose: {result.reason}"]
    if gt_T_0to1 is not None:
        lines.append(f"ground truth:   {_rt_text(np.asarray(gt_T_0to1, dtype=np.float64))}")
    if errors is not None:
        lines.append(_errors_text("error of the estimate", errors))
    if no_motion_errors is not None:
        lines.append(_errors_text("error of 'no motion' (identity)", no_motion_errors))
    return lines


class _Stack:
    """Bands of one width stacked top to bottom, their rows recorded in a Layout."""

    def __init__(self, width: int, layout: Layout) -> None:
        self.width, self.layout, self.bands, self.y = width, layout, [], 0

    def push(self, name: str, band: np.ndarray) -> int:
        self.layout.rows[name] = (self.y, self.y + band.shape[0])
        self.bands.append(band)
        self.y += band.shape[0]
        return self.y - band.shape[0]

    def label(self, name: str, text: str, font: float, background: int = LABEL_BG) -> None:
        band, wrapped = _text_band([text], self.width, font, background)
        self.layout.labels[name] = " ".join(wrapped)
        self.push(name, band)


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"{name}: expected a uint8 [H, W, 3] RGB image, got {image.dtype} {image.shape}")
    return image


def _upscale(image: np.ndarray, s: int) -> np.ndarray:
    return image if s == 1 else cv2.resize(image, (image.shape[1] * s, image.shape[0] * s),
                                           interpolation=cv2.INTER_NEAREST)


def _dim(image: np.ndarray) -> np.ndarray:
    """Half-desaturated and darkened, so that coloured lines stand out on busy textures."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)[:, :, None]
    return (0.75 * (0.4 * image.astype(np.float32) + 0.6 * grey)).astype(np.uint8)


# -- the picture ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Frame:
    """Geometry shared by the rows: tile sizes (after upscaling by ``s``), column 1's x, text and line sizes."""

    s: int
    size0: tuple[int, int]  # (h, w) of tile 0
    size1: tuple[int, int]
    font: float
    ink: int  # match line width, px

    @property
    def x1(self) -> int:
        return self.size0[1] + GAP

    @property
    def width(self) -> int:
        return self.size0[1] + GAP + self.size1[1]

    @property
    def height(self) -> int:
        return max(self.size0[0], self.size1[0])


def _tile_row(stack: _Stack, f: _Frame, name: str, tiles: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """A row holding the two tiles (recorded as ``<name>0``, ``<name>1``), not yet pushed."""
    row = np.zeros((f.height, f.width, 3), np.uint8)
    for k, (tile, x) in enumerate(zip(tiles, (0, f.x1))):
        row[: tile.shape[0], x: x + tile.shape[1]] = tile
        stack.layout.tiles[f"{name}{k}"] = (x, stack.y, x + tile.shape[1], stack.y + tile.shape[0])
    return row


def _bar_row(stack: _Stack, f: _Frame, name: str, bar: str, lo: float, hi: float, cmap: str, unit: str,
             markers: list[tuple[float, str]] | None = None) -> None:
    """A band with one full-width colour bar (``_draw_colorbar``), recorded in the layout as ``bar``."""
    top = _marker_height(f.font) if markers else 0
    band = np.full((_bar_band_height(f.font, bool(markers)), f.width, 3), TEXT_BG, np.uint8)
    box = _draw_colorbar(band, 0, f.width, lo, hi, cmap, unit, f.font, markers, top)
    y = stack.push(name, band)
    stack.layout.colorbars[bar] = (box[0], box[1] + y, box[2], box[3] + y)
    stack.layout.ranges[bar] = (lo, hi)
    if markers:
        stack.layout.markers[bar] = list(markers)


def _matches_rows(stack: _Stack, f: _Frame, image0: np.ndarray, image1: np.ndarray, result: RelativePose,
                  max_lines: int, threshold_cm: float) -> None:
    inlier_idx = np.flatnonzero(result.inliers) if result.success else np.zeros(0, dtype=np.int64)
    keep = inlier_idx[thin_matches(result.kpts2d0[inlier_idx], result.kpts2d1[inlier_idx], max_lines)]
    residual = match_residuals_cm(result)[keep]
    clamped = int(np.count_nonzero(residual > threshold_cm))
    if result.success:
        which = "matches the refined pose was fitted to" if result.refined else "inliers"
        above = (f"{clamped} of the drawn lines above it: clamped, drawn in its colour" if clamped
                 else "none of the drawn lines above it")
        why = ("   (the refinement also corrects each view's depths, so its matches can lie above the threshold "
               "with the network's own depths)" if result.refined and clamped else "")
        stack.label("matches.label", f"{which}: {keep.size} drawn, spread out, of {result.num_inliers} "
                    f"({result.num_matches} sampled);   colour = 3D residual |R X0 + t - X1| with the network's "
                    f"depths under the estimate, 0 - {threshold_cm:g} cm = the solver's inlier threshold;   "
                    f"{above}{why}", f.font)
    else:
        stack.label("matches.label", f"images (no pose, so no matches: {result.reason})", f.font)
    row = _tile_row(stack, f, "image", (_dim(_upscale(image0, f.s)), _dim(_upscale(image1, f.s))))
    to_tile = lambda p: np.round((np.asarray(p, np.float64) + 0.5) * f.s - 0.5).astype(int)  # noqa: E731
    colours = colormap(residual, 0.0, threshold_cm, "residual")  # clipped: above the threshold = its colour
    for k in np.argsort(-residual, kind="stable"):  # worst first, so the best lie on top
        p0, p1 = tuple(to_tile(result.kpts2d0[keep[k]])), tuple(to_tile(result.kpts2d1[keep[k]]) + (f.x1, 0))
        colour = tuple(int(c) for c in colours[k])
        cv2.line(row, p0, p1, (0, 0, 0), f.ink + 2, cv2.LINE_AA)  # dark outline: visible on any texture
        cv2.line(row, p0, p1, colour, f.ink, cv2.LINE_AA)
        for p in (p0, p1):
            cv2.circle(row, p, f.ink + 2, (0, 0, 0), -1, cv2.LINE_AA)
            cv2.circle(row, p, f.ink + 1, colour, -1, cv2.LINE_AA)
    stack.layout.num_lines, stack.layout.num_clamped = int(keep.size), clamped
    stack.push("matches", row)
    if keep.size:
        marker = (threshold_cm, f"inlier threshold {threshold_cm:g} cm (larger residuals: this colour)")
        _bar_row(stack, f, "matches.bar", "residual", 0.0, threshold_cm, "residual", "cm", [marker])


def _depth_rows(stack: _Stack, f: _Frame, depth0: np.ndarray, depth1: np.ndarray) -> None:
    d0, d1 = np.asarray(depth0, np.float64), np.asarray(depth1, np.float64)
    lo, hi = percentile_range(np.concatenate([d0[_valid_depth(d0)], d1[_valid_depth(d1)]]))
    stack.label("depth.label", f"depth (network, m): one scale for both images, 2nd-98th percentile "
                f"{lo:.2f} - {hi:.2f} m;   brighter = closer, black = no depth", f.font)
    tiles = (colorize_depth(d0, f.size0, lo, hi), colorize_depth(d1, f.size1, lo, hi))
    stack.push("depth", _tile_row(stack, f, "depth", tiles))
    _bar_row(stack, f, "depth.bar", "depth", lo, hi, "depth", "m")


def _score_rows(stack: _Stack, f: _Frame, image0: np.ndarray, image1: np.ndarray, scores0: np.ndarray,
                scores1: np.ndarray) -> None:
    hi = max(float(score_share(scores0).max(initial=0.0)), float(score_share(scores1).max(initial=0.0)))
    hi = hi if hi > 0 else 1.0
    uniform = sorted({round(uniform_share(sc), 6) for sc in (scores0, scores1) if uniform_share(sc) > 0})
    top = TOP_CELLS * 100
    stack.label("scores.label", "where the network looks: each cell's share of its image's total keypoint score (%), "
                f"one scale for both images, 0 - {hi:.3g} % (the highest cell);   "
                f"the top {top:.0f} % of cells hold {top_cells_share(scores0):.0f} % (image 0) and "
                f"{top_cells_share(scores1):.0f} % (image 1) of the score, {top:.0f} % if uniform;   "
                "grey = score 0 (masked border)", f.font)
    tiles = (overlay_scores(_upscale(image0, f.s), scores0, hi), overlay_scores(_upscale(image1, f.s), scores1, hi))
    stack.push("scores", _tile_row(stack, f, "scores", tiles))
    markers = [(u, f"uniform {u:.3g} %") for u in uniform]
    _bar_row(stack, f, "scores.bar", "scores", 0.0, hi, "score", "%", markers)


def render_with_layout(image0: np.ndarray, image1: np.ndarray, result: RelativePose, max_lines: int = MAX_LINES,
                       *, gt_T_0to1: np.ndarray | None = None, errors: Mapping[str, float] | None = None,
                       no_motion_errors: Mapping[str, float] | None = None, title: str | None = None,
                       inlier_threshold_m: float = INLIER_THRESHOLD_M) -> tuple[np.ndarray, Layout]:
    """Draw a result (layout in the module docstring) and say where everything is.

    Args:
        image0, image1: uint8 ``[H, W, 3]`` RGB images the result was computed on (sizes may differ).
        result: a ``RelativePose`` (keypoints in the images' pixels, 3D keypoints in metres).
        max_lines: at most this many inlier lines, spread over the images (:func:`thin_matches`).
        gt_T_0to1: optional ``[4, 4]`` ground-truth ``T_0to1`` (metres), written under the estimate.
        errors, no_motion_errors: optional :func:`mickey_ros.geometry.pose_eval.pair_errors` dicts of the
            estimate and of the identity pose, written as text (rotation deg, centre m, direction deg, scale ratio).
        title: optional line above everything (e.g. the pair's name).
        inlier_threshold_m: the solver's inlier threshold (``SolverConfig.inlier_threshold``, metres): the top of
            the residual colour scale, marked on its bar; larger residuals get its colour and are counted.

    Returns:
        ``(picture, layout)``: uint8 ``[H', W', 3]`` RGB and its :class:`Layout`.

    Raises:
        InputError: an image that is not uint8 ``[H, W, 3]``; an inlier threshold that is not a positive number.
    """
    image0, image1 = _check_image(image0, "image0"), _check_image(image1, "image1")
    if not (np.isfinite(inlier_threshold_m) and inlier_threshold_m > 0):
        raise InputError(f"inlier_threshold_m: expected a positive number of metres, got {inlier_threshold_m!r}")
    s = max(1, int(np.ceil(MIN_TILE_WIDTH / max(image0.shape[1], image1.shape[1]))))
    size0, size1 = (image0.shape[0] * s, image0.shape[1] * s), (image1.shape[0] * s, image1.shape[1] * s)
    width = size0[1] + GAP + size1[1]
    f = _Frame(s, size0, size1, font=float(np.clip(width / 2400, 0.4, 1.2)),  # 0.49 for two 588-px tiles
               ink=int(np.clip(round(max(size0[1], size1[1]) / 300), 1, 4)))  # 2 px for 588-px tiles
    layout = Layout(scale=s)
    stack = _Stack(width, layout)
    if title:
        stack.label("title", title, f.font * 1.2, TEXT_BG)
    _matches_rows(stack, f, image0, image1, result, max_lines, 100.0 * float(inlier_threshold_m))
    if result.depth0 is not None and result.depth1 is not None:
        _depth_rows(stack, f, result.depth0, result.depth1)
    if result.scores0 is not None and result.scores1 is not None:
        _score_rows(stack, f, image0, image1, result.scores0, result.scores1)
    band, layout.text = _text_band(_pose_text(result, gt_T_0to1, errors, no_motion_errors), width, f.font, TEXT_BG)
    stack.push("text", band)
    return np.concatenate(stack.bands, axis=0), layout


def render_result(image0: np.ndarray, image1: np.ndarray, result: RelativePose, max_lines: int = MAX_LINES,
                  **kwargs: object) -> np.ndarray:
    """The picture of :func:`render_with_layout` (same arguments), uint8 ``[H', W', 3]`` RGB."""
    return render_with_layout(image0, image1, result, max_lines, **kwargs)[0]


def save_visualization(path: str | Path, image0: np.ndarray, image1: np.ndarray, result: RelativePose, *,
                       gt_T_0to1: np.ndarray | None = None, errors: Mapping[str, float] | None = None,
                       no_motion_errors: Mapping[str, float] | None = None, title: str | None = None,
                       max_lines: int = MAX_LINES, inlier_threshold_m: float = INLIER_THRESHOLD_M) -> None:
    """Render (:func:`render_with_layout`, same keyword arguments) and write the picture (PNG/JPEG/...).

    Raises:
        InputError: unknown extension or the file cannot be written.
    """
    p = Path(path)
    if p.suffix.lower() not in WRITABLE:
        raise InputError(f"--viz: expected a file name ending in {', '.join(WRITABLE)}, got {p}")
    picture = render_result(image0, image1, result, max_lines, gt_T_0to1=gt_T_0to1, errors=errors,
                            no_motion_errors=no_motion_errors, title=title, inlier_threshold_m=inlier_threshold_m)
    ok = False
    try:
        params = [cv2.IMWRITE_PNG_COMPRESSION, 6] if p.suffix.lower() == ".png" else []  # half the default's size
        ok = p.parent.is_dir() and cv2.imwrite(str(p), np.ascontiguousarray(picture[:, :, ::-1]), params)
    except cv2.error as err:
        raise InputError(f"--viz: cannot write {p}: {err}") from err
    if not ok:
        raise InputError(f"--viz: cannot write {p} (does the folder exist and is it writable?)")
