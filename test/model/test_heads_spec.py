"""The heads and the matcher against an independent, slow numpy reference written from the spec
(reference/official_mickey.md §4-§6): explicit loops, float64, weights read from the state dict
(tolerance 1e-5 relative: the network adds its sine encoding in float32 even for float64 inputs)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mickey_ros.errors import ImageError
from mickey_ros.model import ModelConfig, build_model

CFG = ModelConfig(backbone="vit_tiny14", freeze_backbone=False, blocks_dim=(12, 10, 8, 6), descriptor_dim=8,
                  attention_heads=2, attention_layers=2)


# -- numpy reference ---------------------------------------------------------------------------------------
def conv3x3(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x [C, h, w], w [O, C, 3, 3]; stride 1, zero padding 1, no bias; loops over output pixels and taps."""
    C, h, wd = x.shape
    out = np.zeros((w.shape[0], h, wd))
    for r in range(h):
        for c in range(wd):
            for dr in range(3):
                for dc in range(3):
                    rr, cc = r + dr - 1, c + dc - 1
                    if 0 <= rr < h and 0 <= cc < wd:
                        out[:, r, c] += w[:, :, dr, dc] @ x[:, rr, cc]
    return out


def conv1x1(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.einsum("oc,chw->ohw", w[:, :, 0, 0], x)


def batchnorm(x: np.ndarray, sd: dict, p: str) -> np.ndarray:
    mean, var = sd[p + ".running_mean"], sd[p + ".running_var"]
    gamma, beta = sd[p + ".weight"], sd[p + ".bias"]
    return (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5) * gamma[:, None, None] + beta[:, None, None]


def basic_block(x: np.ndarray, sd: dict, p: str, relu: bool = True) -> np.ndarray:
    out = np.maximum(batchnorm(conv3x3(x, sd[p + ".conv1.weight"]), sd, p + ".bn1"), 0)
    out = batchnorm(conv3x3(out, sd[p + ".conv2.weight"]), sd, p + ".bn2")
    shortcut = conv1x1(x, sd[p + ".shortcut.0.weight"]) if p + ".shortcut.0.weight" in sd else x
    out = out + shortcut
    return np.maximum(out, 0) if relu else out


def sine_pe(d: int, h: int, w: int) -> np.ndarray:
    pe = np.zeros((d, h, w))
    for r in range(h):
        for c in range(w):
            x, y = c + 1.0, r + 1.0  # positions start at 1
            for k in range(d // 4):
                div = math.exp(-(2 * k) * math.log(10000.0) / (d // 2))
                pe[4 * k, r, c] = math.sin(x * div)
                pe[4 * k + 1, r, c] = math.cos(x * div)
                pe[4 * k + 2, r, c] = math.sin(y * div)
                pe[4 * k + 3, r, c] = math.cos(y * div)
    return pe


def layernorm(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * g + b


def elu1(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0))) + 1


def encoder_layer(t: np.ndarray, sd: dict, p: str, heads: int) -> np.ndarray:
    N, d = t.shape
    hd = d // heads
    q, k, v = (t @ sd[f"{p}.{n}_proj.weight"].T for n in "qkv")
    msg = np.zeros((N, d))
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        Q, K, V = elu1(q[:, sl]), elu1(k[:, sl]), v[:, sl] / N
        KV = np.zeros((hd, hd))
        for s in range(N):
            KV += np.outer(K[s], V[s])
        ksum = K.sum(0)
        for n in range(N):
            z = 1.0 / (Q[n] @ ksum + 1e-6)
            msg[n, sl] = (Q[n] @ KV) * z * N
    msg = layernorm(msg @ sd[p + ".merge.weight"].T, sd[p + ".norm1.weight"], sd[p + ".norm1.bias"])
    hidden = np.maximum(np.concatenate([t, msg], 1) @ sd[p + ".mlp.0.weight"].T, 0)
    msg = layernorm(hidden @ sd[p + ".mlp.2.weight"].T, sd[p + ".norm2.weight"], sd[p + ".norm2.bias"])
    return t + msg


def trunk(x: np.ndarray, sd: dict, p: str, last_relu: bool = True) -> np.ndarray:
    for i in (1, 2, 3):
        x = basic_block(x, sd, f"{p}.resblock{i}")
    d, h, w = x.shape
    tokens = (x + sine_pe(d, h, w)).reshape(d, h * w).T  # row-major
    for i in range(CFG.attention_layers):
        tokens = encoder_layer(tokens, sd, f"{p}.att_layer.layers.{i}", CFG.attention_heads)
    x = tokens.T.reshape(d, h, w)
    return basic_block(x, sd, f"{p}.resblock4", relu=last_relu)


def reference(feat: np.ndarray, sd: dict) -> dict[str, np.ndarray]:
    """feat [C, h, w] -> kpts [N, 2], depth [N], scores [N], desc [N, D] (row-major n = r * w + c)."""
    _, h, w = feat.shape
    s = conv1x1(trunk(feat, sd, "extractor.det_head"), sd["extractor.det_head.score.weight"])[0]
    eps = float(sd["extractor.det_head.eps"])
    e = np.exp((s - (s.mean() + eps)) / 100.0)
    for r in range(h):
        for c in range(w):
            if r < 3 or r >= h - 3 or c < 3 or c >= w - 3:
                e[r, c] = 0.0
    scores = e / (e.sum() + eps)
    off = 1 / (1 + np.exp(-conv1x1(trunk(feat, sd, "extractor.det_offset"), sd["extractor.det_offset.xy_offset.weight"])))
    depth = conv1x1(trunk(feat, sd, "extractor.depth_head"), sd["extractor.depth_head.depth.weight"])[0]
    d = trunk(feat, sd, "extractor.dsc_head", last_relu=False)
    d = d / np.sqrt((d ** 2).sum(0, keepdims=True) + 1e-10)
    kpts = np.zeros((h * w, 2))
    for r in range(h):
        for c in range(w):
            kpts[r * w + c] = ((off[0, r, c] + c) * 14, (off[1, r, c] + r) * 14)
    return dict(kpts=kpts, depth=depth.reshape(-1), scores=scores.reshape(-1), desc=d.reshape(d.shape[0], -1).T)


def reference_match(desc0, desc1, scores0, scores1, dustbin: float) -> np.ndarray:
    N0, N1 = len(desc0), len(desc1)
    S = np.full((N0 + 1, N1 + 1), dustbin)
    for i in range(N0):
        for j in range(N1):
            S[i, j] = desc0[i] @ desc1[j] / 0.1
    col = np.exp(S - S.max(0, keepdims=True))
    col /= col.sum(0, keepdims=True)  # softmax over rows, per column
    row = np.exp(S - S.max(1, keepdims=True))
    row /= row.sum(1, keepdims=True)  # softmax over columns, per row
    P = (col * row)[:N0, :N1]
    return P * np.outer(scores0, scores1)


# -- tests -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    net = build_model(CFG).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # make BN statistics and affine parameters matter
        for name, buf in net.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g, dtype=buf.dtype) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g, dtype=buf.dtype) + 0.5)
        for name, p in net.named_parameters():
            if ".bn" in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2 + (1.0 if name.endswith("weight") else 0))
            if name.endswith("dustbin_score"):
                p.fill_(0.7)
    return net.eval()


