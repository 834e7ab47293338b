"""config/*.yaml cannot drift from the nodes' declared parameters."""
from __future__ import annotations

import pytest
import yaml

pytest.importorskip("rclpy")

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
