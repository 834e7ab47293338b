"""config/*.yaml cannot drift from the nodes' declared parameters."""
from __future__ import annotations

import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from mickey_ros.ros import map_alignment_node, relocalize_node  # noqa: E402

from conftest import REPO  # noqa: E402


@pytest.mark.parametrize(("file", "node_name", "module"), [
    ("relocalize.yaml", "mickey_relocalizer", relocalize_node),
    ("map_alignment.yaml", "mickey_map_alignment", map_alignment_node),
])
def test_yaml_matches_declared_parameters(file, node_name, module):
    data = yaml.safe_load((REPO / "config" / file).read_text())
    params = data[node_name]["ros__parameters"]
    assert set(params) == set(module.PARAMETERS)
    for name, value in params.items():
        default = module.PARAMETERS[name][0]
        assert type(value) is type(default), (name, value, default)
        assert value == default, f"{name}: the shipped config should document the defaults"


def test_every_config_file_is_checked():
    assert sorted(p.name for p in (REPO / "config").glob("*.yaml")) == ["map_alignment.yaml", "relocalize.yaml"]


def test_node_names_in_configs_are_the_nodes_names(ros):
    node = map_alignment_node.MapAlignmentNode(context=ros)
    try:
        assert node.get_name() == "mickey_map_alignment"
    finally:
        node.destroy_node()


def test_declared_parameters_carry_descriptions_and_ranges(ros, tiny_net):
    from rclpy.parameter import Parameter

    nodes = [relocalize_node.RelocalizeNode(net=tiny_net, context=ros,
                                            parameter_overrides=[Parameter("device", value="cpu"),
                                                                 Parameter("warmup", value=False)]),
             map_alignment_node.MapAlignmentNode(context=ros)]
    try:
        reloc, align = nodes
        slop = reloc.describe_parameter("slop")
        assert slop.description and (slop.floating_point_range[0].from_value, slop.floating_point_range[0].to_value) \
            == relocalize_node.RANGES["slop"]
        assert reloc.describe_parameter("seed").integer_range[0].to_value == 2**31 - 1
        assert reloc.describe_parameter("checkpoint").read_only and not reloc.describe_parameter("tf_mode").read_only
        assert "none | relative" in reloc.describe_parameter("tf_mode").description  # the choices are documented
        assert all(reloc.describe_parameter(n).description for n in relocalize_node.PARAMETERS)
        window = align.describe_parameter("window")
        assert (window.integer_range[0].from_value, window.integer_range[0].to_value) == \
            map_alignment_node.INT_RANGES["window"]
        assert all(align.describe_parameter(n).description for n in map_alignment_node.PARAMETERS)
        # covariance_scale reaches the Relocalizer, at start-up and on set_parameters; 0 is refused
        assert reloc.reloc.covariance_scale == relocalize_node.PARAMETERS["covariance_scale"][0] == 0.26
        assert reloc.set_parameters([rclpy.parameter.Parameter("covariance_scale", value=2.5)])[0].successful
        assert reloc.reloc.covariance_scale == 2.5
        assert not reloc.set_parameters([rclpy.parameter.Parameter("covariance_scale", value=0.0)])[0].successful
        assert reloc.reloc.covariance_scale == 2.5
        # depth_flip: off by default, switched on and off at run time
        assert reloc.reloc.depth_flip is False and relocalize_node.PARAMETERS["depth_flip"][0] is False
        assert reloc.set_parameters([rclpy.parameter.Parameter("depth_flip", value=True)])[0].successful
        assert reloc.reloc.depth_flip is True
        assert not reloc.set_parameters([rclpy.parameter.Parameter("depth_flip", value="yes")])[0].successful
        assert reloc.reloc.depth_flip is True
        # refine: "auto" (on for a non-official network), read-only (it is chosen when the Relocalizer is built)
        assert relocalize_node.PARAMETERS["refine"][0] == "auto" and reloc.reloc.refine is not None
        assert reloc.describe_parameter("refine").read_only
        result = align.set_parameters([rclpy.parameter.Parameter("min_confidence", value=2.0)])[0]
        assert not result.successful  # outside [0, 1]: rejected by the declared range
    finally:
        for node in nodes:
            node.destroy_node()


