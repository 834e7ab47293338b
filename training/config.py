"""Training configuration: defaults -> YAML file -> ``key=value`` overrides, unknown keys rejected.

The configuration is a nested dict (sections ``model``, ``data``, ``optim``, ``loss``, ``train``). Every key
must exist in :data:`DEFAULTS`; values are type-checked against the default (ints are accepted for floats,
``null`` where the default is ``None`` or a list). The resolved configuration is saved with every run.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mickey_ros.errors import InputError
from training.aux_loss import AuxConfig
from training.loss import LossConfig


class ConfigError(InputError):
    """A configuration file or override does not fit the schema."""


DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {
        "preset": "tiny",  # tiny | vits14 | vitb14 | official (random heads; the backbone from backbone_weights)
        "checkpoint": "",  # start from this checkpoint (mickey_ros or official mickey.ckpt)
        "backbone_weights": "",  # DINOv2 file for official/vit presets (frozen backbone, as the paper)
        "freeze_backbone": None,  # None = the preset's choice (official: frozen; tiny: trainable)
        "cache_features": False,  # cache frozen-backbone features per image (needs a frozen backbone)
        # set the network's depth_focal_ref (pixels; 0 = metric head): e.g. continue a metric-depth checkpoint as a
        # focal-relative one (same weights: depth x fx / ref from then on). None = the checkpoint's / preset's
        "depth_focal_ref": None,
    },
    "data": {
        "kind": "bags",  # bags | mapfree
        "train": [],  # bags: rosbag2 folders, or folders searched for them; mapfree: unused
        "val": [],
        "root": "",  # mapfree: data root with train/ val/ test/
        "image_topic": "/camera/image_raw",
        "info_topic": "/camera/camera_info",
        "depth_topic": "",  # registered depth (32FC1 m / 16UC1 mm) for aux.depth_weight and depth metrics; "" = none
        "pose_source": "tf",  # tf | pose_stamped | odometry
        "pose_topic": "",  # PoseStamped / Odometry topic
        "world_frame": "map",
        "camera_frame": "",  # empty = the image header frame_id
        "min_baseline_m": 0.1,
        "max_baseline_m": 2.0,
        "max_angle_deg": 45.0,
        # other pair limits for some of the folders of data.train / data.val, as written there, e.g. streets:
        # {data/synthetic/streets: {max_baseline_m: 8.0}} (keys: min_baseline_m, max_baseline_m, max_angle_deg)
        "pair_limits": {},
        "within_recording": True,
        "across_recordings": True,
        "max_pairs_per_place": None,
        "pairs_per_scene": 0,  # per epoch, drawn with replacement per scene/place (official: 100); 0 = all pairs once
        "resize": None,  # [W, H] or None (crop to multiples of 14 only)
        "min_overlap": 0.0,  # mapfree: train pairs with overlaps.npz score strictly inside (min, max) (official
        "max_overlap": 1.0,  # curriculum: (0, 1); overlap_score / mickey_sc: (0.4, 0.8)); bags: no overlap score
        "num_workers": 2,
        "cache_dir": "",  # bag index cache; empty = <run_dir>/index_cache
        "augment_flip": 0.0,  # training: probability of mirroring a pair left-right (images, depth, K, pose)
        "augment_color": 0.0,  # training: photometric jitter strength in [0, 1] (training/augment.py)
        "augment_camera": 0.0,  # training: camera effects (grey, vignetting, blur, noise, JPEG) strength in [0, 1]
    },
    "optim": {"lr": 1e-4, "eps": 1e-6, "grad_clip": 5.0},
    "loss": {f.name: f.default for f in dataclasses.fields(LossConfig)},
    "aux": {f.name: f.default for f in dataclasses.fields(AuxConfig)},  # pose-only auxiliary terms (off)
    "train": {
        "run_dir": "runs/mickey",
        "seed": 0,
        "batch_size": 8,
        "epochs": 100,
        "max_steps": 0,  # stop after this many optimiser steps (0 = epochs decide)
        "curriculum": True,
        "topk_init": 30.0,  # % of each batch kept at epoch 0
        "topk_step": 5.0,  # + per epoch
        "topk_max": 80.0,
        "checkpoint_every": 500,  # steps
        "val_every": 1000,  # steps (and at every epoch end); 0 = epoch ends only
        "val_per_epoch": 1,  # validations per epoch, evenly spaced, the last at the epoch end (official: 2)
        "val_max_pairs": 200,
        "log_every": 10,
        "image_every": 500,  # steps between TensorBoard match images (0 = never)
        "device": "auto",  # auto | cpu | cuda | cuda:N (DDP: the local rank's GPU)
        "precision": "auto",  # auto (bf16 autocast on CUDA) | fp32 | bf16 | fp16 (official; with a GradScaler)
        "progress": True,
        "freeze_batchnorm": False,  # BatchNorm layers in eval mode while training (train as the network runs)
        "recalibrate_batchnorm": 0,  # before step 0: re-estimate BatchNorm statistics over this many batches
    },
}


# smallest accepted value of integer keys (checked with the types, before any work starts)
MINIMUMS: dict[str, int] = {
    "train.batch_size": 1, "train.epochs": 1, "train.max_steps": 0, "train.val_per_epoch": 1,
    "train.recalibrate_batchnorm": 0, "train.checkpoint_every": 0, "train.val_every": 0, "train.log_every": 1,
    "data.num_workers": 0,
}

# closed ranges of float keys
FLOAT_RANGES: dict[str, tuple[float, float]] = {"data.augment_flip": (0.0, 1.0), "data.augment_color": (0.0, 1.0),
                                                "data.augment_camera": (0.0, 1.0)}


def _check_minimum(key: str, dotted: str, value: Any) -> None:
    low = MINIMUMS.get(dotted)
    if low is not None and isinstance(value, int) and value < low:
        raise ConfigError(f"{key}: expected an integer >= {low}, got {value!r}")
    bounds = FLOAT_RANGES.get(dotted)
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise ConfigError(f"{key}: expected a number in [{bounds[0]:g}, {bounds[1]:g}], got {value!r}")


def _check_value(key: str, value: Any, default: Any) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" and "1.0e9" as strings
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return value
    if isinstance(default, dict) and not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {value!r}")
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def merge(config: dict, updates: dict, source: str) -> dict:
    """``config`` updated by the nested ``updates``; keys not in the schema raise :class:`ConfigError`."""
    out = copy.deepcopy(config)
    if not isinstance(updates, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(updates).__name__}")
    for section, values in updates.items():
        if section not in DEFAULTS:
            raise ConfigError(f"{source}: unknown section {section!r} (known: {', '.join(DEFAULTS)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping, got {values!r}")
        for key, value in values.items():
            if key not in DEFAULTS[section]:
                raise ConfigError(f"{source}: unknown key {section}.{key} (known: {', '.join(DEFAULTS[section])})")
            out[section][key] = _check_value(f"{source}: {section}.{key}", value, DEFAULTS[section][key])
            _check_minimum(f"{source}: {section}.{key}", f"{section}.{key}", out[section][key])
    return out


def parse_override(text: str) -> dict:
    """``section.key=value`` (value parsed as YAML: numbers, true/false, null, [lists]) -> nested dict."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    dotted, raw = text.split("=", 1)
    parts = dotted.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {text!r}: expected section.key=value, e.g. train.batch_size=4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err.__class__.__name__})") from err
    return {parts[0]: {parts[1]: value}}


def resolve(config_file: str | Path | None = None, overrides: Sequence[str] = ()) -> dict:
    """Defaults, then ``config_file`` (YAML), then each override, all validated."""
    config = copy.deepcopy(DEFAULTS)
    if config_file:
        path = Path(config_file)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except OSError as err:
            raise ConfigError(f"--config {path}: cannot read ({err.strerror})") from err
        except yaml.YAMLError as err:
            raise ConfigError(f"--config {path}: not valid YAML ({err.__class__.__name__})") from err
        config = merge(config, data, str(path))
    for text in overrides:
        config = merge(config, parse_override(text), "override")
    return config


def loss_config(config: dict) -> LossConfig:
    return LossConfig(**config["loss"])


def aux_config(config: dict) -> AuxConfig:
    return AuxConfig(**config["aux"])


def save(config: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
