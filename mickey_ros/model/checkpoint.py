"""Loading and saving MicKey weights, safely and strictly.

Accepted files (reference: official_mickey.md §3 and §14):

* the official Lightning ``mickey.ckpt``: ``{"state_dict": {...}}`` with keys prefixed ``compute_matches.``
  and **without** backbone keys, plus ``backbone_weights=`` a DINOv2 release file (keys ``cls_token``,
  ``pos_embed``, ``blocks.{i}...``; its size decides the backbone: ViT-S/B/L 14);
* a bare official-layout state dict (prefix present or not) that includes the backbone;
* this project's own checkpoints (``save_checkpoint``): one self-describing file holding the
  ``ModelConfig``, the state dict and any extra entries (training step, optimiser state ...).

Every file is read with ``torch.load(weights_only=True)``. If that refuses a file because it pickles
foreign Python objects (a Lightning checkpoint may hold config objects in ``hyper_parameters``), a
restricted unpickler is used: it resolves only a vetted allow-list of tensor-rebuild functions and
builtin containers and maps every other global to an inert placeholder, so no code from the file runs;
only the state dict is kept. Keys and shapes must match the model exactly.
"""
from __future__ import annotations

import builtins
import collections
import dataclasses
import logging
import pickle
import re
import types
import zipfile
from pathlib import Path
from typing import Any, Iterable

import torch

from mickey_ros.errors import CheckpointError, InputError, MissingWeightsError, first_line
from mickey_ros.model.mickey import PRESETS, MicKey, ModelConfig, build_model, config_from_dict
from mickey_ros.model.vit import VIT_ARCHS

log = logging.getLogger(__name__)

FORMAT = "mickey_ros"  # value of the "format" entry of this project's checkpoints
FORMAT_VERSION = 1
RESERVED = ("format", "format_version", "preset", "config", "state_dict", "includes_backbone", "input_size")
LIGHTNING_PREFIX = "compute_matches."
DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/{name}/{name}_pretrain.pth"


# -- safe reading ------------------------------------------------------------------------------------
class _Inert:
    """Stand-in for a global the restricted unpickler refuses to import: accepts and ignores everything."""

    origin = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:  # e.g. getattr(cls, "method")(...) chains
        return self

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Iterable[Any]) -> None:
        pass

    def __repr__(self) -> str:
        return f"<not loaded: {self.origin}>"


def _rebuild_from_type(func: Any, new_type: Any, args: tuple, state: Any) -> Any:
    """Safe ``torch._tensor._rebuild_from_type_v2``: rebuild with an allowed ``func``, keep only plain types."""
    result = func(*args)
    if new_type is torch.nn.Parameter and isinstance(result, torch.Tensor):
        return torch.nn.Parameter(result, requires_grad=result.requires_grad)
    return result


_BUILTINS = ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str", "bytes",
             "bytearray", "slice")
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    **{("builtins", name): getattr(builtins, name) for name in _BUILTINS},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allow-listed globals (and torch dtypes); everything else becomes an inert placeholder."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return type(f"Inert_{name}", (_Inert,), {"origin": f"{module}.{name}"})


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


_RESTRICTED_PICKLE = types.ModuleType("mickey_ros_restricted_pickle")
_RESTRICTED_PICKLE.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
_RESTRICTED_PICKLE.load = _restricted_load  # type: ignore[attr-defined]


def _first_line(err: BaseException) -> str:
    """The error's first line, shortened at a word boundary to at most 160 characters."""
    line = first_line(err)
    return line if len(line) <= 160 else line[:157].rsplit(" ", 1)[0] + " ..."


