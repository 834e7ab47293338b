"""Datasets from a training configuration (``data`` section): rosbag2 recordings or the Map-free layout.

Shared by the trainer and ``evaluate.py`` (neither imports the other for it). ``training.trainer`` re-exports
:func:`build_dataset` and :func:`find_bags` under their old names.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from torch.utils.data import Dataset

from mickey_ros.errors import DatasetError, InputError
from training.config import ConfigError
from training.data.pairs import PairConfig


def find_bags(paths: list[str], what: str) -> list[Path]:
    """rosbag2 folders named directly or found (``metadata.yaml``) below the given folders, sorted."""
    bags: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise DatasetError(f"data.{what}: {p} does not exist")
        bags += [p] if (p / "metadata.yaml").exists() else sorted(m.parent for m in p.rglob("metadata.yaml"))
    if not bags:
        raise DatasetError(f"data.{what}: no rosbag2 folder (with metadata.yaml) in {', '.join(paths) or '[]'}")
    return bags


def bag_ids(bags: list[Path]) -> list[tuple[str, str]]:
    """``(place, recording)`` ids of bags laid out as ``.../<place>/<recording>/``, relative to the folder that holds
    all places: ``scene_000``, ``scene_000/rec0`` for one dataset; ``a/scene_000``, ``a/scene_000/rec0`` when
    datasets ``a/`` and ``b/`` (each with its own ``scene_000``) are combined, so their rooms never pair up."""
    parents = [Path(b).resolve().parent for b in bags]
    common = Path(os.path.commonpath([p.parent for p in parents])) if parents else Path()
    return [(p.relative_to(common).as_posix(), (p.relative_to(common) / Path(b).name).as_posix())
            for p, b in zip(parents, bags)]


def _check_overlap_limits(d: dict) -> None:
    lo, hi = d["min_overlap"], d["max_overlap"]
    if not 0.0 <= lo < hi <= 1.0:
        raise InputError(f"data.min_overlap, data.max_overlap: expected 0 <= min < max <= 1, got {lo:g} and {hi:g}")
    if d["kind"] != "mapfree" and (lo, hi) != (0.0, 1.0):
        raise InputError(f"data.min_overlap={lo:g}, data.max_overlap={hi:g}: pair overlap scores exist only for "
                         "data.kind=mapfree (its overlaps.npz); bag pairs are selected by data.min_baseline_m, "
                         "data.max_baseline_m and data.max_angle_deg")


PAIR_LIMIT_KEYS = ("min_baseline_m", "max_baseline_m", "max_angle_deg")


def place_pair_configs(d: dict, split: str, bags_by_folder: dict[str, list[Path]], places: dict[Path, str],
                       base: PairConfig) -> dict[str, PairConfig]:
    """``data.pair_limits`` as place id -> :class:`PairConfig` for the folders of ``data.<split>`` it names.

    Raises:
        ConfigError: a folder that is in neither data.train nor data.val, an unknown key or a value that is not a
            number (one line naming ``data.pair_limits`` and the folder).
    """
    out: dict[str, PairConfig] = {}
    for folder, limits in d["pair_limits"].items():
        where = f"data.pair_limits[{folder!r}]"
        if folder not in d["train"] and folder not in d["val"]:
            raise ConfigError(f"{where}: expected a folder listed in data.train or data.val as written there, got "
                              f"one in neither (data.train: {d['train']}, data.val: {d['val']})")
        if not isinstance(limits, dict) or not limits:
            raise ConfigError(f"{where}: expected a mapping of {', '.join(PAIR_LIMIT_KEYS)}, got {limits!r}")
        for key, value in limits.items():
            if key not in PAIR_LIMIT_KEYS:
                raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(PAIR_LIMIT_KEYS)})")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}.{key}: expected a number, got {value!r}")
        config = replace(base, **{k: float(v) for k, v in limits.items()})
        for bag in bags_by_folder.get(folder, []):
            out[places[bag]] = config
    return out


def build_dataset(cfg: dict, split: str, run_dir: Path) -> Dataset | None:
    """The train or val dataset of the configuration (``None`` for an empty val list).

    Map-free training pairs are the ``overlaps.npz`` pairs with a score strictly inside
    ``(data.min_overlap, data.max_overlap)`` (the official curriculum config: (0, 1); the overlap-score config
    of ``mickey_sc``: (0.4, 0.8)); validation uses the benchmark's evaluation pairs.

    Raises:
        InputError: bad settings, e.g. overlap limits for bag data, which carries no overlap score.
        DatasetError: missing or empty data.
    """
    d = cfg["data"]
    if d["kind"] not in ("bags", "mapfree"):
        raise InputError(f"data.kind: expected bags or mapfree, got {d['kind']!r}")
    _check_overlap_limits(d)
    if d["kind"] == "mapfree":
        from training.data.datasets import MapFreePairDataset

        if not d["root"]:
            raise InputError("data.root: the Map-free data root is required for data.kind=mapfree")
        return MapFreePairDataset(d["root"], split, resize=d["resize"], pairs="overlap" if split == "train" else "eval",
                                  min_overlap=d["min_overlap"], max_overlap=d["max_overlap"])
    if split == "val" and not d["val"]:
        return None
    from training.data.bag_index import BagSource, PoseSource, index_bags
    from training.data.datasets import BagPairDataset
    from training.data.pairs import make_pairs

    pose = PoseSource(kind=d["pose_source"], world_frame=d["world_frame"], camera_frame=d["camera_frame"] or None,
                      topic=d["pose_topic"] or None)
    bags_by_folder = {folder: find_bags([folder], split) for folder in d[split]}
    bags = find_bags(d[split], split)
    ids = bag_ids(bags)
    sources = [BagSource(b, image_topic=d["image_topic"], info_topic=d["info_topic"], pose=pose, place=place,
                         recording=f"{recording}{d['image_topic']}") for b, (place, recording) in zip(bags, ids)]
    index = index_bags(sources, cache_dir=d["cache_dir"] or run_dir / "index_cache")
    base = PairConfig(
        min_baseline_m=d["min_baseline_m"], max_baseline_m=d["max_baseline_m"], max_angle_deg=d["max_angle_deg"],
        within_recording=d["within_recording"], across_recordings=d["across_recordings"],
        max_pairs_per_place=d["max_pairs_per_place"], seed=cfg["train"]["seed"])
    places = {bag: place for bag, (place, _) in zip(bags, ids)}
    pairs = make_pairs(index, base, place_pair_configs(d, split, bags_by_folder, places, base))
    return BagPairDataset(index, pairs, resize=d["resize"], depth_topic=d["depth_topic"] or None)


def describe_dataset(ds: Dataset | None, split: str) -> str:
    """One line on what a split holds, printed before training starts: recordings, places, images and pairs (bags;
    with the baseline and angle range of the pairs), or scenes and pairs (Map-free); ``none`` for no dataset."""
    if ds is None:
        return f"{split}: none"
    index, pairs = getattr(ds, "index", None), getattr(ds, "pairs", None)
    if index is not None and pairs:
        base = [p.baseline_m for p in pairs]
        angle = [p.angle_deg for p in pairs]
        return (f"{split}: {len(index.recordings())} recordings in {len(index.places())} places, {len(index)} images, "
                f"{len(pairs)} pairs (baseline {min(base):.2f}-{max(base):.2f} m, view angle <= {max(angle):.0f} deg)")
    return f"{split}: {len(set(ds.scene_ids))} scenes, {len(ds)} pairs"
