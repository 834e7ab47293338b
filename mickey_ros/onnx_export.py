"""Export the per-image MicKey network (backbone + heads) to ONNX.

Contract of the exported file (names are fixed; DESIGN.md §4):

- input ``image`` ``[B, 3, H, W]`` float32 RGB in [0, 1] (no mean/std normalisation), H and W the export size;
- input ``focal`` ``[B]`` float32, each image's fx in pixels, only for networks with ``config.depth_focal_ref > 0``
  (their depth is ``head output * fx / depth_focal_ref``);
- outputs ``kpts [B, N, 2]`` pixels (x, y), ``depth [B, N]`` metres, ``scores [B, N]``, ``descriptors [B, N, D]``,
  N = (H / 14) (W / 14), row-major over the patch grid;
- ``metadata_props``: see :func:`onnx_metadata` (the matcher's learned dustbin score is stored there, so the file
  alone is enough to run the whole pipeline, see ``mickey_ros.onnx_backend``).

The ViT's positional embedding is bicubically interpolated to the patch grid at run time; the TorchScript exporter
cannot export that interpolation, so the embedding for the export size is computed once by the network's own
``interpolate_pos_encoding`` and baked into the graph (the value is the runtime one, bit for bit). B is 1, or
dynamic with ``dynamic_batch``; H and W are fixed.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import torch
from torch import nn

from mickey_ros import deps
from mickey_ros.errors import InputError
from mickey_ros.geometry.camera import PATCH_SIZE

if TYPE_CHECKING:
    from mickey_ros.model import MicKey
    from mickey_ros.model.vit import VisionTransformer

FORMAT = "mickey_ros.onnx"
FORMAT_VERSION = 1
DEFAULT_OPSET = 17  # LayerNormalization is an ONNX op from 17; supported by onnxruntime and TensorRT >= 8.6
INPUTS = ("image", "focal")
OUTPUTS = ("kpts", "depth", "scores", "descriptors")
INSTALL_HINT = deps.install_hint("onnx")
MIN_SIDE = 3 * PATCH_SIZE


def require(module: str) -> None:
    """Import ``module`` (onnx, onnxruntime) or raise DependencyError with the install line."""
    deps.require(module, "onnx")


def check_export_size(height: int, width: int) -> None:
    """Raise InputError (naming --height / --width) unless both are multiples of 14 and >= 42."""
    for flag, value in (("--height", height), ("--width", width)):
        if value < MIN_SIDE or value % PATCH_SIZE:
            raise InputError(f"{flag}: expected a multiple of {PATCH_SIZE} of at least {MIN_SIDE} pixels, got {value}")


@contextlib.contextmanager
def baked_pos_embed(backbone: VisionTransformer, h: int, w: int) -> Iterator[torch.Tensor]:
    """While active, ``backbone`` uses a constant positional embedding for the ``h x w`` patch grid: the one its
    ``interpolate_pos_encoding`` computes (float32, then cast to the token dtype exactly as at run time)."""
    with torch.no_grad():
        baked = backbone.interpolate_pos_encoding(h, w, torch.float32).detach().clone()

    def constant(rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
        if (rows, cols) != (h, w):
            raise InputError(f"image: the export baked the positional embedding for {h}x{w} patches, got {rows}x{cols}")
        return baked.to(dtype)

    backbone.interpolate_pos_encoding = constant  # instance attribute shadows the method
    try:
        yield baked
    finally:
        del backbone.interpolate_pos_encoding


class _PerImage(nn.Module):
    """``image [B, 3, H, W]`` (and ``focal [B]``) -> kpts, depth, scores, descriptors."""

    def __init__(self, net: MicKey) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, focal: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        out = self.net.forward_heads(self.net.backbone_features(image), focal)
        return out.kpts, out.depth, out.scores, out.descriptors


def onnx_metadata(net: MicKey, height: int, width: int, opset: int, fp16: bool) -> dict[str, str]:
    """The ``metadata_props`` written into the file (all values strings)."""
    from mickey_ros import __version__

    return {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "mickey_ros_version": __version__,
        "opset": str(opset),
        "preset": net.preset,
        "input_size": f"{width} {height}",  # W H of the `image` input
        "trained_input_size": "" if net.input_size is None else f"{net.input_size[0]} {net.input_size[1]}",
        "depth_focal_ref": repr(float(net.config.depth_focal_ref)),
        "model_config": json.dumps(dataclasses.asdict(net.config)),
        "dustbin_score": repr(float(net.matcher.matching_mat.dustbin_score.detach())),  # float32, exact in repr
        "match_temperature": repr(float(net.matcher.matching_mat.temperature)),
        "backbone_dtype": "float16" if fp16 else "float32",
        "inputs": "image [B,3,H,W] float32 RGB in [0,1]" + (
            "; focal [B] float32 fx in pixels" if net.config.depth_focal_ref > 0 else ""),
        "outputs": "kpts [B,N,2]; depth [B,N]; scores [B,N]; descriptors [B,N,D]",
    }


def export_onnx(net: MicKey, path: str | Path, height: int, width: int, *, dynamic_batch: bool = False,
                fp16: bool = False, opset: int = DEFAULT_OPSET) -> Path:
    """Write the per-image network as an ONNX file (contract: module docstring).

    Args:
        net: the network (not modified: the export works on a copy).
        path: the ``.onnx`` file to write.
        height, width: input size H, W in pixels (multiples of 14, >= 42).
        dynamic_batch: batch dimension ``B`` dynamic (else 1).
        fp16: backbone weights and activations in float16 (inputs and outputs stay float32; for GPU runtimes).
        opset: ONNX opset.

    Returns:
        The written path.

    Raises:
        InputError: bad size or output path; DependencyError: onnx is not installed.
    """
    require("onnx")
    import onnx

    check_export_size(height, width)
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"OUT.onnx: folder {path.parent} does not exist")
    net = copy.deepcopy(net).cpu().float().eval()
    if fp16:
        net.backbone.half()
    focal_input = net.config.depth_focal_ref > 0
    batch = 2 if dynamic_batch else 1  # trace with B = 2 so that no size-1 broadcast is baked in
    args: tuple[torch.Tensor, ...] = (torch.rand(batch, 3, height, width),)
    if focal_input:
        args += (torch.full((batch,), float(net.config.depth_focal_ref)),)
    names = list(INPUTS[: len(args)])
    axes = {name: {0: "batch"} for name in (*names, *OUTPUTS)} if dynamic_batch else None
    with baked_pos_embed(net.backbone, height // PATCH_SIZE, width // PATCH_SIZE), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on the (input-independent) argument checks
        torch.onnx.export(_PerImage(net).eval(), args, str(path), input_names=names, output_names=list(OUTPUTS),
                          opset_version=opset, dynamic_axes=axes, dynamo=False, do_constant_folding=True)
    model = onnx.load(str(path))
    _set_output_shapes(model, height // PATCH_SIZE * (width // PATCH_SIZE), net.config.descriptor_dim)
    for key, value in onnx_metadata(net, height, width, opset, fp16).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def _set_output_shapes(model: object, n: int, d: int) -> None:
    """Static N and D on the outputs (the tracer names them symbolically after the dynamic-batch reshapes)."""
    static = {"kpts": (n, 2), "depth": (n,), "scores": (n,), "descriptors": (n, d)}
    for output in model.graph.output:  # type: ignore[attr-defined]
        dims = output.type.tensor_type.shape.dim
        for dim, value in zip(list(dims)[1:], static[output.name]):
            dim.dim_value = value
