"""The bundled default network: the ``small`` preset (hybrid conv + ViT backbone, focal-relative depth) trained on
the project's synthetic scenes.

``mickey_ros/data/default_small.pt`` is a self-describing checkpoint written by ``scripts/export_default_model.py``
from a ``training/train.py`` run (staged recipe: ``training/configs/default_small_warmup.yaml`` ->
``default_small_depth.yaml`` -> ``default_small.yaml`` -> ``default_small_focal.yaml`` -> ``default_small_more.yaml``
-> ``default_small_shape.yaml`` (continued to step 7643) -> ``default_small_364.yaml`` (continued to step 3250) ->
``default_small_420.yaml``, step 2118 of the last), weights stored in float16 and loaded into a float32 network. Its
training size, 420 x 322, is in the file: the
Relocalizer brings every image to it by default (the generator's 294 x 224 images are upscaled). It makes the package
work out of the box (``mickey-ros demo``, ``match`` without ``--checkpoint``); for real scenes use the official
weights or your own training.
"""
from __future__ import annotations

from pathlib import Path

from mickey_ros.errors import MissingWeightsError
from mickey_ros.model.checkpoint import load_checkpoint
from mickey_ros.model.mickey import MicKey

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "data" / "default_small.pt"
TRAINED_SIZE = (294, 224)  # (W, H) pixels of the synthetic renders, for an older file without input_size


def load_default_network() -> MicKey:
    """The bundled default network in eval mode, with its training size as ``input_size`` (the Relocalizer brings
    every image to it by default, see ``mickey_ros.pipeline.training_size_target``).

    Raises:
        MissingWeightsError: the file is not installed (e.g. a checkout without it).
    """
    if not DEFAULT_WEIGHTS.exists():
        raise MissingWeightsError(f"default network: {DEFAULT_WEIGHTS} is missing; reinstall mickey_ros or pass "
                                  "--checkpoint")
    from mickey_ros.pipeline import DEFAULT_MIN_CONFIDENCE

    net = load_checkpoint(DEFAULT_WEIGHTS)
    if net.input_size is None:
        net.input_size = TRAINED_SIZE
    net.min_confidence = DEFAULT_MIN_CONFIDENCE  # its out-of-domain threshold, calibrated for this file
    return net


def describe_network(net: MicKey, path: Path = DEFAULT_WEIGHTS) -> str:
    """One line on a loaded network from its file's own metadata: ``<file>: <preset> preset, trained at WxH
    (<the provenance note>)``."""
    size = "size not recorded" if net.input_size is None else f"trained at {net.input_size[0]}x{net.input_size[1]}"
    note = (net.provenance or {}).get("note")
    return f"{path.name}: {net.preset} preset, {size}" + (f" ({note})" if note else "")
