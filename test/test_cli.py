"""`mickey-ros match` end to end and its bad-input contract: exit code 2, one line on stderr."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mickey_ros.cli import main, read_image
from mickey_ros.errors import ImageError, IntrinsicsError, MickeyError
from mickey_ros.geometry.camera import intrinsics_from_values

from conftest import DEMO

INTR = ["250", "250", "147", "112"]


def _demo_args() -> list[str]:
    rows = {}
    for line in (DEMO / "intrinsics.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, fx, fy, cx, cy, *_ = line.split()
            rows[name] = [fx, fy, cx, cy]
    return [str(DEMO / "im0.png"), str(DEMO / "im1.png"),
            "--intrinsics0", *rows["im0.png"], "--intrinsics1", *rows["im1.png"]]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, tiny_net) -> Path:
    from mickey_ros.model import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    save_checkpoint(tiny_net, path)
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("mickey-ros: error: ")
    return err[0]


def test_match_writes_json_and_viz(tmp_path, capsys, tiny_ckpt):
    out_json, out_png = tmp_path / "pose.json", tmp_path / "viz.png"
    code = main(["match", *_demo_args(), "--checkpoint", str(tiny_ckpt), "--device", "cpu",
                 "--json", str(out_json), "--viz", str(out_png)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "confidence" in printed and "t (m)" in printed
    data = json.loads(out_json.read_text())
    T = np.array(data["T_0to1"])
    assert T.shape == (4, 4)
    np.testing.assert_allclose(T[:3, :3], np.array(data["R"]))
    np.testing.assert_allclose(T[:3, 3], np.array(data["t"]))
    assert data["success"] is True and 0 <= data["confidence"] <= 1
    assert data["num_inliers"] <= data["num_matches"]
    picture = cv2.imread(str(out_png))
    assert picture is not None and picture.shape[0] > 224


def _api_pose(net, demo_pair, seed=0, depth_flip=False, refine="auto") -> dict:
    from mickey_ros import Relocalizer

    res = Relocalizer(net, device="cpu", seed=seed, depth_flip=depth_flip, refine=refine).estimate(*demo_pair)
    return {"T_0to1": res.T_0to1.tolist(), "confidence": float(res.confidence), "num_inliers": int(res.num_inliers),
            "num_matches": int(res.num_matches)}


def test_match_with_preset_warns_random_init(caplog, tmp_path, demo_pair):
    out = tmp_path / "pose.json"
    code = main(["match", *_demo_args(), "--device", "cpu", "--preset", "tiny", "--seed", "5", "--json", str(out)])
    assert code == 0
    assert "randomly initialised 'tiny'" in caplog.text
    # the pose is the API's with the network drawn from torch.manual_seed(--seed), not the bundled default's
    from mickey_ros.model import build_model
    from mickey_ros.model.default import load_default_network

    torch.manual_seed(5)
    data = json.loads(out.read_text())
    assert {k: data[k] for k in ("T_0to1", "confidence", "num_inliers", "num_matches")} == \
        _api_pose(build_model("tiny").eval(), demo_pair, seed=5)
    assert data["T_0to1"] != _api_pose(load_default_network(), demo_pair, seed=5)["T_0to1"]


def test_match_without_checkpoint_uses_the_bundled_default(caplog, capsys, tmp_path, demo_pair):
    from mickey_ros.model.default import load_default_network

    caplog.set_level(logging.INFO)
    out = tmp_path / "pose.json"
    assert main(["match", *_demo_args(), "--device", "cpu", "--json", str(out)]) == 0
    assert "using the bundled default network" in caplog.text and "randomly" not in caplog.text
    net = load_default_network()  # the log line says what the file says: its preset and training size
    assert f"default_small.pt: {net.preset} preset, trained at {net.input_size[0]}x{net.input_size[1]}" in caplog.text
    assert net.preset == "small" and "tiny" not in caplog.text
    data = json.loads(out.read_text())  # the bundled network's pose, as the API gives it on the same pair and seed
    assert {k: data[k] for k in ("T_0to1", "confidence", "num_inliers", "num_matches")} == \
        _api_pose(load_default_network(), demo_pair)


def test_match_refine_off_gives_the_solver_pose_and_bad_values_are_refused(tmp_path, demo_pair, capsys):
    from mickey_ros.model.default import load_default_network

    out = tmp_path / "pose.json"
    assert main(["match", *_demo_args(), "--device", "cpu", "--refine", "off", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    got = {k: data[k] for k in ("T_0to1", "confidence", "num_inliers", "num_matches")}
    assert got == _api_pose(load_default_network(), demo_pair, refine=False)
    assert got["T_0to1"] != _api_pose(load_default_network(), demo_pair)["T_0to1"]
    capsys.readouterr()
    assert main(["match", *_demo_args(), "--refine", "maybe"]) == 2
    err = capsys.readouterr().err.strip()  # argparse quotes the choices on some Python versions, not on others
    assert err.startswith("mickey-ros: error: mickey-ros match: argument --refine: invalid choice: 'maybe' (choose")
    assert "\n" not in err and all(choice in err for choice in ("auto", "on", "off"))


def test_match_min_confidence_refuses_the_pose_with_exit_1_and_bad_values_are_one_line(tmp_path, capsys):
    out = tmp_path / "pose.json"
    assert main(["match", *_demo_args(), "--device", "cpu", "--json", str(out)]) == 0
    confidence = json.loads(out.read_text())["confidence"]
    capsys.readouterr()
    high = f"{min(1.0, confidence + 0.01):.4f}"
    assert main(["match", *_demo_args(), "--device", "cpu", "--min-confidence", high, "--json", str(out)]) == 1
    captured = capsys.readouterr()
    assert f"below min_confidence {float(high):g}" in captured.out + captured.err
    assert main(["match", *_demo_args(), "--min-confidence", "high"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("mickey-ros: error: --min-confidence: expected 'auto' or a confidence in [0, 1] (0 = keep every "
                   "pose), got 'high'")


def test_match_depth_flip_gives_the_api_depth_flip_pose(tmp_path, demo_pair):
    from mickey_ros.model.default import load_default_network

    out = tmp_path / "pose.json"
    assert main(["match", *_demo_args(), "--device", "cpu", "--depth-flip", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    got = {k: data[k] for k in ("T_0to1", "confidence", "num_inliers", "num_matches")}
    assert got == _api_pose(load_default_network(), demo_pair, depth_flip=True)
    assert got["T_0to1"] != _api_pose(load_default_network(), demo_pair)["T_0to1"]


def _demo_blocks(printed: str) -> tuple[list[list[str]], list[str]]:
    """The demo's stdout split into the per-pair blocks and the totals block."""
    blocks: list[list[str]] = []
    for line in printed.splitlines():
        if line.startswith(("pair ", "all ")):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
    return blocks[:-1], blocks[-1]


