"""Per-size caches (ViT positional embedding, head sine encoding) and Relocalizer.warmup (issue 10 item 4)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mickey_ros.cli import read_image
from mickey_ros.data.synthetic_scene import demo_cameras
from mickey_ros.errors import InputError
from mickey_ros.model import build_model
from mickey_ros.model.heads import _cached_sine_position_encoding, sine_position_encoding
from mickey_ros.model.vit import POS_CACHE_SIZE
from mickey_ros.pipeline import Relocalizer

DEMO = Path(__file__).resolve().parents[1] / "mickey_ros" / "data" / "demo"


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_model("tiny").eval()


def test_pos_cache_equals_fresh_and_follows_weight_changes(net):
    vit = net.backbone
    vit._pos_cache.clear()
    with torch.no_grad():
        first = vit.interpolate_pos_encoding(16, 21, torch.float32)
        again = vit.interpolate_pos_encoding(16, 21, torch.float32)
        fresh = vit._interpolate_pos_encoding(16, 21)
    assert again is first  # served from the cache
    assert torch.equal(first, fresh)
    assert len(vit._pos_cache) == 1
    # a weight change (load_state_dict copies in place) must not be served the stale embedding
    state = {k: v.clone() for k, v in net.state_dict().items()}
    key = next(k for k in state if k.endswith(".pos_embed"))
    state[key] = state[key] + 1.0
    net.load_state_dict(state)
    try:
        with torch.no_grad():
            changed = vit.interpolate_pos_encoding(16, 21, torch.float32)
        assert torch.allclose(changed, first + 1.0, atol=1e-4)  # bicubic weights sum to one
        assert torch.equal(changed, vit._interpolate_pos_encoding(16, 21).detach())
    finally:
        state[key] = state[key] - 1.0
        net.load_state_dict(state)


def test_pos_cache_dtype_and_bound(net):
    vit = net.backbone
    vit._pos_cache.clear()
    with torch.no_grad():
        half = vit.interpolate_pos_encoding(16, 21, torch.bfloat16)
        full = vit.interpolate_pos_encoding(16, 21, torch.float32)
        assert half.dtype == torch.bfloat16 and torch.equal(half, full.to(torch.bfloat16))
        for h in range(3, 3 + POS_CACHE_SIZE + 3):
            vit.interpolate_pos_encoding(h, 5, torch.float32)
    assert len(vit._pos_cache) == POS_CACHE_SIZE


def test_pos_embedding_still_trains(net):
    vit = net.backbone
    vit._pos_cache.clear()
    net.zero_grad()
    pos = vit.interpolate_pos_encoding(16, 21, torch.float32)
    pos.square().sum().backward()
    assert vit.pos_embed.grad is not None and float(vit.pos_embed.grad.abs().sum()) > 0
    assert not vit._pos_cache  # gradients wanted: nothing cached
    net.zero_grad()


def test_cached_sine_encoding_equals_the_function():
    cached = _cached_sine_position_encoding(64, 7, 9, torch.device("cpu"))
    assert torch.equal(cached, sine_position_encoding(64, 7, 9))
    assert _cached_sine_position_encoding(64, 7, 9, torch.device("cpu")) is cached


def _demo_pair():
    K = demo_cameras()[0]
    return read_image(DEMO / "im0.png", "im0"), read_image(DEMO / "im1.png", "im1"), K


def test_warmup_leaves_results_unchanged(net):
    image0, image1, K = _demo_pair()
    cold = Relocalizer(net, seed=0).estimate(image0, K, image1, K)
    reloc = Relocalizer(net, seed=0)
    seconds = reloc.warmup()
    assert isinstance(seconds, float) and seconds > 0
    warm = reloc.estimate(image0, K, image1, K)
    assert cold.success == warm.success
    np.testing.assert_array_equal(cold.T_0to1, warm.T_0to1)


def test_warmup_keeps_the_reference(net):
    image0, image1, K = _demo_pair()
    reloc = Relocalizer(net, seed=0)
    reloc.set_reference(image0, K)
    before = reloc.estimate_query(image1, K)
    reloc.warmup(322, 238)
    after = reloc.estimate_query(image1, K)
    np.testing.assert_array_equal(before.T_0to1, after.T_0to1)


def test_warmup_size_defaults_and_errors(net, monkeypatch):
    seen = []
    reloc = Relocalizer(net, seed=0, resize=(336, 252))
    real = reloc.estimate
    monkeypatch.setattr(reloc, "estimate", lambda i0, K0, i1, K1: seen.append(i0.shape) or real(i0, K0, i1, K1))
    reloc.warmup()
    assert seen == [(252, 336, 3)]
    with pytest.raises(InputError, match=r"warmup: expected a size of at least 42 px a side, got 30x300"):
        reloc.warmup(30, 300)
