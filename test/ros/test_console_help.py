"""``relocalize_node --help`` / ``map_alignment_node --help``: usage, every parameter, the topics and services, exit
0, and rclpy never imported (issue 29: --help used to start the node). Real console-script processes."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

POISON = "raise ImportError('rclpy imported by --help')\n"


def _script(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:
        pytest.skip(f"console script {name} is not installed (pip install -e .)")
    return path


def _run(name: str, args: list[str], poison: Path) -> subprocess.CompletedProcess:
    """The console script with an ``rclpy`` on the path that fails on import, and this checkout's package."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(poison), str(REPO),
                                                         *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([_script(name), *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture()
def poison(tmp_path) -> Path:
    (tmp_path / "rclpy").mkdir()
    (tmp_path / "rclpy" / "__init__.py").write_text(POISON)
    return tmp_path


@pytest.mark.parametrize("name, config", [("relocalize_node", "mickey_ros.ros.relocalize_config"),
                                          ("map_alignment_node", "mickey_ros.ros.map_alignment_config")])
def test_help_prints_usage_and_exits_0_without_rclpy(name, config, poison):
    import importlib

    tables = importlib.import_module(config)
    for args in (["--help"], ["-h"], ["--ros-args", "-p", "seed:=1", "--", "--help"]):
        proc = _run(name, args, poison)
        assert proc.returncode == 0 and proc.stderr == "", proc
        out = proc.stdout
        assert out.startswith(f"usage: {name} [-h] [--ros-args"), out
        for param, (default, _) in tables.PARAMETERS.items():
            assert f"\n  {param} = " in out, param
        for topic, kind, _ in (*tables.SUBSCRIBES, *tables.PUBLISHES, *tables.SERVICES):
            assert f"  {topic} " in out and kind in out, topic
    if tables.SERVICES:
        assert "~/relocalize" in out and "~/set_reference" in out


def test_without_help_the_node_imports_rclpy(poison):
    """The poisoned rclpy is what the test above relies on: the node itself needs rclpy (one line, exit 2)."""
    proc = _run("map_alignment_node", ["--ros-args", "-p", "window:=10"], poison)
    assert proc.returncode == 2 and proc.stderr.startswith("map_alignment_node: error: rclpy: not importable"), proc
    assert "Traceback" not in proc.stderr