def _row(block: list[str], label: str) -> str:
    """The error row of ``label`` (the one under the ``error`` header)."""
    header = next(i for i, line in enumerate(block) if line.split()[:2] == ["error", "rotation"])
    return next(line for line in block[header:] if line.strip().startswith(label))


@pytest.mark.slow  # the bundled network on 5 pairs, 5 pictures
def test_demo_runs_every_pair_beside_ground_truth_and_no_motion(capsys, tmp_path, demo_pair):
    from mickey_ros.demo import load_demo_pairs
    from mickey_ros.model.default import load_default_network

    out_json, out_png = tmp_path / "p.json", tmp_path / "demo.png"
    assert main(["demo", "--device", "cpu", "--json", str(out_json), "--viz", str(out_png)]) == 0
    blocks, totals = _demo_blocks(capsys.readouterr().out)
    pairs = load_demo_pairs()
    assert len(pairs) == len(blocks) == 5
    data = json.loads(out_json.read_text())
    assert [p["pair"] for p in data["pairs"]] == [1, 2, 3, 4, 5]
    for k, (pair, block, entry) in enumerate(zip(pairs, blocks, data["pairs"])):
        assert block[0].startswith(f"pair {k + 1}/5: {pair.spec.name0} -> {pair.spec.name1}  ({pair.description})")
        gt = np.asarray(entry["T_0to1_gt"])
        np.testing.assert_allclose(gt, pair.spec.T_0to1)
        assert entry["success"] is True and (entry["name0"], entry["name1"]) == (pair.spec.name0, pair.spec.name1)
        floor = entry["no_motion_errors"]  # identity: rotation = the ground-truth angle, centre error = |t_gt|
        angle = np.degrees(np.arccos((np.trace(gt[:3, :3]) - 1) / 2))
        assert floor["rot_err_deg"] == pytest.approx(angle, abs=1e-4) and floor["scale_ratio"] == 0.0
        assert floor["trans_err_m"] == pytest.approx(np.linalg.norm(gt[:3, 3]), rel=1e-6)
        assert floor["trans_dir_err_deg"] is None  # undefined for t = 0
        est, T = entry["errors"], np.asarray(entry["T_0to1"])
        assert est["scale_ratio"] == pytest.approx(np.linalg.norm(T[:3, 3]) / np.linalg.norm(gt[:3, 3]), rel=1e-6)
        assert f"{floor['rot_err_deg']:.2f} deg" in _row(block, "no motion")
        assert f"{est['rot_err_deg']:.2f} deg" in _row(block, "estimate")
        assert f"{est['trans_err_m']:.3f} m" in _row(block, "estimate")
        assert f"{est['scale_ratio']:.3f}" in _row(block, "estimate") and "n/a" in _row(block, "no motion")
        assert any(line.strip().startswith("ground truth") and f"|t| {np.linalg.norm(gt[:3, 3]):.3f} m" in line
                   for line in block)
        picture = cv2.imread(entry["viz"])
        assert entry["viz"] == str(tmp_path / f"demo_pair{k + 1}.png") and picture.shape[1] > 2 * 294
    # pair 1 is the match the API gives on the original demo pair, with the same network and seed
    assert data["pairs"][0]["T_0to1"] == _api_pose(load_default_network(), demo_pair)["T_0to1"]
    # totals: medians over the pairs (no failures here), printed as such
    summary = data["summary"]
    assert summary["num_pairs"] == 5 and summary["num_failures"] == 0
    for key, err in (("median_rot_err_deg", "rot_err_deg"), ("median_trans_err_m", "trans_err_m")):
        assert summary[key] == pytest.approx(np.median([p["errors"][err] for p in data["pairs"]]))
        assert summary["identity"][key] == pytest.approx(np.median([p["no_motion_errors"][err] for p in data["pairs"]]))
    assert totals[0].startswith("all 5 pairs: medians (5 of 5 with a pose")
    assert f"{summary['median_rot_err_deg']:.2f} deg" in _row(totals, "estimate")
    assert f"{summary['identity']['median_trans_err_m']:.3f} m" in _row(totals, "no motion")
    assert not (tmp_path / "demo.png").exists()


