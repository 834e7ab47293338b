"""Launch file and RViz config: they parse, and they point at the node's real names and outputs."""
from __future__ import annotations

import ast
import importlib.util

import pytest
import yaml

from conftest import REPO

LAUNCH = REPO / "launch" / "relocalize.launch.py"
ALIGN_LAUNCH = REPO / "launch" / "map_alignment.launch.py"


def _strings(path):
    tree = ast.parse(path.read_text())
    return tree, {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_launch_file_parses_and_remaps_the_node_inputs():
    tree = ast.parse(LAUNCH.read_text())
    names = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert {"relocalize_node", "mickey_relocalizer", "image0", "camera_info0", "image1", "camera_info1"} <= names
    assert {"cam0", "cam1", "config", "use_sim_time", "rviz"} <= names
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in ast.walk(tree))


def test_map_alignment_launch_wires_both_nodes():
    pytest.importorskip("rclpy")
    from mickey_ros.ros import map_alignment_node

    tree, names = _strings(ALIGN_LAUNCH)
    assert {"relocalize_node", "mickey_relocalizer", "map_alignment_node", "mickey_map_alignment"} <= names
    assert {"image0", "camera_info0", "image1", "camera_info1"} <= names  # relocalize_node inputs
    assert {"relative_pose", "relative_pose_full", "camera_pose_a", "camera_pose_b"} <= names  # alignment inputs
    assert {"/mickey_relocalizer/relative_pose", "/mickey_relocalizer/relative_pose_full"} <= names
    assert {"map_a_frame", "map_b_frame"} <= set(map_alignment_node.PARAMETERS) & names
    assert "map_alignment.yaml" in names and (REPO / "config" / "map_alignment.yaml").exists()


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None, reason="launch/launch_ros are not pip-installable")
@pytest.mark.parametrize("path", [LAUNCH, ALIGN_LAUNCH], ids=["relocalize", "map_alignment"])
def test_launch_description_builds(path):
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.generate_launch_description().entities


def test_rviz_config_shows_the_node_outputs():
    cfg = yaml.safe_load((REPO / "rviz" / "mickey.rviz").read_text())
    displays = cfg["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"] for d in displays if "Topic" in d}
    assert topics == {"/mickey_relocalizer/keypoints0", "/mickey_relocalizer/keypoints1",
                      "/mickey_relocalizer/relative_pose"}
    assert any(d["Class"] == "rviz_default_plugins/TF" for d in displays)
    clouds = [d for d in displays if d["Class"] == "rviz_default_plugins/PointCloud2"]
    assert all(d["Color Transformer"] == "RGB8" for d in clouds)  # the clouds carry an rgb field
