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

Random numbers come from a CPU generator per pair and step (:func:`augment_generator`), so the augmentation of a
pair does not depend on the batch layout, the number of DataLoader workers or the world size, and an exact resume
replays it.
"""
from __future__ import annotations

from typing import Any

import torch

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


def augment_batch(batch: dict[str, Any], flip: float, colour: float, seed: int, step: int,
                  global_indices: list[int]) -> dict[str, Any]:
    """A batch (as the DataLoader gives it: ``image*`` ``[B, 3, H, W]``, ``K_color*`` ``[B, 3, 3]``, ``T_0to1``
    ``[B, 4, 4]``, optional ``depth*`` ``[B, H, W]``) with each pair augmented by its own generator; the input batch
    is not modified. ``flip``: probability in [0, 1]; ``colour``: strength in [0, 1]; both 0 returns ``batch``."""
    if flip <= 0 and colour <= 0:
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
        pairs.append(item)
    out = dict(batch)
    for key in keys:
        out[key] = torch.stack([p[key] for p in pairs])
    return out