@pytest.mark.parametrize("refine", ["auto", "off"])
def test_demo_pose_with_the_bundled_network_beats_no_motion(tmp_path, refine):
    """The demo's poses against gt_pose.txt / pairs.txt: over the five pairs the bundled network must beat "no
    motion" in median rotation and camera-centre error and be metric. Measured (solver seed 0), stage-9 default with
    its two-view refinement (the default): medians 1.15 deg / 0.157 m / scale 0.71, pair 1 1.3 deg / 0.16 m; the
    stage-8 default gave 0.74 deg / 0.105 m / 0.79 refined, 1.33 deg / 0.248 m / 0.76 with the solver alone
    (``--refine off``); "no motion" 10.0 deg / 0.543 m. The constant-depth default failed all three (6.84 deg /
    0.619 m / scale 0.13, on the renders before the bitmap font). The solver-only bounds hold its scale within a
    factor 2 (its p10-p90 on 120 held-out pairs is 0.49-1.34). The full acceptance is
    test_default_network_accuracy's."""
    out = tmp_path / "p.json"
    assert main(["demo", "--device", "cpu", "--quiet", "--refine", refine, "--json", str(out)]) == 0
    summary = json.loads(out.read_text())["summary"]
    floor = summary["identity"]
    rot, centre, scale, pair_rot, pair_centre = (0.2, 0.4, (0.6, 1.3), 0.2, 0.4) if refine == "auto" else \
        (0.6, 0.9, (0.5, 2.0), 0.5, 0.6)
    assert summary["num_failures"] == 0
    assert summary["median_rot_err_deg"] < rot * floor["median_rot_err_deg"]
    assert summary["median_trans_err_m"] < centre * floor["median_trans_err_m"]
    assert scale[0] < summary["scale_ratio_median"] < scale[1]
    pair1 = json.loads(out.read_text())["pairs"][0]  # the bundled pair of README and demo_pair
    gt = np.loadtxt(DEMO / "gt_pose.txt").reshape(3, 4)
    np.testing.assert_allclose(pair1["T_0to1_gt"][:3], gt, atol=1e-9)
    assert pair1["errors"]["rot_err_deg"] < pair_rot * pair1["no_motion_errors"]["rot_err_deg"]
    assert pair1["errors"]["trans_err_m"] < pair_centre * pair1["no_motion_errors"]["trans_err_m"]


