"""Match / depth / score pictures (mickey_ros.viz): layout and labels, thinned residual-coloured lines on the inlier
threshold's scale, colour bars and their markers, score shares, the pose text."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from mickey_ros.errors import InputError
from mickey_ros.pipeline import RelativePose
from mickey_ros.solver import SolverConfig
from mickey_ros.viz import (INLIER_THRESHOLD_M, LABEL_BG, colorize_depth, colormap, nice_ticks, overlay_scores,
                            render_result, render_with_layout, save_visualization, score_share, thin_matches,
                            top_cells_share, uniform_share)

ROWS = ("matches.label", "matches", "matches.bar", "depth.label", "depth", "depth.bar", "scores.label", "scores",
        "scores.bar", "text")


def _result(success: bool = True, inliers: bool = True, n: int = 3, residual_m=None, T=None) -> RelativePose:
    """A result on 98-px images; match k's 3D residual under T is ``residual_m[k]`` (x offset of X1)."""
    rng = np.random.default_rng(0)
    if n == 3:
        kpts0 = np.array([[10.0, 10.0], [50.0, 60.0], [80.0, 20.0]])
        kpts1 = np.array([[20.0, 12.0], [40.0, 70.0], [90.0, 30.0]])
    else:
        kpts0, kpts1 = rng.uniform(0, 84, (n, 2)), rng.uniform(0, 84, (n, 2))
    T = np.eye(4) if T is None else T
    X0 = rng.uniform(-1, 1, (n, 3)) + [0, 0, 3]
    X1 = X0 @ T[:3, :3].T + T[:3, 3]
    if residual_m is not None:
        X1[:, 0] += residual_m
    return RelativePose(
        success=success, reason="" if success else "too few matches: 2 candidates", T_0to1=T,
        confidence=0.5, soft_inliers=1.5, num_inliers=n if inliers else 0, num_matches=n,
        kpts3d0=X0, kpts3d1=X1, kpts2d0=kpts0, kpts2d1=kpts1, inliers=np.full(n, inliers),
        depth0=rng.uniform(0.5, 5, (6, 7)).astype(np.float32), depth1=rng.uniform(0.5, 5, (7, 7)).astype(np.float32),
        scores0=rng.random((6, 7)).astype(np.float32), scores1=rng.random((7, 7)).astype(np.float32),
    )


IMAGE0 = np.full((84, 98, 3), 100, np.uint8)
IMAGE1 = np.full((98, 98, 3), 100, np.uint8)  # a different size


def test_layout_rows_are_stacked_and_labelled():
    picture, layout = render_with_layout(IMAGE0, IMAGE1, _result(), title="pair 1")
    s = layout.scale
    assert s == 5  # 98 px -> at least MIN_TILE_WIDTH (400) px
    assert picture.dtype == np.uint8 and picture.shape[1] == 98 * s + 6 + 98 * s
    names = ["title", *ROWS]
    assert list(layout.rows) == names
    spans = [layout.rows[n] for n in names]
    assert spans[0][0] == 0 and spans[-1][1] == picture.shape[0]
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous, top to bottom
    assert layout.rows["matches"][1] - layout.rows["matches"][0] == 98 * s
    assert layout.tiles["image0"][2:] == (98 * s, layout.rows["matches"][0] + 84 * s)
    assert layout.tiles["depth1"][0] == 98 * s + 6
    for name in ("matches.label", "depth.label", "scores.label"):
        y0, y1 = layout.rows[name]
        band = picture[y0:y1]
        assert (band == LABEL_BG).mean() > 0.7  # a grey band ...
        assert (band.max(axis=2) < 80).sum() > 200  # ... with dark text in it
    assert "3D residual" in layout.labels["matches.label"] and "0 - 15 cm" in layout.labels["matches.label"]
    assert "depth" in layout.labels["depth.label"] and " m" in layout.labels["depth.label"]
    assert "share of its image's total keypoint score (%)" in layout.labels["scores.label"]
    assert layout.labels["title"] == "pair 1"


