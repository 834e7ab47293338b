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
    assert metrics["depth_abs_log_err_median"] > 0 and metrics["depth_scale_abs_log_median"] > 0
    assert 0 < metrics["depth_shape_abs_log_err_median"] < 10
    assert metrics["depth_pair_scale_diff_median"] >= 0 and metrics["depth_abs_log_err_matched_median"] > 0
    for key in ("sensor_depth_pose", "depth_scale_only_pose", "depth_shape_only_pose"):
        assert metrics[key]["num_pairs"] == 3 and "identity" in metrics[key], key
    capsys.readouterr()
    assert evaluate.main(["--checkpoint", str(ckpt), "--data", str(root / "val"), "--sample", "0",
                          "--set", f"data.cache_dir={tmp_path}", "--out", str(tmp_path / "o2")]) == 2
    assert capsys.readouterr().err.strip() == "evaluate.py: error: --sample: expected a positive number of pairs, got 0"
    assert evaluate.main(["--checkpoint", str(ckpt), "--data", str(root / "val"), "--set", "data.nope=1",
                          "--out", str(tmp_path / "o3")]) == 2
    assert "unknown key data.nope" in capsys.readouterr().err


class _ScaledDepth(torch.nn.Module):
    """The network with its depth replaced by the sensor's at the keypoints times a factor per call (view)."""

    def __init__(self, net, depths, factors):
        super().__init__()
        self.net, self.depths, self.factors, self.calls = net, depths, factors, 0

    def forward(self, image, focal):
        from training.aux_loss import sample_depth

        out = self.net(image, focal)
        k = self.calls % 2
        self.calls += 1
        out.depth = sample_depth(self.depths[k][None], out.kpts) * self.factors[k]
        return out

    def match(self, out0, out1):
        return self.net.match(out0, out1)


def _rgbd_pair(rgbd, tmp_path):
    """(the first RGB-D validation item, the small network, its Relocalizer with solver seed 0)."""
    from mickey_ros.model import load_checkpoint
    from mickey_ros.pipeline import Relocalizer
    from training import config as config_mod
    from training.data.build import build_dataset

    root, ckpt = rgbd
    cfg = config_mod.resolve(None, [f"data.val=[{root / 'val'}]", "data.max_baseline_m=3.0", "data.max_angle_deg=60",
                                    "data.depth_topic=/camera/depth/image_raw", f"data.cache_dir={tmp_path}"])
    item = build_dataset(cfg, "val", tmp_path)[0]
    net = load_checkpoint(ckpt).eval()
    reloc = Relocalizer(net, device="cpu", seed=0)
    return item, net, reloc


