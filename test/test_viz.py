"""Match / depth / score pictures (mickey_ros.viz)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from mickey_ros.errors import InputError
from mickey_ros.pipeline import RelativePose
from mickey_ros.viz import colorize_depth, render_result, save_visualization


def _result(success: bool = True, inliers: bool = True) -> RelativePose:
    rng = np.random.default_rng(0)
    kpts0 = np.array([[10.0, 10.0], [50.0, 60.0], [80.0, 20.0]])
    kpts1 = np.array([[20.0, 12.0], [40.0, 70.0], [90.0, 30.0]])
    return RelativePose(
        success=success, reason="" if success else "too few matches: 2 candidates", T_0to1=np.eye(4),
        confidence=0.5, soft_inliers=1.5, num_inliers=3 if inliers else 0, num_matches=3,
        kpts2d0=kpts0, kpts2d1=kpts1, inliers=np.full(3, inliers),
        depth0=rng.uniform(0.5, 5, (6, 7)).astype(np.float32), depth1=rng.uniform(0.5, 5, (7, 7)).astype(np.float32),
        scores0=rng.random((6, 7)).astype(np.float32), scores1=rng.random((7, 7)).astype(np.float32),
    )


def test_layout_and_inlier_lines_are_drawn():
    image0 = np.full((84, 98, 3), 100, np.uint8)
    image1 = np.full((98, 98, 3), 100, np.uint8)  # different size
    with_lines = render_result(image0, image1, _result())
    without = render_result(image0, image1, _result(inliers=False))
    assert with_lines.dtype == np.uint8 and with_lines.shape[1] == 98 + 6 + 98
    assert with_lines.shape[0] > 3 * 98  # images, depth row, score row, legend
    # the middle of the first match line (10,10) -> (20 + 104, 12) is coloured only when it is an inlier
    mid = (11, (10 + 124) // 2)
    assert not np.array_equal(with_lines[mid], without[mid])
    assert np.array_equal(without[mid], [100, 100, 100])


def test_failed_result_has_no_lines_and_shows_reason():
    import dataclasses

    image = np.full((84, 98, 3), 100, np.uint8)
    failed = _result(success=False)
    picture = render_result(image, image, failed)
    assert np.all(picture[:84, :98] == 100)  # untouched image: no lines
    # the reason is drawn: another reason changes the legend (and only the legend, below the three picture rows),
    # and without a reason only the "reason: " label is left, so the text's ink ends far further left
    other = render_result(image, image, dataclasses.replace(failed, reason="no valid pose: all degenerate"))
    empty = render_result(image, image, dataclasses.replace(failed, reason=""))
    assert picture.shape == other.shape == empty.shape
    changed = np.flatnonzero(np.any(picture != other, axis=(1, 2)))
    assert changed.size and changed.min() >= 3 * 84
    ink = lambda pic: np.flatnonzero(np.any(pic[3 * 84:] < 128, axis=(0, 2)))  # noqa: E731 - dark text columns
    assert ink(empty).max() < 90 and ink(picture).max() > 150


def test_depth_colouring_brighter_is_closer_and_masks_invalid():
    depth = np.array([[1.0, 4.0], [0.0, -1.0]])
    rgb = colorize_depth(depth, (2, 2))
    assert rgb[0, 0].sum() > rgb[0, 1].sum()
    assert rgb[1, 0].sum() == 0 and rgb[1, 1].sum() == 0


def test_save_writes_a_readable_file_and_rejects_bad_paths(tmp_path):
    image = np.full((84, 98, 3), 100, np.uint8)
    out = tmp_path / "viz.png"
    save_visualization(out, image, image, _result())
    assert cv2.imread(str(out)) is not None
    with pytest.raises(InputError, match=r"--viz: expected a file name ending in \.png"):
        save_visualization(tmp_path / "viz.txt", image, image, _result())
    with pytest.raises(InputError, match=r"--viz: cannot write .*nope"):
        save_visualization(tmp_path / "nope" / "viz.png", image, image, _result())