def test_demo_exits_1_when_a_pair_has_no_pose(monkeypatch, capsys, tmp_path):
    from mickey_ros.pipeline import RelativePose, Relocalizer

    calls = []

    def no_pose(self, image0, K0, image1, K1):
        calls.append(image1.shape)
        return RelativePose(success=False, reason="too few matches: 3 candidates", T_0to1=np.eye(4))

    monkeypatch.setattr(Relocalizer, "estimate", no_pose)
    assert main(["demo", "--device", "cpu", "--json", str(tmp_path / "p.json")]) == 1
    blocks, totals = _demo_blocks(capsys.readouterr().out)
    assert len(calls) == 5 and all("estimate     no pose: too few matches: 3 candidates" in "\n".join(b)
                                   for b in blocks)
    assert "inf" in _row(blocks[0], "estimate") and totals[0].startswith("all 5 pairs: medians (0 of 5 with a pose")
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["summary"]["num_failures"] == 5 and data["pairs"][2]["errors"]["rot_err_deg"] is None


def test_demo_bad_viz_path_fails_before_the_network(monkeypatch, capsys, tmp_path):
    import mickey_ros.cli as cli

    monkeypatch.setattr(cli, "_load_network", lambda args: pytest.fail("the network was loaded"))
    assert main(["demo", "--device", "cpu", "--viz", str(tmp_path / "demo.txt")]) == 2
    assert "--viz: expected a file name ending in .png" in _error_line(capsys)
    assert main(["demo", "--device", "cpu", "--viz", str(tmp_path / "nope" / "demo.png")]) == 2
    assert _error_line(capsys).endswith(f"--viz: folder {tmp_path / 'nope'} does not exist")