def _state(net) -> dict[str, np.ndarray]:
    return {k: v.detach().double().numpy() for k, v in net.state_dict().items()}


def _features(h: int, w: int, seed: int) -> torch.Tensor:
    return torch.randn(1, CFG.embed_dim, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_heads_and_matcher_match_the_spec_reference(net):
    f0, f1 = _features(8, 9, 2), _features(7, 10, 3)  # non-square, different sizes
    with torch.no_grad():
        o0, o1 = net.forward_heads(f0), net.forward_heads(f1)
        P = net.match(o0, o1)[0].numpy()
    sd = _state(net)
    r0, r1 = reference(f0[0].numpy(), sd), reference(f1[0].numpy(), sd)
    for out, ref in ((o0, r0), (o1, r1)):
        np.testing.assert_allclose(out.kpts[0].numpy(), ref["kpts"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.depth[0].numpy(), ref["depth"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(out.scores[0].numpy(), ref["scores"], rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(out.descriptors[0].numpy(), ref["desc"], rtol=1e-5, atol=1e-7)
    P_ref = reference_match(r0["desc"], r1["desc"], r0["scores"], r1["scores"], 0.7)
    assert P.shape == (72, 70)
    np.testing.assert_allclose(P, P_ref, rtol=1e-5, atol=1e-14)


def test_output_invariants(net):
    with torch.no_grad():
        out = net.forward_heads(_features(9, 8, 4))
        dual = net.matcher.matching_mat(out.descriptors, out.descriptors)[0]
    scores = out.score_map[0]
    assert torch.all(scores[:3] == 0) and torch.all(scores[-3:] == 0)
    assert torch.all(scores[:, :3] == 0) and torch.all(scores[:, -3:] == 0)
    assert scores.sum().item() == pytest.approx(1.0, abs=1e-9)
    torch.testing.assert_close(out.descriptors.norm(dim=-1), torch.ones(1, 72, dtype=torch.float64))
    assert torch.all(dual.sum(0) <= 1 + 1e-9) and torch.all(dual.sum(1) <= 1 + 1e-9)
    offsets = out.kpts[0] / 14 - torch.stack(torch.meshgrid(torch.arange(8.0), torch.arange(9.0), indexing="xy"), -1).reshape(-1, 2).double()
    assert torch.all((offsets > 0) & (offsets < 1))


def test_eps_is_read_from_the_state_dict(net):
    feat = _features(8, 8, 5)
    with torch.no_grad():
        before = net.forward_heads(feat).scores.clone()
        state = net.state_dict()
        state["extractor.det_head.eps"] = torch.tensor(1.0, dtype=torch.float64)
        net.load_state_dict(state)
        after = net.forward_heads(feat).scores
        state["extractor.det_head.eps"] = torch.tensor(1e-16, dtype=torch.float64)
        net.load_state_dict(state)
    assert not torch.allclose(before, after)
    sd = _state(net)
    sd["extractor.det_head.eps"] = np.array(1.0)
    np.testing.assert_allclose(after[0].numpy(), reference(feat[0].numpy(), sd)["scores"], rtol=1e-6, atol=1e-12)


def test_frozen_backbone_stays_in_eval_and_has_no_gradients():
    torch.manual_seed(0)
    frozen = build_model(ModelConfig(backbone="vit_tiny14", freeze_backbone=True, blocks_dim=(12, 10, 8, 6),
                                     descriptor_dim=8, attention_heads=2, attention_layers=1))
    frozen.train()
    assert not frozen.backbone.training
    assert frozen.extractor.det_head.training
    assert all(not p.requires_grad for p in frozen.backbone.parameters())
    assert all(p.requires_grad for p in frozen.extractor.dsc_head.parameters())
    assert not frozen.extractor.det_head.eps.requires_grad


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (torch.rand(3, 56, 56), r"images: expected .*\[B, 3, H, W\]"),
        (torch.rand(1, 4, 56, 56), r"images: expected .*\[B, 3, H, W\]"),
        (torch.zeros(1, 3, 56, 56, dtype=torch.uint8), r"images: expected a float"),
        (torch.rand(1, 3, 40, 56), r"images: expected at least 42x42 pixels"),
    ],
)
def test_bad_images_raise_image_error(net, images, match):
    with pytest.raises(ImageError, match=match):
        net(images.double() if images.dtype == torch.float32 else images)
