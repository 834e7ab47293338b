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


def _const(node):
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _share_path(node):
    """``("config", "x.yaml")`` for ``os.path.join(share, "config", "x.yaml")``, else None."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "join"
            and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "share"):
        parts = [_const(a) for a in node.args[1:]]
        assert None not in parts, ast.unparse(node)
        return tuple(parts)
    return None


def _launch_nodes(path):
    """The launch file's ``Node(...)`` actions: keywords, remappings ``(from, to or None)`` and parameter files."""
    tree = ast.parse(path.read_text())
    defaults = {}  # launch argument -> package file of its default value
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "DeclareLaunchArgument"):
        kw = {k.arg: k.value for k in call.keywords}
        if "default_value" in kw and _share_path(kw["default_value"]):
            defaults[_const(call.args[0])] = _share_path(kw["default_value"])
    nodes = []
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Node"):
        kw = {k.arg: k.value for k in call.keywords}
        remaps = [(_const(t.elts[0]), _const(t.elts[1])) for t in getattr(kw.get("remappings"), "elts", [])]
        files = [defaults[_const(p.args[0])] for p in getattr(kw.get("parameters"), "elts", [])
                 if isinstance(p, ast.Call) and p.args and _const(p.args[0]) in defaults]
        nodes.append({"package": _const(kw["package"]), "executable": _const(kw["executable"]),
                      "name": _const(kw["name"]) if "name" in kw else None, "remappings": remaps, "files": files})
    shared = [p for n in ast.walk(tree) if (p := _share_path(n))]
    return nodes, shared


def _setup_py():
    """(installed (folder, pattern) pairs, console script -> module) from setup.py."""
    import re

    tree = ast.parse((REPO / "setup.py").read_text())
    installed = [(_const(c.args[0]), _const(c.args[1])) for c in ast.walk(tree)
                 if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "_data"]
    scripts = {}
    for c in ast.walk(tree):
        match = re.fullmatch(r"(\S+) = (mickey_ros[\w.]*):(\w+)", _const(c) or "")
        if match:
            name, module, func = match.groups()
            if module == "mickey_ros.ros.console":  # the rclpy-checking wrappers: the node module they start
                wrapper = ast.parse((REPO / "mickey_ros" / "ros" / "console.py").read_text())
                fn = next(f for f in wrapper.body if isinstance(f, ast.FunctionDef) and f.name == func)
                module = next(_const(a) for call in ast.walk(fn) if isinstance(call, ast.Call)
                              for a in call.args[1:2] if _const(a))
            scripts[name] = module
    return installed, scripts


@pytest.mark.parametrize("path", [LAUNCH, ALIGN_LAUNCH], ids=["relocalize", "map_alignment"])
def test_launch_files_name_only_files_and_executables_the_package_installs(path):
    import fnmatch

    installed, scripts = _setup_py()
    nodes, shared = _launch_nodes(path)
    assert shared and nodes
    for parts in shared:  # every os.path.join(share, ...) exists here and is installed into share/mickey_ros
        assert REPO.joinpath(*parts).is_file(), parts
        assert len(parts) == 2 and any(parts[0] == d and fnmatch.fnmatch(parts[1], p) for d, p in installed), parts
    for node in (n for n in nodes if n["package"] == "mickey_ros"):
        module = scripts[node["executable"]]  # a console script of the package
        source = ast.parse((REPO / (module.replace(".", "/") + ".py")).read_text())
        inits = [_const(c.args[0]) for c in ast.walk(source) if isinstance(c, ast.Call) and c.args
                 and isinstance(c.func, ast.Attribute) and c.func.attr == "__init__"]
        assert node["name"] in inits, (node["name"], inits)  # the launch name is the node's own name
        assert node["files"], node  # its parameter file is one of the package's, keyed by the node name
        for parts in node["files"]:
            assert set(yaml.safe_load(REPO.joinpath(*parts).read_text())) == {node["name"]}, parts


@pytest.mark.parametrize("path", [LAUNCH, ALIGN_LAUNCH], ids=["relocalize", "map_alignment"])
def test_launch_remappings_name_real_inputs_and_outputs(path, ros, tiny_net):
    """Remapping sources are topics the node subscribes to; absolute targets are topics another node of the
    launch file publishes (names resolved by rclpy on the real nodes, without launch_ros)."""
    from rclpy.parameter import Parameter

    from mickey_ros.ros.map_alignment_node import MapAlignmentNode
    from mickey_ros.ros.relocalize_node import RelocalizeNode

    made = {"relocalize_node": lambda: RelocalizeNode(net=tiny_net, context=ros, parameter_overrides=[
                Parameter("device", value="cpu"), Parameter("warmup", value=False)]),
            "map_alignment_node": lambda: MapAlignmentNode(context=ros)}
    from mickey_ros.ros.node_common import relative_pose_class

    # RelativePose (relative_pose_full) exists on the live graph only where mickey_ros_msgs is built
    optional = set() if relative_pose_class() is not None else {"relative_pose_full",
                                                                 "/mickey_relocalizer/relative_pose_full"}
    nodes, _ = _launch_nodes(path)
    started = {n["executable"]: made[n["executable"]]() for n in nodes if n["package"] == "mickey_ros"}
    try:
        published = {p.topic_name for node in started.values() for p in node.publishers}
        for launched in (n for n in nodes if n["package"] == "mickey_ros"):
            node = started[launched["executable"]]
            subscribed = {s.topic_name for s in node.subscriptions}
            checked = [(s, t) for s, t in launched["remappings"] if s not in optional]
            assert checked
            for source, target in checked:
                assert node.resolve_topic_name(source) in subscribed, (source, subscribed)
                if target is not None and target.startswith("/"):
                    assert target in published, (target, published)
    finally:
        for node in started.values():
            node.destroy_node()


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
