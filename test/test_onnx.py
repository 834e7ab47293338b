"""ONNX export (`mickey-ros export-onnx`) and the onnxruntime backend: contract, parity with torch, CLI errors."""
from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch

from mickey_ros.cli import main
from mickey_ros.geometry.se3 import rotation_angle_deg

from conftest import DEMO

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from mickey_ros.model import build_model  # noqa: E402
from mickey_ros.model.default import load_default_network  # noqa: E402
from mickey_ros.onnx_backend import OnnxNetwork  # noqa: E402
from mickey_ros.onnx_export import baked_pos_embed, export_onnx  # noqa: E402
from mickey_ros.pipeline import Relocalizer  # noqa: E402

OUTPUTS = ("kpts", "depth", "scores", "descriptors")
# Parity bound: 32 float32 ulps of each output's largest magnitude. onnxruntime and torch sum the same convolutions
# and matrix products in different orders, so two correct backends differ by rounding that grows with the value's
# magnitude (measured: up to 18 ulps, descriptors of the bundled network; keypoints 1e-4 px at 290 px = 3 ulps).
# Keypoints are held by their 99th percentile: one keypoint of a patch can be ill-conditioned (the bundled stage-6
# network on demo im0.png: one of 336 keypoints off by 2.0e-3 px = 57 ulps, the next 0.9 ulps; a sigmoid offset
# whose input amplifies the backbone's rounding), so every keypoint is held to KPTS_MAX_PX instead, a fraction of
# a pixel that no matcher or solver threshold (1-2 px) can see. A wrong graph (a missing op, a wrong constant,
# another resize) is off by far more, everywhere.
ULPS = 32
KPTS_MAX_PX = 0.005
H, W = 322, 420  # the bundled default's training size (23 x 30 patches), recorded in its file
FOCAL = 220.0  # px, the demo images' fx (the bundled network's depth is focal-relative)


def _images(batch: int, height: int = H, width: int = W) -> torch.Tensor:
    """The demo images (cropped) first, then random images: realistic and arbitrary inputs."""
    from mickey_ros.cli import read_image

    demo = [torch.from_numpy(read_image(DEMO / f"im{i}.png", "image")).permute(2, 0, 1).float() / 255 for i in (0, 1)]
    out = [d[:, :height, :width] for d in demo if d.shape[1] >= height and d.shape[2] >= width]
    generator = torch.Generator().manual_seed(batch)
    out += [torch.rand(3, height, width, generator=generator) for _ in range(batch)]
    return torch.stack(out[:batch])


def _max_diffs(net, onnx_net: OnnxNetwork, images: torch.Tensor, focal=None) -> dict[str, float]:
    """Largest |onnxruntime - torch| of each output, in float32 ulps of the torch output's largest magnitude."""
    with torch.no_grad():
        ref = net(images, focal)
    got = onnx_net(images, focal)
    assert got.grid_hw == ref.grid_hw
    diffs = {}
    for name in OUTPUTS:
        a, b = getattr(ref, name), getattr(got, name)
        assert a.shape == b.shape and b.dtype == torch.float32, name
        error = (a - b).abs()
        if name == "kpts":
            diffs["kpts_max_px"] = float(error.max())
            error = torch.quantile(error.amax(-1).flatten(), 0.99)  # per keypoint, then the 99th percentile
        diffs[name] = float(error.max() / (a.abs().max() * torch.finfo(torch.float32).eps))
    return diffs


def _assert_parity(diffs: dict[str, float]) -> None:
    assert all(diffs[k] <= ULPS for k in OUTPUTS) and diffs["kpts_max_px"] <= KPTS_MAX_PX, diffs


def _focal(batch: int) -> torch.Tensor:
    return torch.linspace(0.8, 1.2, batch) * FOCAL


@pytest.fixture(scope="module")
def default_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "default.onnx"
    export_onnx(load_default_network(), path, H, W, dynamic_batch=True)
    return path


@pytest.fixture(scope="module")
def tiny_cli_onnx(tmp_path_factory):
    """The `tiny` preset (random weights, seed 3) exported by the CLI with a dynamic batch."""
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    code = main(["export-onnx", str(path), "--preset", "tiny", "--seed", "3", "--height", str(H), "--width", str(W),
                 "--dynamic-batch"])
    assert code == 0
    return path


@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(0)
    return build_model("small")


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory, small_net):
    path = tmp_path_factory.mktemp("onnx") / "small.onnx"
    export_onnx(small_net, path, 84, 112, dynamic_batch=True)
    return path


