"""MicKey heads, keypoints and matcher against a slow numpy reference written from the spec.

The reference (official_mickey.md §4-§6) uses explicit loops in float64 and reads every weight from the
network's state dict by name; it shares no code with mickey_ros.model.heads. The network runs in
float64 too (its sine encoding is built in float32 and cast), so outputs agree to ~1e-5 relative.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from mickey_ros.errors import ImageError, InputError
from mickey_ros.model import ModelConfig, build_model

PATCH = 14
BN_EPS = 1e-5
LN_EPS = 1e-5
RTOL = 1e-5
# Small custom architecture: 96-ch backbone map, heads 16 -> 12 -> 8 (attention, 2 heads) -> 6, D = 10.
CFG = ModelConfig(backbone="vit_tiny14", freeze_backbone=False, blocks_dim=(16, 12, 8, 6), descriptor_dim=10,
                  attention_heads=2, attention_layers=2)
HEADS = ("det_head", "det_offset", "depth_head", "dsc_head")


# -- numpy reference (float64, loops) -------------------------------------------------------------------
def ref_conv3x3(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x [C, h, w], w [O, C, 3, 3]: stride 1, zero padding 1, no bias."""
    _, h, wd = x.shape
    out = np.zeros((w.shape[0], h, wd))
    for r in range(h):
        for c in range(wd):
            acc = np.zeros(w.shape[0])
            for i in range(3):
                for j in range(3):
                    rr, cc = r + i - 1, c + j - 1
                    if 0 <= rr < h and 0 <= cc < wd:  # outside = zero padding
                        acc += w[:, :, i, j] @ x[:, rr, cc]
            out[:, r, c] = acc
    return out


def ref_conv1x1(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    _, h, wd = x.shape
    out = np.zeros((w.shape[0], h, wd))
    for r in range(h):
        for c in range(wd):
            out[:, r, c] = w[:, :, 0, 0] @ x[:, r, c]
    return out


def ref_batchnorm_eval(x: np.ndarray, sd: dict, p: str) -> np.ndarray:
    out = np.empty_like(x)
    for ch in range(x.shape[0]):
        inv = 1.0 / math.sqrt(sd[p + ".running_var"][ch] + BN_EPS)
        out[ch] = (x[ch] - sd[p + ".running_mean"][ch]) * inv * sd[p + ".weight"][ch] + sd[p + ".bias"][ch]
    return out


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def ref_basic_block(x: np.ndarray, sd: dict, p: str, final_relu: bool = True) -> np.ndarray:
    out = relu(ref_batchnorm_eval(ref_conv3x3(x, sd[p + ".conv1.weight"]), sd, p + ".bn1"))
    out = ref_batchnorm_eval(ref_conv3x3(out, sd[p + ".conv2.weight"]), sd, p + ".bn2")
    key = p + ".shortcut.0.weight"
    out = out + (ref_conv1x1(x, sd[key]) if key in sd else x)
    return relu(out) if final_relu else out


def ref_sine_pe(d: int, h: int, w: int) -> np.ndarray:
    pe = np.zeros((d, h, w))
    for k in range(d // 4):
        div = math.exp(-(2 * k) * math.log(10000.0) / (d / 2))
        for row in range(h):
            for col in range(w):
                x, y = col + 1, row + 1  # positions start at 1; x = column, y = row
                pe[4 * k, row, col] = math.sin(x * div)
                pe[4 * k + 1, row, col] = math.cos(x * div)
                pe[4 * k + 2, row, col] = math.sin(y * div)
                pe[4 * k + 3, row, col] = math.cos(y * div)
    return pe


def ref_layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    for n in range(x.shape[0]):
        mu = x[n].mean()
        var = ((x[n] - mu) ** 2).mean()
        out[n] = (x[n] - mu) / math.sqrt(var + LN_EPS) * gamma + beta
    return out


def elu_plus_one(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))) + 1.0


