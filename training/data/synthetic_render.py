"""Seeded synthetic rooms and their ray-cast views (image + depth), for the synthetic training data.

A scene is an axis-aligned room in the ``map`` frame (REP 103: x forward, y left, z up; metres) spanning
``[-sx/2, sx/2] x [-sy/2, sy/2] x [0, sz]``, with boxes standing on the floor. Every surface carries a
crop of a photograph shipped with scikit-image (or a procedural texture), mip-mapped so that distant
surfaces do not alias. Cameras follow OpenCV optical axes (x right, y down, z forward). The recordings
(trajectories and rosbag2 files) are in :mod:`training.data.synthetic`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from mickey_ros import deps
from mickey_ros.data.synthetic_scene import Rect, make_textures

WALL_MARGIN = 0.6  # metres between the base and any wall or box (the camera sits 0.1 m ahead of it)
MIP_LEVELS = 5  # texture sides are multiples of 2 ** (MIP_LEVELS - 1)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "immunohistochemistry",
          "hubble_deep_field", "retina", "camera", "moon", "coins", "page", "text")
_OTHER_AXES = ((1, 2), (0, 2), (0, 1))
SKY_TILE = 256  # texels of the sky's cloud texture from the horizon to the zenith


# -- scenes ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Texture:
    """A mip-mapped texture: ``levels[l]`` is ``[S / 2**l, S / 2**l, 3]`` uint8 RGB, tiled by mirroring."""

    levels: tuple[np.ndarray, ...]
    pixels_per_metre: float  # texels of level 0 per metre of surface


@dataclass(frozen=True)
class Scene:
    """A room with boxes in the ``map`` frame (z up, metres)."""

    size: tuple[float, float, float]  # room extent along x, y, z
    boxes: tuple[tuple[tuple[float, float], tuple[float, float], float], ...]  # ((x0, x1), (y0, y1), height)
    rects: tuple[Rect, ...]  # every visible surface; ``texture`` indexes ``textures``
    textures: tuple[Texture, ...]
    target: tuple[float, float]  # floor point (x, y) both recordings look towards: a box centre
    sky: int | None = None  # outdoor scenes: seed of the sky that rays hitting nothing see (sky_colour)

    def is_free(self, xy: np.ndarray, margin: float = WALL_MARGIN) -> np.ndarray:
        """``[N]`` bool: the ``[N, 2]`` floor points (metres) are ``margin`` away from every wall and box."""
        xy = np.atleast_2d(xy)
        sx, sy, _ = self.size
        free = (np.abs(xy[:, 0]) <= sx / 2 - margin) & (np.abs(xy[:, 1]) <= sy / 2 - margin)
        for (x0, x1), (y0, y1), _ in self.boxes:
            dx = np.maximum(np.maximum(x0 - xy[:, 0], xy[:, 0] - x1), 0.0)
            dy = np.maximum(np.maximum(y0 - xy[:, 1], xy[:, 1] - y1), 0.0)
            free &= np.hypot(dx, dy) >= margin
        return free


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    skimage_data = deps.require("skimage.data", "train", "synthetic scene textures")
    photos = []
    for name in PHOTOS:
        photo = getattr(skimage_data, name)()
        photos.append(np.repeat(photo[..., None], 3, axis=2) if photo.ndim == 2 else photo[..., :3])
    return tuple(np.ascontiguousarray(p, dtype=np.uint8) for p in photos)


def _make_texture(rng: np.random.Generator, procedural: list[np.ndarray]) -> Texture:
    """A random crop of a photograph (or a procedural texture), tinted, flipped and mip-mapped."""
    if rng.random() < 0.2:
        source = procedural[int(rng.integers(len(procedural)))]
    else:
        photos = _photos()
        source = photos[int(rng.integers(len(photos)))]
    h, w = source.shape[:2]
    crop = int(min(h, w) * rng.uniform(0.35, 1.0))
    y0, x0 = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    side = 16 * int(rng.integers(12, 33))  # 192 .. 512 texels
    tile = cv2.resize(source[y0:y0 + crop, x0:x0 + crop], (side, side), interpolation=cv2.INTER_AREA)
    tile = np.rot90(tile, int(rng.integers(4)))
    if rng.random() < 0.5:
        tile = tile[:, ::-1]
    tile = np.clip(tile.astype(np.float32) * rng.uniform(0.75, 1.2, 3), 0, 255).astype(np.uint8)
    levels = [np.ascontiguousarray(tile)]
    for _ in range(MIP_LEVELS - 1):
        levels.append(cv2.pyrDown(levels[-1]))
    return Texture(tuple(levels), side / rng.uniform(0.8, 3.0))  # one tile spans 0.8-3 m


def _box_rects(x: tuple[float, float], y: tuple[float, float], height: float, texture: int,
               rng: np.random.Generator) -> list[Rect]:
    (x0, x1), (y0, y1) = x, y
    shade = rng.uniform(0.55, 1.0, 5)
    return [
        Rect(0, x0, (y0, 0.0), (y1, height), texture, shade[0]),
        Rect(0, x1, (y0, 0.0), (y1, height), texture, shade[1]),
        Rect(1, y0, (x0, 0.0), (x1, height), texture, shade[2]),
        Rect(1, y1, (x0, 0.0), (x1, height), texture, shade[3]),
        Rect(2, height, (x0, y0), (x1, y1), texture, shade[4]),
    ]


def make_scene(rng: np.random.Generator) -> Scene:
    """A random room (x: 4-10 m, y: 4-8 m, z: 2.4-3.2 m) with 3-8 boxes (sides 0.2-1.5 m) on the floor.

    Boxes are redrawn until at least a third of the floor stays free for the robot.
    """
    sx, sy, sz = rng.uniform(4.0, 10.0), rng.uniform(4.0, 8.0), rng.uniform(2.4, 3.2)
    procedural = make_textures(int(rng.integers(2**31)))
    textures = [_make_texture(rng, procedural) for _ in range(6)]
    shade = rng.uniform(0.7, 1.0, 6)
    rects = [
        Rect(2, 0.0, (-sx / 2, -sy / 2), (sx / 2, sy / 2), 0, shade[0]),  # floor
        Rect(2, sz, (-sx / 2, -sy / 2), (sx / 2, sy / 2), 1, shade[1]),  # ceiling
        Rect(0, -sx / 2, (-sy / 2, 0.0), (sy / 2, sz), 2, shade[2]),  # back wall
        Rect(0, sx / 2, (-sy / 2, 0.0), (sy / 2, sz), 3, shade[3]),  # front wall
        Rect(1, -sy / 2, (-sx / 2, 0.0), (sx / 2, sz), 4, shade[4]),  # right wall
        Rect(1, sy / 2, (-sx / 2, 0.0), (sx / 2, sz), 5, shade[5]),  # left wall
    ]
    probe = np.stack(np.meshgrid(np.linspace(-sx / 2, sx / 2, 40), np.linspace(-sy / 2, sy / 2, 40)), -1).reshape(-1, 2)
    while True:
        boxes = []
        for _ in range(int(rng.integers(3, 9))):
            wx, wy, h = rng.uniform(0.2, 1.5, 3)
            x0 = rng.uniform(-sx / 2 + 0.05, sx / 2 - 0.05 - wx)
            y0 = rng.uniform(-sy / 2 + 0.05, sy / 2 - 0.05 - wy)
            boxes.append(((float(x0), float(x0 + wx)), (float(y0), float(y0 + wy)), float(h)))
        scene = Scene((sx, sy, sz), tuple(boxes), (), (), (0.0, 0.0))
        if scene.is_free(probe).mean() >= 1 / 3:
            break
    for (x, y, h) in boxes:
        rects += _box_rects(x, y, h, len(textures), rng)
        textures.append(_make_texture(rng, procedural))
    (x0, x1), (y0, y1), _ = boxes[int(rng.integers(len(boxes)))]
    target = ((x0 + x1) / 2, (y0 + y1) / 2)
    return Scene((sx, sy, sz), tuple(boxes), tuple(rects), tuple(textures), target)


# -- rendering -------------------------------------------------------------------------------------------
def _rays(K: np.ndarray, T_map_camera: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """``[3, N]`` map-frame ray directions through pixels ``uv [N, 2]`` whose optical z component is 1."""
    M = T_map_camera[:3, :3] @ np.linalg.inv(K)
    return M[:, :1] * uv[:, 0] + M[:, 1:2] * uv[:, 1] + M[:, 2:]  # broadcasting: BLAS threads cost more here


def _intersect(scene: Scene, centre: np.ndarray, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of each ray: ``(depth [N] metres along the optical axis, inf = none; surface [N], -1 = none)``."""
    depth = np.full(rays.shape[1], np.inf)
    surface = np.full(rays.shape[1], -1, dtype=np.int32)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / rays
    eps = 1e-6  # closes seams where two rects meet
    for index, rect in enumerate(scene.rects):
        i, j = _OTHER_AXES[rect.axis]
        s = (rect.value - centre[rect.axis]) * inv[rect.axis]
        a = centre[i] + s * rays[i]
        b = centre[j] + s * rays[j]
        hit = ((s > 1e-6) & (s < depth) & (a >= rect.lo[0] - eps) & (a <= rect.hi[0] + eps)
               & (b >= rect.lo[1] - eps) & (b <= rect.hi[1] + eps))
        depth[hit] = s[hit]
        surface[hit] = index
    return depth, surface


