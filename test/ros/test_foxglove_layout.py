"""foxglove/mickey_bag.json: every topic and field the layout shows exists in an output bag of `mickey-ros bag`."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("rosbags.rosbag2")
pytest.importorskip("mcap_ros2.decoder")

from conftest import REPO  # noqa: E402
from mickey_ros.cli import main  # noqa: E402
from test_bag import TOPICS, _decode_mcap, write_input_bag  # noqa: E402

LAYOUT = REPO / "foxglove" / "mickey_bag.json"


def _field(msg, path: str):
    for part in path.split("."):
        msg = getattr(msg, part)  # AttributeError: the layout names a field the message does not have
    return msg


def test_layout_matches_the_bag_output(tmp_path, capsys):
    layout = json.loads(LAYOUT.read_text())
    panels = layout["configById"]
    # the mosaic names exactly the configured panels
    leaves, stack = [], [layout["layout"]]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            leaves.append(node)
        else:
            stack += [node["first"], node["second"]]
    assert sorted(leaves) == sorted(panels)
    src, dst = write_input_bag(tmp_path / "in"), tmp_path / "out"
    assert main(["bag", str(src), str(dst), *TOPICS, "--device", "cpu", "--quiet"]) == 0
    capsys.readouterr()
    msgs = _decode_mcap(dst)
    shown = []
    for panel_id, config in panels.items():
        kind = panel_id.split("!")[0]
        if kind == "3D":
            shown += [(topic, "") for topic in config["topics"]]
        elif kind == "Plot":
            for path in config["paths"]:
                topic, _, field = path["value"].partition(".")
                shown.append((topic, field))
        elif kind == "RawMessages":
            shown.append((config["topicPath"], ""))
        else:
            raise AssertionError(f"unexpected panel {panel_id}")
    assert {t for t, _ in shown} >= {"/mickey/keypoints0", "/mickey/keypoints1", "/mickey/relative_pose_full",
                                     "/mickey/num_inliers", "/mickey/relative_pose"}
    for topic, field in shown:
        assert topic in msgs, f"{topic} is not in the output bag ({sorted(msgs)})"
        if field:
            value = _field(msgs[topic][0][1], field)
            assert isinstance(value, (int, float)), (topic, field, value)
