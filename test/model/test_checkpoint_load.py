"""Checkpoint contracts: exact official layout, mickey.ckpt + DINOv2 file, own checkpoints, strict and safe."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mickey_ros.errors import CheckpointError, MissingWeightsError
from mickey_ros.model import build_model, load_checkpoint, save_checkpoint

KEYS_FILE = Path(__file__).resolve().parents[1] / "data" / "official_state_dict_keys.txt"
PREFIX = "compute_matches."


def _official_keys() -> dict[str, list[int]]:
    rows = {}
    for line in KEYS_FILE.read_text().splitlines():
        if line.strip():
            key, shape = line.split("\t")
            rows[key] = json.loads(shape)
    return rows


@pytest.fixture(scope="module")
def official_net():
    torch.manual_seed(0)
    return build_model("official")


def test_official_key_list_equals_the_model_state_dict(official_net):
    official = _official_keys()
    assert len(official) == 678
    assert sum(".dinov2_vitl14." in k for k in official) == 343
    ours = {PREFIX + k: list(v.shape) for k, v in official_net.state_dict().items()}
    assert ours == official


def test_official_layout_state_dict_loads_strictly(official_net):
    official = _official_keys()
    g = torch.Generator().manual_seed(1)
    state = {k.removeprefix(PREFIX): torch.randn(shape, generator=g) if shape else torch.tensor(0.5)
             for k, shape in official.items()}
    for k in state:
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(7, dtype=torch.long)
    net = build_model("official")
    net.load_state_dict(state, strict=True)
    assert torch.equal(net.state_dict()["extractor.det_head.eps"], torch.tensor(0.5))


def _images(h: int = 56, w: int = 70) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(2))


def _split_official_form(net, tmp_path: Path) -> tuple[Path, Path]:
    """Write ``net`` as the official release would: mickey.ckpt without backbone + the DINOv2 file."""
    arch = net.config.backbone
    state = net.state_dict()
    heads = {PREFIX + k: v for k, v in state.items() if f".{arch}." not in f".{k}"}
    backbone = {k.removeprefix(f"extractor.{arch}."): v for k, v in state.items() if k.startswith(f"extractor.{arch}.")}
    assert backbone and len(heads) + len(backbone) == len(state)
    ckpt, bb = tmp_path / "mickey.ckpt", tmp_path / f"{arch}_pretrain.pth"
    torch.save({"state_dict": heads, "epoch": 3, "global_step": 10, "pytorch-lightning_version": "2.0.6"}, ckpt)
    torch.save(backbone, bb)
    return ckpt, bb


def _same_outputs(a, b, images: torch.Tensor) -> None:
    with torch.no_grad():
        oa, ob = a(images), b(images)
    for name in ("kpts", "depth", "scores", "descriptors"):
        torch.testing.assert_close(getattr(oa, name), getattr(ob, name), rtol=0, atol=0)
    torch.testing.assert_close(a.match(oa, oa), b.match(ob, ob), rtol=0, atol=0)


def test_mickey_ckpt_form_plus_backbone_file_loads(tmp_path):
    torch.manual_seed(3)
    src = build_model("vits14").eval()
    ckpt, bb = _split_official_form(src, tmp_path)
    net = load_checkpoint(ckpt, backbone_weights=bb)
    assert net.config.backbone == "dinov2_vits14"  # inferred from the backbone file
    assert not net.training
    _same_outputs(src, net, _images())


@pytest.mark.slow
def test_official_vitl_mickey_ckpt_loads(official_net, tmp_path):
    ckpt, bb = _split_official_form(official_net, tmp_path)
    net = load_checkpoint(ckpt, backbone_weights=bb)
    assert net.config == official_net.config
    _same_outputs(official_net.eval(), net, _images(42, 56))


def test_bare_official_layout_with_and_without_prefix(tmp_path):
    torch.manual_seed(4)
    src = build_model("vits14").eval()
    for name, prefix in (("bare.pth", ""), ("prefixed.pth", PREFIX)):
        path = tmp_path / name
        torch.save({prefix + k: v for k, v in src.state_dict().items()}, path)
        _same_outputs(src, load_checkpoint(path), _images())


def test_own_checkpoint_round_trip(tmp_path):
    torch.manual_seed(5)
    src = build_model("tiny").eval()
    path = save_checkpoint(src, tmp_path / "tiny.ckpt", step=5)
    net = load_checkpoint(path)
    assert net.config == src.config
    _same_outputs(src, net, _images())
    assert torch.load(path, weights_only=True)["step"] == 5


def test_strict_errors_list_missing_and_unexpected_prefixes(tmp_path):
    torch.manual_seed(6)
    state = build_model("vits14").state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("extractor.det_head.resblock1.")}
    state["extractor.foo.bar.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"missing .*extractor\.det_head\.resblock1.*unexpected .*extractor\.foo") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_shape_mismatch_is_an_error(tmp_path):
    torch.manual_seed(7)
    state = build_model("vits14").state_dict()
    state["matcher.matching_mat.dustbin_score"] = torch.zeros(3)
    path = tmp_path / "shape.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"checkpoint .*shape.pth"):
        load_checkpoint(path)


def test_missing_files_and_corrupt_files(tmp_path):
    with pytest.raises(MissingWeightsError, match=r"checkpoint .*absent\.ckpt: file not found"):
        load_checkpoint(tmp_path / "absent.ckpt")
    torch.manual_seed(8)
    ckpt, _ = _split_official_form(build_model("vits14"), tmp_path)
    with pytest.raises(MissingWeightsError, match=r"holds no backbone .*dinov2_vits14_pretrain\.pth"):
        load_checkpoint(ckpt)
    with pytest.raises(MissingWeightsError, match=r"absent\.pth: file not found.*dl\.fbaipublicfiles\.com/dinov2"):
        load_checkpoint(ckpt, backbone_weights=tmp_path / "absent.pth")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CheckpointError, match=r"checkpoint .*corrupt\.ckpt: not a readable PyTorch checkpoint"):
        load_checkpoint(corrupt)
    wrong_bb = tmp_path / "wrong_backbone.pth"
    torch.save({"not_a_vit.weight": torch.zeros(2)}, wrong_bb)
    with pytest.raises(CheckpointError, match=r"backbone weights"):
        load_checkpoint(ckpt, backbone_weights=wrong_bb)


class _Payload:
    """Pickles as a call that would create a marker file if it were ever executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_checkpoint_cannot_run_code(tmp_path):
    torch.manual_seed(9)
    src = build_model("tiny").eval()
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": src.state_dict(), "hyper_parameters": _Payload(marker)}, path)
    # A Lightning-style file whose pickle holds foreign objects: the weights-only load refuses, the restricted
    # fallback keeps only 'state_dict' and never calls the payload.
    net = load_checkpoint(path)
    assert not marker.exists()
    _same_outputs(src, net, _images())
    evil_only = tmp_path / "evil_only.ckpt"
    torch.save({"hyper_parameters": _Payload(marker)}, evil_only)
    with pytest.raises(CheckpointError, match=r"not loaded for safety and no 'state_dict'"):
        load_checkpoint(evil_only)
    assert not marker.exists()
