"""config/*.yaml cannot drift from the node's declared parameters."""
from __future__ import annotations

import pytest
import yaml

pytest.importorskip("rclpy")

from mickey_ros.ros.relocalize_node import PARAMETERS  # noqa: E402

from conftest import REPO  # noqa: E402


def test_relocalize_yaml_matches_declared_parameters():
    data = yaml.safe_load((REPO / "config" / "relocalize.yaml").read_text())
    params = data["mickey_relocalizer"]["ros__parameters"]
    assert set(params) == set(PARAMETERS)
    for name, value in params.items():
        default = PARAMETERS[name][0]
        assert type(value) is type(default), (name, value, default)
        assert value == default, f"{name}: the shipped config should document the defaults"
