"""A small metric scene rendered by ray casting (numpy + OpenCV), used for the shipped demo pair.

The scene is a room in camera-0 coordinates (OpenCV axes: x right, y down, z forward, metres): a floor
at y = 1.0, a ceiling at y = -2.0, a back wall at z = 6.0, side walls at x = +-2.5 and a box on the floor. Surfaces carry
procedural textures (noise, shapes, text) so that they have structure at several scales.
Everything is seeded and deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

TEXTURE_SIZE = 512
PIXELS_PER_METRE = 160.0


@dataclass(frozen=True)
class Rect:
    """An axis-aligned textured rectangle: ``axis`` coordinate == ``value``, bounded on the two others."""

    axis: int  # 0 = x, 1 = y, 2 = z: the constant coordinate
    value: float  # metres
    lo: tuple[float, float]  # lower bounds of the two other axes (in increasing axis order)
    hi: tuple[float, float]
    texture: int  # index into the texture list
    shade: float  # brightness factor


def _box(x: tuple[float, float], y: tuple[float, float], z: tuple[float, float], texture: int) -> list[Rect]:
    (x0, x1), (y0, y1), (z0, z1) = x, y, z
    return [
        Rect(0, x0, (y0, z0), (y1, z1), texture, 0.8), Rect(0, x1, (y0, z0), (y1, z1), texture, 0.7),
        Rect(1, y0, (x0, z0), (x1, z1), texture, 1.0),
        Rect(2, z0, (x0, y0), (x1, y1), texture, 0.9), Rect(2, z1, (x0, y0), (x1, y1), texture, 0.6),
    ]


SCENE: list[Rect] = [
    Rect(1, 1.0, (-2.5, 0.0), (2.5, 6.0), 0, 0.9),  # floor
    Rect(1, -2.0, (-2.5, 0.0), (2.5, 6.0), 3, 0.6),  # ceiling
    Rect(2, 6.0, (-2.5, -2.0), (2.5, 1.0), 1, 1.0),  # back wall
    Rect(0, -2.5, (-2.0, 0.0), (1.0, 6.0), 2, 0.75),  # left wall
    Rect(0, 2.5, (-2.0, 0.0), (1.0, 6.0), 2, 0.85),  # right wall
    *_box((-0.9, -0.1), (0.3, 1.0), (3.0, 3.7), 3),
    *_box((0.5, 1.1), (0.55, 1.0), (2.2, 2.7), 1),
]


# A 5 x 7 bitmap font for the characters the textures print ("#" = ink), drawn by numpy so that the textures do
# not depend on OpenCV's font renderer (its Hershey text changed between opencv-python 5.0 and 5.1).
GLYPHS: dict[str, tuple[str, ...]] = {
    "m": (".....", ".....", "##.#.", "#.#.#", "#.#.#", "#.#.#", "#.#.#"),
    "i": ("..#..", ".....", ".##..", "..#..", "..#..", "..#..", ".###."),
    "c": (".....", ".....", ".###.", "#....", "#....", "#....", ".###."),
    "k": ("#....", "#....", "#..#.", "#.#..", "##...", "#.#..", "#..#."),
    "e": (".....", ".....", ".###.", "#...#", "#####", "#....", ".###."),
    "y": (".....", "#...#", "#...#", ".#.#.", "..#..", ".#...", "#...."),
    " ": (".....",) * 7,
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("####.", "....#", "....#", ".###.", "....#", "....#", "####."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": (".###.", "#....", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "....#", ".###."),
}
GLYPH_SCALE = 3  # texture pixels per font pixel: 21-pixel-high characters, 18-pixel advance


def draw_text(tex: np.ndarray, text: str, org: tuple[int, int], grey: int) -> None:
    """Print ``text`` in place into ``tex`` ``[H, W, 3]`` uint8 with the bitmap font, in grey level ``grey``;
    ``org`` (x, y) px is the bottom-left corner of the first character (as cv2.putText's), clipped at the border."""
    rows = [" ".join(GLYPHS[c][r] for c in text) for r in range(7)]  # one blank font column between characters
    ink = np.kron(np.array([[ch == "#" for ch in row] for row in rows]), np.ones((GLYPH_SCALE, GLYPH_SCALE), bool))
    x0, y0 = org[0], org[1] - ink.shape[0]
    ys, xs = np.nonzero(ink)
    ys, xs = ys + y0, xs + x0
    keep = (ys >= 0) & (ys < tex.shape[0]) & (xs >= 0) & (xs < tex.shape[1])
    tex[ys[keep], xs[keep]] = grey


def make_textures(seed: int = 0) -> list[np.ndarray]:
    """Four ``[512, 512, 3]`` uint8 RGB procedural textures."""
    rng = np.random.default_rng(seed)
    textures = []
    for k in range(4):
        noise = rng.normal(0, 1, (TEXTURE_SIZE // 8, TEXTURE_SIZE // 8, 3)).astype(np.float32)
        base = cv2.resize(noise, (TEXTURE_SIZE, TEXTURE_SIZE), interpolation=cv2.INTER_CUBIC)
        tex = np.clip(128 + 40 * base + rng.integers(-60, 60, 3), 0, 255).astype(np.uint8)
        for _ in range(40):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            centre = tuple(int(c) for c in rng.integers(0, TEXTURE_SIZE, 2))
            if rng.random() < 0.5:
                cv2.circle(tex, centre, int(rng.integers(6, 40)), colour, -1, cv2.LINE_AA)
            else:
                size = rng.integers(10, 70, 2)
                cv2.rectangle(tex, centre, (int(centre[0] + size[0]), int(centre[1] + size[1])), colour, -1)
        for _ in range(6):
            org = (int(rng.integers(0, TEXTURE_SIZE - 120)), int(rng.integers(30, TEXTURE_SIZE)))
            draw_text(tex, f"mickey {k}{int(rng.integers(0, 99))}", org, int(rng.integers(0, 80)))
        fine = rng.integers(-25, 25, (TEXTURE_SIZE, TEXTURE_SIZE, 1))
        textures.append(np.clip(tex.astype(np.int32) + fine, 0, 255).astype(np.uint8))
    return textures


def render(K: np.ndarray, T_cam_to_world: np.ndarray, width: int, height: int,
           textures: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast the scene.

    Args:
        K: ``[3, 3]`` intrinsics (pixels).
        T_cam_to_world: ``[4, 4]`` camera pose in the world (= camera-0) frame.
        width, height: image size in pixels.
        textures: from :func:`make_textures`.

    Returns:
        ``(image [H, W, 3] uint8 RGB, depth [H, W] float64 metres along the optical axis, inf = no hit)``.
    """
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    rays_cam = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T  # z = 1 in the camera
    R, C = T_cam_to_world[:3, :3], T_cam_to_world[:3, 3]
    rays = rays_cam @ R.T
    depth = np.full((height, width), np.inf)
    image = np.zeros((height, width, 3), dtype=np.float32)
    for rect in SCENE:
        others = [a for a in range(3) if a != rect.axis]
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (rect.value - C[rect.axis]) / rays[..., rect.axis]  # = depth, since rays_cam has z = 1
        points = C + s[..., None] * rays
        a, b = points[..., others[0]], points[..., others[1]]
        hit = (s > 1e-6) & (s < depth) & (a >= rect.lo[0]) & (a <= rect.hi[0]) & (b >= rect.lo[1]) & (b <= rect.hi[1])
        if not hit.any():
            continue
        map_x = (a * PIXELS_PER_METRE % TEXTURE_SIZE).astype(np.float32)
        map_y = (b * PIXELS_PER_METRE % TEXTURE_SIZE).astype(np.float32)
        colour = cv2.remap(textures[rect.texture], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        image[hit] = colour[hit].astype(np.float32) * rect.shade
        depth[hit] = s[hit]
    return np.clip(image, 0, 255).astype(np.uint8), depth


def demo_cameras() -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """``(K, T_cam0_to_world, T_cam1_to_world, W, H)`` of the shipped demo pair (294 x 224 px)."""
    width, height = 294, 224
    K = np.array([[220.0, 0.0, 146.5], [0.0, 220.0, 111.5], [0.0, 0.0, 1.0]])
    yaw = np.deg2rad(-10.0)  # camera 1 turns left while it moves right and forward
    R1 = np.array([[np.cos(yaw), 0.0, np.sin(yaw)], [0.0, 1.0, 0.0], [-np.sin(yaw), 0.0, np.cos(yaw)]])
    T1 = np.eye(4)
    T1[:3, :3] = R1
    T1[:3, 3] = [0.45, -0.05, 0.3]
    return K, np.eye(4), T1, width, height


def camera_pose(position: tuple[float, float, float], yaw_deg: float = 0.0, pitch_deg: float = 0.0) -> np.ndarray:
    """``[4, 4]`` ``T_cam_to_world`` of a camera at ``position`` (m), turned by ``yaw_deg`` about the world y axis
    (positive = turn right) after ``pitch_deg`` about its own x axis (positive = look up)."""
    y, p = np.deg2rad(yaw_deg), np.deg2rad(pitch_deg)
    R_yaw = np.array([[np.cos(y), 0.0, np.sin(y)], [0.0, 1.0, 0.0], [-np.sin(y), 0.0, np.cos(y)]])
    R_pitch = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(p), -np.sin(p)], [0.0, np.sin(p), np.cos(p)]])
    T = np.eye(4)
    T[:3, :3] = R_yaw @ R_pitch
    T[:3, 3] = position
    return T


@dataclass(frozen=True)
class DemoPair:
    """One shipped demo pair: image files, a one-line description and both cameras in the world frame."""

    name0: str
    name1: str
    description: str
    T_cam0_to_world: np.ndarray  # [4, 4]
    T_cam1_to_world: np.ndarray  # [4, 4]


DEMO_QUERIES = (  # (file, description, position m, yaw deg, pitch deg) of the query cameras after pair 1
    ("im2.png", "small baseline: a short sideways step", (0.12, 0.0, 0.05), -1.5, 0.0),
    ("im3.png", "large baseline: far to the right and forward, turning left", (1.1, -0.1, 0.6), -22.0, 0.0),
    ("im4.png", "rotation: turning right and looking up, almost in place", (0.03, 0.0, 0.02), 18.0, 6.0),
    ("im5.png", "forward motion: one metre into the room", (0.05, 0.0, 1.0), 4.0, 0.0),
)


def demo_pairs() -> tuple[np.ndarray, int, int, list[DemoPair]]:
    """``(K, W, H, pairs)`` of the shipped demo pairs (294 x 224 px, one K): all share the reference ``im0.png``
    (camera at the world origin); pair 1 is :func:`demo_cameras` (``im1.png``)."""
    K, T0, T1, width, height = demo_cameras()
    pairs = [DemoPair("im0.png", "im1.png", "turn and move: right and forward, turning left", T0, T1)]
    for name, description, position, yaw, pitch in DEMO_QUERIES:
        pairs.append(DemoPair("im0.png", name, description, T0, camera_pose(position, yaw, pitch)))
    return K, width, height, pairs