def test_missing_default_weights_is_one_line(monkeypatch, tmp_path, capsys):
    import mickey_ros.model.default as default

    monkeypatch.setattr(default, "DEFAULT_WEIGHTS", tmp_path / "absent.pt")
    assert main(["match", *_demo_args(), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mickey-ros: error: default network: {tmp_path / 'absent.pt'} is missing; reinstall mickey_ros "
                   "or pass --checkpoint"]


def _small_png(tmp_path: Path) -> Path:
    p = tmp_path / "small.png"
    cv2.imwrite(str(p), np.zeros((30, 30, 3), np.uint8))
    return p


def _garbage(tmp_path: Path) -> Path:
    p = tmp_path / "garbage.png"
    p.write_bytes(b"this is not an image")
    return p


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("missing image", r"image0: file not found: .*nope\.png"),
        ("unreadable image", r"image1: cannot decode .*garbage\.png as an image"),
        ("zero focal", r"--intrinsics0: expected focal lengths fx > 0 and fy > 0, got fx=0"),
        ("negative focal", r"--intrinsics1: expected focal lengths fx > 0 and fy > 0, got fx=250, fy=-3"),
        ("wrong count", r"--intrinsics0: expected 4 numbers FX FY CX CY, got 3"),
        ("not a number", r"--intrinsics1: expected 4 numbers FX FY CX CY, got \['a'"),
        ("too small", r"image1: expected at least 42x42 pixels \(3x3 patches of 14\), got 30x30"),
        ("wrong keys", r"checkpoint .*wrong\.ckpt: does not match model 'tiny': unexpected 2 keys "
                       r"\[foo\.\* \(1\), bar\.\* \(1\)\]$"),
        ("missing backbone", r"dinov2_vitl14_pretrain\.pth"),
        ("missing checkpoint", r"not found"),
        ("unknown preset", r"preset: expected one of official, .*tiny.*got 'foo'"),
        ("no gpu", r"device: 'cuda' requested but no CUDA GPU"),
    ],
)
def test_bad_input_exit_2_one_line(case, match, tmp_path, capsys, tiny_ckpt):
    img0, img1 = str(DEMO / "im0.png"), str(DEMO / "im1.png")
    i0, i1 = list(INTR), list(INTR)
    extra: list[str] = []
    if case == "missing image":
        img0 = str(tmp_path / "nope.png")
    elif case == "unreadable image":
        img1 = str(_garbage(tmp_path))
    elif case == "zero focal":
        i0[0] = "0"
    elif case == "negative focal":
        i1[1] = "-3"
    elif case == "wrong count":
        i0 = i0[:3]
    elif case == "not a number":
        i1 = ["a", "b", "c", "d"]
    elif case == "too small":
        img1 = str(_small_png(tmp_path))
    elif case == "wrong keys":
        # a complete checkpoint (backbone included) with two keys the model does not have
        data = torch.load(tiny_ckpt, weights_only=True)
        data["state_dict"].update({"foo.weight": torch.zeros(2), "bar.bias": torch.zeros(2)})
        path = tmp_path / "wrong.ckpt"
        torch.save(data, path)
        extra = ["--checkpoint", str(path)]
    elif case == "missing backbone":
        path = tmp_path / "mickey.ckpt"
        torch.save({"state_dict": {"compute_matches.matcher.matching_mat.dustbin_score": torch.tensor(1.0)}}, path)
        extra = ["--checkpoint", str(path)]
    elif case == "missing checkpoint":
        extra = ["--checkpoint", str(tmp_path / "absent.ckpt")]
    elif case == "unknown preset":
        extra = ["--preset", "foo"]
    elif case == "no gpu":
        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
        extra = ["--device", "cuda"]
    device = [] if "--device" in extra else ["--device", "cpu"]
    code = main(["match", img0, img1, "--intrinsics0", *i0, "--intrinsics1", *i1, *device, *extra])
    assert code == 2
    import re

    assert re.search(match, _error_line(capsys)), case


def test_api_raises_the_same_message_as_the_cli(tmp_path, capsys):
    with pytest.raises(ImageError) as info:
        read_image(tmp_path / "nope.png", "image0")
    assert main(["match", str(tmp_path / "nope.png"), str(DEMO / "im1.png"),
                 "--intrinsics0", *INTR, "--intrinsics1", *INTR]) == 2
    assert _error_line(capsys) == f"mickey-ros: error: {info.value}"
    with pytest.raises(IntrinsicsError) as info2:
        intrinsics_from_values([0, 250, 147, 112], "--intrinsics0")
    assert isinstance(info2.value, MickeyError) and isinstance(info2.value, ValueError)


