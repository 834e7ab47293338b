"""Dependencies: rosbags is a core requirement; a missing optional one is one line with the exact pip command.

Missing modules are simulated with ``sys.modules[name] = None`` (then ``import name`` raises ImportError), in a
real process where the message goes to stderr.
"""
from __future__ import annotations

import ast
import importlib.metadata
import logging
import re
import subprocess
import sys

import pytest

from mickey_ros import deps
from mickey_ros.errors import DependencyError, MickeyError

from conftest import REPO


def _setup_lists() -> tuple[list[str], dict[str, list[str]]]:
    """``(install_requires, extras_require)`` read from setup.py's ``setup(...)`` call."""
    tree = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg in ("install_requires", "extras_require")}
    return kw["install_requires"], kw["extras_require"]


def test_rosbags_is_a_core_requirement_that_the_installed_version_meets():
    core, extras = _setup_lists()
    (spec,) = [r for r in core if re.match(r"rosbags\b(?!-)", r)]
    low = tuple(int(x) for x in re.fullmatch(r"rosbags>=([\d.]+)", spec).group(1).split("."))
    installed = tuple(int(x) for x in importlib.metadata.version("rosbags").split(".")[:3])
    assert installed >= low >= (0, 11)
    assert all(not re.match(r"rosbags\b(?!-)", r) for reqs in extras.values() for r in reqs)  # not repeated
    assert {"onnx", "train"} <= extras.keys()  # the extras the messages name exist


def test_require_returns_the_module_or_raises_one_line_with_the_pip_command(monkeypatch):
    assert deps.require("json.decoder", "train").__name__ == "json.decoder"
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(DependencyError, match=r'^tensorboard: not installed \(needed for TensorBoard logging\); run '
                                              r'pip install -e "\.\[train\]"$') as info:
        deps.require("tensorboard", "train", "TensorBoard logging")
    assert isinstance(info.value, MickeyError) and isinstance(info.value.__cause__, ImportError)
    assert deps.missing_message("rosbags", None) == "rosbags: not installed; run pip install -e ."


def _without(module: str, code: str) -> subprocess.CompletedProcess:
    prog = f"import sys; sys.modules[{module!r}] = None\n{code}"
    return subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_mickey_ros_bag_without_rosbags_is_one_line_exit_2_and_no_output(tmp_path):
    out = tmp_path / "out"
    proc = _without("rosbags", "from mickey_ros.cli import main\n"
                    f"sys.exit(main(['bag', {str(tmp_path / 'in')!r}, {str(out)!r}, '--image0', '/a', '--info0', "
                    "'/b', '--image1', '/c', '--info1', '/d', '--device', 'cpu']))")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "mickey-ros: error: rosbags: not installed (needed for mickey-ros bag); run pip install -e ."]
    assert not out.exists()


def test_make_synthetic_without_scikit_image_names_the_train_extra(tmp_path):
    proc = _without("skimage", "from training.make_synthetic import main\n"
                    f"sys.exit(main([{str(tmp_path / 'out')!r}, '--scenes', '1', '--frames', '1', '--width', '16', "
                    "'--height', '16']))")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        'make_synthetic: error: skimage: not installed (needed for synthetic scene textures); run pip install -e '
        '".[train]"']


def test_node_console_script_without_rclpy_is_one_line_exit_2():
    proc = _without("rclpy", "from mickey_ros.ros.console import relocalize_node; relocalize_node()")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"relocalize_node: error: {deps.rclpy_message()}"]
    assert 'pip install "ros-rclpy[fastrtps]"' in proc.stderr and "source /opt/ros/" in proc.stderr


def test_trainer_without_tensorboard_or_tqdm_warns_once_with_the_pip_command(tmp_path, monkeypatch, caplog):
    from training import trainer

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(sys.modules, "tqdm", None)
    with caplog.at_level(logging.WARNING, logger=trainer.log.name):
        assert trainer._tensorboard(tmp_path) is None
        assert trainer._progress(True, 10, 0) is None
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        'tensorboard: not installed (needed for TensorBoard logging); run pip install -e ".[train]"; TensorBoard '
        f"logging off, metrics still go to {tmp_path / 'metrics.jsonl'}",
        'tqdm: not installed (needed for a progress bar); run pip install -e ".[train]"; no progress bar',
    ]
