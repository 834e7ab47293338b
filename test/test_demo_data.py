"""The shipped demo pairs: reproducible from their generator, ground-truth poses that match the render, the motions
the demo promises, and every file shipped as package data."""
from __future__ import annotations

import ast
import fnmatch
import importlib.util

import numpy as np
import pytest

from mickey_ros.cli import read_image
from mickey_ros.data import synthetic_scene
from mickey_ros.data.synthetic_scene import camera_pose, demo_cameras, demo_pairs, draw_text, make_textures, render
from mickey_ros.demo import load_demo_pairs
from mickey_ros.geometry.se3 import angle_axis_deg, invert_T

from conftest import DEMO, REPO


def _gt_T_0to1() -> np.ndarray:
    rows = [line for line in (DEMO / "gt_pose.txt").read_text().splitlines() if not line.startswith("#")]
    T = np.eye(4)
    T[:3] = np.array(rows[0].split(), dtype=np.float64).reshape(3, 4)
    return T


def _generator():
    spec = importlib.util.spec_from_file_location("make_demo_images", REPO / "scripts" / "make_demo_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_reproduces_the_shipped_files(tmp_path):
    _generator().main(tmp_path)
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == sorted(p.name for p in DEMO.iterdir() if p.name != "README.md")
    assert {"pairs.txt", "intrinsics.txt", "gt_pose.txt", "im0.png", "im5.png"} <= set(made)
    for name in made:
        if name.endswith(".txt"):
            assert (tmp_path / name).read_bytes() == (DEMO / name).read_bytes(), name
        else:
            image, shipped = read_image(tmp_path / name, name), read_image(DEMO / name, name)
            assert image.shape == shipped.shape == (224, 294, 3)
            assert np.abs(image.astype(int) - shipped.astype(int)).max() <= 1, name


def test_textures_do_not_depend_on_the_opencv_font_renderer(monkeypatch):
    """cv2.putText's Hershey text changed between opencv-python 5.0 and 5.1 (up to 80 grey levels on the same call),
    which made the demo images and the training scenes depend on the installed OpenCV: the textures print with the
    project's bitmap font instead, so the generator gives the same pixels with either."""
    def no_put_text(*args, **kwargs):
        raise AssertionError("make_textures called cv2.putText")

    reference = make_textures(seed=0)
    monkeypatch.setattr(synthetic_scene.cv2, "putText", no_put_text)
    again = make_textures(seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(reference, again))


def test_bitmap_text_lands_where_asked_and_clips_at_the_border():
    scale = synthetic_scene.GLYPH_SCALE
    tex = np.full((60, 80, 3), 200, np.uint8)
    draw_text(tex, "1", (10, 40), 7)  # org = bottom-left corner, as cv2.putText's
    ys, xs = np.nonzero(tex[..., 0] == 7)
    assert (ys.min(), ys.max() + 1) == (40 - 7 * scale, 40) and xs.min() >= 10 and xs.max() < 10 + 5 * scale
    ink = np.array([[c == "#" for c in row] for row in synthetic_scene.GLYPHS["1"]])
    assert (tex[40 - 7 * scale:40:scale, 10:10 + 5 * scale:scale, 0] == 7).tolist() == ink.tolist()
    assert np.all(tex[tex[..., 0] != 7] == 200) and np.all(tex[ys, xs] == 7)  # all three channels, nothing else
    edge = np.full((30, 30, 3), 200, np.uint8)
    draw_text(edge, "mickey 09", (20, 10), 0)  # runs off the right and top edges: clipped, no error
    assert (edge == 0).any() and edge.shape == (30, 30, 3)
    with pytest.raises(KeyError):
        draw_text(edge, "X", (0, 20), 0)  # only the characters the textures print


def test_pair_one_is_the_original_demo_pair():
    K, T0, T1, width, height = demo_cameras()
    pairs = load_demo_pairs()
    assert (pairs[0].spec.name0, pairs[0].spec.name1) == ("im0.png", "im1.png")
    np.testing.assert_allclose(pairs[0].spec.T_0to1, _gt_T_0to1(), atol=1e-9)
    np.testing.assert_allclose(pairs[0].spec.K0, K)
    np.testing.assert_allclose(camera_pose((0.45, -0.05, 0.3), -10.0), T1, atol=1e-12)
    rows = [line.split() for line in (DEMO / "intrinsics.txt").read_text().splitlines() if not line.startswith("#")]
    assert [r[0] for r in rows] == ["im0.png", "im1.png"]
    assert [float(v) for v in rows[1][1:]] == [K[0, 0], K[1, 1], K[0, 2], K[1, 2], width, height]


def test_the_pairs_cover_the_promised_motions():
    pairs = load_demo_pairs()
    assert len(pairs) == 5 and all(p.description for p in pairs)
    motion = {}
    for p in pairs:
        T = p.spec.T_0to1
        centre = -T[:3, :3].T @ T[:3, 3]  # camera 1's centre in camera 0, metres
        motion[p.description.split(":")[0]] = (angle_axis_deg(T[:3, :3])[0], np.linalg.norm(centre), centre)
    angle, dist, _ = motion["small baseline"]
    assert dist < 0.2 and angle < 3
    angle, dist, _ = motion["large baseline"]
    assert dist > 1.0 and angle > 15
    angle, dist, _ = motion["rotation"]
    assert dist < 0.05 and angle > 15
    angle, dist, centre = motion["forward motion"]
    assert centre[2] > 0.9 and np.linalg.norm(centre[:2]) < 0.1 and angle < 5


def test_demo_files_are_package_data():
    tree = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    package_data = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "package_data"))
    patterns = package_data["mickey_ros.data.demo"]  # the demo folder is a data package of its own
    names = {"pairs.txt", "intrinsics.txt", "gt_pose.txt"} | {n for p in load_demo_pairs()
                                                              for n in (p.spec.name0, p.spec.name1)}
    for name in names:
        assert (DEMO / name).is_file()
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


@pytest.mark.parametrize("index", range(5))
def test_ground_truth_pose_is_consistent_with_the_render(index):
    K, width, height, cameras = demo_pairs()
    pair, camera = load_demo_pairs()[index], cameras[index]
    assert (pair.spec.name0, pair.spec.name1) == (camera.name0, camera.name1)
    T = pair.spec.T_0to1
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-8)
    np.testing.assert_allclose(T, invert_T(camera.T_cam1_to_world) @ camera.T_cam0_to_world, atol=1e-8)
    np.testing.assert_allclose(pair.spec.K1, K)
    textures = make_textures(seed=0)
    image0, depth0 = render(K, camera.T_cam0_to_world, width, height, textures)
    image1, depth1 = render(K, camera.T_cam1_to_world, width, height, textures)
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
    assert visible.mean() > 0.5  # at least half of view 0 is seen in view 1 (52-90 % for these pairs)
    diff = np.abs(image0.reshape(-1, 3)[visible].astype(int) - image1[vi[visible], ui[visible]].astype(int))
    assert np.median(diff) < 25  # same surface point, same texture (up to resampling and shading)
    # and a wrong pose does not agree
    wrong = np.abs(image0.reshape(-1, 3)[visible].astype(int) - image1[vi[visible] // 2, ui[visible] // 2].astype(int))
    assert np.median(wrong) > 2 * np.median(diff)
