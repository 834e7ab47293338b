"""MicKey: per-image metric keypoints (2D position, depth, score, descriptor) and their matching.

``build_model("official")`` gives the official architecture (frozen DINOv2 ViT-L/14 and four heads;
state dict = the official one without the Lightning prefix ``compute_matches.``). ``"tiny"`` is a small
trainable network of the same structure, fast on a CPU. Reference: official_mickey.md §2-§6.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from mickey_ros.errors import ImageError, InputError
from mickey_ros.geometry.camera import PATCH_SIZE
from mickey_ros.matching import DualSoftmaxMatcher
from mickey_ros.model.heads import DepthHead, DescriptorHead, OffsetHead, ScoreHead
from mickey_ros.model.vit import VIT_ARCHS, VisionTransformer

MIN_PATCHES = 3  # smallest accepted grid: 3 x 3 patches of 14 px


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a MicKey network (JSON-able with ``dataclasses.asdict``)."""

    backbone: str = "dinov2_vitl14"  # ViT size, a key of vit.VIT_ARCHS; also the state-dict name extractor.<backbone>
    freeze_backbone: bool = True  # official: no gradients, always in eval mode; False trains it with the heads
    blocks_dim: tuple[int, int, int, int] = (512, 256, 128, 64)  # KP_HEADS.BLOCKS_DIM: resblock1-4 widths
    descriptor_dim: int = 128  # DSC_HEAD.LAST_DIM: descriptor length D (descriptor resblock4 output)
    attention_heads: int = 8  # heads of the linear-attention layers (width blocks_dim[2])
    attention_layers: int = 3  # linear-attention self layers per head
    score_temperature: float = 100.0  # spatial-softmax temperature of the keypoint scores (tmp_softmax)
    score_border: int = 3  # grid cells zeroed on each side of the score map
    match_temperature: float = 0.1  # dual-softmax temperature (similarities are divided by it)
    dustbin_init: float = 1.0  # initial learned dustbin score
    depth_activation: str = "none"  # "none": raw conv output (official, may be <= 0); "exp": scale * exp(raw) > 0
    depth_scale: float = 1.0  # metres at raw output 0 for depth_activation "exp" (the initial depth)
    # 0: the depth head outputs metres (official). > 0: it outputs the depth a camera with this focal length
    # (pixels) would see, and metric depth = head output * fx / depth_focal_ref ("canonical camera"): the same
    # image taken with a longer lens shows things larger, i.e. further away than they look
    depth_focal_ref: float = 0.0

    def __post_init__(self) -> None:
        if self.backbone not in VIT_ARCHS:
            raise InputError(f"backbone: expected one of {', '.join(VIT_ARCHS)}, got {self.backbone!r}")
        object.__setattr__(self, "blocks_dim", tuple(int(v) for v in self.blocks_dim))
        if len(self.blocks_dim) != 4 or min(self.blocks_dim) < 1:
            raise InputError(f"blocks_dim: expected 4 positive channel counts, got {self.blocks_dim}")
        if self.blocks_dim[2] % 4 or self.blocks_dim[2] % self.attention_heads:
            raise InputError(
                f"blocks_dim: expected blocks_dim[2] divisible by 4 and by attention_heads={self.attention_heads}, "
                f"got {self.blocks_dim[2]}"
            )
        if self.depth_activation not in ("none", "exp"):
            raise InputError(f"depth_activation: expected 'none' or 'exp', got {self.depth_activation!r}")
        if not self.depth_scale > 0:
            raise InputError(f"depth_scale: expected a positive number of metres, got {self.depth_scale!r}")
        if not self.depth_focal_ref >= 0:
            raise InputError(f"depth_focal_ref: expected 0 (off) or a focal length in pixels, "
                             f"got {self.depth_focal_ref!r}")

    @property
    def embed_dim(self) -> int:
        """Channels C of the backbone map."""
        return VIT_ARCHS[self.backbone].embed_dim


