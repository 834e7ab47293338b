"""The `small` preset: hybrid conv-stem backbone, positive depth, checkpoint round trip, official layout untouched."""
from __future__ import annotations

import pytest
import torch

from mickey_ros.errors import InputError
from mickey_ros.model import build_model, load_checkpoint
from mickey_ros.model.checkpoint import save_checkpoint
from mickey_ros.model.heads import DEPTH_LOG_CLAMP, DepthHead
from mickey_ros.model.mickey import PRESETS, ModelConfig
from mickey_ros.model.vit import ConvStem, PatchEmbed


def test_small_outputs_shapes_positive_depth_near_its_initial_scale():
    torch.manual_seed(0)
    net = build_model("small")
    assert isinstance(net.backbone.patch_embed, ConvStem)
    with torch.no_grad():
        out = net(torch.rand(2, 3, 224, 294), torch.tensor([228.0, 228.0]))
    assert out.grid_hw == (16, 21)
    assert out.kpts.shape == (2, 336, 2) and out.descriptors.shape == (2, 336, 128)
    assert bool((out.depth > 0).all())
    median = float(out.depth.median())
    assert 2.5 / 4 < median < 2.5 * 4  # scale * exp(raw) with raw ~ 0 at initialisation
    # border of one cell: the score map is zero on the outermost ring only
    s = out.score_map[0]
    assert float(s[0].abs().sum() + s[-1].abs().sum() + s[:, 0].abs().sum() + s[:, -1].abs().sum()) == 0.0
    assert bool((s[1:-1, 1:-1] > 0).all())


def test_depth_head_exp_activation_is_scale_times_exp_of_the_raw_output():
    head = DepthHead(8, (8, 8, 8, 8), 2, 1, activation="exp", scale=2.5)
    raw_head = DepthHead(8, (8, 8, 8, 8), 2, 1)
    raw_head.load_state_dict(head.state_dict())
    head.eval(), raw_head.eval()
    x = torch.randn(1, 8, 4, 5)
    with torch.no_grad():
        raw = raw_head(x)
        assert torch.allclose(head(x), 2.5 * torch.exp(raw.clamp(-DEPTH_LOG_CLAMP, DEPTH_LOG_CLAMP)))