def test_depth_diagnostics_separate_scale_from_shape_and_solve_with_the_sensor_depth(rgbd, tmp_path):
    item, net, reloc = _rgbd_pair(rgbd, tmp_path)
    poses = []
    with torch.no_grad():
        for factors in ((2.0, 1.0), (0.5, 3.0)):
            reloc.net = _ScaledDepth(net, (item["depth0"], item["depth1"]), factors)
            rows, T = evaluate.depth_diagnostics(reloc, item)
            assert [r["ratio"] for r in rows] == pytest.approx(list(factors), rel=1e-5)
            assert [r["log_scale"] for r in rows] == pytest.approx([float(torch.tensor(f).log()) for f in factors],
                                                                   abs=1e-5)
            assert [r["abs_log_err"] for r in rows] == pytest.approx([abs(r["log_scale"]) for r in rows], abs=1e-6)
            assert [r["logcorr"] for r in rows] == pytest.approx([1.0, 1.0], abs=1e-6)  # pure scale: same shape
            assert [r["shape_abs_log_err"] for r in rows] == pytest.approx([0.0, 0.0], abs=1e-6)
            poses.append(T)
    # the sensor-depth pose does not see the network's depth at all: the same for both factors, and a real pose
    assert poses[0]["sensor"] is not None and poses[0]["sensor"] == pytest.approx(poses[1]["sensor"], abs=1e-9)
    assert abs(float(torch.linalg.det(torch.from_numpy(poses[0]["sensor"][:3, :3]))) - 1) < 1e-9
    for T in poses:  # a pure-scale network: its shape is the sensor's, its scale-only depth its own
        assert T["shape_only"] == pytest.approx(T["sensor"], abs=1e-6)
    # the scale-only pose sees the factors: views scaled by 2 and 1 do not give the sensor-depth pose
    assert poses[0]["scale_only"] is None or not poses[0]["scale_only"] == pytest.approx(poses[0]["sensor"], abs=1e-3)
    # shape noise with a zero median on top of the same per-image factors: the scale-only pose does not change (it
    # keeps only the factors), the shape-only pose does
    from training.aux_loss import sample_depth

    with torch.no_grad():
        outs = [net(item[f"image{k}"][None], item[f"K_color{k}"][0, 0].reshape(1).float()) for k in (0, 1)]
        factors, shape_errors = [], []
        for k, f in zip((0, 1), (2.0, 1.0)):
            z = sample_depth(item[f"depth{k}"][None], outs[k].kpts)[0]
            ok = torch.isfinite(z) & (z > 0)
            noise = 0.3 * torch.randn(z.shape, generator=torch.Generator().manual_seed(k))
            factors.append(f * torch.exp(noise - noise[ok].median()))
            shape_errors.append(float((noise[ok] - noise[ok].median()).abs().median()))
        reloc.net = _ScaledDepth(net, (item["depth0"], item["depth1"]), factors)
        rows, noisy = evaluate.depth_diagnostics(reloc, item)
    assert [r["log_scale"] for r in rows] == pytest.approx([float(torch.tensor(2.0).log()), 0.0], abs=1e-6)
    assert [r["shape_abs_log_err"] for r in rows] == pytest.approx(shape_errors, rel=1e-4)  # the noise, not the factors
    assert min(shape_errors) > 0.1
    assert noisy["scale_only"] == pytest.approx(poses[0]["scale_only"], abs=1e-9)
    assert noisy["sensor"] == pytest.approx(poses[0]["sensor"], abs=1e-9)
    assert noisy["shape_only"] is None or not noisy["shape_only"] == pytest.approx(noisy["sensor"], abs=1e-3)


def test_weighted_median_against_a_direct_count():
    values = torch.tensor([5.0, 1.0, 3.0, 2.0, 4.0])
    assert evaluate.weighted_median(values, torch.ones(5)) == 3.0  # equal weights: the plain median
    assert evaluate.weighted_median(values, torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])) == 4.0  # all weight on one
    assert evaluate.weighted_median(values, torch.tensor([10.0, 1, 1, 1, 1])) == 5.0  # 10 of 14 on the largest
    assert evaluate.weighted_median(values, torch.tensor([1.0, 1, 1, 1, 0])) == 2.0  # the lower of the two middles
    assert evaluate.weighted_median(values, torch.zeros(5)) != evaluate.weighted_median(values, torch.zeros(5))  # nan
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):  # against counting: the smallest value whose cumulative weight reaches half
        v, w = torch.rand(31, generator=generator), torch.rand(31, generator=generator)
        expected = min(x for x in v.tolist() if float(w[v <= x].sum()) >= 0.5 * float(w.sum()))
        assert evaluate.weighted_median(v, w) == pytest.approx(expected, abs=1e-7)


