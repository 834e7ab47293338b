"""Run an exported MicKey ONNX file (``mickey-ros export-onnx``) with onnxruntime.

``OnnxNetwork(path)`` offers what the Relocalizer needs from a network: ``net(images, focal) -> MicKeyOutput``
(backbone and heads in onnxruntime), ``match`` (the dual-softmax matcher in torch, with the dustbin score and
temperature read from the file's metadata, so the file alone suffices), ``config``, ``preset``, ``input_size``,
``.to()`` and ``.eval()``. ``Relocalizer(None, backend="onnxruntime", onnx_path=...)`` or ``Relocalizer(OnnxNetwork(p))``
runs the whole pipeline from the file. Images must have the export size; the Relocalizer resizes to it (K rescaled).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from mickey_ros.errors import CheckpointError, ImageError, InputError, MissingWeightsError
from mickey_ros.geometry.camera import PATCH_SIZE
from mickey_ros.matching import DualSoftmaxMatcher
from mickey_ros.model.mickey import MicKeyOutput, ModelConfig, config_from_dict
from mickey_ros.onnx_export import FORMAT, OUTPUTS, require

log = logging.getLogger(__name__)


class OnnxNetwork:
    """A MicKey network read from an ONNX file written by :func:`mickey_ros.onnx_export.export_onnx`.

    Args:
        path: the ``.onnx`` file.
        device: where outputs are returned (``"cpu"``, ``"cuda"``); onnxruntime uses its CUDA provider for a CUDA
            device when installed, else the CPU provider.

    Raises:
        DependencyError: onnxruntime is not installed. MissingWeightsError: no such file.
        CheckpointError: not a mickey_ros ONNX file or unreadable.
    """

    backend = "onnxruntime"

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        require("onnxruntime")
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise MissingWeightsError(f"onnx: file not found: {self.path}")
        self._ort = ort
        self.device = torch.device("cpu")
        try:
            self._session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own (untyped) errors
            raise CheckpointError(f"onnx {self.path}: cannot load: {str(err).splitlines()[0]}") from err
        meta = self._session.get_modelmeta().custom_metadata_map
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"onnx {self.path}: not written by mickey-ros export-onnx (no '{FORMAT}' metadata)")
        self.metadata = dict(meta)
        try:
            self.config: ModelConfig = config_from_dict(json.loads(meta["model_config"]))
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"onnx {self.path}: invalid model_config metadata ({err})") from err
        self.preset = meta.get("preset", "custom")
        width, height = (int(v) for v in meta["input_size"].split())
        self.export_size = (width, height)  # (W, H) the file accepts, exactly
        trained = meta.get("trained_input_size", "").split()
        self.input_size = (int(trained[0]), int(trained[1])) if trained else self.export_size
        self.matcher = DualSoftmaxMatcher(float(meta["match_temperature"]))
        with torch.no_grad():
            self.matcher.matching_mat.dustbin_score.fill_(float(meta["dustbin_score"]))
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.dynamic_batch = not isinstance(self._session.get_inputs()[0].shape[0], int)  # else B = 1 only
        self.to(device)

    # -- the nn.Module surface the pipeline uses ---------------------------------------------------
    def to(self, device: str | torch.device) -> OnnxNetwork:
        """Return outputs on ``device``; a CUDA device selects onnxruntime's CUDA provider when available."""
        device = torch.device(device)
        if device.type == "cuda" and device != self.device:
            if "CUDAExecutionProvider" in self._ort.get_available_providers():
                index = device.index or 0
                self._session.set_providers(["CUDAExecutionProvider", "CPUExecutionProvider"],
                                            [{"device_id": index}, {}])
            else:
                log.warning("onnx: onnxruntime has no CUDA provider here; the network runs on the CPU")
        self.device = device
        self.matcher.to(device)
        return self

    def eval(self) -> OnnxNetwork:
        return self

    def __call__(self, images: torch.Tensor, focal: torch.Tensor | None = None) -> MicKeyOutput:
        return self.forward(images, focal)

    def forward(self, images: torch.Tensor, focal: torch.Tensor | None = None) -> MicKeyOutput:
        """Like ``MicKey.forward``: ``[B, 3, H, W]`` float RGB in [0, 1] of the export size (and ``[B]`` fx) ->
        MicKeyOutput on ``self.device``.

        Raises:
            ImageError: wrong shape or size. InputError: ``focal`` missing for a focal-relative network.
        """
        width, height = self.export_size
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != (3, height, width):
            shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ImageError(f"images: this ONNX network takes [B, 3, {height}, {width}] (its export size), "
                             f"got {shape}")
        feeds = {"image": images.detach().float().cpu().numpy()}
        if "focal" in self._inputs:
            if focal is None:
                raise InputError(f"focal: this network's depth is relative to a {self.config.depth_focal_ref:g}-px "
                                 "focal length (depth_focal_ref); pass each image's fx in pixels")
            feeds["focal"] = np.asarray(torch.as_tensor(focal).detach().float().cpu(), dtype=np.float32).reshape(-1)
        values = dict(zip(OUTPUTS, self._session.run(list(OUTPUTS), feeds)))
        out = {k: torch.from_numpy(v).to(self.device) for k, v in values.items()}
        return MicKeyOutput(**out, grid_hw=(height // PATCH_SIZE, width // PATCH_SIZE))

    def match(self, out0: MicKeyOutput, out1: MicKeyOutput) -> torch.Tensor:
        """``[B, N0, N1]`` correspondence probabilities, as ``MicKey.match``."""
        return self.matcher(out0.descriptors, out1.descriptors, out0.scores, out1.scores)