def test_baked_positional_embedding_is_the_runtime_one():
    torch.manual_seed(0)
    backbone = build_model("tiny").backbone
    runtime = backbone.interpolate_pos_encoding(16, 21, torch.float32)
    with baked_pos_embed(backbone, 16, 21) as baked:
        assert torch.equal(baked, runtime)
        assert torch.equal(backbone.interpolate_pos_encoding(16, 21, torch.float32), runtime)
        with pytest.raises(ValueError, match="16x21"):
            backbone.interpolate_pos_encoding(16, 20, torch.float32)
    assert "interpolate_pos_encoding" not in vars(backbone)  # the method is back


@pytest.mark.parametrize("batch", [1, 3])
def test_default_network_parity(default_onnx, batch):
    _assert_parity(_max_diffs(load_default_network(), OnnxNetwork(default_onnx), _images(batch), _focal(batch)))


def test_parity_bound_rejects_a_wrong_graph(default_onnx, monkeypatch):
    """The ulp bound is tight enough to see a small real error: depth off by 1e-5 relative, keypoints by 0.01 px."""
    onnx_net, net = OnnxNetwork(default_onnx), load_default_network()
    images, focal = _images(1), _focal(1)
    _assert_parity(_max_diffs(net, onnx_net, images, focal))
    forward = OnnxNetwork.forward
    for name, change in (("depth", lambda v: v * (1 + 1e-5)), ("kpts", lambda v: v + 0.01)):
        def wrong(self, *args, name=name, change=change):
            out = forward(self, *args)
            return dataclasses.replace(out, **{name: change(getattr(out, name))})

        monkeypatch.setattr(OnnxNetwork, "forward", wrong)
        diffs = _max_diffs(net, onnx_net, images, focal)
        assert diffs[name] > ULPS and (name != "kpts" or diffs["kpts_max_px"] > KPTS_MAX_PX), (name, diffs)


@pytest.mark.parametrize("batch", [1, 3])
def test_tiny_preset_cli_export_parity(tiny_cli_onnx, batch):
    torch.manual_seed(3)  # as the CLI builds a --preset network
    _assert_parity(_max_diffs(build_model("tiny"), OnnxNetwork(tiny_cli_onnx), _images(batch)))


def test_focal_relative_network_has_a_focal_input(small_net, small_onnx):
    model = onnx.load(str(small_onnx))
    assert [i.name for i in model.graph.input] == ["image", "focal"]
    focal = model.graph.input[1].type.tensor_type
    assert focal.elem_type == onnx.TensorProto.FLOAT and [d.dim_param for d in focal.shape.dim] == ["batch"]
    onnx_net = OnnxNetwork(small_onnx)
    for batch, fx in ((1, [228.0]), (3, [150.0, 228.0, 400.0])):
        _assert_parity(_max_diffs(small_net, onnx_net, _images(batch, 84, 112), torch.tensor(fx)))
    # the depth really follows fx: twice the focal length, twice the depth
    images = _images(1, 84, 112)
    d1, d2 = (onnx_net(images, torch.tensor([f])).depth for f in (200.0, 400.0))
    torch.testing.assert_close(d2, 2 * d1, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="focal"):
        onnx_net(images)


def test_fp16_export_keeps_float32_io(small_net, tmp_path):
    path = export_onnx(small_net, tmp_path / "small16.onnx", 84, 112, fp16=True)
    model = onnx.load(str(path))
    assert {p.key: p.value for p in model.metadata_props}["backbone_dtype"] == "float16"
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in [*model.graph.input, *model.graph.output])
    with torch.no_grad():
        ref = small_net(_images(1, 84, 112), torch.tensor([228.0]))
    got = OnnxNetwork(path)(_images(1, 84, 112), torch.tensor([228.0]))
    for name, atol in (("kpts", 0.05), ("depth", 0.02), ("scores", 1e-5), ("descriptors", 2e-3)):
        torch.testing.assert_close(getattr(got, name), getattr(ref, name), atol=atol, rtol=0)