def test_lines_are_thinned_to_the_cap_and_spread_out():
    result = _result(n=500)
    for cap in (60, 7):
        _, layout = render_with_layout(IMAGE0, IMAGE1, result, max_lines=cap)
        assert layout.num_lines == cap
        assert f"inliers: {cap} drawn" in layout.labels["matches.label"] and "of 500 (500 sampled)" in \
            layout.labels["matches.label"]
    picked = thin_matches(result.kpts2d0, result.kpts2d1, 20)
    assert picked[0] == 0 and len(set(picked.tolist())) == 20
    pts = np.concatenate([result.kpts2d0, result.kpts2d1], 1)
    gaps = lambda idx: np.sort(np.linalg.norm(pts[idx, None] - pts[None, idx], axis=-1), axis=1)[:, 1]  # noqa: E731
    assert gaps(picked).min() > 3 * gaps(np.arange(20)).min()  # far more spread than the first 20
    assert len(thin_matches(np.zeros((9, 2)), np.zeros((9, 2)), 5)) == 1  # duplicates are never picked twice
    assert len(thin_matches(result.kpts2d0, result.kpts2d1, 0)) == 0


def _mid(result: RelativePose, k: int, s: int) -> tuple[int, int]:
    """(row, column) in the matches row of the middle of match k's line (tiles upscaled s times, 6 px gap)."""
    p0, p1 = (result.kpts2d0[k] + 0.5) * s - 0.5, (result.kpts2d1[k] + 0.5) * s - 0.5 + [98 * s + 6, 0]
    return int(round((p0[1] + p1[1]) / 2)), int(round((p0[0] + p1[0]) / 2))


def test_only_the_thinned_inliers_are_drawn():
    result = _result()
    picture, layout = render_with_layout(IMAGE0, IMAGE1, result, max_lines=1)
    bare, _ = render_with_layout(IMAGE0, IMAGE1, _result(inliers=False))
    y0 = layout.rows["matches"][0]
    at = lambda pic, k: pic[y0 + _mid(result, k, 5)[0], _mid(result, k, 5)[1]]  # noqa: E731
    assert layout.num_lines == 1
    assert not np.array_equal(at(picture, 0), at(bare, 0))  # match 0's line is drawn
    assert np.array_equal(at(picture, 1), at(bare, 1))  # match 1's is not (cap 1)
    assert "matches.bar" not in render_with_layout(IMAGE0, IMAGE1, _result(inliers=False))[1].rows


def test_line_colour_follows_the_3d_residual_clamped_at_the_threshold():
    T = np.eye(4)
    T[:3, 3] = [0.1, 0.0, 0.0]
    result = _result(n=4, residual_m=np.array([0.0, 0.15, 0.075, 0.40]), T=T)
    result.kpts2d0[:] = [[10.0, 10.0], [50.0, 60.0], [80.0, 20.0], [20.0, 75.0]]  # apart: no line crosses a dot
    result.kpts2d1[:] = [[20.0, 12.0], [40.0, 70.0], [90.0, 30.0], [30.0, 85.0]]
    picture, layout = render_with_layout(IMAGE0, IMAGE1, result)
    assert layout.ranges["residual"] == (0.0, 15.0)
    assert layout.num_clamped == 1 and "1 of the drawn lines above it: clamped" in layout.labels["matches.label"]
    y0 = layout.rows["matches"][0]
    colours, lines = [], []
    for k in range(4):
        x, y = np.round((result.kpts2d0[k] + 0.5) * layout.scale - 0.5).astype(int)
        colours.append(picture[y0 + y, x].astype(int))  # the keypoint dot in image 0
        row, col = _mid(result, k, layout.scale)
        lines.append(picture[y0 + row, col].astype(int))  # the middle of its line
    np.testing.assert_allclose(lines, colours, atol=40)
    np.testing.assert_allclose(colours[0], colormap(0.0, 0, 15, "residual"), atol=30)  # green
    np.testing.assert_allclose(colours[1], colormap(15.0, 0, 15, "residual"), atol=30)  # red
    np.testing.assert_allclose(colours[2], colormap(7.5, 0, 15, "residual"), atol=30)  # yellow
    np.testing.assert_allclose(colours[3], colours[1], atol=10)  # 40 cm: clamped to the threshold's red
    _, layout = render_with_layout(IMAGE0, IMAGE1, _result(residual_m=np.array([0.0, 0.1, 0.05])))
    assert layout.num_clamped == 0 and "none of the drawn lines above it" in layout.labels["matches.label"]


