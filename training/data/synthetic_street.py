"""Seeded synthetic streets: outdoor scenes with depths of 2-300 m, for training a network that also works outside.

A street runs along ``x`` in the ``map`` frame (REP 103: x forward, y left, z up; metres): a road of half-width
3-7 m at ``z = 0``, raised pavements, facades of buildings (5-25 m high, with window grids) set back along both
sides with gaps between them, parked cars, poles and trees, and a ground plane to 300 m beyond the street's ends.
Rays that hit nothing see the sky (:func:`~training.data.synthetic_render.sky_colour`: a gradient with clouds that depends on the ray's direction
only, so it is the same from every camera position, as a sky at infinity) and get no depth (``inf``).

A vehicle drives along the street (:func:`training.data.synthetic.make_street_trajectory`): 3-12 m/s in a lane, its heading following the
path with a slow weave of a few degrees, like a car on KITTI. Everything follows from the ``rng`` given.
"""
from __future__ import annotations

import cv2
import numpy as np

from mickey_ros.data.synthetic_scene import Rect, make_textures
from training.data.synthetic_render import MIP_LEVELS, Scene, Texture, _make_texture, _photos

GROUND_MARGIN = 300.0  # metres of ground plane beyond the street's ends and sides


def _mip(tile: np.ndarray, metres: float) -> Texture:
    """A mip-mapped :class:`Texture` of ``tile`` ``[S, S, 3]`` uint8 spanning ``metres`` of surface."""
    levels = [np.ascontiguousarray(tile)]
    for _ in range(MIP_LEVELS - 1):
        levels.append(cv2.pyrDown(levels[-1]))
    return Texture(tuple(levels), tile.shape[0] / metres)


def _photo_crop(rng: np.random.Generator, side: int) -> np.ndarray:
    """``[side, side, 3]`` uint8: a random crop of a scikit-image photograph, resized."""
    photos = _photos()
    source = photos[int(rng.integers(len(photos)))]
    h, w = source.shape[:2]
    crop = int(min(h, w) * rng.uniform(0.2, 0.8))
    y0, x0 = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    return cv2.resize(source[y0:y0 + crop, x0:x0 + crop], (side, side), interpolation=cv2.INTER_AREA)


