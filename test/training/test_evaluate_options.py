"""evaluate.py: seeded pair samples, config overrides, the bundled network, depth at the keypoints of RGB-D bags."""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("rosbags.rosbag2")
pytest.importorskip("skimage.data")

from mickey_ros.model import build_model  # noqa: E402
from mickey_ros.model.checkpoint import save_checkpoint  # noqa: E402
from training import evaluate  # noqa: E402


@pytest.fixture(scope="module")
def rgbd(tmp_path_factory):
    from training.data.synthetic import generate

    root = tmp_path_factory.mktemp("eval_rgbd")
    generate(root / "val", scenes=1, frames=5, width=168, height=126, seed=21, depth=True)
    torch.manual_seed(0)
    net = build_model("small")
    return root, save_checkpoint(net, root / "small.pt")


def test_sample_pairs_is_a_seeded_sorted_subset():
    a = evaluate.sample_pairs(50, 7, seed=3)
    assert a == sorted(a) and len(set(a)) == 7 and a == evaluate.sample_pairs(50, 7, seed=3)
    assert a != evaluate.sample_pairs(50, 7, seed=4)
    assert evaluate.sample_pairs(5, 7, seed=3) == [0, 1, 2, 3, 4]


def test_sampled_evaluation_with_overrides_reports_depth_at_keypoints(rgbd, tmp_path, capsys):
    root, ckpt = rgbd
    code = evaluate.main(["--checkpoint", str(ckpt), "--data", str(root / "val"), "--sample", "3", "--device", "cpu",
                          "--set", "data.max_baseline_m=3.0", "--set", "data.max_angle_deg=60",
                          "--set", "data.depth_topic=/camera/depth/image_raw", "--set", f"data.cache_dir={tmp_path}",
                          "--out", str(tmp_path / "out")])
    assert code == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["num_pairs"] == 3 and metrics["identity"]["num_pairs"] == 3
    assert 0 < metrics["depth_ratio_median"] < 100 and -1 <= metrics["depth_logcorr_median"] <= 1
    capsys.readouterr()
    assert evaluate.main(["--checkpoint", str(ckpt), "--data", str(root / "val"), "--sample", "0",
                          "--set", f"data.cache_dir={tmp_path}", "--out", str(tmp_path / "o2")]) == 2
    assert capsys.readouterr().err.strip() == "evaluate.py: error: --sample: expected a positive number of pairs, got 0"
    assert evaluate.main(["--checkpoint", str(ckpt), "--data", str(root / "val"), "--set", "data.nope=1",
                          "--out", str(tmp_path / "o3")]) == 2
    assert "unknown key data.nope" in capsys.readouterr().err
