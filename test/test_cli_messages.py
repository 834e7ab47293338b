"""Messages a newcomer meets first (issue 11 item 7): each bad input gives exactly the one stderr line that says what
is wrong (a folder is not an image, a truncated PNG, a damaged or foreign checkpoint), ``--quiet`` keeps INFO lines
off stderr, and the bundled network is importable from ``mickey_ros.model``. Console behaviour is checked on the real
process (``python -m mickey_ros.cli``)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mickey_ros.errors import ImageError
from mickey_ros.image_bytes import png_problem

from conftest import DEMO, REPO

INTR = ["--intrinsics0", "250", "250", "147", "112", "--intrinsics1", "250", "250", "147", "112"]
IM0, IM1 = str(DEMO / "im0.png"), str(DEMO / "im1.png")
LAYOUTS = ("expected a mickey_ros checkpoint (save_checkpoint, training/train.py), or the official mickey.ckpt: "
           "a 'state_dict' of extractor.* (backbone optional) and matcher.* weights")
DEFAULT_INFO = "mickey-ros: INFO: no --checkpoint given: using the bundled default network"


def _cli(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "mickey_ros.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    """Exit code 2 and stderr exactly one line (no OpenCV/libpng/torch text before or after it)."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def _png(path: Path, seed: int = 0) -> bytes:
    image = np.random.default_rng(seed).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return path.read_bytes()


