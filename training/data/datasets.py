"""Torch datasets of image pairs with metric relative poses: rosbag2 recordings and the Map-free layout.

Both return the same item (the official loader's keys, ``shared/reference/official_mickey.md`` §10):

* ``image0``, ``image1``: ``[3, H, W]`` float32 RGB in [0, 1] (no normalisation), resized to ``resize``
  (``(W, H)``, bilinear) when given, then cropped top-left to multiples of 14.
* ``K_color0``, ``K_color1``: ``[3, 3]`` float32 intrinsics of the returned image (half-pixel rescale
  of :func:`mickey_ros.geometry.camera.rescale_intrinsics`; the top-left crop leaves K unchanged).
* ``Kori_color0``, ``Kori_color1``: ``[3, 3]`` float32 intrinsics of the original image.
* ``T_0to1``: ``[4, 4]`` float32, camera-0 points into camera 1 (metres); NaN where poses are unknown
  (Map-free test split).
* ``pair_id`` (int), ``pair_names`` (two strings), ``scene_id`` (str: the place / Map-free scene).
* bags with ``depth_topic`` only: ``depth0``, ``depth1``: ``[H, W]`` float32 metres along the optical axis of the
  returned image (nearest-neighbour resize, same crop), NaN where unknown. Registered depth only: the depth
  image has the colour image's size and header stamp (32FC1 metres or 16UC1 millimetres, 0 = unknown).

Images are decoded in ``__getitem__`` (DataLoader workers). Bag readers are opened lazily per process and
kept in a small per-dataset cache; the dataset pickles without them.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from mickey_ros.errors import DatasetError, InputError, MickeyError
from mickey_ros.geometry.camera import crop_to_multiple, rescale_intrinsics
from mickey_ros.mapfree import MapFreeFrame, MapFreeScene, evaluation_pairs, list_scenes, read_scene, relative_pose
from mickey_ros.ros.convert import message_to_rgb
from training.data.bag_index import BagIndex, Frame, Pair, open_bag, topic_connections

MAX_OPEN_BAGS = 4  # open readers kept per worker process
DEPTH_WINDOW_NS = 100_000_000  # depth messages are looked for within +-0.1 s (bag time) of their colour image


def decode_depth(msg: Any, where: str) -> np.ndarray:
    """sensor_msgs/Image 32FC1 (metres) or 16UC1 (millimetres) -> float32 ``[H, W]`` metres, NaN = unknown.

    Raises:
        DatasetError: another encoding, or a data size that does not fit ``height x step``.
    """
    encoding = str(msg.encoding).lower()
    kinds = {"32fc1": ("f4", 1.0), "16uc1": ("u2", 1e-3), "mono16": ("u2", 1e-3)}
    if encoding not in kinds:
        raise DatasetError(f"{where}: expected a depth image with encoding 32FC1 (metres) or 16UC1 (millimetres), "
                           f"got {msg.encoding!r}")
    kind, scale = kinds[encoding]
    itemsize = int(kind[1])
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if step < w * itemsize or data.size < h * step:
        raise DatasetError(f"{where}: depth data of {data.size} bytes does not fit {w}x{h} with step {step}")
    dtype = np.dtype(kind).newbyteorder(">" if msg.is_bigendian else "<")
    rows = data[: h * step].reshape(h, step)[:, : w * itemsize]
    depth = rows.copy().view(dtype).reshape(h, w).astype(np.float32) * np.float32(scale)
    depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
    return depth


def prepare_depth(depth: np.ndarray, resize: tuple[int, int] | None) -> torch.Tensor:
    """Depth ``[H, W]`` -> ``[H', W']`` float32 as :func:`prepare_view` does to the image (nearest resize, crop)."""
    height, width = depth.shape
    if resize is not None and (int(resize[0]), int(resize[1])) != (width, height):
        depth = cv2.resize(depth, (int(resize[0]), int(resize[1])), interpolation=cv2.INTER_NEAREST)
        height, width = depth.shape
    crop_h, crop_w = crop_to_multiple(height, width)
    return torch.from_numpy(np.array(depth[:crop_h, :crop_w], dtype=np.float32, copy=True))


def prepare_view(rgb: np.ndarray, K: np.ndarray, resize: tuple[int, int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``[H, W, 3]`` RGB and its K -> (``[3, H', W']`` float32 in [0, 1], ``[3, 3]`` float32 K').

    Resizes to ``resize = (W, H)`` (bilinear, K rescaled with the half-pixel convention) when given and
    different from the image size, then crops top-left to multiples of 14 (K unchanged).
    """
    K = np.asarray(K, dtype=np.float64)
    height, width = rgb.shape[:2]
    if resize is not None and (int(resize[0]), int(resize[1])) != (width, height):
        new_w, new_h = int(resize[0]), int(resize[1])
        rgb = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        K = rescale_intrinsics(K, new_w / width, new_h / height)
        height, width = new_h, new_w
    crop_h, crop_w = crop_to_multiple(height, width)
    if crop_h == 0 or crop_w == 0:
        raise InputError(f"image: {width}x{height} is smaller than one 14x14 patch after resizing")
    image = torch.from_numpy(np.array(rgb[:crop_h, :crop_w], copy=True)).permute(2, 0, 1).float() / 255.0
    return image, torch.from_numpy(K).float()


