"""Relocalizer end to end on CPU: well-formed results, determinism, reference cache, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mickey_ros import RelativePose, Relocalizer
from mickey_ros.errors import ImageError, InputError, IntrinsicsError
from mickey_ros.solver import SolverConfig

K = np.array([[250.0, 0.0, 147.0], [0.0, 250.0, 112.0], [0.0, 0.0, 1.0]])


def _check_well_formed(res: RelativePose) -> None:
    assert isinstance(res, RelativePose)
    assert res.success, res.reason
    assert res.reason == ""
    assert res.T_0to1.shape == (4, 4) and res.T_0to1.dtype == np.float64
    np.testing.assert_allclose(res.R @ res.R.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(res.R) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_array_equal(res.T_0to1[3], [0, 0, 0, 1])
    M = res.num_matches
    assert 3 <= M <= 2048
    assert res.kpts3d0.shape == (M, 3) and res.kpts3d1.shape == (M, 3)
    assert res.kpts2d0.shape == (M, 2) and res.kpts2d1.shape == (M, 2)
    assert res.inliers.shape == (M,) and res.inliers.dtype == bool
    assert res.num_inliers == int(res.inliers.sum())
    assert 0.0 <= res.confidence <= 1.0
    assert res.confidence == pytest.approx(res.soft_inliers / M)
    assert np.all(np.diff(res.match_weights) <= 0), "matches are sorted by weight, descending"


def test_estimate_tiny_on_demo_pair(tiny_net, demo_pair):
    image0, K0, image1, K1 = demo_pair
    res = Relocalizer(tiny_net, device="cpu", seed=0).estimate(image0, K0, image1, K1)
    _check_well_formed(res)
    h, w = image0.shape[0] // 14, image0.shape[1] // 14
    assert res.depth0.shape == (h, w) and res.scores1.shape == (image1.shape[0] // 14, image1.shape[1] // 14)
    # 3D keypoints lie on the rays of their 2D keypoints: K X ~ (u, v, 1)
    proj = (K0 @ res.kpts3d0.T).T
    np.testing.assert_allclose(proj[:, :2] / proj[:, 2:], res.kpts2d0, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_estimate_official_preset_224x294():
    from mickey_ros.model import build_model

    torch.manual_seed(0)
    net = build_model("official")
    rng = np.random.default_rng(0)
    image0 = rng.integers(0, 256, (224, 294, 3), dtype=np.uint8)
    image1 = rng.integers(0, 256, (224, 294, 3), dtype=np.uint8)
    res = Relocalizer(net, device="cpu", seed=0).estimate(image0, K, image1, K)
    _check_well_formed(res)
    assert res.depth0.shape == (16, 21)


def test_same_seed_same_answer_and_query_cache(tiny_net, demo_pair):
    image0, K0, image1, K1 = demo_pair
    reloc = Relocalizer(tiny_net, device="cpu", seed=3)
    a = reloc.estimate(image0, K0, image1, K1)
    b = reloc.estimate(image0, K0, image1, K1)
    np.testing.assert_array_equal(a.T_0to1, b.T_0to1)
    reloc.set_reference(image0, K0)
    c = reloc.estimate_query(image1, K1)
    np.testing.assert_array_equal(a.T_0to1, c.T_0to1)
    assert (a.confidence, a.num_inliers, a.num_matches) == (c.confidence, c.num_inliers, c.num_matches)
    np.testing.assert_array_equal(a.kpts3d1, c.kpts3d1)


def test_different_sizes_and_resize_maps_keypoints_back(tiny_net, demo_pair):
    image0, K0, image1, K1 = demo_pair
    small = np.ascontiguousarray(image1[:196, :252])  # a different size than image0
    res = Relocalizer(tiny_net, device="cpu", seed=0).estimate(image0, K0, small, K1)
    _check_well_formed(res)
    res = Relocalizer(tiny_net, device="cpu", seed=0, resize=(196, 154)).estimate(image0, K0, image1, K1)
    _check_well_formed(res)
    H, W = image0.shape[:2]
    assert res.depth0.shape == (154 // 14, 196 // 14)
    # keypoints come back in the caller's pixel frame (full size), not the resized one
    assert res.kpts2d0[:, 0].max() > 196 and res.kpts2d0[:, 0].max() < W
    assert res.kpts2d0[:, 1].min() > -0.5 and res.kpts2d0[:, 1].max() < H


def test_tensor_and_float_inputs_match_uint8(tiny_net, demo_pair):
    image0, K0, image1, K1 = demo_pair
    reloc = Relocalizer(tiny_net, device="cpu", seed=0)
    a = reloc.estimate(image0, K0, image1, K1)
    t0 = torch.from_numpy(image0).permute(2, 0, 1).float() / 255
    b = reloc.estimate(t0, torch.from_numpy(K0), image1.astype(np.float32) / 255, K1)
    np.testing.assert_allclose(a.T_0to1, b.T_0to1, atol=1e-9)


def test_bf16_backbone_autocast_on_cpu(tiny_net, demo_pair):
    image0, K0, image1, K1 = demo_pair
    res = Relocalizer(tiny_net, device="cpu", seed=0, precision="bf16").estimate(image0, K0, image1, K1)
    _check_well_formed(res)
    assert res.T_0to1.dtype == np.float64


def test_degenerate_pair_is_data_not_exception(tiny_net):
    # 84x84 px = 6x6 patches: the 3-cell score border leaves no candidate, so no pose, but no crash either
    image = np.full((84, 84, 3), 127, dtype=np.uint8)
    res = Relocalizer(tiny_net, device="cpu").estimate(image, K, image, K)
    assert not res.success
    assert "match" in res.reason
    np.testing.assert_array_equal(res.T_0to1, np.eye(4))
    assert res.num_inliers == 0 and res.kpts3d0.shape == (0, 3)


def test_too_many_required_matches_fails_cleanly(tiny_net, demo_pair):
    image0, K0, image1, K1 = demo_pair
    reloc = Relocalizer(tiny_net, device="cpu", solver=SolverConfig(min_matches=10**7))
    res = reloc.estimate(image0, K0, image1, K1)
    assert not res.success and res.reason


@pytest.mark.parametrize(
    ("image", "k", "error", "match"),
    [
        (np.zeros((30, 300, 3), np.uint8), K, ImageError, r"image0: expected at least 42x42 pixels"),
        (np.zeros((100, 100, 4), np.uint8), K, ImageError, r"image0: expected an RGB image \[H, W, 3\]"),
        (np.zeros((100, 100, 3), np.int32), K, ImageError, r"image0: expected dtype uint8 or float"),
        (np.full((100, 100, 3), 2.0, np.float32), K, ImageError, r"image0: expected float values in \[0, 1\]"),
        (np.zeros((100, 100, 3), np.uint8), np.diag([0.0, 250.0, 1.0]), IntrinsicsError, r"K0: expected focal"),
        (np.zeros((100, 100, 3), np.uint8), np.eye(4), IntrinsicsError, r"K0: expected a 3x3"),
    ],
)
def test_bad_input_raises_typed_one_line_errors(tiny_net, image, k, error, match):
    good = np.zeros((100, 100, 3), np.uint8)
    with pytest.raises(error, match=match) as info:
        Relocalizer(tiny_net, device="cpu").estimate(image, k, good, K)
    assert "\n" not in str(info.value)


def test_bad_settings(tiny_net):
    with pytest.raises(InputError, match="precision: expected one of"):
        Relocalizer(tiny_net, precision="int8")
    with pytest.raises(InputError, match="resize: expected W H of at least 42"):
        Relocalizer(tiny_net, resize=(20, 20))
    with pytest.raises(InputError, match="device:"):
        Relocalizer(tiny_net, device="tpu")
    with pytest.raises(InputError, match="call set_reference"):
        Relocalizer(tiny_net).estimate_query(np.zeros((100, 100, 3), np.uint8), K)