@pytest.mark.parametrize(("file", "module"), [("relocalize.yaml", relocalize_node), ("map_alignment.yaml", map_alignment_node)])
def test_shipped_configs_pass_the_nodes_parameter_checks(file, module):
    from mickey_ros.ros.node_common import check_parameters

    data = yaml.safe_load((REPO / "config" / file).read_text())
    (params,) = (v["ros__parameters"] for v in data.values())
    assert check_parameters(params, module.PARAMETERS, module.RULES) == params
    for name, choices in module.RULES.choices.items():
        assert params[name] in choices, name


def test_tf_parameters_in_the_relocalize_config():
    params = yaml.safe_load((REPO / "config" / "relocalize.yaml").read_text())["mickey_relocalizer"]["ros__parameters"]
    assert (params["tf_mode"], params["child_frame_suffix"], params["child_frame"]) == ("relative", "_mickey", "")
    assert "publish_tf" not in params  # replaced by tf_mode (the node warns about the old name)
    assert relocalize_node.RENAMED["publish_tf"].startswith("tf_mode")


def test_node_with_a_bad_checkpoint_exits_with_one_line(tmp_path):
    import os
    import subprocess
    import sys

    missing = tmp_path / "absent.ckpt"
    code = ("from mickey_ros.ros.relocalize_node import main; "
            f"main(['relocalize_node', '--ros-args', '-p', 'checkpoint:={missing}', '-p', 'device:=cpu'])")
    env = {**os.environ, "ROS_DOMAIN_ID": "177", "ROS_LOCALHOST_ONLY": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("relocalize_node: error: checkpoint: ") and str(missing) in lines[0], \
        proc
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr


@pytest.mark.parametrize("value, refined", [("off", False), ("on", True)])
def test_refine_parameter_reaches_the_relocalizer(ros, tiny_net, value, refined):
    from rclpy.parameter import Parameter

    node = relocalize_node.RelocalizeNode(net=tiny_net, context=ros, parameter_overrides=[
        Parameter("device", value="cpu"), Parameter("warmup", value=False), Parameter("refine", value=value)])
    try:
        assert (node.reloc.refine is not None) is refined
    finally:
        node.destroy_node()


def test_a_bad_refine_value_is_refused_naming_the_choices(ros, tiny_net):
    from rclpy.parameter import Parameter

    from mickey_ros.ros.node_common import ParameterError

    with pytest.raises(ParameterError, match=r"^refine: .*'maybe'.*auto.*on.*off|^refine: .*auto.*on.*off.*'maybe'"):
        relocalize_node.RelocalizeNode(net=tiny_net, context=ros, parameter_overrides=[
            Parameter("device", value="cpu"), Parameter("warmup", value=False), Parameter("refine", value="maybe")])


@pytest.mark.parametrize("value, expected", [(-1.0, "auto"), (0.0, 0.0), (0.3, 0.3)])
def test_min_confidence_parameter_reaches_the_relocalizer(ros, tiny_net, value, expected):
    from rclpy.parameter import Parameter

    from mickey_ros.pipeline import DEFAULT_MIN_CONFIDENCE

    node = relocalize_node.RelocalizeNode(net=tiny_net, context=ros, parameter_overrides=[
        Parameter("device", value="cpu"), Parameter("warmup", value=False), Parameter("min_confidence", value=value)])
    try:
        # auto: the network's own threshold; the random tiny network has none (the bundled one: DEFAULT_MIN_CONFIDENCE)
        assert node.reloc.min_confidence == (0.0 if expected == "auto" else expected) != DEFAULT_MIN_CONFIDENCE
        assert node.describe_parameter("min_confidence").read_only
    finally:
        node.destroy_node()
