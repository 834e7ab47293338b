"""Synthetic streets (``make_synthetic.py --kind street``): outdoor depths, sky without depth, a vehicle's drive, and
bags whose depth, TF and images agree exactly as the rooms' do."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")
pytest.importorskip("skimage")
pytest.importorskip("mcap_ros2")

from mickey_ros.errors import InputError  # noqa: E402
from mickey_ros.geometry.se3 import invert_T  # noqa: E402
from training.data import synthetic  # noqa: E402
from training.data.synthetic_render import render, sky_colour  # noqa: E402
from training.data.synthetic_street import make_street, road_half_width  # noqa: E402

from test_synthetic import _back_project, _decode, _project, _views  # noqa: E402

FRAMES, W, H, SEED = 6, 112, 84, 3


@pytest.fixture(scope="module")
def street(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("street")
    summary = synthetic.generate(out, scenes=1, frames=FRAMES, width=W, height=H, seed=SEED, kind="street")
    assert (summary.scenes, summary.bags, summary.frames) == (1, 2, 2 * FRAMES)
    return out / "scene_000"


@pytest.fixture(scope="module")
def views(street):
    return {rec: _views(_decode(street / rec)) for rec in ("rec0", "rec1")}


def test_depth_is_the_exact_ray_cast_with_outdoor_range_and_no_depth_in_the_sky(street, views):
    record = json.loads((street / "scene.json").read_text())
    assert record["kind"] == "street"
    scene = make_street(np.random.default_rng((record["seed"], record["scene_index"])))
    v, u = np.mgrid[0:H, 0:W]
    uv = np.stack([u.ravel(), v.ravel()], 1).astype(np.float64)
    depths = []
    for view in views["rec0"] + views["rec1"]:
        exact = synthetic.cast_depth(scene, view.K, view.T_map_camera, uv).reshape(H, W)
        sky = ~np.isfinite(exact)
        assert np.array_equal(np.isnan(view.depth), sky)
        np.testing.assert_allclose(view.depth[~sky], exact[~sky], rtol=1e-5)
        depths.append(exact[~sky])
    depths = np.concatenate(depths)
    sky_share = np.mean([np.isnan(view.depth).mean() for view in views["rec0"]])
    assert 0.01 < sky_share < 0.6
    assert depths.min() > 0.5 and np.percentile(depths, 99) > 40  # a street, not a room


def test_depth_and_tf_poses_agree_between_frames_of_a_drive(views):
    """A's pixels at A's depth, carried into B by the two TF poses, land where B's depth map puts the same points
    (and do not with B's image given a later frame's pose: the negative control)."""
    def agreement(a, b, T_map_b):
        v, u = np.mgrid[0:H, 0:W]
        uv_a = np.stack([u.ravel(), v.ravel()], 1).astype(np.float64)
        z_a = a.depth.ravel().astype(np.float64)
        near = np.isfinite(z_a) & (z_a < 30)
        X = _back_project(a.K, a.T_map_camera, uv_a[near], z_a[near])
        uv_b, z_b = _project(b.K, invert_T(T_map_b), X)
        inside = (z_b > 0.5) & (uv_b[:, 0] >= 1) & (uv_b[:, 0] <= W - 2) & (uv_b[:, 1] >= 1) & (uv_b[:, 1] <= H - 2)
        ui, vi = np.round(uv_b[inside]).astype(int).T
        agree = np.abs(b.depth[vi, ui] - z_b[inside]) < 0.03 * z_b[inside]
        return inside.mean(), agree.mean()

    for rec in ("rec0", "rec1"):
        a, b = views[rec][0], views[rec][1]
        inside, agree = agreement(a, b, b.T_map_camera)
        assert inside > 0.3 and agree > 0.8
        assert agreement(a, b, views[rec][-1].T_map_camera)[1] < 0.5 * agree


def test_the_vehicle_drives_along_the_street_looking_where_it_goes(street, views):
    record = json.loads((street / "scene.json").read_text())
    scene = make_street(np.random.default_rng((record["seed"], record["scene_index"])))
    for rec in ("rec0", "rec1"):
        centres = np.array([v.T_map_camera[:3, 3] for v in views[rec]])
        step = np.linalg.norm(np.diff(centres[:, :2], axis=0), axis=1)
        assert np.all((step > 0.25) & (step < 1.3))  # 3-12 m/s at 10 Hz
        motion = np.diff(centres[:, :2], axis=0)
        axes = np.array([v.T_map_camera[:3, 2] for v in views[rec]])[:-1, :2]  # optical axes on the ground
        cos = np.sum(motion * axes, 1) / np.linalg.norm(motion, axis=1) / np.linalg.norm(axes, axis=1)
        assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() < 10
        assert np.all(np.abs(centres[:, 1]) < road_half_width(scene))  # on the road
        assert np.all((centres[:, 2] > 1.0) & (centres[:, 2] < 2.2))  # a vehicle's camera height


def test_the_sky_depends_on_the_direction_only():
    rays = np.random.default_rng(0).normal(size=(3, 50))
    np.testing.assert_array_equal(sky_colour(rays, 5), sky_colour(rays * 7.0, 5))
    assert not np.array_equal(sky_colour(rays, 5), sky_colour(rays, 6))


def test_a_street_renders_sky_where_rays_hit_nothing():
    scene = make_street(np.random.default_rng(1))
    K = np.array([[60.0, 0, 55.5], [0, 60.0, 41.5], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3] = synthetic.R_BASE_OPTICAL  # looking along the street
    T[:3, 3] = [0.0, 0.0, 1.5]
    image, depth = render(scene, K, T, W, H)
    assert np.isinf(depth[0]).any() and np.isfinite(depth[-1]).all()  # sky at the top, road at the bottom
    assert image[0][np.isinf(depth[0])].mean() > 50  # the sky is lit, not black


def test_unknown_kind_is_one_line():
    with pytest.raises(InputError, match=r"--kind: expected one of room, street, got 'moon'"):
        synthetic.generate("/nonexistent-never-created", scenes=1, kind="moon")