def test_file_contract_and_metadata(default_onnx):
    net = load_default_network()
    model = onnx.load(str(default_onnx))
    onnx.checker.check_model(model)

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert [(i.name, dims(i)) for i in model.graph.input] == [("image", ["batch", 3, H, W]), ("focal", ["batch"])]
    n = (H // 14) * (W // 14)
    assert [(o.name, dims(o)) for o in model.graph.output] == [
        ("kpts", ["batch", n, 2]), ("depth", ["batch", n]), ("scores", ["batch", n]),
        ("descriptors", ["batch", n, net.config.descriptor_dim])]
    meta = {p.key: p.value for p in model.metadata_props}
    from mickey_ros import __version__

    assert meta["format"] == "mickey_ros.onnx" and meta["mickey_ros_version"] == __version__
    assert meta["opset"] == "17" and any(o.domain in ("", "ai.onnx") and o.version == 17 for o in model.opset_import)
    assert meta["preset"] == "small" and meta["input_size"] == f"{W} {H}"
    assert float(meta["depth_focal_ref"]) == net.config.depth_focal_ref > 0
    assert json.loads(meta["model_config"])["backbone"] == net.config.backbone
    assert np.float32(float(meta["dustbin_score"])) == net.matcher.matching_mat.dustbin_score.detach().numpy()
    onnx_net = OnnxNetwork(default_onnx)
    assert onnx_net.config == net.config and onnx_net.input_size == net.input_size == (W, H)


def test_onnxruntime_backend_feeds_and_matches_like_torch(default_onnx, demo_pair, monkeypatch):
    """The onnxruntime Relocalizer gives the network exactly the torch Relocalizer's inputs (resized image, fx),
    gets outputs within the parity bound, and matches them exactly as the torch network does."""
    image0, K0, image1, K1 = demo_pair
    net, onnx_net = load_default_network(), OnnxNetwork(default_onnx)
    torch_in, onnx_in = {"images": [], "focal": []}, {"images": [], "focal": []}
    backbone, heads, forward = net.backbone_features, net.forward_heads, OnnxNetwork.forward

    def record_backbone(images):
        torch_in["images"] += list(images)
        return backbone(images)

    def record_heads(features, focal):
        torch_in["focal"] += list(focal)
        return heads(features, focal)

    def record_onnx(self, images, focal=None):
        onnx_in["images"] += list(images)
        onnx_in["focal"] += list(focal)
        return forward(self, images, focal)

    monkeypatch.setattr(net, "backbone_features", record_backbone)
    monkeypatch.setattr(net, "forward_heads", record_heads)
    monkeypatch.setattr(OnnxNetwork, "forward", record_onnx)
    assert Relocalizer(net, seed=0).estimate(image0, K0, image1, K1).success
    assert Relocalizer(onnx_net, seed=0).estimate(image0, K0, image1, K1).success
    assert len(torch_in["images"]) == len(onnx_in["images"]) == 2
    for key in ("images", "focal"):
        assert all(torch.equal(a, b) for a, b in zip(torch_in[key], onnx_in[key])), key
    images, focal = torch.stack(onnx_in["images"]), torch.stack(onnx_in["focal"])
    monkeypatch.setattr(OnnxNetwork, "forward", forward)
    _assert_parity(_max_diffs(load_default_network(), onnx_net, images, focal))
    outs = [onnx_net(images[i:i + 1], focal[i:i + 1]) for i in (0, 1)]
    assert torch.equal(onnx_net.match(*outs), net.match(*outs))


def _pose_distance(T_a: np.ndarray, T_b: np.ndarray) -> tuple[float, float]:
    """Rotation angle (deg) and translation distance (m) between two ``[4, 4]`` poses."""
    return rotation_angle_deg(T_a[:3, :3], T_b[:3, :3]), float(np.linalg.norm(T_a[:3, 3] - T_b[:3, 3]))


def test_onnxruntime_backend_pose_near_the_torch_pose(default_onnx, demo_pair):
    """End to end, the two backends agree up to the solver's sensitivity: it samples matches from P, and the
    float32 differences of the outputs (above) change some draws, so the poses are not equal. The bound is the
    solver's own spread on this pair: onnxruntime (seed 0) is no farther from torch (seed 0) than torch with
    solver seeds 1-5 is (plus 1 deg / 5 cm), and under 6 deg / 0.3 m in any case. A wrong image, focal length or
    matcher on one side would be far outside: the first test of this file shows those parts exact."""
    image0, K0, image1, K1 = demo_pair
    net = load_default_network()
    torch_poses = [Relocalizer(net, seed=s).estimate(image0, K0, image1, K1) for s in range(6)]
    onnx_res = Relocalizer(backend="onnxruntime", onnx_path=default_onnx, seed=0).estimate(image0, K0, image1, K1)
    torch_res = torch_poses[0]
    assert onnx_res.success and all(r.success for r in torch_poses)
    spread = np.array([_pose_distance(r.T_0to1, torch_res.T_0to1) for r in torch_poses[1:]]).max(axis=0)
    angle, dist = _pose_distance(onnx_res.T_0to1, torch_res.T_0to1)
    assert angle <= min(spread[0] + 1.0, 6.0), (angle, spread)
    assert dist <= min(spread[1] + 0.05, 0.3), (dist, spread)
    assert onnx_res.num_matches == torch_res.num_matches
    assert abs(onnx_res.num_inliers - torch_res.num_inliers) <= 0.1 * torch_res.num_inliers


def test_relocalizer_backend_arguments(default_onnx):
    from mickey_ros.errors import InputError

    with pytest.raises(InputError, match="backend: expected one of torch, onnxruntime"):
        Relocalizer(load_default_network(), backend="tensorrt")
    with pytest.raises(InputError, match="onnx_path"):
        Relocalizer(backend="onnxruntime")
    with pytest.raises(InputError, match="net: expected a MicKey"):
        Relocalizer()
    reloc = Relocalizer(OnnxNetwork(default_onnx))  # an OnnxNetwork object selects the backend by itself
    assert reloc.resize == (W, H) and reloc.net.device == torch.device("cpu")


def test_match_cli_with_onnx(default_onnx, demo_pair, tmp_path, capsys):
    """`match --onnx` is the onnxruntime Relocalizer (exactly), as `match` is the torch one."""
    args = ["match", str(DEMO / "im0.png"), str(DEMO / "im1.png"), "--intrinsics0", "220", "220", "146.5", "111.5",
            "--intrinsics1", "220", "220", "146.5", "111.5", "--device", "cpu"]
    assert main([*args, "--json", str(tmp_path / "torch.json")]) == 0
    assert main([*args, "--onnx", str(default_onnx), "--json", str(tmp_path / "onnx.json")]) == 0
    torch_pose, onnx_pose = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("torch", "onnx"))
    image0, K0, image1, K1 = demo_pair
    for pose, reloc in ((torch_pose, Relocalizer(load_default_network(), seed=0)),
                        (onnx_pose, Relocalizer(backend="onnxruntime", onnx_path=default_onnx, seed=0))):
        np.testing.assert_allclose(pose["T_0to1"], reloc.estimate(image0, K0, image1, K1).T_0to1, rtol=0, atol=1e-9)
    capsys.readouterr()
    assert main([*args, "--onnx", str(default_onnx), "--preset", "tiny"]) == 2
    assert "--preset: not used with --onnx" in _error_line(capsys)