def _sample(level: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear samples ``[N, 3]`` float32 of a mirror-tiled texture level at texel coordinates ``u, v [N]``."""
    side = level.shape[0]
    maps = []
    for coord in (u, v):
        m = np.mod(coord, 2 * side)
        maps.append(np.where(m >= side, 2 * side - m, m) - 0.5)  # texel centres at integers
    n = len(u)
    cols = 1024  # cv2.remap needs both map sides < 32767
    rows = -(-n // cols)
    map_x, map_y = (np.resize(m.astype(np.float32), rows * cols).reshape(rows, cols) for m in maps)
    out = cv2.remap(level, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out.reshape(-1, 3)[:n].astype(np.float32)


def _shade(scene: Scene, K: np.ndarray, centre: np.ndarray, rays: np.ndarray, depth: np.ndarray,
           surface: np.ndarray) -> np.ndarray:
    """``[N, 3]`` float32 RGB of the hits, trilinear mip-mapping by the pixel footprint on the surface."""
    colour = np.zeros((len(depth), 3), dtype=np.float32)
    focal = math.sqrt(K[0, 0] * K[1, 1])
    order = np.argsort(surface, kind="stable")
    bounds = np.searchsorted(surface[order], np.arange(len(scene.rects) + 1))
    for index, rect in enumerate(scene.rects):
        idx = order[bounds[index]:bounds[index + 1]]
        if not len(idx):
            continue
        texture = scene.textures[rect.texture]
        ray, s = rays[:, idx], depth[idx]
        i, j = _OTHER_AXES[rect.axis]
        u = (centre[i] + s * ray[i] - rect.lo[0]) * texture.pixels_per_metre
        v = (rect.hi[1] - centre[j] - s * ray[j]) * texture.pixels_per_metre  # image rows go down the surface
        cos = np.abs(ray[rect.axis]) / np.linalg.norm(ray, axis=0)
        footprint = s / focal * texture.pixels_per_metre / np.sqrt(np.maximum(cos, 1e-3))
        lod = np.clip(np.log2(np.maximum(footprint, 1.0)), 0, MIP_LEVELS - 1)
        base = np.minimum(lod.astype(np.int64), MIP_LEVELS - 2)
        for level in np.unique(base):
            sel = base == level
            w = (lod[sel] - level).astype(np.float32)[:, None]
            scale = 2.0 ** -level
            c0 = _sample(texture.levels[level], u[sel] * scale, v[sel] * scale)
            c1 = _sample(texture.levels[level + 1], u[sel] * scale / 2, v[sel] * scale / 2)
            colour[idx[sel]] = ((1 - w) * c0 + w * c1) * rect.shade
    return colour


def sky_colour(rays: np.ndarray, seed: int) -> np.ndarray:
    """``[N, 3]`` float32 RGB of the sky seen along map-frame ``rays [3, N]``: a horizon-to-zenith gradient with
    clouds from a smooth texture indexed by azimuth and elevation (independent of the camera's position)."""
    rng = np.random.default_rng(seed)
    horizon, zenith = rng.uniform(170, 240, 3), rng.uniform([60, 100, 150], [170, 200, 250])
    clouds = cv2.resize(rng.random((8, 32)).astype(np.float32), (4 * SKY_TILE, SKY_TILE), interpolation=cv2.INTER_CUBIC)
    cover = rng.uniform(0.0, 0.9)
    norm = np.linalg.norm(rays, axis=0)
    elevation = np.arcsin(np.clip(rays[2] / norm, -1, 1))  # radians, > 0 above the horizon
    azimuth = np.arctan2(rays[1], rays[0])
    w = np.clip(elevation / (np.pi / 2), 0, 1)[:, None] ** 0.5
    colour = (1 - w) * horizon + w * zenith
    u = ((azimuth + np.pi) / (2 * np.pi) * (4 * SKY_TILE - 1)).astype(np.int64)
    v = (np.clip(elevation, 0, np.pi / 2) / (np.pi / 2) * (SKY_TILE - 1)).astype(np.int64)
    c = np.clip((clouds[v, u] - (1 - cover)) * 3, 0, 1)[:, None]
    return ((1 - c) * colour + c * rng.uniform(200, 250)).astype(np.float32)


def cast_depth(scene: Scene, K: np.ndarray, T_map_camera: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Exact depth at arbitrary (sub)pixels.

    Args:
        K: ``[3, 3]`` intrinsics (pixels; pixel centres at integer coordinates).
        T_map_camera: ``[4, 4]`` pose of the optical frame in ``map`` (camera -> map).
        uv: ``[N, 2]`` pixel coordinates (x, y).

    Returns:
        ``[N]`` float64 metres along the optical axis, inf where the ray hits nothing.
    """
    T = np.asarray(T_map_camera, dtype=np.float64)
    depth, _ = _intersect(scene, T[:3, 3], _rays(np.asarray(K, dtype=np.float64), T, np.asarray(uv, np.float64)))
    return depth


def render(scene: Scene, K: np.ndarray, T_map_camera: np.ndarray, width: int, height: int,
           gain: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast one view of the scene.

    Args:
        K: ``[3, 3]`` intrinsics (pixels; pixel centres at integer coordinates).
        T_map_camera: ``[4, 4]`` pose of the optical frame in ``map`` (camera -> map).
        width, height: image size in pixels.
        gain: exposure factor applied to the colours.

    Returns:
        ``(image [H, W, 3] uint8 RGB, depth [H, W] float64 metres along the optical axis, inf = no hit)``.
    """
    K, T = np.asarray(K, dtype=np.float64), np.asarray(T_map_camera, dtype=np.float64)
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    rays = _rays(K, T, np.stack([u.ravel(), v.ravel()], axis=1))
    depth, surface = _intersect(scene, T[:3, 3], rays)
    colour = _shade(scene, K, T[:3, 3], rays, depth, surface)
    if scene.sky is not None:
        miss = surface < 0
        colour[miss] = sky_colour(rays[:, miss], scene.sky)
    colour *= gain
    image = np.clip(colour, 0, 255).astype(np.uint8).reshape(height, width, 3)
    return image, depth.reshape(height, width)
