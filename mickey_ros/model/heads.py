"""The four MicKey heads: keypoint score, keypoint offset, depth and descriptor.

Each head is built independently (no weight sharing) from the same trunk on the backbone map
``[B, C, h, w]`` (reference: official_mickey.md §4):

    resblock1 (C -> b0) -> resblock2 (b0 -> b1) -> resblock3 (b1 -> b2)
    -> att_layer (2D sine PE added once, 3 linear-attention self layers, width b2)
    -> resblock4 (b2 -> b3; descriptor head: b2 -> descriptor_dim without final ReLU) -> tail

Parameter names follow the official checkpoint (``resblock1.conv1.weight``, ``att_layer.layers.0.q_proj.weight``,
``score.weight``, ``det_head.eps`` ...), so its state dict loads strictly.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LINEAR_ATTENTION_EPS = 1e-6  # added to the linear-attention normaliser
DESCRIPTOR_NORM_EPS = 1e-10  # added inside the sqrt of the descriptor L2 norm


def conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    """3x3 convolution, stride 1, zero padding 1, no bias."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding=1, bias=False)


class BasicBlock(nn.Module):
    """ResNet basic block (post-activation).

    ``out = ReLU(BN1(conv1(x)))``; ``out = BN2(conv2(out)) + shortcut(x)``; ``ReLU(out)`` if ``relu``.
    The shortcut is a bias-free 1x1 convolution (``shortcut.0``) when the channel count changes,
    otherwise the identity.
    """

    def __init__(self, in_ch: int, out_ch: int, relu: bool = True) -> None:
        super().__init__()
        self.relu = relu
        self.conv1 = conv3x3(in_ch, out_ch)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Sequential()
        if in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=False))

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
                module.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        return F.relu(out) if self.relu else out