def _check_resize(resize: Sequence[int] | None) -> tuple[int, int] | None:
    if resize is None:
        return None
    if len(resize) != 2 or min(int(v) for v in resize) < 14:
        raise InputError(f"resize: expected (W, H) of at least 14 pixels each, got {tuple(resize)}")
    return int(resize[0]), int(resize[1])


class _PairDataset(Dataset):
    """Shared item assembly; subclasses provide ``__len__``, ``_views`` and ``scene_ids``."""

    resize: tuple[int, int] | None
    scene_ids: list[str]  # per pair, for scene-balanced sampling

    def _views(self, idx: int) -> tuple[tuple[np.ndarray, np.ndarray, str], tuple[np.ndarray, np.ndarray, str],
                                        np.ndarray]:
        """``((rgb0, K0, name0), (rgb1, K1, name1), T_0to1)`` of pair ``idx``."""
        raise NotImplementedError

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if not 0 <= idx < len(self):
            raise IndexError(f"pair index {idx} out of range for {len(self)} pairs")
        (rgb0, K0, name0), (rgb1, K1, name1), T_0to1 = self._views(idx)
        image0, K_color0 = prepare_view(rgb0, K0, self.resize)
        image1, K_color1 = prepare_view(rgb1, K1, self.resize)
        return {
            "image0": image0, "image1": image1, "K_color0": K_color0, "K_color1": K_color1,
            "Kori_color0": torch.from_numpy(np.asarray(K0, dtype=np.float32)),
            "Kori_color1": torch.from_numpy(np.asarray(K1, dtype=np.float32)),
            "T_0to1": torch.from_numpy(np.asarray(T_0to1, dtype=np.float32)),
            "pair_id": idx, "pair_names": (name0, name1), "scene_id": self.scene_ids[idx],
        }