def ref_linear_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, n_heads: int) -> np.ndarray:
    """q, k, v [N, d] -> [N, d]; channel c belongs to head c // (d / n_heads)."""
    N, d = q.shape
    dh = d // n_heads
    out = np.zeros((N, d))
    for hd in range(n_heads):
        sl = slice(hd * dh, (hd + 1) * dh)
        Q, K, V = elu_plus_one(q[:, sl]), elu_plus_one(k[:, sl]), v[:, sl] / N
        kv = np.zeros((dh, dh))
        k_sum = np.zeros(dh)
        for s in range(N):
            kv += np.outer(K[s], V[s])
            k_sum += K[s]
        for t in range(N):
            z = 1.0 / (Q[t] @ k_sum + 1e-6)
            out[t, sl] = (Q[t] @ kv) * z * N
    return out


def ref_encoder_layer(x: np.ndarray, sd: dict, p: str, n_heads: int) -> np.ndarray:
    """x [N, d] tokens; every Linear is bias-free (y = x W^T)."""
    msg = ref_linear_attention(x @ sd[p + ".q_proj.weight"].T, x @ sd[p + ".k_proj.weight"].T,
                               x @ sd[p + ".v_proj.weight"].T, n_heads)
    msg = ref_layer_norm(msg @ sd[p + ".merge.weight"].T, sd[p + ".norm1.weight"], sd[p + ".norm1.bias"])
    hidden = relu(np.concatenate([x, msg], axis=1) @ sd[p + ".mlp.0.weight"].T)
    msg = ref_layer_norm(hidden @ sd[p + ".mlp.2.weight"].T, sd[p + ".norm2.weight"], sd[p + ".norm2.bias"])
    return x + msg