def sine_position_encoding(dim: int, h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """2D sine positional encoding (LoFTR style, divided by ``dim // 2``), float32 ``[dim, h, w]``.

    Positions start at 1: ``x = col + 1``, ``y = row + 1``. With ``div_k = exp(-2k ln(10000) / (dim / 2))``
    channel ``4k`` = sin(x div_k), ``4k+1`` = cos(x div_k), ``4k+2`` = sin(y div_k), ``4k+3`` = cos(y div_k).
    """
    if dim % 4:
        raise ValueError(f"dim: expected a multiple of 4 for the 2D sine encoding, got {dim}")
    x = torch.ones(h, w, device=device).cumsum(1)[None]
    y = torch.ones(h, w, device=device).cumsum(0)[None]
    div = torch.exp(torch.arange(0, dim // 2, 2, device=device).float() * (-math.log(10000.0) / (dim // 2)))
    div = div[:, None, None]
    pe = torch.zeros(dim, h, w, device=device)
    pe[0::4] = torch.sin(x * div)
    pe[1::4] = torch.cos(x * div)
    pe[2::4] = torch.sin(y * div)
    pe[3::4] = torch.cos(y * div)
    return pe


@functools.lru_cache(maxsize=16)
def _cached_sine_position_encoding(dim: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """:func:`sine_position_encoding`, computed once per (dim, h, w, device): a constant of the grid size, never a
    function of the weights; callers only read it (``x + pe``)."""
    with torch.inference_mode(False), torch.no_grad():  # a normal tensor, usable outside inference mode
        return sine_position_encoding(dim, h, w, device)


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Linear attention with feature map ELU + 1 ("Transformers are RNNs").

    Args:
        q: ``[B, L, H, d]`` queries; k: ``[B, S, H, d]`` keys; v: ``[B, S, H, dv]`` values.

    Returns:
        ``[B, L, H, dv]``: ``(phi(q) . sum_s phi(k_s) v_s^T / S) / (phi(q) . sum_s phi(k_s) + 1e-6) * S``.
    """
    Q = F.elu(q) + 1
    K = F.elu(k) + 1
    S = v.shape[1]
    kv = torch.einsum("bshd,bshv->bhdv", K, v / S)
    z = 1 / (torch.einsum("blhd,bhd->blh", Q, K.sum(dim=1)) + LINEAR_ATTENTION_EPS)
    return torch.einsum("blhd,bhdv,blh->blhv", Q, kv, z) * S


class EncoderLayer(nn.Module):
    """Self-attention layer: ``x + norm2(mlp([x, norm1(merge(attn(q, k, v)))]))``, bias-free linears."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention: width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.merge = nn.Linear(dim, dim, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(2 * dim, 2 * dim, bias=False), nn.ReLU(), nn.Linear(2 * dim, dim, bias=False)
        )
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def reset_parameters(self) -> None:
        for param in self.parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)
        self.norm1.reset_parameters()
        self.norm2.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, dim]`` -> ``[B, N, dim]``."""
        B, N, dim = x.shape
        split = (B, N, self.num_heads, dim // self.num_heads)
        message = linear_attention(
            self.q_proj(x).view(split), self.k_proj(x).view(split), self.v_proj(x).view(split)
        )
        message = self.norm1(self.merge(message.reshape(B, N, dim)))
        message = self.norm2(self.mlp(torch.cat([x, message], dim=2)))
        return x + message


class SelfAttentionStack(nn.Module):
    """Adds the 2D sine encoding once, then runs ``num_layers`` EncoderLayers over the row-major tokens."""

    def __init__(self, dim: int, num_heads: int, num_layers: int) -> None:
        super().__init__()
        self.dim = dim
        self.layers = nn.ModuleList(EncoderLayer(dim, num_heads) for _ in range(num_layers))

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, dim, h, w]`` -> ``[B, dim, h, w]``."""
        B, C, h, w = x.shape
        x = x + _cached_sine_position_encoding(C, h, w, x.device).to(x.dtype)
        tokens = x.flatten(2).transpose(1, 2)
        for layer in self.layers:
            tokens = layer(tokens)
        return tokens.transpose(1, 2).reshape(B, C, h, w)


class _Head(nn.Module):
    """Shared trunk of every head; subclasses add their tail (registered before ``att_layer``)."""

    def __init__(self, in_ch: int, blocks_dim: Sequence[int], num_heads: int, num_layers: int,
                 last_dim: int | None = None, last_relu: bool = True) -> None:
        super().__init__()
        b0, b1, b2, b3 = blocks_dim
        last_dim = b3 if last_dim is None else last_dim
        self._register_extras()
        self.resblock1 = BasicBlock(in_ch, b0)
        self.resblock2 = BasicBlock(b0, b1)
        self.resblock3 = BasicBlock(b1, b2)
        self.resblock4 = BasicBlock(b2, last_dim, relu=last_relu)
        self._register_tail(last_dim)
        self.att_layer = SelfAttentionStack(b2, num_heads, num_layers)

    def _register_extras(self) -> None:
        """Register parameters that precede the resblocks in the official key order (score head only)."""

    def _register_tail(self, in_ch: int) -> None:
        """Register the tail modules (after the resblocks, before att_layer: the official key order)."""

    def reset_parameters(self) -> None:
        for module in self.children():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w]`` backbone map -> ``[B, last_dim, h, w]``."""
        x = self.resblock3(self.resblock2(self.resblock1(x)))
        return self.resblock4(self.att_layer(x))


class ScoreHead(_Head):
    """Keypoint score: 1x1 conv to one channel, then a spatial softmax with a zeroed border.

    ``eps`` (1e-16), ``offset_par1``, ``offset_par2`` and ``ones_kernel`` are frozen parameters of the
    official checkpoint; ``eps`` is read at every forward, the other three are unused.
    """

    def __init__(self, in_ch: int, blocks_dim: Sequence[int], num_heads: int, num_layers: int,
                 temperature: float = 100.0, border: int = 3) -> None:
        super().__init__(in_ch, blocks_dim, num_heads, num_layers)
        self.temperature = temperature
        self.border = border

    def _register_extras(self) -> None:
        self.eps = nn.Parameter(torch.tensor(1e-16), requires_grad=False)
        self.offset_par1 = nn.Parameter(torch.tensor(0.5), requires_grad=False)
        self.offset_par2 = nn.Parameter(torch.tensor(2.0), requires_grad=False)
        self.ones_kernel = nn.Parameter(torch.ones(1, 1, 3, 3), requires_grad=False)

    def _register_tail(self, in_ch: int) -> None:
        self.score = nn.Conv2d(in_ch, 1, kernel_size=1, bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            self.eps.fill_(1e-16)
            self.offset_par1.fill_(0.5)
            self.offset_par2.fill_(2.0)
            self.ones_kernel.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w]`` -> ``[B, 1, h, w]`` scores, >= 0, zero on the border, summing to ~1 per image."""
        return spatial_softmax(self.score(self.trunk(x)), self.eps, self.temperature, self.border)


