"""Pinhole cameras: intrinsics checks, resize/crop bookkeeping, back-projection.

Pixel coordinates follow OpenCV: u (x) to the right, v (y) down, principal point in pixels.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from mickey_ros.errors import IntrinsicsError

PATCH_SIZE = 14  # DINOv2 patch size in pixels


def intrinsics_from_values(values: Sequence[float], name: str = "intrinsics") -> np.ndarray:
    """K from ``(fx, fy, cx, cy)``.

    Args:
        values: four numbers FX FY CX CY in pixels.
        name: the input's name, used in the error message.

    Returns:
        ``[3, 3]`` float64 K.

    Raises:
        IntrinsicsError: not four finite numbers, or a focal length <= 0.
    """
    vals = list(values)
    if len(vals) != 4:
        raise IntrinsicsError(f"{name}: expected 4 numbers FX FY CX CY, got {len(vals)}")
    try:
        fx, fy, cx, cy = (float(v) for v in vals)
    except (TypeError, ValueError) as err:
        raise IntrinsicsError(f"{name}: expected 4 numbers FX FY CX CY, got {vals!r}") from err
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return check_intrinsics(K, name)


def check_intrinsics(K: np.ndarray | torch.Tensor, name: str = "K") -> np.ndarray:
    """Validate a pinhole K and return it as ``[3, 3]`` float64 numpy.

    Raises:
        IntrinsicsError: wrong shape, non-finite values, fx or fy <= 0, or last row != [0, 0, 1].
    """
    if isinstance(K, torch.Tensor):
        K = K.detach().cpu().double().numpy()
    try:
        K = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise IntrinsicsError(f"{name}: expected a 3x3 matrix of numbers, got {type(K).__name__} "
                              f"({str(err).splitlines()[0]})") from err
    if K.shape != (3, 3):
        raise IntrinsicsError(f"{name}: expected a 3x3 intrinsics matrix, got shape {tuple(K.shape)}")
    if not np.all(np.isfinite(K)):
        raise IntrinsicsError(f"{name}: expected finite intrinsics, got {K.tolist()}")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise IntrinsicsError(
            f"{name}: expected focal lengths fx > 0 and fy > 0, got fx={K[0, 0]:g}, fy={K[1, 1]:g}"
        )
    if not np.allclose(K[2], [0.0, 0.0, 1.0]):
        raise IntrinsicsError(f"{name}: expected last row [0, 0, 1], got {K[2].tolist()}")
    return K


MIN_FOV_DEG, MAX_FOV_DEG = 1.0, 179.0  # plausible horizontal / vertical fields of view of a pinhole camera


def check_intrinsics_fit(K: np.ndarray, width: int, height: int, name: str = "K") -> None:
    """Reject intrinsics that cannot belong to a ``width x height`` image (a checked ``[3, 3]`` K, pixels).

    Field of view ``2 atan(W / 2 fx)`` (and the vertical one) within ``(1 deg, 179 deg)``; principal point
    within one image size of the image (``-W <= cx <= 2 W``, same for cy): e.g. fx = 1e300 or 1e-300, or K of
    another resolution, which would otherwise give a confident but meaningless pose.

    Raises:
        IntrinsicsError: one line naming ``name``, the value and the accepted range.
    """
    for axis, size, f, c in (("horizontal", width, K[0, 0], K[0, 2]), ("vertical", height, K[1, 1], K[1, 2])):
        fov = float(np.degrees(2.0 * np.arctan2(size / 2.0, f)))
        if not MIN_FOV_DEG < fov < MAX_FOV_DEG:
            raise IntrinsicsError(
                f"{name}: {axis} field of view {fov:.3g} deg (focal {f:g} px for {size} px) is outside "
                f"({MIN_FOV_DEG:g}, {MAX_FOV_DEG:g}) deg; is K for this {width}x{height} image?"
            )
        if not -size <= c <= 2 * size:
            raise IntrinsicsError(
                f"{name}: principal point {'cx' if axis == 'horizontal' else 'cy'}={c:g} px lies far outside the "
                f"{width}x{height} image (expected {-size} .. {2 * size}); is K for this image?"
            )


def rescale_intrinsics(K: np.ndarray, scale_x: float, scale_y: float) -> np.ndarray:
    """K of an image resized by ``(scale_x, scale_y)`` = ``(W_new / W, H_new / H)``.

    Half-pixel-centre convention (as the official loader and Map-free):
    ``K' = S K``, ``S = [[sx, 0, sx/2 - 0.5], [0, sy, sy/2 - 0.5], [0, 0, 1]]``.
    """
    S = np.array(
        [[scale_x, 0.0, scale_x / 2 - 0.5], [0.0, scale_y, scale_y / 2 - 0.5], [0.0, 0.0, 1.0]]
    )
    return S @ np.asarray(K, dtype=np.float64)


def crop_to_multiple(height: int, width: int, multiple: int = PATCH_SIZE) -> tuple[int, int]:
    """Size ``(H', W')`` of the top-left crop to multiples of ``multiple``; K is unchanged by it."""
    return (height // multiple) * multiple, (width // multiple) * multiple


def backproject(kpts: torch.Tensor, depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Lift pixels to 3D camera points: ``X = z * K^-1 [u, v, 1]``.

    Args:
        kpts: ``[B, N, 2]`` pixels (x, y).
        depth: ``[B, N]`` metres.
        K: ``[B, 3, 3]`` intrinsics of the image the pixels live in.

    Returns:
        ``[B, N, 3]`` metres in the camera frame (same dtype as ``kpts``).
    """
    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
    cx, cy = K[:, 0, 2, None], K[:, 1, 2, None]
    skew = K[:, 0, 1, None]
    y = (kpts[..., 1] - cy) / fy
    x = (kpts[..., 0] - cx - skew * y) / fx
    return torch.stack([x * depth, y * depth, depth], dim=-1)