def _error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "INFO" not in line]
    assert len(err) == 1, err
    assert err[0].startswith("mickey-ros: error: ")
    return err[0]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("height not multiple", r"--height: expected a multiple of 14 of at least 42 pixels, got 100"),
        ("width too small", r"--width: expected a multiple of 14 of at least 42 pixels, got 28"),
        ("missing checkpoint", r"--checkpoint: file not found: .*absent\.ckpt"),
        ("no onnx", r"onnx: not installed; run pip install -e \"\.\[onnx\]\""),
        ("no output folder", r"OUT\.onnx: folder .*nowhere does not exist"),
        ("missing onnx file", r"onnx: file not found: .*absent\.onnx"),
        ("no onnxruntime", r"onnxruntime: not installed; run pip install -e \"\.\[onnx\]\""),
    ],
)
def test_bad_input_exit_2_one_line(case, expected, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "net.onnx")
    args = ["export-onnx", out, "--height", "224", "--width", "294"]
    if case == "height not multiple":
        args[3] = "100"
    elif case == "width too small":
        args[5] = "28"
    elif case == "missing checkpoint":
        args += ["--checkpoint", str(tmp_path / "absent.ckpt")]
    elif case == "no onnx":
        monkeypatch.setitem(__import__("sys").modules, "onnx", None)  # import onnx -> ImportError
    elif case == "no output folder":
        args[1] = str(tmp_path / "nowhere" / "net.onnx")
    elif case in ("missing onnx file", "no onnxruntime"):
        if case == "no onnxruntime":
            monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
        args = ["match", str(DEMO / "im0.png"), str(DEMO / "im1.png"), "--intrinsics0", "220", "220", "146", "111",
                "--intrinsics1", "220", "220", "146", "111", "--device", "cpu", "--onnx", str(tmp_path / "absent.onnx")]
    assert main(args) == 2
    assert re.search(expected, _error_line(capsys)), case


@pytest.mark.parametrize("batched", [False, True])
def test_onnxruntime_backend_depth_flip_averages_like_torch(default_onnx, demo_pair, batched):
    """depth_flip on the onnxruntime backend: the same mirror-and-average as torch (depth maps within float32
    rounding of the torch backend's), single and batched."""
    image0, K0, image1, K1 = demo_pair
    results = []
    for reloc in (Relocalizer(load_default_network(), seed=0, depth_flip=True),
                  Relocalizer(backend="onnxruntime", onnx_path=default_onnx, seed=0, depth_flip=True)):
        pair = (image0, K0, image1, K1)
        results.append(reloc.estimate_batch([pair])[0] if batched else reloc.estimate(*pair))
    plain = Relocalizer(load_default_network(), seed=0).estimate(image0, K0, image1, K1)
    assert all(r.success for r in results)
    for k in ("depth0", "depth1"):
        np.testing.assert_allclose(getattr(results[1], k), getattr(results[0], k), rtol=1e-4)
        assert np.abs(getattr(results[0], k) - getattr(plain, k)).max() > 1e-3  # the flip did change the depth