def spatial_softmax(logits: torch.Tensor, eps: torch.Tensor, temperature: float, border: int) -> torch.Tensor:
    """Official score normalisation of ``[B, 1, h, w]`` logits s.

    ``s' = s - stopgrad(mean_hw(s) + eps)``; ``e = exp(s' / temperature)``; ``e = 0`` on the ``border``
    outermost rows/columns; ``score = e / (sum_hw(e) + eps)``.
    """
    logits = logits - (logits.mean(dim=(2, 3), keepdim=True) + eps).detach()
    e = torch.exp(logits / temperature)
    h, w = e.shape[-2:]
    rows = torch.arange(h, device=e.device)
    cols = torch.arange(w, device=e.device)
    inside = ((rows >= border) & (rows < h - border))[:, None] & ((cols >= border) & (cols < w - border))[None]
    e = torch.where(inside, e, torch.zeros((), dtype=e.dtype, device=e.device))
    return e / (e.sum(dim=(2, 3), keepdim=True) + eps)


class OffsetHead(_Head):
    """Keypoint offset inside its patch: ``sigmoid(xy_offset(trunk))``, ``[B, 2, h, w]`` (x, y) in (0, 1)."""

    def _register_tail(self, in_ch: int) -> None:
        self.xy_offset = nn.Conv2d(in_ch, 2, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.xy_offset(self.trunk(x)))


DEPTH_LOG_CLAMP = 6.0  # |raw| limit of the "exp" activation: depth within scale * e^(+-6)


class DepthHead(_Head):
    """Depth in metres, ``[B, 1, h, w]``.

    ``activation="none"`` (official): the raw 1x1 conv output (may be <= 0). ``"exp"``:
    ``scale * exp(clamp(raw, -6, 6))``, always positive and ``scale`` metres at initialisation (raw ~ 0).
    """

    def __init__(self, in_ch: int, blocks_dim: Sequence[int], num_heads: int, num_layers: int,
                 activation: str = "none", scale: float = 1.0) -> None:
        super().__init__(in_ch, blocks_dim, num_heads, num_layers)
        self.activation, self.scale = activation, float(scale)

    def _register_tail(self, in_ch: int) -> None:
        self.depth = nn.Conv2d(in_ch, 1, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.depth(self.trunk(x))
        if self.activation == "exp":
            return self.scale * torch.exp(raw.clamp(-DEPTH_LOG_CLAMP, DEPTH_LOG_CLAMP))
        return raw


class DescriptorHead(_Head):
    """Unit descriptors: trunk (resblock4 without final ReLU), ``d / sqrt(sum_c d^2 + 1e-10)``."""

    def __init__(self, in_ch: int, blocks_dim: Sequence[int], num_heads: int, num_layers: int,
                 descriptor_dim: int = 128) -> None:
        super().__init__(in_ch, blocks_dim, num_heads, num_layers, last_dim=descriptor_dim, last_relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w]`` -> ``[B, descriptor_dim, h, w]``."""
        d = self.trunk(x)
        return d / torch.sqrt((d * d).sum(dim=1, keepdim=True) + DESCRIPTOR_NORM_EPS)
