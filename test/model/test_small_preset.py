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
        out = net(torch.rand(2, 3, 224, 294))
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
    x = torch.rand(1, 3, 84, 112)
    with torch.no_grad():
        a, b = net(x), back(x)
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
])
def test_bad_depth_settings_are_rejected(field, value, match):
    with pytest.raises(InputError, match=match):
        ModelConfig(**{field: value})


def test_small_backbone_trains():
    torch.manual_seed(2)
    net = build_model("small").train()
    out = net(torch.rand(2, 3, 84, 112))
    (out.depth.mean() + out.descriptors.sum() * 0.01).backward()
    stem = net.backbone.patch_embed
    assert stem.conv0[0].weight.grad is not None and float(stem.conv0[0].weight.grad.abs().sum()) > 0