@pytest.mark.parametrize(
    ("extra", "first_image", "expected"),
    [
        ([], "nope.png", "mickey-ros: error: image0: file not found"),
        (["--preset", "foo"], None, "mickey-ros: error: preset: expected one of"),
    ],
)
def test_console_entry_point_runs_as_a_process(tmp_path, extra, first_image, expected):
    """The real process: exit code 2 and exactly one stderr line (no warning before it), no traceback."""
    image0 = str(tmp_path / first_image) if first_image else str(DEMO / "im0.png")
    proc = subprocess.run(
        [sys.executable, "-m", "mickey_ros.cli", "match", image0, str(DEMO / "im1.png"),
         "--intrinsics0", *INTR, "--intrinsics1", *INTR, "--device", "cpu", *extra],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, lines
    assert lines[0].startswith(expected)


def test_debug_flag_shows_traceback(tmp_path, capsys):
    assert main(["--debug", "match", str(tmp_path / "nope.png"), str(DEMO / "im1.png"),
                 "--intrinsics0", *INTR, "--intrinsics1", *INTR]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_random_init_main_job_is_reproducible(tmp_path):
    """A random-init network (--preset) gives the same pose in a fresh process as in this one, whatever this
    process's random state; another --seed draws another network."""
    args = ["match", *_demo_args(), "--device", "cpu", "--preset", "tiny"]
    torch.rand(17)  # move this process's global random state: the command must seed its own network
    assert main([*args, "--json", str(tmp_path / "here.json")]) == 0
    proc = subprocess.run([sys.executable, "-m", "mickey_ros.cli", *args, "--json", str(tmp_path / "fresh.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert main([*args, "--seed", "1", "--json", str(tmp_path / "seed1.json")]) == 0
    here, fresh, seed1 = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("here", "fresh", "seed1"))
    assert here == fresh
    assert here["T_0to1"] != seed1["T_0to1"]


def test_match_brings_images_to_the_training_size_and_max_side_overrides_it(tmp_path, capsys, caplog):
    """By default an image is brought to the bundled network's recorded training size (logged, K rescaled);
    --max-side PX is a downscale-only budget instead: the 2x pair at --max-side 294 gives the pose of the demo
    pair as it is (--max-side 0: no resize)."""
    from mickey_ros.model.default import load_default_network

    big = tmp_path / "big0.png", tmp_path / "big1.png"
    for src, dst in zip(("im0.png", "im1.png"), big):
        image = cv2.imread(str(DEMO / src))
        cv2.imwrite(str(dst), cv2.resize(image, (588, 448), interpolation=cv2.INTER_NEAREST))
    args = _demo_args()
    k0, k1 = args[3:7], args[8:12]
    scaled = [[str(2 * float(v) + (0.5 if i >= 2 else 0.0)) for i, v in enumerate(k)] for k in (k0, k1)]
    big_args = ["match", str(big[0]), str(big[1]), "--intrinsics0", *scaled[0], "--intrinsics1", *scaled[1],
                "--device", "cpu"]
    width, height = load_default_network().input_size
    with caplog.at_level(logging.INFO, logger="mickey_ros.pipeline"):
        assert main([*big_args, "--json", str(tmp_path / "default.json")]) in (0, 1)
    assert any(f"588x448 resized to {width}x{height} for the network's {width}x{height} training size, K rescaled"
               in r.getMessage() for r in caplog.records)
    assert main([*big_args, "--max-side", "294", "--json", str(tmp_path / "a.json")]) in (0, 1)
    assert main(["match", *args, "--device", "cpu", "--max-side", "0", "--json", str(tmp_path / "b.json")]) in (0, 1)
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    # a 2x nearest upscale brought back by the bilinear half-size resize is the same image, and the rescaled K is
    # the demo K: the same pose
    np.testing.assert_allclose(a["T_0to1"], b["T_0to1"], atol=1e-6)
    code = main(["match", *args, "--device", "cpu", "--max-side", "10"])
    assert code == 2
    assert _error_line(capsys) == ("mickey-ros: error: --max-side: expected 0 (no resize) or a long side of at "
                                   "least 42 pixels, got 10")