def facade_texture(rng: np.random.Generator) -> Texture:
    """A wall with one window per tile (tiles of 2.5-4.5 m): plaster or a photo crop, a dark glazed window with a
    frame and a sill, so that mirrored tiling gives a regular window grid like a real facade."""
    side = 256
    grey = rng.uniform(70, 210)
    wall_colour = grey + (rng.uniform(60, 220, 3) - grey) * rng.uniform(0.1, 0.5)  # real walls are not saturated
    if rng.random() < 0.5:
        wall = np.clip(_photo_crop(rng, side).astype(np.float32).mean(2, keepdims=True) * 0.4
                       + wall_colour * 0.6, 0, 255)
        wall = np.broadcast_to(wall, (side, side, 3)).copy()
    else:
        wall = np.broadcast_to(wall_colour, (side, side, 3)).astype(np.float32).copy()
    wall += cv2.resize(rng.normal(0, 12, (side // 16, side // 16, 3)).astype(np.float32), (side, side))
    wall += rng.normal(0, 6, (side, side, 1)).astype(np.float32)
    w, h = int(side * rng.uniform(0.3, 0.6)), int(side * rng.uniform(0.35, 0.7))
    x0, y0 = (side - w) // 2, (side - h) // 2
    frame = int(rng.integers(4, 14))
    glass = _photo_crop(rng, side)[:h, :w].astype(np.float32) * rng.uniform(0.2, 0.5) + rng.uniform(10, 50, 3)
    wall[y0 - frame:y0 + h + frame, x0 - frame:x0 + w + frame] = rng.uniform(150, 250, 3)
    wall[y0:y0 + h, x0:x0 + w] = glass
    bar = int(rng.integers(2, 6))
    if rng.random() < 0.6:  # mullions
        wall[y0:y0 + h, x0 + w // 2 - bar:x0 + w // 2 + bar] = rng.uniform(150, 250, 3)
        wall[y0 + h // 2 - bar:y0 + h // 2 + bar, x0:x0 + w] = rng.uniform(150, 250, 3)
    wall[y0 + h + frame:y0 + h + frame + 6, x0 - 2 * frame:x0 + w + 2 * frame] *= 0.6  # sill shadow
    return _mip(np.clip(wall, 0, 255).astype(np.uint8), rng.uniform(2.5, 4.5))


def ground_texture(rng: np.random.Generator, grey: float, metres: float) -> Texture:
    """Asphalt or paving: a desaturated, darkened photo crop (gravel-like detail) around grey level ``grey``."""
    side = 256
    crop = _photo_crop(rng, side).astype(np.float32).mean(2, keepdims=True)
    detail = (crop - crop.mean()) * rng.uniform(0.15, 0.4)
    tile = grey + detail + rng.normal(0, 8, (side, side, 1)) + rng.uniform(-8, 8, 3)
    return _mip(np.clip(np.broadcast_to(tile, (side, side, 3)), 0, 255).astype(np.uint8), metres)


def foliage_texture(rng: np.random.Generator) -> Texture:
    """Leaves: a grey photo crop (fine detail) tinted green to autumn brown."""
    side = 256
    crop = _photo_crop(rng, side).astype(np.float32).mean(2, keepdims=True) / 255.0
    tint = np.array([rng.uniform(40, 140), rng.uniform(90, 170), rng.uniform(20, 80)])
    return _mip(np.clip(crop * tint * 1.6, 0, 255).astype(np.uint8), rng.uniform(1, 3))


def _box(x: tuple[float, float], y: tuple[float, float], z: tuple[float, float], texture: int,
         rng: np.random.Generator, top: bool = True) -> list[Rect]:
    """The faces of an axis-aligned box (its bottom face left out) with random shading."""
    (x0, x1), (y0, y1), (z0, z1) = x, y, z
    shade = rng.uniform(0.55, 1.0, 5)
    rects = [Rect(0, x0, (y0, z0), (y1, z1), texture, shade[0]), Rect(0, x1, (y0, z0), (y1, z1), texture, shade[1]),
             Rect(1, y0, (x0, z0), (x1, z1), texture, shade[2]), Rect(1, y1, (x0, z0), (x1, z1), texture, shade[3])]
    if top:
        rects.append(Rect(2, z1, (x0, y0), (x1, y1), texture, shade[4]))
    return rects


def make_street(rng: np.random.Generator) -> Scene:
    """A random street (module docstring): 120-250 m long, road half-width 3-7 m, pavements 1.5-4 m.

    ``Scene.size`` is the street's extent (length, width between the facade lines, tallest building); ``boxes``
    hold the footprints the vehicle must keep clear of (cars, poles, trees, pavements); ``target`` is unused
    ``(0, 0)``; ``sky`` is the seed of the sky's colours.
    """
    length, road, pavement = rng.uniform(120, 250), rng.uniform(3.0, 7.0), rng.uniform(1.5, 4.0)
    half = length / 2
    procedural = make_textures(int(rng.integers(2**31)))
    textures = [ground_texture(rng, rng.uniform(50, 110), rng.uniform(1, 3)),  # road
                ground_texture(rng, rng.uniform(100, 170), rng.uniform(1, 3)),  # pavement
                _make_texture(rng, procedural)]  # verges, ground beyond the street
    rects = [Rect(2, 0.0, (-half, -road), (half, road), 0, rng.uniform(0.8, 1.0))]
    boxes: list[tuple[tuple[float, float], tuple[float, float], float]] = []
    far = half + GROUND_MARGIN
    tallest = 0.0
    for sign in (-1.0, 1.0):
        kerb = 0.12
        y_in, y_out = sign * road, sign * (road + pavement)
        lo, hi = sorted((y_in, y_out))
        rects.append(Rect(2, kerb, (-half, lo), (half, hi), 1, rng.uniform(0.8, 1.0)))  # pavement top
        rects.append(Rect(1, y_in, (-half, 0.0), (half, kerb), 1, 0.7))  # kerb face
        boxes.append(((-half, half), (lo, hi), kerb))
        facade_line = road + pavement
        x = -half - rng.uniform(0, 10)
        while x < half:
            width = rng.uniform(8, 30)
            if rng.random() < 0.15:  # a gap: a courtyard, a side street
                x += rng.uniform(4, 15)
                continue
            setback, depth, height = rng.uniform(0, 3), rng.uniform(8, 15), rng.uniform(5, 25)
            y0, y1 = sorted((sign * (facade_line + setback), sign * (facade_line + setback + depth)))
            textures.append(facade_texture(rng))
            rects += _box((x, x + width), (y0, y1), (0.0, height), len(textures) - 1, rng)
            tallest = max(tallest, height)
            x += width + rng.uniform(0, 2)
        for _ in range(int(rng.integers(0, 12)) if road >= 5.0 else 0):  # parked cars along a wide road's kerb
            cx, lane = rng.uniform(-half, half), sign * (road - rng.uniform(1.0, 1.3))
            car_len, car_w, car_h = rng.uniform(3.8, 4.8), rng.uniform(1.6, 1.9), rng.uniform(1.3, 1.7)
            textures.append(_make_texture(rng, procedural))
            x0, y0 = cx - car_len / 2, lane - car_w / 2
            rects += _box((x0, x0 + car_len), (y0, y0 + car_w), (0.0, car_h), len(textures) - 1, rng)
            boxes.append(((x0, x0 + car_len), (y0, y0 + car_w), car_h))
        for _ in range(int(rng.integers(2, 10))):  # poles and tree trunks on the pavement
            px, py = rng.uniform(-half, half), sign * (road + rng.uniform(0.4, 1.0))
            r, h = rng.uniform(0.08, 0.3), rng.uniform(3, 8)
            textures.append(_make_texture(rng, procedural))
            rects += _box((px - r, px + r), (py - r, py + r), (kerb, h), len(textures) - 1, rng)
            boxes.append(((px - r, px + r), (py - r, py + r), h))
            if rng.random() < 0.5:  # a crown of leaves
                c = rng.uniform(1.0, 2.5)
                textures.append(foliage_texture(rng))
                rects += _box((px - c, px + c), (py - c, py + c), (h, h + 2 * c), len(textures) - 1, rng)
    if rng.random() < 0.5:  # a building closing the street's far end
        textures.append(facade_texture(rng))
        rects += _box((half + 5, half + 20), (-road - pavement - 20, road + pavement + 20), (0, rng.uniform(8, 30)),
                      len(textures) - 1, rng)
    # ground beyond the street (under and around the buildings): last, so the road and pavements win their ties
    rects.append(Rect(2, -0.01, (-far, -far), (far, far), 2, rng.uniform(0.6, 0.9)))
    size = (length, 2 * (road + pavement), max(tallest, 5.0))
    return Scene(size, tuple(boxes), tuple(rects), tuple(textures), (0.0, 0.0), sky=int(rng.integers(2**31)))


def road_half_width(scene: Scene) -> float:
    """The road's half-width (metres) of a :func:`make_street` scene: its first rect is the road."""
    return float(scene.rects[0].hi[1])


def make_street_intrinsics(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """``[3, 3]`` pinhole K with ``fx = fy`` in 0.45-1.1 W (about 49-96 deg of horizontal view; KITTI's is 0.58 W),
    the principal point within 3 % of the image centre."""
    f = width * rng.uniform(0.45, 1.1)
    cx = (width - 1) / 2 + width * rng.uniform(-0.03, 0.03)
    cy = (height - 1) / 2 + height * rng.uniform(-0.03, 0.03)
    return np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