# -- rosbag2 --------------------------------------------------------------------------------------------------
class BagPairDataset(_PairDataset):
    """Pairs of an indexed set of bags (:func:`~training.data.bag_index.index_bags`,
    :func:`~training.data.bag_index.make_pairs`); ``scene_id`` is the place, names ``<recording>@<stamp_ns>``.

    Args:
        index: the frames.
        pairs: pairs of frame indices.
        resize: optional ``(W, H)``.
    """

    def __init__(self, index: BagIndex, pairs: Sequence[Pair], resize: Sequence[int] | None = None,
                 depth_topic: str | None = None) -> None:
        self.index, self.pairs = index, list(pairs)
        self.depth_topic = depth_topic or None
        if not self.pairs:
            raise DatasetError("BagPairDataset: no pairs")
        self.resize = _check_resize(resize)
        self.scene_ids = [p.place for p in self.pairs]
        self._readers: OrderedDict[str, Any] = OrderedDict()
        self._pid = os.getpid()
        self._inherited: list[Any] = []

    def __len__(self) -> int:
        return len(self.pairs)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_readers"], state["_inherited"] = OrderedDict(), []
        return state

    def close(self) -> None:
        """Close the bag readers this process opened (they reopen on the next read)."""
        if self._pid == os.getpid():
            while self._readers:
                self._readers.popitem()[1].close()

    def _reader(self, bag: str) -> Any:
        if self._pid != os.getpid():  # forked worker: never touch the parent's handles (sqlite3 forbids it)
            self._inherited.append(self._readers)
            self._readers, self._pid = OrderedDict(), os.getpid()
        if bag in self._readers:
            self._readers.move_to_end(bag)
            return self._readers[bag]
        reader = open_bag(bag)
        self._readers[bag] = reader
        if len(self._readers) > MAX_OPEN_BAGS:
            self._readers.popitem(last=False)[1].close()
        return reader

    def read_rgb(self, frame: Frame) -> np.ndarray:
        """Decode one frame's image (uint8 ``[H, W, 3]`` RGB) with a time-window read of its bag.

        Raises:
            DatasetError: the message is gone, undecodable, or not of the indexed size.
        """
        reader = self._reader(frame.bag)
        where = f"bag {frame.bag} {frame.topic} at {frame.log_time_ns} ns"
        conns = topic_connections(reader, Path(frame.bag), frame.topic, "image")
        msgs = reader.messages(connections=conns, start=frame.log_time_ns, stop=frame.log_time_ns + 1)
        try:
            for k, (conn, _, raw) in enumerate(msgs):
                if k == frame.ordinal:
                    rgb = message_to_rgb(reader.deserialize(raw, conn.msgtype), where)
                    break
            else:
                raise DatasetError(f"{where}: message not found; the bag changed since it was indexed")
        except DatasetError:
            raise
        except MickeyError as err:
            raise DatasetError(str(err)) from err
        except Exception as err:  # noqa: BLE001 - corrupt chunk / undecodable message
            raise DatasetError(f"{where}: cannot read the image: {err}") from err
        finally:
            msgs.close()
        if rgb.shape[:2] != (frame.height, frame.width):
            raise DatasetError(f"{where}: expected a {frame.width}x{frame.height} image as in its CameraInfo, "
                               f"got {rgb.shape[1]}x{rgb.shape[0]}")
        return rgb

    def read_depth(self, frame: Frame) -> np.ndarray:
        """The registered depth image (float32 ``[H, W]`` metres) sharing ``frame``'s header stamp.

        Raises:
            DatasetError: no depth message with that stamp near the frame, wrong encoding or size.
        """
        assert self.depth_topic is not None
        reader = self._reader(frame.bag)
        where = f"bag {frame.bag} {self.depth_topic} at stamp {frame.stamp_ns} ns"
        conns = topic_connections(reader, Path(frame.bag), self.depth_topic, "depth")
        msgs = reader.messages(connections=conns, start=frame.log_time_ns - DEPTH_WINDOW_NS,
                               stop=frame.log_time_ns + DEPTH_WINDOW_NS + 1)
        depth = None
        try:
            for conn, log_time, raw in msgs:
                msg = reader.deserialize(raw, conn.msgtype)
                stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
                if (stamp or log_time) == frame.stamp_ns:
                    depth = decode_depth(msg, where)
                    break
        except DatasetError:
            raise
        except Exception as err:  # noqa: BLE001 - corrupt chunk / undecodable message
            raise DatasetError(f"{where}: cannot read the depth image: {err}") from err
        finally:
            msgs.close()
        if depth is None:
            raise DatasetError(f"{where}: no depth image with the colour image's stamp within 0.1 s (data.depth_topic "
                               "needs registered depth, stamped like the colour images)")
        if depth.shape != (frame.height, frame.width):
            raise DatasetError(f"{where}: expected registered depth of the colour image's size {frame.width}x"
                               f"{frame.height}, got {depth.shape[1]}x{depth.shape[0]}")
        return depth

    def __getitem__(self, idx: int) -> dict[str, Any]:
        item = super().__getitem__(idx)
        if self.depth_topic is not None:
            pair = self.pairs[idx]
            for k, frame_index in enumerate((pair.frame0, pair.frame1)):
                item[f"depth{k}"] = prepare_depth(self.read_depth(self.index.frames[frame_index]), self.resize)
        return item

    def _views(self, idx: int):
        pair = self.pairs[idx]
        f0, f1 = self.index.frames[pair.frame0], self.index.frames[pair.frame1]
        return ((self.read_rgb(f0), f0.K, f0.name), (self.read_rgb(f1), f1.K, f1.name),
                self.index.T_0to1(pair.frame0, pair.frame1))


# -- Map-free -------------------------------------------------------------------------------------------------
def _overlap_pairs(scene: MapFreeScene, lo: float, hi: float) -> list[tuple[MapFreeFrame, MapFreeFrame]] | None:
    """Pairs of ``overlaps.npz`` with overlap strictly inside (lo, hi); None without the file."""
    path = scene.root / "overlaps.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            idxs, overlaps = np.asarray(data["idxs"]), np.asarray(data["overlaps"]).reshape(-1)
    except (OSError, ValueError, KeyError) as err:
        raise DatasetError(f"{path}: expected an npz with idxs (N, 4) and overlaps (N): {err}") from err
    if idxs.ndim != 2 or idxs.shape[1] != 4 or len(idxs) != len(overlaps):
        raise DatasetError(f"{path}: expected idxs (N, 4) and overlaps (N), got {idxs.shape} and {overlaps.shape}")
    pairs = []
    for (sa, ia, sb, ib) in idxs[(overlaps > lo) & (overlaps < hi)].astype(np.int64):
        names = f"seq{sa}/frame_{ia:05d}.jpg", f"seq{sb}/frame_{ib:05d}.jpg"
        missing = [n for n in names if n not in scene.frames]
        if missing:
            raise DatasetError(f"{path}: pair {names[0]} {names[1]} names {missing[0]}, which poses.txt lacks")
        pairs.append((scene.frames[names[0]], scene.frames[names[1]]))
    return pairs


