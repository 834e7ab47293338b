"""DINOv2-compatible ViT: key layout, positional-embedding resizing, attention against a naive reference."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mickey_ros.model.vit import VIT_ARCHS, ViTConfig, VisionTransformer


def _random_vit(cfg: ViTConfig, seed: int = 0) -> VisionTransformer:
    """A small ViT whose every parameter is random (LayerNorm / LayerScale too), in float32."""
    torch.manual_seed(seed)
    vit = VisionTransformer(cfg)
    with torch.no_grad():
        for name, p in vit.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith("gamma"):
                p.copy_(0.5 + 0.5 * torch.rand_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    return vit.eval()


def test_state_dict_keys_follow_the_dinov2_release_layout():
    with torch.device("meta"):
        vit = VisionTransformer(VIT_ARCHS["dinov2_vits14"])
    expected = ["cls_token", "pos_embed", "mask_token", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    for i in range(12):
        expected += [f"blocks.{i}.{n}" for n in (
            "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
            "ls1.gamma", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight",
            "mlp.fc2.bias", "ls2.gamma")]
    expected += ["norm.weight", "norm.bias"]
    state = vit.state_dict()
    assert list(state) == expected
    assert state["pos_embed"].shape == (1, 1370, 384) and state["mask_token"].shape == (1, 384)
    assert state["blocks.0.mlp.fc1.weight"].shape == (1536, 384)


def test_output_map_non_square_grid():
    vit = _random_vit(ViTConfig(embed_dim=32, depth=1, num_heads=2))
    images = torch.rand(2, 3, 5 * 14, 9 * 14)
    assert vit(images).shape == (2, 32, 5, 9)
    assert vit.interpolate_pos_encoding(5, 9, torch.float32).shape == (1, 1 + 45, 32)


def test_518_input_skips_interpolation(monkeypatch):
    vit = _random_vit(ViTConfig(embed_dim=16, depth=1, num_heads=2))
    assert vit.interpolate_pos_encoding(37, 37, torch.float32) is vit.pos_embed
    # resizing 37 -> 37 with DINOv2's offset would change the values, so the skip matters
    grid = vit.pos_embed[:, 1:].reshape(1, 37, 37, 16).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, scale_factor=(37.1 / 37, 37.1 / 37), mode="bicubic", antialias=False)
    assert resized.shape == grid.shape and not torch.allclose(resized, grid, atol=1e-3)

    def forbidden(*args, **kwargs):
        raise AssertionError("interpolate called for a 518x518 input")

    monkeypatch.setattr(F, "interpolate", forbidden)
    with torch.no_grad():
        assert vit(torch.rand(1, 3, 518, 518)).shape == (1, 16, 37, 37)


def _cubic_weights(t: float, A: float = -0.75) -> list[float]:
    """Keys cubic-convolution weights of the 4 taps at offsets -1, 0, 1, 2 from floor(src)."""

    def near(x: float) -> float:  # |x| <= 1
        return ((A + 2) * x - (A + 3)) * x * x + 1

    def far(x: float) -> float:  # 1 < |x| < 2
        return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _resize_axis(a: np.ndarray, axis: int, out: int, scale_factor: float) -> np.ndarray:
    """Bicubic resize along one axis, sampling at src = (dst + 0.5) / scale_factor - 0.5, edge-clamped taps."""
    a = np.moveaxis(a, axis, 0)
    n = a.shape[0]
    res = np.zeros((out, *a.shape[1:]))
    for i in range(out):
        src = (i + 0.5) / scale_factor - 0.5
        base = math.floor(src)
        for tap, wgt in zip(range(base - 1, base + 3), _cubic_weights(src - base)):
            res[i] += wgt * a[min(max(tap, 0), n - 1)]
    return np.moveaxis(res, 0, axis)


@pytest.mark.parametrize("h, w", [(3, 7), (8, 4), (6, 6)])  # (M, M) = (5, 5) skips the resize
def test_pos_embed_resize_matches_independent_bicubic_reference(h, w):
    M, dim = 5, 8
    vit = _random_vit(ViTConfig(embed_dim=dim, depth=1, num_heads=2, pos_grid=M))
    got = vit.interpolate_pos_encoding(h, w, torch.float32).detach().numpy()[0]
    pos = vit.pos_embed.detach().double().numpy()[0]
    grid = pos[1:].reshape(M, M, dim)
    ref = _resize_axis(_resize_axis(grid, 0, h, (h + 0.1) / M), 1, w, (w + 0.1) / M)
    np.testing.assert_allclose(got[0], pos[0], rtol=0, atol=1e-7)
    np.testing.assert_allclose(got[1:], ref.reshape(h * w, dim), rtol=1e-5, atol=1e-6)
    # sampling by target size instead of the offset scale factor gives different values
    by_size = _resize_axis(_resize_axis(grid, 0, h, h / M), 1, w, w / M)
    assert np.abs(by_size.reshape(h * w, dim) - got[1:]).max() > 1e-3


def _naive_vit(vit: VisionTransformer, images: torch.Tensor) -> np.ndarray:
    """float64 forward with explicit softmax attention, written from the DINOv2 description."""
    cfg = vit.cfg
    P = {k: v.detach().double().numpy() for k, v in vit.state_dict().items()}
    x_img = images.double().numpy()
    B, _, H, W = x_img.shape
    p, D, heads = cfg.patch_size, cfg.embed_dim, cfg.num_heads
    h, w = H // p, W // p

    def layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + cfg.norm_eps) * g + b

    gelu = np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))
    pos = vit.interpolate_pos_encoding(h, w, torch.float64).detach().double().numpy()[0]
    out = np.zeros((B, D, h, w))
    for bi in range(B):
        tokens = [P["cls_token"][0, 0]]
        for r in range(h):  # row-major patches
            for c in range(w):
                patch = x_img[bi, :, r * p:(r + 1) * p, c * p:(c + 1) * p].reshape(-1)
                tokens.append(P["patch_embed.proj.weight"].reshape(D, -1) @ patch + P["patch_embed.proj.bias"])
        x = np.stack(tokens) + pos
        for i in range(cfg.depth):
            pre = f"blocks.{i}."
            y = layer_norm(x, P[pre + "norm1.weight"], P[pre + "norm1.bias"])
            qkv = y @ P[pre + "attn.qkv.weight"].T + P[pre + "attn.qkv.bias"]
            q, k, v = np.split(qkv, 3, axis=1)
            hd = D // heads
            att = np.zeros_like(q)
            for hh in range(heads):
                sl = slice(hh * hd, (hh + 1) * hd)
                logits = q[:, sl] @ k[:, sl].T / math.sqrt(hd)
                wts = np.exp(logits - logits.max(1, keepdims=True))
                att[:, sl] = (wts / wts.sum(1, keepdims=True)) @ v[:, sl]
            x = x + P[pre + "ls1.gamma"] * (att @ P[pre + "attn.proj.weight"].T + P[pre + "attn.proj.bias"])
            y = layer_norm(x, P[pre + "norm2.weight"], P[pre + "norm2.bias"])
            y = gelu(y @ P[pre + "mlp.fc1.weight"].T + P[pre + "mlp.fc1.bias"])
            x = x + P[pre + "ls2.gamma"] * (y @ P[pre + "mlp.fc2.weight"].T + P[pre + "mlp.fc2.bias"])
        x = layer_norm(x, P["norm.weight"], P["norm.bias"])
        for n, token in enumerate(x[1:]):
            out[bi, :, n // w, n % w] = token
    return out


def test_sdpa_vit_matches_naive_softmax_attention_reference():
    vit = _random_vit(ViTConfig(embed_dim=24, depth=2, num_heads=3, pos_grid=4), seed=3)
    images = torch.rand(2, 3, 3 * 14, 5 * 14, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = vit(images).numpy()
    ref = _naive_vit(vit, images)
    assert got.shape == ref.shape == (2, 24, 3, 5)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-5)
