"""The MicKey network: DINOv2-compatible ViT backbone, four heads, dual-softmax matcher, checkpoints."""
from mickey_ros.model.checkpoint import load_checkpoint, read_file, save_checkpoint
from mickey_ros.model.default import load_default_network
from mickey_ros.model.mickey import PRESETS, MicKey, MicKeyOutput, ModelConfig, build_model

__all__ = [
    "PRESETS",
    "MicKey",
    "MicKeyOutput",
    "ModelConfig",
    "build_model",
    "load_checkpoint",
    "load_default_network",
    "read_file",
    "save_checkpoint",
]