PRESETS: dict[str, ModelConfig] = {
    "official": ModelConfig(),
    "vitb14": ModelConfig(backbone="dinov2_vitb14"),
    "vits14": ModelConfig(backbone="dinov2_vits14"),
    "tiny": ModelConfig(
        backbone="vit_tiny14", freeze_backbone=False, blocks_dim=(64, 64, 64, 32), descriptor_dim=64,
        attention_heads=4,
    ),
    # trainable on a CPU and able to learn metric depth: hybrid conv + ViT backbone, positive depth starting at
    # 2.5 m, one border cell (small images have few cells), 128-d descriptors, depth relative to a 228-px focal
    # length (0.775 x the 294-px width of the synthetic images: the middle of their 0.65-0.9 range)
    "small": ModelConfig(
        backbone="hybrid_small14", freeze_backbone=False, blocks_dim=(64, 64, 64, 32), descriptor_dim=128,
        attention_heads=4, score_border=1, depth_activation="exp", depth_scale=2.5, depth_focal_ref=228.0,
    ),
}


@dataclass
class MicKeyOutput:
    """Per-image network outputs on the ``h x w`` grid of 14-px patches, flattened row-major (n = row * w + col).

    Attributes:
        kpts: ``[B, N, 2]`` pixels (x, y) in the network input image: ``(sigmoid offset + (col, row)) * 14``.
        depth: ``[B, N]`` metres (raw network output, may be <= 0; times fx / depth_focal_ref when set).
        scores: ``[B, N]`` keypoint scores (spatial softmax, zero on the 3-cell border).
        descriptors: ``[B, N, D]`` unit length.
        grid_hw: ``(h, w)`` patch rows and columns.
    """

    kpts: torch.Tensor
    depth: torch.Tensor
    scores: torch.Tensor
    descriptors: torch.Tensor
    grid_hw: tuple[int, int]

    def as_map(self, values: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` (or ``[B, N, C]``) per-keypoint values -> ``[B, h, w]`` (``[B, h, w, C]``)."""
        return values.reshape(values.shape[0], *self.grid_hw, *values.shape[2:])

    @property
    def depth_map(self) -> torch.Tensor:
        """``[B, h, w]`` depth in metres."""
        return self.as_map(self.depth)

    @property
    def score_map(self) -> torch.Tensor:
        """``[B, h, w]`` keypoint scores."""
        return self.as_map(self.scores)


class MicKeyExtractor(nn.Module):
    """Backbone (attribute named ``config.backbone``) and the four heads ``det_head``, ``det_offset``,
    ``depth_head``, ``dsc_head`` (registration order = official state-dict order)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.add_module(c.backbone, VisionTransformer(VIT_ARCHS[c.backbone]))
        args = (c.embed_dim, c.blocks_dim, c.attention_heads, c.attention_layers)
        self.depth_head = DepthHead(*args, activation=c.depth_activation, scale=c.depth_scale)
        self.det_offset = OffsetHead(*args)
        self.dsc_head = DescriptorHead(*args, descriptor_dim=c.descriptor_dim)
        self.det_head = ScoreHead(*args, temperature=c.score_temperature, border=c.score_border)


class MicKey(nn.Module):
    """The MicKey network: images -> keypoints with metric depth, scores and descriptors; matching.

    Args:
        config: architecture.
        preset: name recorded with the model (``"custom"`` for a configuration that is no preset).
    """

    def __init__(self, config: ModelConfig, preset: str = "custom") -> None:
        super().__init__()
        self.config = config
        self.preset = preset
        self.input_size: tuple[int, int] | None = None  # (W, H) pixels it was trained at, if known (checkpoints)
        self.provenance: dict | None = None  # where a loaded checkpoint's weights came from, as its file says
        self.min_confidence: float | None = None  # calibrated out-of-domain threshold (Relocalizer min_confidence)
        self.extractor = MicKeyExtractor(config)
        self.matcher = DualSoftmaxMatcher(config.match_temperature, config.dustbin_init)
        if config.freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    @property
    def backbone(self) -> VisionTransformer:
        """The ViT (registered as ``extractor.<config.backbone>``)."""
        return getattr(self.extractor, self.config.backbone)

    def heads(self) -> list[nn.Module]:
        """The four heads, in official order (depth, offset, descriptor, score)."""
        e = self.extractor
        return [e.depth_head, e.det_offset, e.dsc_head, e.det_head]

    def reset_parameters(self) -> None:
        """Random initialisation of every parameter and buffer (used after building on the meta device)."""
        self.backbone.reset_parameters()
        for head in self.heads():
            head.reset_parameters()
        self.matcher.reset_parameters()

    def train(self, mode: bool = True) -> MicKey:
        """Toggle train mode; a frozen backbone always stays in eval mode (official behaviour)."""
        super().train(mode)
        if self.config.freeze_backbone:
            self.backbone.eval()
        return self

    # -- forward -----------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, focal: torch.Tensor | None = None) -> MicKeyOutput:
        """Keypoints, depth, scores and descriptors of a batch of images.

        Args:
            images: ``[B, 3, H, W]`` float RGB in [0, 1] (no mean/std normalisation), H, W >= 42. The
                top-left ``14 floor(H/14) x 14 floor(W/14)`` region is used.
            focal: ``[B]`` fx of each image (pixels, of these images); required when
                ``config.depth_focal_ref > 0``, ignored otherwise.

        Returns:
            ``MicKeyOutput`` with ``N = (H // 14) * (W // 14)`` keypoints per image.

        Raises:
            ImageError: not a float ``[B, 3, H, W]`` tensor, or smaller than 42 x 42 pixels.
            InputError: ``focal`` missing or malformed for a focal-relative network.
        """
        return self.forward_heads(self.backbone_features(images), focal)

    def backbone_features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone map of the cropped images (no gradient when the backbone is frozen).

        Args:
            images: ``[B, 3, H, W]`` float RGB in [0, 1].

        Returns:
            ``[B, C, H // 14, W // 14]`` float32 (normalised last-layer patch tokens).

        Raises:
            ImageError: see ``forward``.
        """
        images = crop_to_patches(check_images(images))
        images = images.to(self.backbone.pos_embed.dtype)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_backbone):
            features = self.backbone(images)
        return features.float()

    def forward_heads(self, features: torch.Tensor, focal: torch.Tensor | None = None) -> MicKeyOutput:
        """Run the four heads on backbone features.

        Args:
            features: ``[B, C, h, w]`` backbone map (C = backbone width), e.g. from ``backbone_features``.
            focal: ``[B]`` fx of each image (pixels); see ``forward``.

        Returns:
            ``MicKeyOutput`` (N = h * w).

        Raises:
            InputError: wrong shape or channel count; ``focal`` missing or malformed for a focal-relative network.
        """
        C = self.config.embed_dim
        if not isinstance(features, torch.Tensor) or features.ndim != 4 or features.shape[1] != C:
            shape = list(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise InputError(f"features: expected a tensor [B, {C}, h, w], got {shape}")
        e = self.extractor
        B, _, h, w = features.shape
        scores = e.det_head(features)
        offsets = e.det_offset(features)
        depth = e.depth_head(features).reshape(B, h * w)
        if self.config.depth_focal_ref > 0:
            depth = depth * self._focal_factor(focal, B, features.device)[:, None]
        descriptors = e.dsc_head(features)
        cols = torch.arange(w, device=features.device, dtype=offsets.dtype)
        rows = torch.arange(h, device=features.device, dtype=offsets.dtype)
        kx = (offsets[:, 0] + cols[None, None, :]) * PATCH_SIZE
        ky = (offsets[:, 1] + rows[None, :, None]) * PATCH_SIZE
        return MicKeyOutput(
            kpts=torch.stack([kx, ky], dim=-1).reshape(B, h * w, 2),
            depth=depth,
            scores=scores.reshape(B, h * w),
            descriptors=descriptors.flatten(2).transpose(1, 2),
            grid_hw=(int(h), int(w)),
        )

    def _focal_factor(self, focal: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """``[B]`` float32 ``fx / depth_focal_ref``, checked."""
        ref = self.config.depth_focal_ref
        if focal is None:
            raise InputError(f"focal: this network's depth is relative to a {ref:g}-px focal length "
                             "(depth_focal_ref); pass each image's fx in pixels")
        focal = torch.as_tensor(focal, dtype=torch.float32, device=device).reshape(-1)
        if focal.shape[0] != batch or not bool(torch.isfinite(focal).all() and (focal > 0).all()):
            raise InputError(f"focal: expected {batch} positive finite focal lengths (pixels), got "
                             f"{focal.tolist()}")
        return focal / ref

    def match(self, out0: MicKeyOutput, out1: MicKeyOutput) -> torch.Tensor:
        """Correspondence probabilities between two views (image sizes may differ).

        Returns:
            ``[B, N0, N1]`` = dual softmax (learned dustbin, temperature 0.1) * ``scores0 (x) scores1``.

        Raises:
            InputError: batch sizes or descriptor sizes differ.
        """
        return self.matcher(out0.descriptors, out1.descriptors, out0.scores, out1.scores)


def check_images(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """Raise ImageError unless ``images`` is a float ``[B, 3, H, W]`` tensor with H, W >= 42."""
    if not isinstance(images, torch.Tensor):
        raise ImageError(f"{name}: expected a float tensor [B, 3, H, W], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ImageError(f"{name}: expected a float tensor [B, 3, H, W], got shape {list(images.shape)}")
    if not images.is_floating_point():
        raise ImageError(f"{name}: expected a float tensor in [0, 1], got dtype {images.dtype}")
    H, W = images.shape[-2:]
    least = MIN_PATCHES * PATCH_SIZE
    if H < least or W < least:
        raise ImageError(
            f"{name}: expected at least {least}x{least} pixels ({MIN_PATCHES}x{MIN_PATCHES} patches of "
            f"{PATCH_SIZE}), got {H}x{W} (HxW)"
        )
    return images


def crop_to_patches(images: torch.Tensor) -> torch.Tensor:
    """Top-left crop ``[B, 3, H, W]`` -> ``[B, 3, 14 floor(H/14), 14 floor(W/14)]`` (K is unchanged)."""
    H, W = images.shape[-2:]
    return images[..., : H // PATCH_SIZE * PATCH_SIZE, : W // PATCH_SIZE * PATCH_SIZE]


def preset_name(config: ModelConfig) -> str:
    """The preset whose configuration equals ``config``, else ``"custom"``."""
    return next((name for name, cfg in PRESETS.items() if cfg == config), "custom")


def config_from_dict(values: dict) -> ModelConfig:
    """``ModelConfig`` from ``dataclasses.asdict`` output (e.g. read from JSON or a checkpoint).

    Raises:
        InputError: unknown or invalid fields.
    """
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"config: unknown fields {unknown}; expected a subset of {sorted(known)}")
    return ModelConfig(**values)


def build_model(preset: str | ModelConfig = "official", device: str | torch.device | None = None) -> MicKey:
    """A randomly initialised MicKey in eval mode.

    Args:
        preset: ``"official"`` (DINOv2 ViT-L/14 + official heads), ``"vitb14"``, ``"vits14"`` (DINOv2 B/S
            backbone, official heads), ``"tiny"`` (small trainable ViT, smaller heads), or a ``ModelConfig``.
        device: where to allocate (default CPU). ``"meta"`` builds a weightless skeleton (for shapes).

    Returns:
        ``MicKey`` in eval mode.

    Raises:
        InputError: unknown preset.
    """
    if isinstance(preset, ModelConfig):
        config, name = preset, preset_name(preset)
    elif preset in PRESETS:
        config, name = PRESETS[preset], preset
    else:
        raise InputError(f"preset: expected one of {', '.join(PRESETS)} or a ModelConfig, got {preset!r}")
    # Build without allocating, then allocate once and initialise explicitly: default initialisation
    # of ViT-L's 300M weights would take seconds and is thrown away when weights are loaded.
    with torch.device("meta"):
        net = MicKey(config, name)
    device = torch.device("cpu" if device is None else device)
    if device.type != "meta":
        net = net.to_empty(device=device)
        net.reset_parameters()
    return net.eval()
