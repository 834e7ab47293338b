"""DINOv2-compatible Vision Transformer with 14-px patches (the MicKey backbone).

The parameter names equal those of the DINOv2 release files (e.g. ``dinov2_vitl14_pretrain.pth``), so
they load strictly: ``cls_token``, ``pos_embed [1, 1370, D]``, ``mask_token``, ``patch_embed.proj``,
``blocks.{i}.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}``, ``norm``.
Pre-norm blocks with LayerScale, LayerNorm eps 1e-6, exact GELU, no register tokens.

The output used by MicKey is the last block's tokens after the final LayerNorm, cls token dropped,
as a ``[B, D, H/14, W/14]`` map in row-major patch order (reference: official_mickey.md §3).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

POS_CACHE_SIZE = 8  # grid sizes whose resized positional embedding is kept at inference


@dataclass(frozen=True)
class ViTConfig:
    """Size of a ViT/14 backbone."""

    embed_dim: int  # token width D
    depth: int  # number of transformer blocks
    num_heads: int  # attention heads (head dim = D / num_heads)
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * D
    patch_size: int = 14  # patch side in pixels (stride of the patch embedding)
    pos_grid: int = 37  # side M of the square positional-embedding grid (518 px / 14)
    interpolate_offset: float = 0.1  # DINOv2's offset added to the target grid size in pos-embed resizing
    layerscale_init: float = 1.0  # LayerScale gamma at initialisation (official vit_large(init_values=1.0))
    norm_eps: float = 1e-6  # LayerNorm epsilon
    stem_channels: tuple[int, ...] = ()  # () = DINOv2's stride-14 patch embedding; (c0, c1) = ConvStem widths


# The three DINOv2 sizes MicKey can use, and a small trainable one (same layout, far fewer parameters).
# The key is also the backbone's attribute name inside the model (state-dict prefix ``extractor.<key>.``).
VIT_ARCHS: dict[str, ViTConfig] = {
    "dinov2_vits14": ViTConfig(embed_dim=384, depth=12, num_heads=6),
    "dinov2_vitb14": ViTConfig(embed_dim=768, depth=12, num_heads=12),
    "dinov2_vitl14": ViTConfig(embed_dim=1024, depth=24, num_heads=16),
    "vit_tiny14": ViTConfig(embed_dim=96, depth=3, num_heads=3),
    # hybrid: a convolutional stem (local texture at full and 1/7 resolution) under two transformer blocks
    "hybrid_small14": ViTConfig(embed_dim=128, depth=2, num_heads=4, stem_channels=(16, 64)),
}


class _UniformPool:
    """Zero-mean uniform random values of unit bound, drawn once and shared by many tensors.

    Each tensor receives a contiguous slice (random start) of the pool, scaled to the wanted std: the
    values inside one tensor are independent draws, and filling ViT-L's 300M weights costs a memory
    copy instead of 300M random draws. Only used for random initialisation.
    """

    def __init__(self, size: int) -> None:
        self.values = torch.rand(size) * 2 - 1

    def fill_(self, tensor: torch.Tensor, std: float) -> None:
        n = tensor.numel()
        start = int(torch.randint(0, self.values.numel() - n + 1, ()))
        with torch.no_grad():
            torch.mul(self.values[start : start + n], std * math.sqrt(3.0), out=tensor.view(-1))


class PatchEmbed(nn.Module):
    """``[B, 3, H, W]`` -> ``[B, D, H/14, W/14]`` by a stride-14 convolution."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images)


class ConvStem(nn.Module):
    """Convolutional patch embedding ``[B, 3, H, W]`` -> ``[B, D, H/14, W/14]`` for the hybrid backbones.

    ``conv0`` 3x3 at full resolution (c0) -> ``patchify`` 7x7 stride 7 (c1) -> two residual 3x3 blocks at
    1/7 -> ``proj`` 2x2 stride 2 to the token width D (1/14). BatchNorm + ReLU after every conv but ``proj``.
    A ConvNet's locality prior makes a small backbone learn matchable features from far less data than a ViT.
    """

    def __init__(self, channels: tuple[int, ...], embed_dim: int) -> None:
        super().__init__()
        if len(channels) != 2 or min(channels) < 1:
            raise ValueError(f"stem_channels: expected two positive widths, got {channels}")
        from mickey_ros.model.heads import BasicBlock  # the heads' residual block (no import cycle: heads is leaf)

        c0, c1 = channels
        self.conv0 = nn.Sequential(nn.Conv2d(3, c0, 3, padding=1, bias=False), nn.BatchNorm2d(c0), nn.ReLU())
        self.patchify = nn.Sequential(nn.Conv2d(c0, c1, 7, stride=7, bias=False), nn.BatchNorm2d(c1), nn.ReLU())
        self.blocks = nn.Sequential(BasicBlock(c1, c1), BasicBlock(c1, c1))
        self.proj = nn.Conv2d(c1, embed_dim, kernel_size=2, stride=2)

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.blocks(self.patchify(self.conv0(images))))


