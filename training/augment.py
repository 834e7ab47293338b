"""Training-time augmentation of one pair (off by default): a mirrored world and photometric jitter.

Both keep the supervision exact:

* **flip** (probability ``data.augment_flip`` per pair): both images, their depth maps and the pose are mirrored
  left-right together. With ``M = diag(-1, 1, 1)`` in camera coordinates a point ``X`` becomes ``M X``, so a pixel
  ``x`` becomes ``W - 1 - x`` (pixel centres at integers), ``K``'s ``cx`` becomes ``W - 1 - cx`` and
  ``T_0to1`` becomes ``M4 T_0to1 M4`` (a rotation again: ``M`` appears twice). ``Kori_color*`` (the original
  resolution's K, used only by the VCRE of the loss) is left as it is: VCRE measures the mirrored poses with an
  equally valid camera.
* **colour** (strength ``data.augment_color`` in [0, 1]): per image independently (two cameras differ) a
  brightness gain ``1 +- s``, per-channel gains ``1 +- s/2``, contrast ``1 +- s`` about the image mean, a gamma
  ``exp(+- s/2)`` and Gaussian noise of standard deviation ``0.02 s``; the result is clamped to [0, 1]. Geometry
  (K, pose, depth) is unchanged.

* **camera** (strength ``data.augment_camera`` in [0, 1]): what a real camera does to a picture, drawn per image
  (the two cameras differ) after the colour jitter: with probability ``0.3 s`` per pair both images turn grey (a
  monochrome camera, replicated to three channels), vignetting ``1 - v r^2`` (``v`` up to ``0.5 s``, ``r`` the
  distance from the centre over the half-diagonal), a Gaussian blur of up to ``1.5 s`` px sigma (defocus), signal-
  dependent sensor noise (up to ``0.03 s`` at full scale) and, with probability ``0.7 s``, JPEG compression at a
  quality of 30-95. Geometry is unchanged.

Random numbers come from a CPU generator per pair and step (:func:`augment_generator`), so the augmentation of a
pair does not depend on the batch layout, the number of DataLoader workers or the world size, and an exact resume
replays it.
"""
from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from training.seeding import pair_generator

AUGMENT_SEED_OFFSET = 7919  # keeps the augmentation's stream apart from the loss's (same seed, step, pair)
FLIPPED_KEYS = ("image0", "image1", "depth0", "depth1")


def augment_generator(seed: int, step: int, global_index: int) -> torch.Generator:
    """The CPU generator of one pair's augmentation at one optimiser step (the loss's scheme, its own stream)."""
    return pair_generator(seed + AUGMENT_SEED_OFFSET, step, global_index, "cpu")


def flip_pair(item: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One pair mirrored left-right (module docstring); ``item`` holds one pair's tensors (no batch dimension):
    ``image*`` ``[3, H, W]``, ``depth*`` ``[H, W]`` (optional), ``K_color*`` ``[3, 3]``, ``T_0to1`` ``[4, 4]``."""
    out = dict(item)
    for key in FLIPPED_KEYS:
        if key in item:
            out[key] = item[key].flip(-1)
    width = item["image0"].shape[-1]
    for key in ("K_color0", "K_color1"):
        K = item[key].clone()
        K[0, 2] = (width - 1) - K[0, 2]
        K[0, 1] = -K[0, 1]  # skew (0 for pinhole cameras) changes sign with x
        out[key] = K
    M = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=item["T_0to1"].dtype))
    out["T_0to1"] = M @ item["T_0to1"] @ M
    return out


def jitter_colour(image: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """``[3, H, W]`` RGB in [0, 1] with the photometric changes of the module docstring, clamped to [0, 1]."""
    def uniform(size: int, half_width: float) -> torch.Tensor:
        return (torch.rand(size, generator=gen, dtype=torch.float64) * 2 - 1) * half_width

    s = float(strength)
    brightness = 1 + uniform(1, s)
    channels = 1 + uniform(3, s / 2)
    contrast = 1 + uniform(1, s)
    gamma = torch.exp(uniform(1, s / 2))
    noise = torch.randn(image.shape, generator=gen, dtype=torch.float32) * (0.02 * s)
    x = image * (brightness * channels).to(image.dtype)[:, None, None]
    mean = x.mean()
    x = (x - mean) * float(contrast) + mean
    x = x.clamp(0, 1) ** float(gamma) + noise.to(image.dtype)
    return x.clamp(0, 1)


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """``[3, H, W]`` blurred by a separable Gaussian of ``sigma`` pixels (reflected borders)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = F.pad(image[None], (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)[0]


def _jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """``[3, H, W]`` in [0, 1] through JPEG at ``quality`` (OpenCV, 8 bits)."""
    pixels = (image.permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(pixels[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(decoded)).permute(2, 0, 1).to(image.dtype) / 255


def camera_effects(image: torch.Tensor, strength: float, grey: bool, gen: torch.Generator) -> torch.Tensor:
    """``[3, H, W]`` RGB in [0, 1] with the camera effects of the module docstring (``grey``: drawn per pair)."""
    s = float(strength)
    u = torch.rand(5, generator=gen, dtype=torch.float64).tolist()
    x = image
    if grey:
        x = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).expand(3, -1, -1)
    h, w = x.shape[-2:]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h, dtype=x.dtype), torch.linspace(-1, 1, w, dtype=x.dtype),
                            indexing="ij")
    x = x * (1 - 0.5 * s * u[0] * (xx**2 + yy**2) / 2)
    if u[1] * 1.5 * s > 0.3:
        x = _gaussian_blur(x, u[1] * 1.5 * s)
    level = 0.03 * s * u[2]
    shape = (1, *x.shape[-2:]) if grey else x.shape  # a monochrome sensor's noise is the same in all channels
    x = x + torch.randn(shape, generator=gen, dtype=torch.float32).to(x.dtype) * level * x.clamp(0, 1).sqrt()
    x = x.clamp(0, 1)
    if u[3] < 0.7 * s:
        x = _jpeg(x, 30 + int(65 * u[4]))
    return x


def augment_batch(batch: dict[str, Any], flip: float, colour: float, seed: int, step: int,
                  global_indices: list[int], camera: float = 0.0) -> dict[str, Any]:
    """A batch (as the DataLoader gives it: ``image*`` ``[B, 3, H, W]``, ``K_color*`` ``[B, 3, 3]``, ``T_0to1``
    ``[B, 4, 4]``, optional ``depth*`` ``[B, H, W]``) with each pair augmented by its own generator; the input batch
    is not modified. ``flip``: probability in [0, 1]; ``colour``, ``camera``: strengths in [0, 1]; all 0 returns
    ``batch``."""
    if flip <= 0 and colour <= 0 and camera <= 0:
        return batch
    keys = [k for k in (*FLIPPED_KEYS, "K_color0", "K_color1", "T_0to1") if k in batch]
    pairs = []
    for b, index in enumerate(global_indices):
        gen = augment_generator(seed, step, index)
        item = {k: batch[k][b] for k in keys}
        if flip > 0 and float(torch.rand(1, generator=gen)) < flip:
            item = flip_pair(item)
        if colour > 0:
            for key in ("image0", "image1"):
                item[key] = jitter_colour(item[key], colour, gen)
        if camera > 0:
            grey = float(torch.rand(1, generator=gen)) < 0.3 * camera
            for key in ("image0", "image1"):
                item[key] = camera_effects(item[key], camera, grey, gen)
        pairs.append(item)
    out = dict(batch)
    for key in keys:
        out[key] = torch.stack([p[key] for p in pairs])
    return out
