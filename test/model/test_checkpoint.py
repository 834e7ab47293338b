"""Checkpoint edge cases that complement test_checkpoint_load.py (which holds the main contracts).

Covered here: code-execution payloads built on builtins (``exec``) in every place a file can hide them,
exact error texts (one line, what was expected), backbone replacement and backbone-size inference against
heads of another width, project checkpoints without backbone, reserved entries.
"""
from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch

from mickey_ros.errors import CheckpointError, InputError, MissingWeightsError
from mickey_ros.model import build_model, load_checkpoint, save_checkpoint

PREFIX = "compute_matches."


class _ExecPayload:
    """Pickles as ``exec("open(marker, 'w').write(...)")``: creates ``marker`` if ever executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(11)
    return build_model("tiny").eval()


@pytest.fixture(scope="module")
def vits():
    torch.manual_seed(12)
    return build_model("vits14").eval()


def _images() -> torch.Tensor:
    return torch.rand(1, 3, 56, 70, generator=torch.Generator().manual_seed(13))


def _assert_same_outputs(a, b) -> None:
    images = _images()
    with torch.no_grad():
        oa, ob = a(images), b(images)
    for name in ("kpts", "depth", "scores", "descriptors"):
        torch.testing.assert_close(getattr(oa, name), getattr(ob, name), rtol=0, atol=0)


def _backbone_of(net) -> dict[str, torch.Tensor]:
    """The backbone in the DINOv2 release layout (no prefix)."""
    prefix = f"extractor.{net.config.backbone}."
    return {k.removeprefix(prefix): v for k, v in net.state_dict().items() if k.startswith(prefix)}


def _heads_of(net) -> dict[str, torch.Tensor]:
    prefix = f"extractor.{net.config.backbone}."
    return {PREFIX + k: v for k, v in net.state_dict().items() if not k.startswith(prefix)}


def _load_error(path: Path, error: type[Exception], match: str, **kwargs) -> str:
    with pytest.raises(error, match=match) as info:
        load_checkpoint(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# -- no code execution ---------------------------------------------------------------------------------
def test_exec_payload_next_to_state_dict_is_ignored_and_weights_load(tiny, tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {PREFIX + k: v for k, v in tiny.state_dict().items()},
                "hyper_parameters": {"cfg": _ExecPayload(marker)}, "epoch": 3}, path)
    net = load_checkpoint(path)
    assert not marker.exists()
    assert net.config == tiny.config
    _assert_same_outputs(tiny, net)


def test_exec_payload_inside_a_state_dict_is_an_error_not_code(tiny, tmp_path):
    marker = tmp_path / "marker.txt"
    state = {**tiny.state_dict(), "extractor.evil": _ExecPayload(marker)}
    nested, bare = tmp_path / "nested.ckpt", tmp_path / "bare.pth"
    torch.save({"state_dict": state}, nested)
    torch.save(state, bare)
    _load_error(nested, CheckpointError, r"nested\.ckpt: expected tensors only, got non-tensor entries \[extractor\.\* \(1\)\]")
    _load_error(bare, CheckpointError, r"bare\.pth: holds Python objects that are not loaded for safety")
    assert not marker.exists()


def test_exec_payload_in_own_checkpoint_extras(tiny, tmp_path):
    marker = tmp_path / "marker.txt"
    path = save_checkpoint(tiny, tmp_path / "own.ckpt", step=5)
    data = torch.load(path, weights_only=True)
    data["optimizer"] = _ExecPayload(marker)  # a foreign extra entry: dropped, weights and config kept
    torch.save(data, path)
    net = load_checkpoint(path)
    assert not marker.exists()
    assert net.config == tiny.config and net.preset == "tiny"
    _assert_same_outputs(tiny, net)
    data["config"] = {"backbone": _ExecPayload(marker)}  # a poisoned config is dropped, never trusted
    torch.save(data, path)
    _load_error(path, CheckpointError, r"own\.ckpt: backbone vit_tiny14 does not fit the stored config")
    assert not marker.exists()


def test_exec_payload_as_backbone_file(vits, tmp_path):
    marker = tmp_path / "marker.txt"
    ckpt, bb = tmp_path / "mickey.ckpt", tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save({"state_dict": _heads_of(vits)}, ckpt)
    torch.save({**_backbone_of(vits), "norm.evil": _ExecPayload(marker)}, bb)
    _load_error(ckpt, CheckpointError, r"backbone weights .*dinov2_vits14_pretrain\.pth: holds Python objects",
                backbone_weights=bb)
    assert not marker.exists()


# -- backbone handling -----------------------------------------------------------------------------------
def test_backbone_file_replaces_the_backbone_in_a_full_file(vits, tmp_path):
    torch.manual_seed(14)
    other = build_model("vits14").eval()
    full, bb = tmp_path / "full.pth", tmp_path / "other_backbone.pth"
    torch.save(vits.state_dict(), full)
    torch.save(_backbone_of(other), bb)
    net = load_checkpoint(full, backbone_weights=bb)
    expected = build_model("vits14").eval()
    expected.load_state_dict({**vits.state_dict(), **{f"extractor.dinov2_vits14.{k}": v
                                                       for k, v in _backbone_of(other).items()}})
    _assert_same_outputs(expected, net)
    assert not torch.equal(net.state_dict()["extractor.dinov2_vits14.cls_token"],
                           vits.state_dict()["extractor.dinov2_vits14.cls_token"])


def test_backbone_size_comes_from_the_file_and_must_fit_the_heads(vits, tmp_path):
    torch.manual_seed(15)
    vitb_backbone = _backbone_of(build_model("vitb14"))
    ckpt, bb = tmp_path / "mickey.ckpt", tmp_path / "dinov2_vitb14_pretrain.pth"
    torch.save({"state_dict": _heads_of(vits)}, ckpt)  # heads for a 384-wide backbone
    torch.save(vitb_backbone, bb)
    message = _load_error(ckpt, CheckpointError, r"does not match model 'vitb14': \d+ shape mismatches \[extractor\.",
                          backbone_weights=bb)
    assert "file [512, 384, 3, 3] vs model [512, 768, 3, 3]" in message


def test_backbone_of_unsupported_size(vits, tmp_path):
    ckpt, bb = tmp_path / "mickey.ckpt", tmp_path / "odd.pth"
    torch.save({"state_dict": _heads_of(vits)}, ckpt)
    odd = _backbone_of(vits)
    odd["cls_token"] = torch.zeros(1, 1, 100)
    torch.save(odd, bb)
    _load_error(ckpt, CheckpointError, r"odd\.pth: unsupported ViT size \(embed dim 100, depth 12\); expected one of",
                backbone_weights=bb)


def test_missing_backbone_message_names_the_file_for_the_heads_width(vits, tmp_path):
    ckpt = tmp_path / "mickey.ckpt"
    torch.save({"state_dict": _heads_of(vits)}, ckpt)
    message = _load_error(ckpt, MissingWeightsError, r"holds no backbone .*dinov2_vits14_pretrain\.pth")
    assert "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth" in message
    assert isinstance(MissingWeightsError(message), FileNotFoundError)


# -- own checkpoints ---------------------------------------------------------------------------------------
def test_own_checkpoint_without_backbone_needs_the_backbone_file(tiny, tmp_path):
    path = save_checkpoint(tiny, tmp_path / "heads_only.ckpt", include_backbone=False, step=7)
    assert not any(k.startswith("extractor.vit_tiny14.") for k in torch.load(path, weights_only=True)["state_dict"])
    _load_error(path, MissingWeightsError, r"heads_only\.ckpt holds no backbone")
    bb = tmp_path / "tiny_backbone.pth"
    torch.save(_backbone_of(tiny), bb)
    net = load_checkpoint(path, backbone_weights=bb)
    assert net.preset == "tiny" and net.config == tiny.config
    _assert_same_outputs(tiny, net)


def test_own_checkpoint_rejects_reserved_extras_and_bad_config(tiny, tmp_path):
    with pytest.raises(InputError, match=r"extra: keys \['config', 'state_dict'\] are reserved"):
        save_checkpoint(tiny, tmp_path / "x.ckpt", config=1, state_dict=2)
    path = save_checkpoint(tiny, tmp_path / "bad_config.ckpt")
    data = torch.load(path, weights_only=True)
    data["config"]["no_such_field"] = 3
    torch.save(data, path)
    _load_error(path, CheckpointError, r"bad_config\.ckpt: invalid model config")


def test_strict_error_messages_are_one_line_and_name_the_keys(tiny, tmp_path):
    state = dict(tiny.state_dict())
    state["matcher.matching_mat.dustbin_score"] = torch.zeros(3)
    path = tmp_path / "shape.pth"
    torch.save(state, path)
    _load_error(path, CheckpointError,
                r"shape\.pth: does not match model 'tiny': 1 shape mismatches "
                r"\[matcher\.matching_mat\.dustbin_score: file \[3\] vs model \[\]\]")
    state = {k: v for k, v in tiny.state_dict().items() if ".blocks.2." not in k}
    torch.save(state, path)
    _load_error(path, CheckpointError, r"missing \d+ keys \[extractor\.vit_tiny14\.blocks\.\* \(\d+\)\]$")
    torch.save([torch.zeros(1)], path)
    _load_error(path, CheckpointError, r"shape\.pth: not a MicKey checkpoint \(it holds a list\)")


LAYOUTS = (r"; expected a mickey_ros checkpoint \(save_checkpoint, training/train\.py\), or the official mickey\.ckpt: "
           r"a 'state_dict' of extractor\.\* \(backbone optional\) and matcher\.\* weights$")


@pytest.mark.parametrize("content, held", [
    ({"foo": 1}, r"keys \[foo \(1\)\]"),
    (torch.zeros(3), r"a Tensor"),
    ({"state_dict": torch.nn.Linear(3, 2).state_dict()}, r"keys \[weight \(1\), bias \(1\)\]"),
    ({"cls_token": torch.zeros(1, 1, 8), "pos_embed": torch.zeros(1, 5, 8)},
     r"keys \[cls_token \(1\), pos_embed \(1\)\]; it looks like DINOv2 backbone weights, which go to "
     r"backbone_weights= \(--backbone-weights\)"),
], ids=["plain-dict", "tensor", "other-model", "dinov2-file"])
def test_a_torch_file_without_mickey_weights_is_not_a_mickey_checkpoint(tmp_path, content, held):
    path = tmp_path / "other.pt"
    torch.save(content, path)
    message = _load_error(path, CheckpointError, r"checkpoint .*other\.pt: not a MicKey checkpoint \(it holds " + held
                          + r"\)" + LAYOUTS)
    assert not isinstance(CheckpointError(message), MissingWeightsError)
    assert "holds no backbone" not in message


@pytest.mark.parametrize("content, why", [
    (bytes(range(256)) * 16, r"not written by torch\.save, or damaged"),
    (b"", r"the file is empty"),
    ("truncated-zip", r"a truncated or damaged zip archive"),
], ids=["random-bytes", "empty", "truncated-zip"])
def test_an_unreadable_file_is_one_clean_line(tiny, tmp_path, content, why):
    path = tmp_path / "broken.ckpt"
    if content == "truncated-zip":
        save_checkpoint(tiny, path)
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    message = _load_error(path, CheckpointError, r"^checkpoint .*broken\.ckpt: not a readable PyTorch checkpoint \("
                          + why + r"\)$")
    assert "weights_only" not in message and "torch.load" not in message


def test_export_default_model_script_records_the_training_size(tiny, tmp_path):
    """scripts/export_default_model.py: float16 weights that load into float32, the checkpoint's input size or
    --input-size; a bad size is one usage line and exit 2."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    tiny.input_size = (294, 224)
    source = save_checkpoint(tiny, tmp_path / "trained.pt")
    tiny.input_size = None
    script = [sys.executable, str(repo / "scripts" / "export_default_model.py"), str(source)]
    for extra, size in (([], (294, 224)), (["--input-size", "364", "280"], (364, 280))):
        out = tmp_path / f"out{len(extra)}.pt"
        proc = subprocess.run([*script, "--out", str(out), *extra], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"input size {size}" in proc.stdout
        net = load_checkpoint(out)
        assert net.input_size == size and next(net.parameters()).dtype == torch.float32
        stored = torch.load(out, weights_only=True)["state_dict"]
        assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    bad = subprocess.run([*script, "--out", str(tmp_path / "bad.pt"), "--input-size", "364", "0"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and not (tmp_path / "bad.pt").exists()
    assert bad.stderr.strip().splitlines()[-1].endswith(
        "--input-size: expected W H of at least 42 pixels each, got 364 0")