class Attention(nn.Module):
    """Multi-head self-attention (fused qkv projection, scaled dot product via SDPA)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, D]`` -> ``[B, N, D]``; softmax(q k^T / sqrt(D / heads)) v per head."""
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [B, heads, N, head_dim]
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel residual scale ``x * gamma``."""

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.init = init
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = Attention(dim, cfg.num_heads)
        self.ls1 = LayerScale(dim, cfg.layerscale_init)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        self.ls2 = LayerScale(dim, cfg.layerscale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


def _inside(module: nn.Module, parent: nn.Module) -> bool:
    return any(module is m for m in parent.modules())


class VisionTransformer(nn.Module):
    """DINOv2-layout ViT/14 returning the normalised patch-token map.

    Args:
        cfg: backbone size.
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.pos_grid**2 + 1, dim))
        self._pos_cache: dict[tuple, torch.Tensor] = {}  # inference-time resized embeddings, see interpolate_pos_encoding
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # unused; kept for the DINOv2 layout
        if cfg.stem_channels and cfg.patch_size != 14:
            raise ValueError(f"stem_channels: the convolutional stem needs patch_size 14, got {cfg.patch_size}")
        self.patch_embed = ConvStem(cfg.stem_channels, dim) if cfg.stem_channels else PatchEmbed(cfg.patch_size, dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)

    def reset_parameters(self) -> None:
        """Random init (DINOv2-like scales): weights std 0.02, zero biases, unit norms, LayerScale = init.

        Weights are uniform with std 0.02 (not a truncated normal) taken from a shared random pool,
        so building ViT-L stays fast; pretrained weights replace these values anyway.
        """
        stem = isinstance(self.patch_embed, ConvStem)
        if stem:
            self.patch_embed.reset_parameters()
        modules = [m for m in self.modules() if not (stem and _inside(m, self.patch_embed))]
        tensors = [m.weight for m in modules if isinstance(m, (nn.Linear, nn.Conv2d))]
        pool = _UniformPool(2 * max(t.numel() for t in [*tensors, self.pos_embed]))
        with torch.no_grad():
            pool.fill_(self.pos_embed, 0.02)
            self.cls_token.normal_(std=1e-6)
            self.mask_token.zero_()
            for module in modules:
                if isinstance(module, (nn.Linear, nn.Conv2d)):
                    pool.fill_(module.weight, 0.02)
                    module.bias.zero_()
                elif isinstance(module, nn.LayerNorm):
                    module.reset_parameters()
                elif isinstance(module, LayerScale):
                    module.gamma.fill_(module.init)

    def interpolate_pos_encoding(self, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
        """Positional embedding for an ``h x w`` patch grid, exactly as DINOv2.

        The ``M x M`` patch embeddings are resized by bicubic interpolation (no antialias, float32)
        with ``scale_factor = ((h + 0.1) / M, (w + 0.1) / M)``; passing the scale factor (not the
        size) sets the sampling positions. No resize when ``(h, w) == (M, M)``. Outside training (no gradient
        wanted for ``pos_embed``) the result is computed once per grid size and reused until the weights change.

        Args:
            h, w: patch rows and columns.
            dtype: dtype of the returned embedding (the token dtype).

        Returns:
            ``[1, 1 + h * w, D]`` (cls position first, then row-major patch positions).
        """
        M = self.cfg.pos_grid
        if (h, w) == (M, M):
            return self.pos_embed
        if torch.is_grad_enabled() and self.pos_embed.requires_grad:  # training it: no cache, gradients flow
            return self._interpolate_pos_encoding(h, w).to(dtype)
        # inference: once per grid size while the weights stay the same (any in-place change to pos_embed, such as
        # load_state_dict or an optimiser step, bumps its version and so misses the cache)
        key = (h, w, self.pos_embed.device, self.pos_embed.data_ptr(), self.pos_embed._version)
        cached = self._pos_cache.get(key)
        if cached is None:
            with torch.inference_mode(False), torch.no_grad():  # a normal tensor, usable outside inference mode
                cached = self._interpolate_pos_encoding(h, w)
            if len(self._pos_cache) >= POS_CACHE_SIZE:
                self._pos_cache.pop(next(iter(self._pos_cache)))
            self._pos_cache[key] = cached
        return cached.to(dtype)

    def _interpolate_pos_encoding(self, h: int, w: int) -> torch.Tensor:
        """The float32 ``[1, 1 + h * w, D]`` resized embedding of :meth:`interpolate_pos_encoding`."""
        M = self.cfg.pos_grid
        pos = self.pos_embed.float()
        dim = pos.shape[-1]
        grid = pos[:, 1:].reshape(1, M, M, dim).permute(0, 3, 1, 2)
        offset = self.cfg.interpolate_offset
        grid = F.interpolate(
            grid, scale_factor=((h + offset) / M, (w + offset) / M), mode="bicubic", antialias=False
        )
        if tuple(grid.shape[-2:]) != (h, w):  # cannot happen for h, w >= 1; kept as an invariant check
            raise RuntimeError(f"pos_embed interpolation gave {tuple(grid.shape[-2:])}, expected {(h, w)}")
        patch_pos = grid.permute(0, 2, 3, 1).reshape(1, h * w, dim)
        return torch.cat([pos[:, :1], patch_pos], dim=1)

    def forward_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` (H, W multiples of 14) -> ``[B, 1 + h * w, D]`` tokens after the final norm."""
        x = self.patch_embed(images)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.interpolate_pos_encoding(h, w, x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised patch tokens as a map.

        Args:
            images: ``[B, 3, H, W]`` with H and W multiples of the patch size.

        Returns:
            ``[B, D, H/14, W/14]`` (cls token dropped; row-major patch order).
        """
        B, _, H, W = images.shape
        p = self.cfg.patch_size
        tokens = self.forward_tokens(images)[:, 1:]
        return tokens.transpose(1, 2).reshape(B, -1, H // p, W // p)