# -- images ------------------------------------------------------------------------------------------------------
def test_a_folder_given_as_an_image_is_named_a_directory(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    line = _one_error_line(_cli("match", str(folder), IM1, *INTR, "--device", "cpu"))
    assert line == f"mickey-ros: error: image0: {folder} is a directory, not an image file"


@pytest.mark.parametrize("damage, why", [
    ("truncated", "truncated PNG (the data ends inside its IDAT chunk)"),
    ("crc", "damaged PNG (CRC error in its IDAT chunk)"),
])
def test_a_damaged_png_gives_only_our_line(tmp_path, damage, why):
    data = bytearray(_png(tmp_path / "ok.png"))
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[200] ^= 0xFF  # inside the first IDAT chunk's compressed data
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    line = _one_error_line(_cli("match", IM0, str(bad), *INTR, "--device", "cpu"))
    assert line == f"mickey-ros: error: image1: cannot decode {bad} as an image: {why}"


def test_png_problem_finds_every_truncation_and_accepts_the_whole_file(tmp_path):
    data = _png(tmp_path / "ok.png", seed=1)
    assert png_problem(data) is None and png_problem(np.frombuffer(data, np.uint8)) is None
    assert png_problem(b"\xff\xd8\xff\xe0 not a png") is None  # other formats are OpenCV's to judge
    for cut in range(8, len(data), 97):
        assert png_problem(data[:cut]).startswith("truncated PNG"), cut
    assert png_problem(data[:-1]) == "truncated PNG (the data ends inside its IEND chunk)"
    assert png_problem(data[:-12]) == "truncated PNG (the data ends before its IEND chunk)"


def test_a_truncated_compressed_image_writes_nothing_to_stderr(tmp_path, capfd):
    """The node's decode path (CompressedImage) gives the same reason and keeps libpng's own line out of fd 2."""
    from types import SimpleNamespace

    from mickey_ros.ros.convert import compressed_to_rgb

    data = _png(tmp_path / "ok.png", seed=2)
    msg = SimpleNamespace(format="png", data=data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"^image0: cannot decode CompressedImage \(format 'png'\): truncated PNG "
                                         r"\(the data ends inside its IDAT chunk\)$"):
        compressed_to_rgb(msg, "image0")
    assert capfd.readouterr().err == ""


# -- checkpoints -------------------------------------------------------------------------------------------------
def _broken(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.ckpt"
    if kind == "random":
        path.write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    else:  # a zip checkpoint cut in half
        torch.save({"state_dict": {"matcher.matching_mat.dustbin_score": torch.tensor(1.0)}}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.mark.parametrize("kind, why", [
    ("random", "not written by torch.save, or damaged"),
    ("truncated", "a truncated or damaged zip archive"),
])
def test_a_corrupt_checkpoint_is_one_clean_line(tmp_path, kind, why):
    path = _broken(tmp_path, kind)
    line = _one_error_line(_cli("match", IM0, IM1, *INTR, "--device", "cpu", "--checkpoint", str(path)))
    assert line == f"mickey-ros: error: checkpoint {path}: not a readable PyTorch checkpoint ({why})"


def test_a_torch_file_of_something_else_is_not_a_mickey_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"foo": 1}, path)
    line = _one_error_line(_cli("match", IM0, IM1, *INTR, "--device", "cpu", "--checkpoint", str(path)))
    assert line == f"mickey-ros: error: checkpoint {path}: not a MicKey checkpoint (it holds keys [foo (1)]); {LAYOUTS}"


def test_a_mickey_checkpoint_without_backbone_still_asks_for_the_backbone_file(tmp_path, tiny_net):
    from mickey_ros.model import save_checkpoint

    path = save_checkpoint(tiny_net, tmp_path / "heads.ckpt", include_backbone=False)
    line = _one_error_line(_cli("match", IM0, IM1, *INTR, "--device", "cpu", "--checkpoint", str(path)))
    assert line.startswith(f"mickey-ros: error: backbone_weights: checkpoint {path} holds no backbone "
                           "(official mickey.ckpt layout); pass backbone_weights= the DINOv2 file "), line
    assert "not a MicKey checkpoint" not in line


# -- --quiet -----------------------------------------------------------------------------------------------------
def test_match_quiet_keeps_info_lines_off_stderr():
    loud = _cli("match", IM0, IM1, *INTR, "--device", "cpu")
    quiet = _cli("match", IM0, IM1, *INTR, "--device", "cpu", "--quiet")
    assert loud.returncode == quiet.returncode == 0, (loud.stderr, quiet.stderr)
    assert DEFAULT_INFO in loud.stderr
    assert quiet.stderr == ""
    assert quiet.stdout == loud.stdout  # the result itself is still printed


DEMO_STUB = ("import sys, mickey_ros.demo as demo; demo.run_demo = lambda *a, **k: ([], {'num_failures': 0}); "
             "from mickey_ros.cli import main; sys.exit(main(sys.argv[1:]))")


def test_demo_quiet_keeps_info_lines_off_stderr():
    """The demo's own pairs are stubbed out (slow on CPU); the network loading that logs the INFO line is real."""
    loud = subprocess.run([sys.executable, "-c", DEMO_STUB, "demo", "--device", "cpu"], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    quiet = subprocess.run([sys.executable, "-c", DEMO_STUB, "demo", "--device", "cpu", "--quiet"],
                           capture_output=True, text=True, timeout=300, cwd=REPO)
    assert loud.returncode == quiet.returncode == 0, (loud.stderr, quiet.stderr)
    assert DEFAULT_INFO in loud.stderr
    assert quiet.stderr == ""


# -- Python API --------------------------------------------------------------------------------------------------
def test_load_default_network_is_exported_and_loads_the_bundled_weights():
    import mickey_ros.model as model
    from mickey_ros.model import build_model, load_checkpoint, load_default_network
    from mickey_ros.model.default import DEFAULT_WEIGHTS

    assert "load_default_network" in model.__all__
    net = load_default_network()
    assert net.preset == "small" and not net.training
    assert net.input_size == (420, 322) and net.config.depth_focal_ref > 0  # recorded in the file (stage 9)
    bundled = load_checkpoint(DEFAULT_WEIGHTS).state_dict()
    state = net.state_dict()
    assert state.keys() == bundled.keys()
    assert all(torch.equal(state[k], bundled[k]) for k in state)
    torch.manual_seed(0)
    random_state = build_model("small").state_dict()
    assert not all(torch.equal(state[k], random_state[k]) for k in state if k.endswith("weight"))