def test_residual_colour_bar_runs_to_the_solvers_inlier_threshold_and_marks_it():
    assert INLIER_THRESHOLD_M == SolverConfig().inlier_threshold  # the default is the solver's
    picture, layout = render_with_layout(IMAGE0, IMAGE1, _result())
    threshold_cm = 100 * SolverConfig().inlier_threshold
    assert layout.ranges["residual"] == (0.0, threshold_cm)
    (value, text), = layout.markers["residual"]
    assert value == threshold_cm and text.startswith(f"inlier threshold {threshold_cm:g} cm")
    assert f"0 - {threshold_cm:g} cm = the solver's inlier threshold" in layout.labels["matches.label"]
    x0, y0, x1, y1 = layout.colorbars["residual"]
    assert (picture[(y0 + y1) // 2, x1 - 2: x1 + 1].max(axis=1) < 60).all()  # the marker: a black line at the end
    assert (picture[y0 - 16: y0 - 4, x0: x1].max(axis=2) < 80).sum() > 30  # its text above the bar
    _, layout = render_with_layout(IMAGE0, IMAGE1, _result(), inlier_threshold_m=0.25)  # another solver setting
    assert layout.ranges["residual"] == (0.0, 25.0) and layout.markers["residual"][0][0] == 25.0
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(InputError, match="inlier_threshold_m: expected a positive number of metres"):
            render_with_layout(IMAGE0, IMAGE1, _result(), inlier_threshold_m=bad)


def test_colour_bars_show_their_scale_with_ticks():
    picture, layout = render_with_layout(IMAGE0, IMAGE1, _result())
    assert set(layout.colorbars) == {"residual", "depth", "scores"}
    for name, (x0, y0, x1, y1) in layout.colorbars.items():
        lo, hi = layout.ranges[name]
        cmap = {"residual": "residual", "depth": "depth", "scores": "score"}[name]
        row = picture[(y0 + y1) // 2, x0:x1].astype(int)
        expected = colormap(lo + (hi - lo) * (np.arange(x1 - x0) + 0.5) / (x1 - x0), lo, hi, cmap).astype(int)
        unmarked = np.ones(x1 - x0, bool)
        for value, _ in layout.markers.get(name, []):  # a marker's black line covers a few columns
            x = min(int(round((value - lo) / (hi - lo) * (x1 - x0))), x1 - x0 - 1)
            unmarked[max(x - 2, 0): x + 3] = False
        assert np.abs(row - expected)[unmarked].max() <= 1, name
        below = picture[y1 + 1: y1 + 24, max(x0 - 10, 0): x1 + 10]
        assert (below.max(axis=2) < 80).sum() > 20, name  # tick marks and their numbers
    lo, hi = layout.ranges["depth"]
    assert 0.5 <= lo < hi <= 5.0  # metres: inside the maps' values (2nd-98th percentile)


def test_colormaps_are_monotonic_in_their_quantity():
    values = np.linspace(0.0, 10.0, 41)
    hue = cv2.cvtColor(colormap(values, 0, 10, "residual")[None], cv2.COLOR_RGB2HSV)[0, :, 0].astype(int)
    assert hue[0] == 60 and hue[-1] == 0 and np.all(np.diff(hue) <= 0) and len(set(hue.tolist())) > 20
    lightness = lambda rgb: cv2.cvtColor(rgb[None], cv2.COLOR_RGB2LAB)[0, :, 0].astype(int)  # noqa: E731
    assert np.all(np.diff(lightness(colormap(values, 0, 10, "depth"))) < 0)  # farther = darker
    assert np.all(np.diff(lightness(colormap(values, 0, 10, "score"))) > 0)  # higher score = brighter
    assert colormap(values, 0, 10, "depth").astype(int).sum(-1).min() > 20  # never black: black means no depth
    np.testing.assert_array_equal(colormap(np.array([-5.0, 50.0]), 0, 10, "score"),  # clipped to the ends
                                  colormap(np.array([0.0, 10.0]), 0, 10, "score"))
    with pytest.raises(InputError, match="colormap: expected one of residual, depth, score, got 'jet'"):
        colormap(values, 0, 1, "jet")


def test_nice_ticks_are_round_and_inside():
    ticks = nice_ticks(1.72, 2.21)
    np.testing.assert_allclose(ticks, [1.8, 1.9, 2.0, 2.1, 2.2])
    assert list(nice_ticks(0.0, 15.0)) == [0.0, 5.0, 10.0, 15.0] and str(nice_ticks(0.0, 1.0)[0]) == "0.0"
    assert list(nice_ticks(0.0, 15.0, count=7)) == [0.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0]
    assert len(nice_ticks(3.0, 3.0)) == 1


def test_scores_are_shares_of_the_total_on_one_absolute_scale():
    scores = np.zeros((4, 4), np.float32)
    scores[1:3, 1:3] = [[1.0, 1.0], [1.0, 5.0]]  # one cell holds 5/8 of the score, masked border
    share = score_share(scores)
    np.testing.assert_allclose(share[1:3, 1:3], [[12.5, 12.5], [12.5, 62.5]])
    assert share.sum() == pytest.approx(100.0) and uniform_share(scores) == 25.0
    assert top_cells_share(scores, 0.25) == pytest.approx(62.5)  # the top quarter of the 4 scored cells: 1 cell
    assert top_cells_share(np.ones((10, 10)), 0.1) == pytest.approx(10.0)  # uniform: 10 % of cells, 10 % of score
    tile = overlay_scores(np.full((4, 4, 3), 100, np.uint8), scores)  # scale 0 .. the highest cell (62.5 %)
    assert np.all(tile[0, 0] == tile[0, 0, 0])  # masked: grey
    light = cv2.cvtColor(tile[None, [1, 2], [1, 2]], cv2.COLOR_RGB2LAB)[0, :, 0].astype(int)
    assert light[1] - light[0] > 80  # 12.5 % vs 62.5 %: far apart on the absolute scale
    flat = overlay_scores(np.full((4, 4, 3), 100, np.uint8), np.full((4, 4), 0.3), hi=100 / 16)
    assert np.all(flat == flat[0, 0])  # a uniform map is one colour (the scale's top), not stretched noise


def test_score_panel_legend_is_absolute_with_the_uniform_share_marked():
    result = _result()
    result.scores0[:] = 1.0  # uniform over 42 cells
    result.scores1[:] = 0.0
    result.scores1[3, 3] = 1.0  # all in one cell
    _, layout = render_with_layout(IMAGE0, IMAGE1, result)
    assert layout.ranges["scores"] == (0.0, 100.0)  # one scale for both images: 0 .. the highest cell's share
    assert [v for v, _ in layout.markers["scores"]] == pytest.approx([100 / 42, 100.0])
    label = layout.labels["scores.label"]
    assert "0 - 100 % (the highest cell)" in label
    assert "hold 10 % (image 0) and 100 % (image 1) of the score, 10 % if uniform" in label


def test_failed_result_has_no_lines_and_shows_reason():
    image = np.full((84, 98, 3), 100, np.uint8)
    failed = _result(success=False)
    picture, layout = render_with_layout(image, image, failed)
    assert layout.num_lines == 0 and "residual" not in layout.colorbars
    assert layout.text == ["no pose: too few matches: 2 candidates"]
    assert "no pose" in layout.labels["matches.label"]
    x0, y0, x1, y1 = layout.tiles["image0"]
    tile = picture[y0:y1, x0:x1]
    assert np.all(tile == tile[0, 0])  # the (dimmed) image, untouched: no lines
    other, _ = render_with_layout(image, image, dataclasses.replace(failed, reason="no valid pose: all degenerate"))
    assert picture.shape == other.shape
    changed = np.flatnonzero(np.any(picture != other, axis=(1, 2)))
    rows = [(n, span) for n, span in layout.rows.items() if span[0] <= changed.min() < span[1] or
            span[0] <= changed.max() < span[1]]
    assert {n for n, _ in rows} <= {"matches.label", "text"}  # only the reason's text changes


def test_pose_ground_truth_and_errors_are_written():
    T = np.eye(4)
    T[:3, 3] = [0.1, 0.0, 0.0]
    gt = np.eye(4)
    gt[:3, 3] = [0.2, 0.0, 0.0]
    errors = {"rot_err_deg": 1.0, "trans_err_m": 0.1, "trans_dir_err_deg": 0.0, "scale_ratio": 0.5, "vcre_px": 3.0}
    floor = {"rot_err_deg": 0.0, "trans_err_m": 0.2, "trans_dir_err_deg": float("nan"), "scale_ratio": 0.0}
    _, layout = render_with_layout(IMAGE0, IMAGE1, _result(T=T), gt_T_0to1=gt, errors=errors,
                                   no_motion_errors=floor)
    text = "\n".join(layout.text)
    assert "estimate T_0to1" in text and "t [+0.100 +0.000 +0.000] m" in text and "|t| 0.100 m" in text
    assert "ground truth:" in text and "t [+0.200 +0.000 +0.000] m" in text
    assert "error of the estimate: rotation 1.00 deg" in text and "|t|/|t_gt| 0.500" in text
    assert "error of 'no motion' (identity): rotation 0.00 deg" in text and "direction n/a" in text
    plain, _ = render_with_layout(IMAGE0, IMAGE1, _result(T=T))
    assert "ground truth" not in "\n".join(render_with_layout(IMAGE0, IMAGE1, _result(T=T))[1].text)
    assert plain.shape[0] < render_result(IMAGE0, IMAGE1, _result(T=T), gt_T_0to1=gt, errors=errors).shape[0]


def test_images_must_be_uint8_rgb():
    with pytest.raises(InputError, match=r"image1: expected a uint8 \[H, W, 3\] RGB image, got float64"):
        render_result(IMAGE0, IMAGE1.astype(np.float64), _result())


def test_depth_colouring_brighter_is_closer_and_masks_invalid():
    depth = np.array([[1.0, 4.0], [0.0, -1.0]])
    rgb = colorize_depth(depth, (2, 2))
    assert rgb[0, 0].sum() > rgb[0, 1].sum()
    assert rgb[1, 0].sum() == 0 and rgb[1, 1].sum() == 0


def test_save_writes_a_readable_file_and_rejects_bad_paths(tmp_path):
    image = np.full((84, 98, 3), 100, np.uint8)
    out = tmp_path / "viz.png"
    save_visualization(out, image, image, _result(), title="t")
    written = cv2.imread(str(out))
    expected = render_result(image, image, _result(), title="t")
    assert written is not None and written.shape == expected.shape
    np.testing.assert_array_equal(written[:, :, ::-1], expected)  # PNG: lossless, RGB order
    with pytest.raises(InputError, match=r"--viz: expected a file name ending in \.png"):
        save_visualization(tmp_path / "viz.txt", image, image, _result())
    with pytest.raises(InputError, match=r"--viz: cannot write .*nope"):
        save_visualization(tmp_path / "nope" / "viz.png", image, image, _result())