def test_small_checkpoint_round_trip_keeps_config_and_outputs(tmp_path):
    torch.manual_seed(1)
    net = build_model("small")
    path = save_checkpoint(net, tmp_path / "small.pt")
    back = load_checkpoint(path)
    assert back.preset == "small" and back.config == PRESETS["small"]
    x, f = torch.rand(1, 3, 84, 112), torch.tensor([90.0])
    with torch.no_grad():
        a, b = net(x, f), back(x, f)
    for name in ("kpts", "depth", "scores", "descriptors"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_official_and_tiny_keep_the_dinov2_patch_embedding_and_raw_depth():
    for name in ("official", "tiny"):
        cfg = PRESETS[name]
        assert cfg.depth_activation == "none"
        net = build_model(name, device="meta")
        assert isinstance(net.backbone.patch_embed, PatchEmbed)
        assert net.extractor.depth_head.activation == "none"


@pytest.mark.parametrize("field, value, match", [
    ("depth_activation", "relu", r"depth_activation: expected 'none' or 'exp', got 'relu'"),
    ("depth_scale", 0.0, r"depth_scale: expected a positive number of metres, got 0.0"),
    ("depth_focal_ref", -1.0, r"depth_focal_ref: expected 0 \(off\) or a focal length in pixels, got -1.0"),
])
def test_bad_depth_settings_are_rejected(field, value, match):
    with pytest.raises(InputError, match=match):
        ModelConfig(**{field: value})


def test_small_backbone_trains():
    torch.manual_seed(2)
    net = build_model("small").train()
    out = net(torch.rand(2, 3, 84, 112), torch.tensor([90.0, 80.0]))
    (out.depth.mean() + out.descriptors.sum() * 0.01).backward()
    stem = net.backbone.patch_embed
    assert stem.conv0[0].weight.grad is not None and float(stem.conv0[0].weight.grad.abs().sum()) > 0


def test_focal_relative_depth_is_the_head_output_times_fx_over_the_reference():
    """Same image, two lenses: the depth scales with fx / depth_focal_ref, nothing else changes."""
    torch.manual_seed(3)
    net = build_model("small").eval()
    assert net.config.depth_focal_ref == 228.0
    x = torch.rand(1, 3, 84, 112).repeat(2, 1, 1, 1)
    with torch.no_grad():
        out = net(x, torch.tensor([228.0, 342.0]))
        raw = net.extractor.depth_head(net.backbone_features(x[:1])).reshape(-1)
    assert torch.allclose(out.depth[0], raw)
    assert torch.allclose(out.depth[1], raw * 1.5)
    assert torch.equal(out.kpts[0], out.kpts[1]) and torch.equal(out.scores[0], out.scores[1])


@pytest.mark.parametrize("focal, match", [
    (None, r"focal: this network's depth is relative to a 228-px focal length \(depth_focal_ref\); pass each"),
    (torch.tensor([200.0]), r"focal: expected 2 positive finite focal lengths \(pixels\), got \[200.0\]"),
    (torch.tensor([200.0, 0.0]), r"focal: expected 2 positive finite focal lengths"),
    (torch.tensor([200.0, float("nan")]), r"focal: expected 2 positive finite focal lengths"),
])
def test_focal_relative_network_needs_each_images_focal(focal, match):
    net = build_model("small").eval()
    with pytest.raises(InputError, match=match), torch.no_grad():
        net(torch.rand(2, 3, 84, 112), focal)


def test_networks_without_a_focal_reference_ignore_focal():
    torch.manual_seed(4)
    net = build_model("tiny").eval()
    x = torch.rand(1, 3, 84, 112)
    with torch.no_grad():
        assert torch.equal(net(x).depth, net(x, torch.tensor([500.0])).depth)


def test_checkpoint_saved_before_the_focal_reference_loads_as_metric_depth(tmp_path):
    """Checkpoints written before ``depth_focal_ref`` existed have no such key: they load with 0 (metres)."""
    import dataclasses
    old = dataclasses.replace(PRESETS["small"], depth_focal_ref=0.0)
    from mickey_ros.model.mickey import MicKey
    path = save_checkpoint(MicKey(old, preset="small"), tmp_path / "old.pt")
    blob = torch.load(path, weights_only=False)
    config_key = next(k for k, v in blob.items() if isinstance(v, dict) and "depth_scale" in v)
    del blob[config_key]["depth_focal_ref"]
    torch.save(blob, path)
    back = load_checkpoint(path)
    assert back.config.depth_focal_ref == 0.0
    with torch.no_grad():
        back(torch.rand(1, 3, 84, 112))  # no focal needed


def test_relocalizer_gives_the_network_the_focal_length_of_its_resized_input():
    """The Relocalizer passes fx of the image the network sees (after its resize), not of the original."""
    import cv2
    import numpy as np

    from mickey_ros.pipeline import Relocalizer

    torch.manual_seed(5)
    net = build_model("small").eval()
    image = (np.random.default_rng(0).random((168, 224, 3)) * 255).astype(np.uint8)
    K = np.array([[200.0, 0, 112], [0, 200.0, 84], [0, 0, 1]])
    res = Relocalizer(net, resize=(112, 84)).estimate(image, K, image, K)
    resized = cv2.resize(image.astype(np.float32) / 255, (112, 84), interpolation=cv2.INTER_LINEAR)
    small = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)[None]
    with torch.no_grad():
        raw = net.extractor.depth_head(net.backbone_features(small)).reshape(6, 8)
    assert np.allclose(res.depth0, (raw * 100.0 / 228.0).numpy(), rtol=1e-4)