class MapFreePairDataset(_PairDataset):
    """Pairs of a Map-free split (``<data_root>/<split>/<scene>/``).

    Args:
        data_root: the Map-free root.
        split: ``train``, ``val`` or ``test``.
        resize: optional ``(W, H)``.
        pairs: ``"overlap"``: ``overlaps.npz`` pairs with overlap strictly inside ``(min_overlap,
            max_overlap)`` (scenes without the file fall back to evaluation pairs); ``"eval"``:
            ``seq0/frame_00000`` against every ``sample_factor``-th ``seq1`` frame.
        sample_factor: keep every n-th pair; None = 1 for overlap pairs, 5 for evaluation pairs.
        scenes: optional subset of scene names.

    Raises:
        DatasetError: missing/malformed files (via :mod:`mickey_ros.mapfree`), unreadable images, or no pairs.
    """

    def __init__(self, data_root: str | Path, split: str, resize: Sequence[int] | None = None,
                 pairs: str = "overlap", min_overlap: float = 0.0, max_overlap: float = 1.0,
                 sample_factor: int | None = None, scenes: Sequence[str] | None = None) -> None:
        if pairs not in ("overlap", "eval"):
            raise InputError(f"pairs: expected 'overlap' or 'eval', got {pairs!r}")
        if sample_factor is not None and sample_factor < 1:
            raise InputError(f"sample_factor: expected an integer >= 1, got {sample_factor}")
        self.resize = _check_resize(resize)
        self.items: list[tuple[MapFreeScene, MapFreeFrame, MapFreeFrame]] = []
        for scene_dir in list_scenes(Path(data_root), split):
            if scenes is not None and scene_dir.name not in scenes:
                continue
            scene = read_scene(scene_dir)
            found = _overlap_pairs(scene, min_overlap, max_overlap) if pairs == "overlap" else None
            if found is not None:
                found = found[:: sample_factor or 1]
            else:
                found = evaluation_pairs(scene, sample_factor or 5)
            self.items += [(scene, f0, f1) for f0, f1 in found]
        if not self.items:
            raise DatasetError(f"split {split!r} in {data_root}: no pairs (pairs={pairs!r}, overlap inside "
                               f"({min_overlap:g}, {max_overlap:g}))")
        self.scene_ids = [scene.name for scene, _, _ in self.items]

    def __len__(self) -> int:
        return len(self.items)

    @staticmethod
    def read_rgb(scene: MapFreeScene, frame: MapFreeFrame) -> np.ndarray:
        """uint8 ``[H, W, 3]`` RGB of a frame; DatasetError if missing, unreadable or not W x H."""
        path = scene.image_path(frame)
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DatasetError(f"image {path}: missing or unreadable")
        if bgr.shape[:2] != (frame.height, frame.width):
            raise DatasetError(f"image {path}: expected {frame.width}x{frame.height} as in intrinsics.txt, "
                               f"got {bgr.shape[1]}x{bgr.shape[0]}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _views(self, idx: int):
        scene, f0, f1 = self.items[idx]
        if f0.T_w2c is None or f1.T_w2c is None:
            T_0to1 = np.full((4, 4), np.nan)
        else:
            T_0to1 = relative_pose(f0.T_w2c, f1.T_w2c)
        return ((self.read_rgb(scene, f0), f0.K, f0.path), (self.read_rgb(scene, f1), f1.K, f1.path), T_0to1)


# -- sampling -------------------------------------------------------------------------------------------------
class SceneBalancedSampler(Sampler[int]):
    """Draws ``n_per_scene`` pairs per scene (with replacement) and shuffles them, like the official
    ``RandomConcatSampler``. Seeded by ``seed`` and the epoch (:meth:`set_epoch`)."""

    def __init__(self, dataset: _PairDataset, n_per_scene: int = 100, seed: int = 0) -> None:
        if n_per_scene < 1:
            raise InputError(f"n_per_scene: expected an integer >= 1, got {n_per_scene}")
        groups: dict[str, list[int]] = {}
        for i, scene in enumerate(dataset.scene_ids):
            groups.setdefault(scene, []).append(i)
        self.groups = [np.asarray(v) for _, v in sorted(groups.items())]
        self.n_per_scene, self.seed, self.epoch = n_per_scene, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_per_scene * len(self.groups)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        draws = np.concatenate([rng.choice(g, size=self.n_per_scene, replace=True) for g in self.groups])
        return iter(rng.permutation(draws).tolist())