def ref_trunk(feat: np.ndarray, sd: dict, head: str, final_relu: bool = True) -> np.ndarray:
    p = f"extractor.{head}."
    x = feat
    for i in (1, 2, 3):
        x = ref_basic_block(x, sd, p + f"resblock{i}")
    d, h, w = x.shape
    x = x + ref_sine_pe(d, h, w)
    tokens = np.stack([x[:, r, c] for r in range(h) for c in range(w)])  # row-major
    for i in range(CFG.attention_layers):
        tokens = ref_encoder_layer(tokens, sd, p + f"att_layer.layers.{i}", CFG.attention_heads)
    x = np.zeros((d, h, w))
    for n in range(h * w):
        x[:, n // w, n % w] = tokens[n]
    return ref_basic_block(x, sd, p + "resblock4", final_relu)


def ref_image(feat: np.ndarray, sd: dict) -> dict[str, np.ndarray]:
    """One backbone map [C, h, w] -> kpts [N, 2], depth [N], scores [N], descriptors [N, D]."""
    _, h, w = feat.shape
    eps = float(sd["extractor.det_head.eps"])
    # score: s - (mean + eps), exp(/100), zero 3-cell border, / (sum + eps)
    s = ref_conv1x1(ref_trunk(feat, sd, "det_head"), sd["extractor.det_head.score.weight"])[0]
    shift = s.mean() + eps
    e = np.zeros((h, w))
    for r in range(3, h - 3):
        for c in range(3, w - 3):
            e[r, c] = math.exp((s[r, c] - shift) / 100.0)
    score = e / (e.sum() + eps)
    offset = ref_conv1x1(ref_trunk(feat, sd, "det_offset"), sd["extractor.det_offset.xy_offset.weight"])
    offset = 1.0 / (1.0 + np.exp(-offset))
    depth = ref_conv1x1(ref_trunk(feat, sd, "depth_head"), sd["extractor.depth_head.depth.weight"])[0]
    desc = ref_trunk(feat, sd, "dsc_head", final_relu=False)
    out = {"kpts": [], "depth": [], "scores": [], "descriptors": []}
    for r in range(h):
        for c in range(w):
            out["kpts"].append([(offset[0, r, c] + c) * PATCH, (offset[1, r, c] + r) * PATCH])
            out["depth"].append(depth[r, c])
            out["scores"].append(score[r, c])
            out["descriptors"].append(desc[:, r, c] / math.sqrt(float(desc[:, r, c] @ desc[:, r, c]) + 1e-10))
    return {key: np.asarray(val) for key, val in out.items()}


def ref_match(d0: np.ndarray, d1: np.ndarray, s0: np.ndarray, s1: np.ndarray, dustbin: float,
              temperature: float = 0.1) -> np.ndarray:
    """Dual softmax with dustbin row/column/corner, dustbin dropped, times scores0 (x) scores1."""
    n0, n1 = len(d0), len(d1)
    full = np.full((n0 + 1, n1 + 1), dustbin)
    for i in range(n0):
        for j in range(n1):
            full[i, j] = float(d0[i] @ d1[j]) / temperature
    col_soft = np.exp(full - full.max(axis=0, keepdims=True))
    col_soft /= col_soft.sum(axis=0, keepdims=True)  # softmax over rows (dim 1 of [B, N0+1, N1+1])
    row_soft = np.exp(full - full.max(axis=1, keepdims=True))
    row_soft /= row_soft.sum(axis=1, keepdims=True)  # softmax over columns (dim 2)
    out = np.zeros((n0, n1))
    for i in range(n0):
        for j in range(n1):
            out[i, j] = col_soft[i, j] * row_soft[i, j] * s0[i] * s1[j]
    return out


# -- fixtures -----------------------------------------------------------------------------------------
def randomised_state_dict(net: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """State dict with random BN statistics/affine, LayerNorm affine, a large score weight and dustbin 0.7."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    for key, val in sd.items():
        if "vit_tiny14" in key or not (".bn" in key or ".norm" in key):
            continue
        if key.endswith(("running_mean", "bias")):
            sd[key] = 0.3 * torch.randn(val.shape, generator=g, dtype=val.dtype)
        elif key.endswith(("running_var", "weight")):
            sd[key] = 0.5 + torch.rand(val.shape, generator=g, dtype=val.dtype)
    sd["extractor.det_head.score.weight"] *= 3000.0  # logits spread over hundreds: the softmax is far from uniform
    sd["matcher.matching_mat.dustbin_score"].fill_(0.7)
    return sd


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(CFG)
    model.load_state_dict(randomised_state_dict(model))
    return model.double().eval()


@pytest.fixture(scope="module")
def feats() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return (torch.randn(2, CFG.embed_dim, 8, 9, generator=g, dtype=torch.float64),
            torch.randn(1, CFG.embed_dim, 7, 10, generator=g, dtype=torch.float64).expand(2, -1, -1, -1) * 0.8)


def numpy_state_dict(net: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().double().numpy() for k, v in net.state_dict().items() if "vit_tiny14" not in k}


def assert_close(actual: torch.Tensor, expected: np.ndarray, name: str) -> None:
    actual = actual.detach().double().numpy()
    assert actual.shape == expected.shape, name
    err = np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-300)
    assert err < RTOL, f"{name}: relative error {err:.2e}"


# -- tests --------------------------------------------------------------------------------------------
def test_heads_and_matcher_match_the_reference(net, feats):
    sd = numpy_state_dict(net)
    with torch.no_grad():
        out0, out1 = net.forward_heads(feats[0]), net.forward_heads(feats[1])
        match = net.match(out0, out1)
    assert out0.grid_hw == (8, 9) and out1.grid_hw == (7, 10)
    assert match.shape == (2, 72, 70)
    for b in range(2):
        ref0 = ref_image(feats[0][b].numpy(), sd)
        ref1 = ref_image(feats[1][b].numpy(), sd) if b == 0 else ref1  # view 1 is the same map twice
        for key in ("kpts", "depth", "scores", "descriptors"):
            assert_close(getattr(out0, key)[b], ref0[key], f"{key}0[{b}]")
            assert_close(getattr(out1, key)[b], ref1[key], f"{key}1[{b}]")
        ref_m = ref_match(ref0["descriptors"], ref1["descriptors"], ref0["scores"], ref1["scores"], 0.7)
        assert_close(match[b], ref_m, f"match[{b}]")
    assert (out0.depth < 0).any()  # raw depth: no activation, negative values survive


def test_score_eps_is_read_from_the_state_dict(net, feats):
    feat = feats[0][:1]
    other = copy.deepcopy(net)
    sd = other.state_dict()
    sd["extractor.det_head.eps"] = torch.tensor(1.0, dtype=torch.float64)
    other.load_state_dict(sd)
    with torch.no_grad():
        base, changed = net.forward_heads(feat).scores, other.forward_heads(feat).scores
    assert (base - changed).abs().max() > 1e-3
    assert changed.sum() < 1 - 1e-3  # e / (sum e + 1) no longer sums to 1
    assert_close(changed[0], ref_image(feat[0].numpy(), numpy_state_dict(other))["scores"], "scores (eps=1)")


def test_output_invariants(net, feats):
    with torch.no_grad():
        out = net.forward_heads(feats[0])
        match = net.match(out, net.forward_heads(feats[1]))
    h, w = out.grid_hw
    scores = out.score_map
    interior = torch.zeros(h, w, dtype=torch.bool)
    interior[3:-3, 3:-3] = True
    assert (scores >= 0).all()
    assert torch.all(scores[:, ~interior] == 0)
    assert torch.allclose(scores.sum(dim=(1, 2)), torch.ones(2, dtype=scores.dtype), atol=1e-9)
    assert torch.allclose(out.descriptors.norm(dim=-1), torch.ones(2, h * w, dtype=torch.float64), atol=1e-9)
    cols = torch.arange(w, dtype=torch.float64).repeat(h)
    rows = torch.arange(h, dtype=torch.float64).repeat_interleave(w)
    cell = torch.floor(out.kpts / PATCH)
    assert torch.equal(cell[..., 0], cols.expand(2, -1)) and torch.equal(cell[..., 1], rows.expand(2, -1))
    assert (match >= 0).all() and match.sum(dim=(1, 2)).max() <= 1.0 + 1e-9


def test_forward_heads_rejects_wrong_channels(net):
    with pytest.raises(InputError, match=r"features: expected a tensor \[B, 96, h, w\], got \[1, 95, 8, 9\]"):
        net.forward_heads(torch.zeros(1, 95, 8, 9, dtype=torch.float64))


# -- backbone freezing and image validation ------------------------------------------------------------
FROZEN = ModelConfig(backbone="vit_tiny14", freeze_backbone=True, blocks_dim=(8, 8, 8, 4), descriptor_dim=8,
                     attention_heads=2, attention_layers=1)


@pytest.fixture(scope="module")
def frozen_net() -> torch.nn.Module:
    torch.manual_seed(2)
    return build_model(FROZEN)


def test_train_keeps_a_frozen_backbone_in_eval_mode(frozen_net):
    net = frozen_net.train()
    try:
        assert net.training and all(head.training for head in net.heads())
        assert not any(m.training for m in net.backbone.modules())
        assert not any(p.requires_grad for p in net.backbone.parameters())
        assert all(p.requires_grad for p in net.extractor.dsc_head.parameters())
        images = torch.rand(2, 3, 50, 60, generator=torch.Generator().manual_seed(3))
        out = net(images)
        assert out.grid_hw == (3, 4)  # top-left crop to multiples of 14
        (out.depth.sum() + out.descriptors.sum()).backward()
        assert all(p.grad is None for p in net.backbone.parameters())
        assert net.extractor.depth_head.depth.weight.grad is not None
    finally:
        net.zero_grad(set_to_none=True)
        net.eval()
    assert not any(m.training for m in net.modules())


@pytest.mark.parametrize("images, match", [
    (torch.zeros(3, 56, 56), r"images: expected a float tensor \[B, 3, H, W\], got shape \[3, 56, 56\]"),
    (torch.zeros(1, 4, 56, 56), r"images: expected a float tensor \[B, 3, H, W\], got shape \[1, 4, 56, 56\]"),
    (torch.zeros(1, 3, 56, 56, dtype=torch.uint8),
     r"images: expected a float tensor in \[0, 1\], got dtype torch.uint8"),
    (torch.zeros(1, 3, 41, 60), r"images: expected at least 42x42 pixels .*got 41x60"),
    (torch.zeros(1, 3, 60, 41), r"images: expected at least 42x42 pixels .*got 60x41"),
    (np.zeros((1, 3, 56, 56), dtype=np.float32), r"images: expected a float tensor \[B, 3, H, W\], got ndarray"),
])
def test_bad_images_raise_image_error(frozen_net, images, match):
    with pytest.raises(ImageError, match=match):
        frozen_net(images)
