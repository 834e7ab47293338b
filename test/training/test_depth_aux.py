"""RGB-D bags: registered depth in the dataset items and the (off by default) sensor-depth auxiliary term."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("rosbags.rosbag2")
pytest.importorskip("skimage.data")

from mickey_ros.errors import DatasetError, InputError  # noqa: E402
from training import config as config_mod  # noqa: E402
from training.aux_loss import AuxConfig, aux_loss, sample_depth  # noqa: E402
from training.data.build import build_dataset  # noqa: E402
from training.data.datasets import decode_depth  # noqa: E402


@pytest.fixture(scope="module")
def rgbd(tmp_path_factory):
    from training.data.synthetic import generate

    root = tmp_path_factory.mktemp("rgbd")
    generate(root / "train", scenes=1, frames=5, width=168, height=126, seed=9, depth=True)
    return root / "train"


def _cfg(root, tmp, *extra):
    return config_mod.resolve(None, [f"data.train=[{root}]", "data.max_baseline_m=3.0", "data.max_angle_deg=60.0",
                                     f"data.cache_dir={tmp}", *extra])


def _image(encoding, array, bigendian=False):
    raw = array.astype(array.dtype.newbyteorder(">" if bigendian else "<")).tobytes()
    h, w = array.shape
    return SimpleNamespace(encoding=encoding, height=h, width=w, step=w * array.itemsize, is_bigendian=bigendian,
                           data=np.frombuffer(raw, np.uint8))


def test_decode_depth_metres_millimetres_and_unknowns():
    m = np.array([[1.5, np.nan], [0.0, 2.25]], np.float32)
    out = decode_depth(_image("32FC1", m), "d")
    assert out[0, 0] == 1.5 and out[1, 1] == 2.25 and np.isnan(out[0, 1]) and np.isnan(out[1, 0])
    mm = np.array([[1500, 0], [65535, 250]], np.uint16)
    out = decode_depth(_image("16UC1", mm, bigendian=True), "d")
    assert out[0, 0] == pytest.approx(1.5) and np.isnan(out[0, 1]) and out[1, 1] == pytest.approx(0.25)
    with pytest.raises(DatasetError, match=r"d: expected a depth image with encoding 32FC1 \(metres\) or 16UC1"):
        decode_depth(_image("rgb8", np.zeros((2, 2), np.uint8)), "d")


def test_items_carry_the_registered_depth_that_the_generator_ray_cast(rgbd, tmp_path):
    from training.data.synthetic_render import cast_depth, make_scene

    ds = build_dataset(_cfg(rgbd, tmp_path, "data.depth_topic=/camera/depth/image_raw"), "train", tmp_path)
    item = ds[0]
    assert item["depth0"].shape == item["image0"].shape[1:] and item["depth0"].dtype == torch.float32
    scene_dir = Path(item["pair_names"][0].split("/")[0])
    record = json.loads((rgbd / scene_dir / "scene.json").read_text())
    scene = make_scene(np.random.default_rng((record["seed"], record["scene_index"])))
    rec, stamp = item["pair_names"][0].split("/")[1], int(item["pair_names"][0].split("@")[1])
    T = next(np.array(f["T_map_camera"]) for f in record["recordings"][rec]["frames"] if f["stamp_ns"] == stamp)
    uv = np.array([[10.0, 12.0], [80.0, 60.0], [150.0, 100.0]])
    expected = cast_depth(scene, np.array(record["K"]), T, uv)
    got = item["depth0"].numpy()[uv[:, 1].astype(int), uv[:, 0].astype(int)]
    assert np.allclose(got, expected, rtol=1e-5)
    assert "depth0" not in build_dataset(_cfg(rgbd, tmp_path), "train", tmp_path)[0]  # off by default


def test_missing_depth_topic_is_one_clear_error(rgbd, tmp_path):
    ds = build_dataset(_cfg(rgbd, tmp_path, "data.depth_topic=/nope"), "train", tmp_path)
    with pytest.raises(DatasetError, match=r"depth topic /nope not found \(topics: "):
        ds[0]


def test_sensor_depth_term_is_the_mean_log_error_and_needs_depth():
    kpts = torch.tensor([[[0.2, 0.4], [2.6, 1.0], [1.0, 1.0]]])
    depth_map = torch.tensor([[[1.0, 2.0, 4.0], [1.0, 8.0, 2.0]]])  # [1, 2, 3]
    assert sample_depth(depth_map, kpts).tolist() == [[1.0, 2.0, 8.0]]
    depth_map[0, 1, 1] = float("nan")  # unknown: left out
    out = SimpleNamespace(kpts=kpts, depth=torch.tensor([[2.0, 2.0, 5.0]], requires_grad=True),
                          descriptors=torch.nn.functional.normalize(torch.randn(1, 3, 8), dim=-1))
    K = torch.tensor([[[100.0, 0, 1.5], [0, 100.0, 1.0], [0, 0, 1]]])
    T = torch.eye(4)[None].clone()
    T[0, 0, 3] = 0.3
    res = aux_loss(out, out, K, K, T, AuxConfig(depth_weight=1.0), depth_map, depth_map)
    assert float(res.total.detach()) == pytest.approx(np.log(2.0) / 2, rel=1e-6)  # |log 2/1|, |log 2/2|, both views
    assert res.scalars["aux_sensor_depth_ratio"] == 1.0  # ratios {2, 1, 2, 1}: the lower median
    res.total.backward()
    assert out.depth.grad[0, 0] > 0 and out.depth.grad[0, 2] == 0
    with pytest.raises(InputError, match=r"aux\.depth_weight: needs registered depth images in the batch; set "
                                         r"data\.depth_topic"):
        aux_loss(out, out, K, K, T, AuxConfig(depth_weight=1.0))


def test_depth_shape_and_pair_scale_terms_against_hand_computed_values():
    """Two pairs; view 0 of pair 0 is the sensor depth times 2 (pure scale: shape 0), view 1 the sensor depth
    with per-keypoint errors; pair 1 has unknown depth in view 1 (no pair scale there)."""
    kpts = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 1.0]]]).repeat(2, 1, 1)
    sensor = torch.tensor([[1.0, 2.0, 4.0], [3.0, 1.0, 1.0]]).repeat(2, 1, 1)  # [2, 2, 3]: z = 1, 2, 4, 3
    z = torch.tensor([1.0, 2.0, 4.0, 3.0])
    e1 = torch.tensor([0.1, -0.3, 0.2, 0.4])  # log errors of view 1
    d0 = torch.stack([2 * z, z * torch.exp(torch.tensor([0.5, 0.0, 0.0, -0.5]))])
    d1 = torch.stack([z * torch.exp(e1), z])
    depth1 = sensor.clone()
    depth1[1] = float("nan")  # pair 1: no depth in view 1
    desc = torch.nn.functional.normalize(torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    outs = [SimpleNamespace(kpts=kpts, depth=d.clone().requires_grad_(True), descriptors=desc) for d in (d0, d1)]
    K = torch.tensor([[100.0, 0, 1.5], [0, 100.0, 1.0], [0, 0, 1]]).repeat(2, 1, 1)
    T = torch.eye(4).repeat(2, 1, 1)
    T[:, 0, 3] = 0.3
    r = [torch.full((4,), float(np.log(2.0))), e1, torch.tensor([0.5, 0.0, 0.0, -0.5])]  # the log ratios
    shape = torch.cat([(x - x.mean()).abs() for x in r])  # per image: 0, |e1 - mean e1|, the zero-mean errors
    pair_scale = abs(float(np.log(2.0)) - float(e1.mean()))  # pair 0 only
    for cfg, expected in ((AuxConfig(depth_shape_weight=1.0), float(shape.mean())),
                          (AuxConfig(depth_pair_scale_weight=2.0), 2 * pair_scale)):
        res = aux_loss(outs[0], outs[1], K, K, T, cfg, sensor, depth1)
        assert float(res.total.detach()) == pytest.approx(expected, rel=1e-6), cfg
        assert res.scalars["aux_sensor_depth_shape"] == pytest.approx(float(shape.mean()), rel=1e-6)
        assert res.scalars["aux_sensor_depth_pair_scale"] == pytest.approx(pair_scale, rel=1e-6)
    # the shape term is scale-invariant: its gradient w.r.t. log depth sums to zero over each image (it never moves
    # an image's scale), and the pair term moves the two views' scales in opposite directions
    res = aux_loss(outs[0], outs[1], K, K, T, AuxConfig(depth_shape_weight=1.0), sensor, depth1)
    res.total.backward()
    for o, b in ((outs[0], 0), (outs[0], 1), (outs[1], 0)):
        log_grad = (o.depth.grad[b] * o.depth[b]).detach()  # d total / d log d
        assert float(log_grad.sum()) == pytest.approx(0.0, abs=1e-6) and float(log_grad.abs().sum()) > 0
    for o in outs:
        o.depth.grad = None
    aux_loss(outs[0], outs[1], K, K, T, AuxConfig(depth_pair_scale_weight=1.0), sensor, depth1).total.backward()
    g0, g1 = (float((o.depth.grad[0] * o.depth[0]).detach().sum()) for o in outs)
    assert g0 == pytest.approx(1.0, rel=1e-5) and g1 == pytest.approx(-1.0, rel=1e-5)  # view 0 too far: shrink it
    assert float(outs[0].depth.grad[1].abs().sum()) == 0.0  # pair 1 has no pair scale
    with pytest.raises(InputError, match=r"aux\.depth_shape_weight: needs registered depth images in the batch"):
        aux_loss(outs[0], outs[1], K, K, T, AuxConfig(depth_shape_weight=1.0))
    with pytest.raises(InputError, match=r"aux\.depth_pair_scale_weight: expected a non-negative number"):
        AuxConfig(depth_pair_scale_weight=-1.0)


def test_two_datasets_with_the_same_scene_names_combine_without_sharing_places(rgbd, tmp_path):
    import shutil

    from training.data.build import bag_ids, find_bags

    both = tmp_path / "both"
    shutil.copytree(rgbd, both / "a")
    shutil.copytree(rgbd, both / "b")
    ids = bag_ids(find_bags([str(both)], "train"))
    assert ids == [("a/scene_000", "a/scene_000/rec0"), ("a/scene_000", "a/scene_000/rec1"),
                   ("b/scene_000", "b/scene_000/rec0"), ("b/scene_000", "b/scene_000/rec1")]
    assert bag_ids(find_bags([str(rgbd)], "train"))[0] == ("scene_000", "scene_000/rec0")  # one dataset: as before
    ds = build_dataset(_cfg(both, tmp_path), "train", tmp_path)
    assert {p.place for p in ds.pairs} == {"a/scene_000", "b/scene_000"}
    frames = ds.index.frames
    assert all(frames[p.frame0].place == frames[p.frame1].place for p in ds.pairs)
