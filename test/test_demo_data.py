"""The shipped demo pair: reproducible from its generator, and its ground-truth pose matches the render."""
from __future__ import annotations

import numpy as np

from mickey_ros.cli import read_image
from mickey_ros.data.synthetic_scene import demo_cameras, make_textures, render
from mickey_ros.geometry.se3 import invert_T

from conftest import DEMO


def _gt_T_0to1() -> np.ndarray:
    rows = [line for line in (DEMO / "gt_pose.txt").read_text().splitlines() if not line.startswith("#")]
    T = np.eye(4)
    T[:3] = np.array(rows[0].split(), dtype=np.float64).reshape(3, 4)
    return T


def test_generator_reproduces_the_shipped_images():
    K, T0, T1, width, height = demo_cameras()
    textures = make_textures(seed=0)
    for name, T in (("im0.png", T0), ("im1.png", T1)):
        image, _ = render(K, T, width, height, textures)
        shipped = read_image(DEMO / name, name)
        assert np.abs(image.astype(int) - shipped.astype(int)).max() <= 1


def test_ground_truth_pose_is_consistent_with_the_render():
    K, T0, T1, width, height = demo_cameras()
    T = _gt_T_0to1()
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-8)
    np.testing.assert_allclose(T, invert_T(T1) @ T0, atol=1e-8)
    textures = make_textures(seed=0)
    image0, depth0 = render(K, T0, width, height, textures)
    image1, depth1 = render(K, T1, width, height, textures)
    # reproject every pixel of view 0 into view 1 with its depth and the GT pose
    v, u = np.mgrid[0:height, 0:width]
    X0 = np.stack([u, v, np.ones_like(u)], -1).reshape(-1, 3) @ np.linalg.inv(K).T * depth0.reshape(-1, 1)
    X1 = X0 @ T[:3, :3].T + T[:3, 3]
    uv1 = X1 @ K.T
    uv1 = uv1[:, :2] / uv1[:, 2:]
    ui, vi = np.round(uv1[:, 0]).astype(int), np.round(uv1[:, 1]).astype(int)
    inside = np.isfinite(depth0.reshape(-1)) & (ui >= 0) & (ui < width) & (vi >= 0) & (vi < height)
    visible = inside.copy()
    visible[inside] = np.abs(depth1[vi[inside], ui[inside]] - X1[inside, 2]) < 0.02  # not occluded
    assert visible.mean() > 0.5
    diff = np.abs(image0.reshape(-1, 3)[visible].astype(int) - image1[vi[visible], ui[visible]].astype(int))
    assert np.median(diff) < 25  # same surface point, same texture (up to resampling and shading)
    # and a wrong pose does not agree
    wrong = np.abs(image0.reshape(-1, 3)[visible].astype(int) - image1[vi[visible] // 2, ui[visible] // 2].astype(int))
    assert np.median(wrong) > 2 * np.median(diff)