def _unreadable(path: Path, what: str) -> str:
    """``<what> <path>: not a readable PyTorch checkpoint (<why, from the file's first bytes>)``."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as err:
        return f"{what} {path}: cannot read: {err.strerror}"
    if not head:
        why = "the file is empty"
    elif head == b"PK\x03\x04":
        why = ("a zip archive without torch.save contents" if zipfile.is_zipfile(path)
               else "a truncated or damaged zip archive")
    else:
        why = "not written by torch.save, or damaged"
    return f"{what} {path}: not a readable PyTorch checkpoint ({why})"


def read_file(path: str | Path, map_location: str | torch.device = "cpu", what: str = "checkpoint") -> Any:
    """Read a torch file without executing code from it.

    Args:
        path: the file.
        map_location: device for the tensors.
        what: the input's name for messages ("checkpoint", "backbone weights").

    Returns:
        The stored object. If the file needed the restricted unpickler, only its ``state_dict`` (and this
        project's plain metadata entries) are returned, in a dict.

    Raises:
        MissingWeightsError: the file does not exist.
        CheckpointError: unreadable or corrupt, or holds Python objects and no ``state_dict``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"{what} {path}: file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # weights-only refusal (foreign objects) or garbage: try the restricted path
        pass
    except Exception as err:  # noqa: BLE001 - torch raises many types for corrupt files
        raise CheckpointError(_unreadable(path, what)) from err
    try:
        data = torch.load(path, map_location=map_location, weights_only=False, pickle_module=_RESTRICTED_PICKLE)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(_unreadable(path, what)) from err
    if not isinstance(data, dict) or not isinstance(data.get("state_dict"), dict):
        raise CheckpointError(
            f"{what} {path}: holds Python objects that are not loaded for safety and no 'state_dict' entry"
        )
    log.info("%s %s: foreign Python objects ignored, only 'state_dict' loaded", what, path)
    kept = {k: data[k] for k in RESERVED if k in data and _is_plain(data[k])}
    kept["state_dict"] = data["state_dict"]
    return kept


def _is_plain(value: Any) -> bool:
    if isinstance(value, (str, int, float, bool, type(None))):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


# -- strict matching ---------------------------------------------------------------------------------
def _group(keys: Iterable[str], depth: int = 3, limit: int = 8) -> str:
    """``[a.b.c.* (12), foo.* (3)]``: keys grouped by their first ``depth`` components (fewer for short keys)."""
    counts: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        prefix = ".".join(parts[: min(depth, len(parts) - 1)]) + ".*" if len(parts) > 1 else key
        counts[prefix] = counts.get(prefix, 0) + 1
    items = [f"{prefix} ({n})" for prefix, n in counts.items()]
    more = f", ... {len(items) - limit} more groups" if len(items) > limit else ""
    return "[" + ", ".join(items[:limit]) + more + "]"


def mismatch_report(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> str:
    """One-line difference between two state dicts ('' when keys and shapes agree)."""
    missing = [k for k in expected if k not in actual]
    unexpected = [k for k in actual if k not in expected]
    wrong = [k for k in expected if k in actual and tuple(actual[k].shape) != tuple(expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys {_group(missing)}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} keys {_group(unexpected)}")
    if wrong:
        shown = ", ".join(
            f"{k}: file {list(actual[k].shape)} vs model {list(expected[k].shape)}" for k in wrong[:3]
        )
        parts.append(f"{len(wrong)} shape mismatches [{shown}{', ...' if len(wrong) > 3 else ''}]")
    return "; ".join(parts)


def _expected_state(config: ModelConfig) -> dict[str, torch.Tensor]:
    return build_model(config, device="meta").state_dict()


def _check_tensors(state: Any, source: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: expected a state dict (name -> tensor), got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: expected tensors only, got non-tensor entries {_group(map(str, bad))}")
    return state


# -- backbone ----------------------------------------------------------------------------------------
def _arch_of(embed_dim: int, depth: int | None, source: str) -> str:
    for name, cfg in VIT_ARCHS.items():
        if cfg.embed_dim == embed_dim and depth in (None, cfg.depth):
            return name
    sizes = ", ".join(f"{n} ({c.embed_dim}, {c.depth})" for n, c in VIT_ARCHS.items())
    raise CheckpointError(
        f"{source}: unsupported ViT size (embed dim {embed_dim}, depth {depth}); expected one of {sizes}"
    )


def infer_backbone_arch(state: dict[str, torch.Tensor], source: str = "backbone weights") -> str:
    """Backbone name (key of VIT_ARCHS) of a DINOv2-layout state dict, from its width and depth.

    Raises:
        CheckpointError: not a DINOv2-layout ViT, or an unsupported size.
    """
    if "cls_token" not in state or "pos_embed" not in state:
        raise CheckpointError(
            f"{source}: expected a DINOv2 ViT state dict (keys cls_token, pos_embed, patch_embed.proj.weight, "
            f"blocks.N...), got keys {_group(state)}"
        )
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    return _arch_of(int(state["cls_token"].shape[-1]), max(blocks) + 1 if blocks else 0, source)


def _backbone_hint(heads: dict[str, torch.Tensor]) -> str:
    """'the DINOv2 file X_pretrain.pth, published ... at URL' for the backbone width the heads expect."""
    conv = heads.get("extractor.det_head.resblock1.conv1.weight")
    name = "dinov2_vitl14"
    if conv is not None and conv.ndim == 4:
        name = next((n for n, c in VIT_ARCHS.items() if c.embed_dim == conv.shape[1] and "dinov2" in n), name)
    return (f"the DINOv2 file {name}_pretrain.pth, published by facebookresearch/dinov2 at "
            f"{DINOV2_URL.format(name=name)} (never downloaded automatically)")


LAYOUTS = ("a mickey_ros checkpoint (save_checkpoint, training/train.py), or the official mickey.ckpt: a "
           "'state_dict' of extractor.* (backbone optional) and matcher.* weights")


def _check_mickey_layout(data: Any, source: str) -> None:
    """Refuse, with the accepted layouts, a torch file that holds no MicKey weights at all (no ``extractor.*``
    or ``matcher.*`` key, Lightning prefix removed): another model's state dict, a tensor, a plain dict."""
    keys = [str(k).removeprefix(LIGHTNING_PREFIX) for k in data] if isinstance(data, dict) else []
    if any(k.startswith(("extractor.", "matcher.")) for k in keys):
        return
    if isinstance(data, dict):
        held = f"keys {_group(keys)}" if keys else "an empty dict"
        if "cls_token" in keys and "pos_embed" in keys:
            held += "; it looks like DINOv2 backbone weights, which go to backbone_weights= (--backbone-weights)"
    else:
        held = f"a {type(data).__name__}"
    raise CheckpointError(f"{source}: not a MicKey checkpoint (it holds {held}); expected {LAYOUTS}")


def _backbone_in(state: dict[str, torch.Tensor]) -> str | None:
    names = {k.split(".")[1] for k in state if re.fullmatch(r"extractor\.[^.]+\.cls_token", k)}
    if len(names) > 1:
        raise CheckpointError(f"checkpoint: expected one backbone, found {sorted(names)}")
    return names.pop() if names else None


# -- public API --------------------------------------------------------------------------------------
def load_checkpoint(path: str | Path, backbone_weights: str | Path | None = None,
                    map_location: str | torch.device = "cpu") -> MicKey:
    """Build a MicKey from a checkpoint file (official or this project's); strict, safe.

    Args:
        path: ``mickey.ckpt`` (official Lightning file), a bare official-layout state dict, or a file
            written by ``save_checkpoint``.
        backbone_weights: DINOv2 release file (e.g. ``dinov2_vitl14_pretrain.pth``), required when the
            checkpoint holds no backbone (the official ``mickey.ckpt``); it replaces any backbone in the file.
        map_location: device of the returned model.

    Returns:
        ``MicKey`` in eval mode.

    Raises:
        MissingWeightsError: a file does not exist, or the backbone file is needed but not given.
        CheckpointError: unreadable/corrupt file, unsupported layout, missing/unexpected keys or wrong shapes.
    """
    source = f"checkpoint {path}"
    data = read_file(path, map_location, "checkpoint")
    if isinstance(data, dict) and data.get("format") == FORMAT:
        state = _check_tensors(data.get("state_dict"), source)
        try:
            config = config_from_dict(dict(data.get("config") or {}))
        except (InputError, TypeError) as err:
            raise CheckpointError(f"{source}: invalid model config ({_first_line(err)})") from err
        preset = str(data.get("preset", "custom"))
        input_size = _input_size(data.get("input_size"), source)
        provenance = data.get("provenance") if isinstance(data.get("provenance"), dict) else None
    else:
        if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
            data = data["state_dict"]
        _check_mickey_layout(data, source)
        state = _check_tensors(data, source)
        state = {k.removeprefix(LIGHTNING_PREFIX): v for k, v in state.items()}
        config, preset, input_size, provenance = None, None, None, None

    in_file = _backbone_in(state)
    if backbone_weights is not None:
        if not Path(backbone_weights).is_file():
            raise MissingWeightsError(
                f"backbone_weights {backbone_weights}: file not found; expected {_backbone_hint(state)}"
            )
        backbone = _check_tensors(read_file(backbone_weights, map_location, "backbone weights"),
                                  f"backbone weights {backbone_weights}")
        arch = infer_backbone_arch(backbone, f"backbone weights {backbone_weights}")
        if in_file is not None:
            log.info("%s: backbone replaced by %s", source, backbone_weights)
            state = {k: v for k, v in state.items() if not k.startswith(f"extractor.{in_file}.")}
        state.update({f"extractor.{arch}.{k}": v for k, v in backbone.items()})
    elif in_file is None:
        raise MissingWeightsError(
            f"backbone_weights: {source} holds no backbone (official mickey.ckpt layout); pass "
            f"backbone_weights= {_backbone_hint(state)}"
        )
    else:
        arch = in_file
        if arch not in VIT_ARCHS:
            raise CheckpointError(f"{source}: unknown backbone 'extractor.{arch}', expected one of {list(VIT_ARCHS)}")

    if config is None:
        config, preset = _config_for(state, arch)
    elif config.backbone != arch:
        raise CheckpointError(
            f"{source}: backbone {arch} does not fit the stored config (backbone {config.backbone})"
        )
    net = _build_loaded(config, preset or "custom", state, source, map_location)
    net.input_size = input_size
    net.provenance = provenance
    return net


def _input_size(value: Any, source: str) -> tuple[int, int] | None:
    """The stored ``input_size`` entry ``[W, H]`` (pixels) checked, or None when absent."""
    if value is None:
        return None
    try:
        width, height = (int(v) for v in value)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: input_size: expected [W, H] in pixels, got {value!r}") from err
    if width < 1 or height < 1:
        raise CheckpointError(f"{source}: input_size: expected [W, H] in pixels, got {value!r}")
    return width, height


def _config_for(state: dict[str, torch.Tensor], arch: str) -> tuple[ModelConfig, str]:
    """The preset with backbone ``arch`` whose keys and shapes all match ``state`` (else the first one)."""
    candidates = [(name, cfg) for name, cfg in PRESETS.items() if cfg.backbone == arch]
    if not candidates:
        return ModelConfig(backbone=arch), "custom"
    for name, cfg in candidates:
        if not mismatch_report(state, _expected_state(cfg)):
            return cfg, name
    name, cfg = candidates[0]
    return cfg, name


def _build_loaded(config: ModelConfig, preset: str, state: dict[str, torch.Tensor], source: str,
                  map_location: str | torch.device) -> MicKey:
    with torch.device("meta"):
        net = MicKey(config, preset)
    report = mismatch_report(state, net.state_dict())
    if report:
        raise CheckpointError(f"{source}: does not match model '{preset}': {report}")
    device = map_location if isinstance(map_location, (str, torch.device)) else "cpu"
    net = net.to_empty(device=device)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{source}: does not match model '{preset}' ({_first_line(err)})") from err
    return net.eval()


def save_checkpoint(net: MicKey, path: str | Path, *, include_backbone: bool = True, **extra: Any) -> Path:
    """Write a self-describing checkpoint: config, preset, state dict and ``extra`` entries.

    Args:
        net: the model.
        path: output file (parent folders are created).
        include_backbone: False leaves out the backbone (like the official mickey.ckpt); loading then
            needs ``backbone_weights``.
        **extra: further entries (e.g. ``step=...``, ``optimizer=opt.state_dict()``); plain containers,
            numbers, strings and tensors keep the file loadable with ``weights_only=True``.

    Returns:
        The path written.

    Raises:
        InputError: an ``extra`` key collides with a reserved entry.
    """
    clash = sorted(set(extra) & set(RESERVED))
    if clash:
        raise InputError(f"extra: keys {clash} are reserved for the checkpoint layout")
    state = net.state_dict()
    if not include_backbone:
        prefix = f"extractor.{net.config.backbone}."
        state = collections.OrderedDict((k, v) for k, v in state.items() if not k.startswith(prefix))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = dataclasses.asdict(net.config)
    config["blocks_dim"] = list(config["blocks_dim"])
    size = getattr(net, "input_size", None)
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "preset": net.preset, "config": config,
                "includes_backbone": include_backbone, "state_dict": state,
                "input_size": None if size is None else [int(v) for v in size], **extra}, path)
    return path