def test_matched_depth_error_weights_keypoints_by_match_probability(rgbd, tmp_path):
    """Depth error exp(m / max m) growing with each keypoint's match mass m: the match-weighted median error is
    larger than the plain one and equals an independent weighted count."""
    from training.aux_loss import sample_depth

    item, net, reloc = _rgbd_pair(rgbd, tmp_path)
    with torch.no_grad():
        outs = [net(item[f"image{k}"][None], item[f"K_color{k}"][0, 0].reshape(1).float()) for k in (0, 1)]
        P = net.match(*outs)[0]
        factors = [torch.exp(m / m.max()) for m in (P.sum(1), P.sum(0))]  # per keypoint
        reloc.net = _ScaledDepth(net, (item["depth0"], item["depth1"]), factors)
        rows, _ = evaluate.depth_diagnostics(reloc, item)
    assert len(rows) == 2
    for k, (row, mass) in enumerate(zip(rows, (P.sum(1), P.sum(0)))):
        z = sample_depth(item[f"depth{k}"][None], outs[k].kpts)[0]
        ok = torch.isfinite(z) & (z > 0)
        err, w = (mass / mass.max())[ok].double(), mass[ok].double()  # |log(pred / sensor)| = m / max m
        expected = min(x for x in err.tolist() if float(w[err <= x].sum()) >= 0.5 * float(w.sum()))
        assert row["abs_log_err_matched"] == pytest.approx(expected, rel=1e-5)
        assert row["abs_log_err"] == pytest.approx(float(err.median()), rel=1e-5)
        assert row["abs_log_err_matched"] > row["abs_log_err"]


def test_depth_flip_option_reaches_the_relocalizer_and_the_depth_diagnostics(rgbd, tmp_path):
    """--depth-flip: the poses and the depth diagnostics both use the mirror-averaged depth."""
    root, ckpt = rgbd
    common = ["--checkpoint", str(ckpt), "--data", str(root / "val"), "--sample", "2", "--device", "cpu",
              "--set", "data.max_baseline_m=3.0", "--set", "data.max_angle_deg=60",
              "--set", "data.depth_topic=/camera/depth/image_raw", "--set", f"data.cache_dir={tmp_path}"]
    metrics = {}
    for flag in ([], ["--depth-flip"]):
        out = tmp_path / ("flip" if flag else "plain")
        assert evaluate.main(common + flag + ["--out", str(out)]) == 0
        metrics[bool(flag)] = json.loads((out / "metrics.json").read_text())
    assert metrics[True]["depth_abs_log_err_median"] != metrics[False]["depth_abs_log_err_median"]
    item, net, reloc = _rgbd_pair(rgbd, tmp_path)
    from mickey_ros.pipeline import Relocalizer

    flip = Relocalizer(net, device="cpu", seed=0, depth_flip=True)
    with torch.no_grad():
        rows_plain, _ = evaluate.depth_diagnostics(reloc, item)
        rows_flip, _ = evaluate.depth_diagnostics(flip, item)
        view = flip._prepare(item["image0"].permute(1, 2, 0).numpy(), item["K_color0"].numpy(), "image0", "K0")
        out = flip._extract(view)
    from training.aux_loss import sample_depth

    depth = out.depth[0]
    z = sample_depth(item["depth0"][None], out.kpts)[0]
    ok = torch.isfinite(z) & (z > 0) & (depth > 0)
    expected = float((depth[ok].double().log() - z[ok].double().log()).median())
    assert rows_flip[0]["log_scale"] == pytest.approx(expected, abs=1e-5)
    assert rows_flip[0]["log_scale"] != pytest.approx(rows_plain[0]["log_scale"], abs=1e-5)


class _PixelDepth(torch.nn.Module):
    """The network with depth ``1 + x / 50`` metres, x = the keypoint's column in the caller's image (the network
    input's column divided by the resize factor ``sx``); records the input shapes it is called with."""

    def __init__(self, net, sx):
        super().__init__()
        self.net, self.sx, self.shapes = net, sx, []

    def forward(self, image, focal):
        self.shapes.append(tuple(image.shape))
        out = self.net(image, focal)
        out.depth = 1 + out.kpts[..., 0] / self.sx / 50
        return out

    def match(self, out0, out1):
        return self.net.match(out0, out1)


@pytest.mark.parametrize("options, net_wh", [({"resize": (252, 182)}, (252, 182)), ({"max_side": 84}, (84, 56))])
def test_depth_diagnostics_see_the_image_the_relocalizer_sees(rgbd, tmp_path, options, net_wh):
    """With a resize or a size budget the depth numbers come from the network input the poses come from (the
    sensor depth resized with it): a network whose depth is right in the caller's pixels scores a ratio of 1.
    Measuring on the unresized image (as before) gave the wrong input size and a ratio of 1 / sx."""
    from mickey_ros.pipeline import Relocalizer

    item, net, _ = _rgbd_pair(rgbd, tmp_path)
    height, width = item["depth0"].shape
    assert (width, height) == (168, 126)
    u = torch.arange(width, dtype=torch.float32).expand(height, width)
    item = {**item, "depth0": 1 + u / 50, "depth1": 1 + u / 50}
    reloc = Relocalizer(net, device="cpu", seed=0, **options)
    sx = reloc.network_input(item["image0"], item["K_color0"].numpy())[2][0]
    assert sx == pytest.approx(net_wh[0] / width)
    reloc.net = _PixelDepth(net, sx)
    with torch.no_grad():
        rows, poses = evaluate.depth_diagnostics(reloc, item)
    assert reloc.net.shapes == [(1, 3, net_wh[1], net_wh[0])] * 2  # both views at the Relocalizer's input size
    assert [r["ratio"] for r in rows] == pytest.approx([1.0, 1.0], abs=0.03)
    assert all(r["logcorr"] > 0.99 for r in rows)
    assert poses["sensor"] is not None


def test_network_input_is_what_estimate_feeds_the_network(rgbd, tmp_path):
    from mickey_ros.errors import IntrinsicsError
    from mickey_ros.pipeline import Relocalizer

    item, net, _ = _rgbd_pair(rgbd, tmp_path)
    K = item["K_color0"].numpy()
    plain, K_plain, scale = Relocalizer(net, device="cpu").network_input(item["image0"], K)
    assert scale == (1.0, 1.0) and torch.equal(plain[0], item["image0"]) and K_plain == pytest.approx(K, abs=1e-6)
    big, K_big, scale = Relocalizer(net, device="cpu", resize=(336, 252)).network_input(item["image0"], K)
    assert tuple(big.shape) == (1, 3, 252, 336) and scale == (2.0, 2.0)
    assert K_big[0, 0] == pytest.approx(2 * K[0, 0], rel=1e-6)
    with pytest.raises(IntrinsicsError):
        Relocalizer(net, device="cpu").network_input(item["image0"], K * 0)


def test_resize_option_runs_the_network_at_that_size(rgbd, tmp_path, monkeypatch):
    """--resize W H: the network sees W x H (the poses and the depth numbers), even where the checkpoint's
    training size (its size budget) is smaller; without it the Relocalizer's budget applies."""
    from mickey_ros import pipeline
    from mickey_ros.model import load_checkpoint

    root, ckpt = rgbd
    net = load_checkpoint(ckpt)
    net.input_size = (84, 63)  # as if trained at 84 x 63: the Relocalizer's default budget is an 84-px long side
    small = save_checkpoint(net, tmp_path / "trained_at_84.pt")
    seen = []

    class Recording(pipeline.Relocalizer):
        def _prepare(self, *args, **kwargs):
            view = super()._prepare(*args, **kwargs)
            seen.append(tuple(view.image.shape[-2:]))
            return view

    monkeypatch.setattr(pipeline, "Relocalizer", Recording)
    common = ["--checkpoint", str(small), "--data", str(root / "val"), "--sample", "2", "--device", "cpu",
              "--set", "data.max_baseline_m=3.0", "--set", "data.max_angle_deg=60",
              "--set", "data.depth_topic=/camera/depth/image_raw", "--set", f"data.cache_dir={tmp_path}"]
    for flag, hw in (([], (56, 84)), (["--resize", "252", "196"], (196, 252))):
        seen.clear()
        assert evaluate.main(common + flag + ["--out", str(tmp_path / f"out{len(flag)}")]) == 0
        assert seen and set(seen) == {hw}, (flag, set(seen))
