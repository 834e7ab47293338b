"""``mickey-ros eval-pairs``: the pair-list parser, EXIF rotations against the renderer, hand-checked metrics with a
scripted estimator, per-pair isolation, and one real run of the command on rendered pairs."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO
from mickey_ros.data.synthetic_scene import demo_cameras, make_textures, render
from mickey_ros.errors import DatasetError, InputError
from mickey_ros.eval_pairs import (_Progress, check_images, evaluate_pairs, format_pair_line, inplane_rotation,
                                   json_safe, parse_pairs, rotate_K)
from mickey_ros.geometry.metrics import vcre
from mickey_ros.geometry.se3 import invert_T, make_T
from mickey_ros.pipeline import RelativePose


def _rot(axis: str, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    R = np.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def _line(name0: str, name1: str, rot0: int, rot1: int, K0: np.ndarray, K1: np.ndarray, T: np.ndarray) -> str:
    numbers = [*np.asarray(K0).ravel(), *np.asarray(K1).ravel(), *np.asarray(T).ravel()]
    return " ".join([name0, name1, str(rot0), str(rot1), *(repr(float(v)) for v in numbers)])


def _write_png(path: Path, image: np.ndarray) -> None:
    assert cv2.imwrite(str(path), np.ascontiguousarray(image[:, :, ::-1]))


@pytest.fixture(scope="module")
def textures():
    return make_textures(0)


K_A = np.array([[220.0, 0.0, 146.5], [0.0, 220.0, 111.5], [0.0, 0.0, 1.0]])  # image "a" 294 x 224
K_B = np.array([[180.0, 0.0, 120.0], [0.0, 175.0, 100.0], [0.0, 0.0, 1.0]])  # image "b" 252 x 196: other K, size


@pytest.fixture(scope="module")
def images(tmp_path_factory, textures):
    """``a.png`` (294 x 224, K_A) and ``b.png`` (252 x 196, K_B): two rendered views of the demo room."""
    root = tmp_path_factory.mktemp("images")
    _, T0, T1, _, _ = demo_cameras()
    _write_png(root / "a.png", render(K_A, T0, 294, 224, textures)[0])
    _write_png(root / "b.png", render(K_B, T1, 252, 196, textures)[0])
    return root


# -- parsing ----------------------------------------------------------------------------------------------------------
def test_parse_reads_pairs_and_skips_comments_and_blank_lines(tmp_path):
    T = make_T(_rot("y", 5.0), [0.1, 0.2, 0.3])
    text = "\n".join(["# ScanNet sample pairs", "", _line("a.png", "b.png", 0, 0, K_A, K_B, T) + "  # the first",
                      "   ", _line("s/c/1.jpg", "s/c/2.jpg", 1, 3, K_B, K_A, np.eye(4))]) + "\n"
    (tmp_path / "pairs.txt").write_text(text)
    pairs = parse_pairs(tmp_path / "pairs.txt")
    assert [(p.name0, p.name1, p.rot0, p.rot1, p.line) for p in pairs] == [
        ("a.png", "b.png", 0, 0, 3), ("s/c/1.jpg", "s/c/2.jpg", 1, 3, 5)]
    np.testing.assert_array_equal(pairs[0].K0, K_A)
    np.testing.assert_array_equal(pairs[0].K1, K_B)
    np.testing.assert_allclose(pairs[0].T_0to1, T, atol=1e-15)


def test_format_pair_line_is_read_back_exactly(tmp_path):
    T = make_T(_rot("x", 1.0 / 3.0), [0.1, -2.0 / 3.0, 1e-7])
    line = format_pair_line("dir/a.png", "b.png", K_A, K_B, T, rot1=3)
    assert line == _line("dir/a.png", "b.png", 0, 3, K_A, K_B, T)
    (tmp_path / "pairs.txt").write_text(line + "\n")
    (pair,) = parse_pairs(tmp_path / "pairs.txt")
    assert (pair.name0, pair.name1, pair.rot0, pair.rot1) == ("dir/a.png", "b.png", 0, 3)
    np.testing.assert_array_equal(pair.T_0to1, T)
    np.testing.assert_array_equal(pair.K1, K_B)
    with pytest.raises(InputError, match=r"^name1: expected an image name without whitespace, got 'b c.png'$"):
        format_pair_line("a.png", "b c.png", K_A, K_B, T)
    with pytest.raises(InputError, match=r"^T_0to1: expected 16 numbers, got 12$"):
        format_pair_line("a.png", "b.png", K_A, K_B, T[:3])


GOOD = _line("a.png", "b.png", 0, 0, K_A, K_B, np.eye(4)).split()


def _with(index: int, value: str) -> str:
    fields = list(GOOD)
    fields[index] = value
    return " ".join(fields)


@pytest.mark.parametrize("line, message", [
    (" ".join(GOOD[:-1]), r"pairs.txt:2: expected 38 fields 'name0 name1 rot0 rot1 K0\(9\) K1\(9\) T_0to1\(16\)', "
                          r"got 37$"),
    (" ".join(GOOD + ["1.0"]), r"pairs.txt:2: expected 38 fields .*, got 39$"),
    (_with(6, "abc"), r"pairs.txt:2: field 7 \(K0\[2\]\): expected a number, got 'abc'$"),
    (_with(30, "nan"), r"pairs.txt:2: field 31 \(T_0to1\[8\]\): expected a finite number, got 'nan'$"),
    (_with(13, "0"), r"pairs.txt:2: K1: expected focal lengths fx > 0 and fy > 0, got fx=0, fy=175$"),
    (_with(3, "4"), r"pairs.txt:2: rot1: expected 0, 1, 2 or 3 \(EXIF rotation in quarter turns\), got '4'$"),
    (_with(2, "0.5"), r"pairs.txt:2: rot0: expected 0, 1, 2 or 3 .*, got '0.5'$"),
    (_with(22, "2.0"), r"pairs.txt:2: T_0to1: expected a rotation \(orthonormal, det \+1, to 0.001\) in its "
                       r"top-left 3x3, got det 2$"),
    (_with(37, "2.0"), r"pairs.txt:2: T_0to1: expected last row 0 0 0 1, got \[0.0, 0.0, 0.0, 2.0\]$"),
    (_with(5, "3.0").replace(" 0 0 ", " 1 0 ", 1), r"pairs.txt:2: K0: expected zero skew with an EXIF rotation "
                                                   r"\(rot0=1\), got K\[0,1\]=3, K\[1,0\]=0$"),
])
def test_a_bad_line_is_one_error_naming_the_file_and_line(tmp_path, line, message):
    path = tmp_path / "pairs.txt"
    path.write_text(f"# header\n{line}\n{' '.join(GOOD)}\n")
    with pytest.raises(DatasetError, match=message):
        parse_pairs(path)


def test_empty_or_missing_lists_and_missing_images(tmp_path, images):
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(DatasetError, match=r"empty.txt: no pairs \(expected lines 'name0 name1"):
        parse_pairs(tmp_path / "empty.txt")
    with pytest.raises(DatasetError, match="PAIRS.txt: file not found: .*nope.txt"):
        parse_pairs(tmp_path / "nope.txt")
    (tmp_path / "pairs.txt").write_text("\n".join([" ".join(GOOD), _with(1, "gone.png"), _with(0, "lost.png")]))
    pairs = parse_pairs(tmp_path / "pairs.txt")
    check_images(pairs[:1], images)  # all there: no error
    with pytest.raises(InputError, match=r"--image-dir .*: 2 of 4 images not found, first: gone.png \(line 2\)$"):
        check_images(pairs, images)
    with pytest.raises(InputError, match="--image-dir: folder not found: .*no_dir"):
        check_images(pairs, tmp_path / "no_dir")


# -- EXIF rotation ----------------------------------------------------------------------------------------------------
K_UP = np.array([[150.0, 0.0, 80.0], [0.0, 140.0, 55.0], [0.0, 0.0, 1.0]])  # upright 168 x 126, off-centre
W_UP, H_UP = 168, 126


def _file_camera(k: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """By hand: the camera whose image, turned ``k`` quarter turns counter-clockwise, is the upright one.

    Returns ``(K_file, Q with X_up = Q X_file, (W_file, H_file))``."""
    fx, fy, cx, cy = K_UP[0, 0], K_UP[1, 1], K_UP[0, 2], K_UP[1, 2]
    if k == 1:  # file pixel (x, y) = upright (W_f - 1 - v, u): x_up = y_f, y_up = -x_f
        K = [[fy, 0, H_UP - 1 - cy], [0, fx, cx], [0, 0, 1]]
        Q, size = [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], (H_UP, W_UP)
    elif k == 2:  # half turn: x_up = -x_f, y_up = -y_f
        K = [[fx, 0, W_UP - 1 - cx], [0, fy, H_UP - 1 - cy], [0, 0, 1]]
        Q, size = [[-1, 0, 0], [0, -1, 0], [0, 0, 1]], (W_UP, H_UP)
    else:  # three quarter turns: x_up = -y_f, y_up = x_f
        K = [[fy, 0, cy], [0, fx, W_UP - 1 - cx], [0, 0, 1]]
        Q, size = [[0, -1, 0], [1, 0, 0], [0, 0, 1]], (H_UP, W_UP)
    return np.array(K, dtype=np.float64), make_T(np.array(Q, dtype=np.float64), np.zeros(3)), size


CAM0_UP = make_T(_rot("y", 4.0), [0.1, 0.0, 0.2])  # camera-to-world poses of the upright cameras
CAM1_UP = make_T(_rot("y", -8.0) @ _rot("x", 3.0), [0.4, -0.05, 0.35])


@pytest.fixture(scope="module")
def rotated(tmp_path_factory, textures):
    """Upright renders of two cameras and, per k, the file images rendered by the hand-made file cameras."""
    root = tmp_path_factory.mktemp("rotated")
    up = [render(K_UP, T, W_UP, H_UP, textures)[0] for T in (CAM0_UP, CAM1_UP)]
    files = {}
    for k in (1, 2, 3):
        K_file, Q, (w, h) = _file_camera(k)
        files[k] = [render(K_file, T @ Q, w, h, textures)[0] for T in (CAM0_UP, CAM1_UP)]  # X_w = T_up Q X_file
        for i, image in enumerate(files[k]):
            _write_png(root / f"rot{k}_{i}.png", image)
    for i, image in enumerate(up):
        _write_png(root / f"up_{i}.png", image)
    return root, up, files


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rotation_helpers_match_a_camera_rendered_turned(rotated, k):
    _, up, files = rotated
    K_file, Q, (w, h) = _file_camera(k)
    for i in (0, 1):  # the hand-made file camera really films the upright image turned by -k quarter turns
        diff = np.abs(np.rot90(files[k][i], k).astype(np.int16) - up[i].astype(np.int16))
        assert files[k][i].shape[:2] == (h, w) and diff.mean() < 0.5 and np.mean(diff > 8) < 0.005
    K_up, size = rotate_K(K_file, w, h, k)
    np.testing.assert_allclose(K_up, K_UP, atol=1e-12)
    assert size == (W_UP, H_UP)
    np.testing.assert_allclose(inplane_rotation(k), Q, atol=1e-15)
    np.testing.assert_array_equal(inplane_rotation(0), np.eye(4))


def test_rotated_files_reach_the_estimator_upright_and_the_pose_comes_back(rotated):
    """rot0 = 1, rot1 = 3 (and 2, 2): the estimator sees the upright images and K; the upright truth it returns
    maps back to the files' ground truth exactly (zero errors)."""
    root, up, _ = rotated
    lines, truth_up = [], invert_T(CAM1_UP) @ CAM0_UP
    for k0, k1 in ((1, 3), (2, 2), (0, 1)):
        (K0, Q0, _), (K1, Q1, _) = (_file_camera(k0) if k0 else (K_UP, np.eye(4), None)), _file_camera(k1)
        T_file = invert_T(CAM1_UP @ Q1) @ (CAM0_UP @ Q0)  # from the file cameras' camera-to-world poses
        name0 = f"rot{k0}_0.png" if k0 else "up_0.png"
        lines.append(_line(name0, f"rot{k1}_1.png", k0, k1, K0, K1, T_file))
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    seen = []

    def estimate(image0, K0, image1, K1):
        seen.append((image0, K0, image1, K1))
        return RelativePose(success=True, reason="", T_0to1=truth_up.copy(), confidence=0.5)

    pairs = parse_pairs(root / "pairs.txt")
    out = evaluate_pairs(pairs, root, estimate)
    for (image0, K0, image1, K1), (k0, k1) in zip(seen, ((1, 3), (2, 2), (0, 1))):
        assert image0.shape == up[0].shape and image1.shape == up[1].shape
        for image, upright in ((image0, up[0]), (image1, up[1])):  # the upright views, not the files'
            assert np.abs(image.astype(np.int16) - upright).mean() < 0.5
        np.testing.assert_allclose(K0, K_UP, atol=1e-12)
        np.testing.assert_allclose(K1, K_UP, atol=1e-12)
    for row, pair in zip(out["pairs"], pairs):
        np.testing.assert_allclose(row["T_0to1"], pair.T_0to1, atol=1e-12)
        assert row["rot_err_deg"] < 1e-5 and row["trans_err_m"] < 1e-12 and row["vcre_px"] < 1e-9
        assert row["t_angle_err_deg"] < 1e-5 and row["scale_ratio"] == pytest.approx(1.0, abs=1e-12)


# -- hand-checked metrics with a scripted estimator -------------------------------------------------------------------
def _hand_list(images: Path) -> tuple[Path, list[np.ndarray]]:
    gts = [make_T(_rot("y", 6.0), [0.3, 0.0, 0.4]),  # |t| = 0.5 m
           make_T(_rot("y", 10.0), [0.0, 0.0, 0.5]),  # pure forward motion
           make_T(_rot("y", 6.0), [0.3, 0.0, 0.4]),
           make_T(_rot("y", 6.0), [0.3, 0.0, 0.4])]
    path = images / "hand.txt"
    path.write_text("\n".join(_line("a.png", "b.png", 0, 0, K_A, K_B, T) for T in gts) + "\n")
    return path, gts


def test_hand_checked_numbers_and_per_pair_isolation(images):
    path, gts = _hand_list(images)
    est_b = make_T(_rot("z", 4.0) @ gts[1][:3, :3], 0.5 * gts[1][:3, 3])  # 4 deg off, half the distance
    script = [RelativePose(success=True, reason="", T_0to1=gts[0].copy(), confidence=0.9),
              RelativePose(success=True, reason="", T_0to1=est_b, confidence=0.5),
              RuntimeError("boom"),  # an unexpected error: a counted failure, the run goes on
              RelativePose(success=False, reason="too few matches", T_0to1=np.eye(4))]
    calls = []

    def estimate(image0, K0, image1, K1):
        calls.append((image0.shape, image1.shape))
        answer = script[len(calls) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    out = evaluate_pairs(parse_pairs(path), images, estimate)
    assert calls == [((224, 294, 3), (196, 252, 3))] * 4  # every pair was tried, also after the error
    rows, s = out["pairs"], out["summary"]
    assert [r["success"] for r in rows] == [True, True, False, False]
    assert [r["reason"] for r in rows] == ["", "", "RuntimeError: boom", "too few matches"]
    assert rows[0]["rot_err_deg"] == pytest.approx(0.0, abs=1e-6) and rows[0]["trans_err_m"] < 1e-12
    assert rows[0]["vcre_px"] < 1e-9 and rows[0]["scale_ratio"] == pytest.approx(1.0, abs=1e-12)
    b = rows[1]
    assert b["rot_err_deg"] == pytest.approx(4.0, abs=1e-9)
    assert b["trans_err_m"] == pytest.approx(0.25, abs=1e-12)  # t along z: centres 0.25 m apart on the axis
    assert b["t_angle_err_deg"] == pytest.approx(0.0, abs=1e-6) and b["scale_ratio"] == pytest.approx(0.5)
    assert b["vcre_px"] == pytest.approx(vcre(est_b, gts[1], K_B, 252, 196), abs=1e-12)  # image 1's K and size
    assert b["vcre_px"] != pytest.approx(vcre(est_b, gts[1], K_A, 294, 224), abs=1e-3)
    assert rows[2]["trans_err_m"] == math.inf and rows[2]["confidence"] is None and rows[2]["T_0to1"] is None
    assert s["num_pairs"] == 4 and s["num_failures"] == 2
    assert s["skipped"] == {"RuntimeError: boom": 1} and s["no_pose"] == {"too few matches": 1}
    # angular errors [0, 4, inf, inf]: recall (0, 0) (0, .25) (4, .5), flat to the threshold
    assert s["auc_pose_5deg"] == pytest.approx((4 * 0.375 + 1 * 0.5) / 5, abs=1e-12)  # 0.4
    assert s["auc_pose_10deg"] == pytest.approx((4 * 0.375 + 6 * 0.5) / 10, abs=1e-12)
    assert s["auc_pose_20deg"] == pytest.approx((4 * 0.375 + 16 * 0.5) / 20, abs=1e-12)
    assert s["scale_ratio_median"] == pytest.approx(0.75)  # [1, 0.5]: failures have no scale
    assert s["median_trans_err_m"] == math.inf  # [0, 0.25, inf, inf]
    diag = math.hypot(252, 196)
    accepted_b = b["vcre_px"] < 0.1 * diag
    assert s["prec_vcre_10pct_diag"] == (1 + accepted_b) / 4
    # by confidence: pair 0 (accepted), pair 1; recall steps of 1/4 with the two failures in the denominator
    assert s["auc_vcre_10pct_diag"] == pytest.approx(0.25 * 1 + 0.25 * (1 + accepted_b) / 2, abs=1e-9)
    ident = s["identity"]  # no motion: rotation = the ground truth's angle, centre error = |t_gt|
    assert ident["num_failures"] == 0 and ident["median_rot_err_deg"] == pytest.approx(6.0, abs=1e-9)
    assert ident["median_trans_err_m"] == pytest.approx(0.5, abs=1e-12)
    assert ident["auc_pose_5deg"] == 0.0 and ident["scale_ratio_median"] == 0.0
    text = json.dumps(json_safe(out), allow_nan=False)  # inf / NaN -> null: valid JSON
    assert json.loads(text)["pairs"][2]["trans_err_m"] is None


def test_unreadable_image_is_a_counted_failure(images, tmp_path):
    (tmp_path / "a.png").write_bytes((images / "a.png").read_bytes())
    (tmp_path / "b.png").write_bytes(b"not a png")
    path = tmp_path / "pairs.txt"
    path.write_text(" ".join(GOOD) + "\n")
    out = evaluate_pairs(parse_pairs(path), tmp_path, lambda *a: pytest.fail("the estimator must not run"))
    (reason, count), = out["summary"]["skipped"].items()
    assert count == 1 and reason.startswith("line 1: image1: cannot decode") and "b.png" in reason
    assert out["summary"]["num_failures"] == 1 and math.isnan(out["summary"]["identity"]["median_vcre_px"])


def test_json_safe_and_progress(capsys):
    assert json_safe({"a": [1.0, math.inf, -math.inf, math.nan], "b": np.float32(2.5), "c": np.int64(3),
                      "d": np.bool_(True), "e": np.eye(2)}) == {"a": [1.0, None, None, None], "b": 2.5, "c": 3,
                                                                "d": True, "e": [[1.0, 0.0], [0.0, 1.0]]}
    bar = _Progress(True, 4, width=8)
    bar.show(2)
    bar.show(4)
    assert capsys.readouterr().err == ("\rmickey-ros eval-pairs [####....]  50% 2/4 pairs"
                                       "\rmickey-ros eval-pairs [########] 100% 4/4 pairs\n")
    _Progress(False, 4).show(1)
    assert capsys.readouterr().err == ""


# -- the command ------------------------------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mickey_ros.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def _strict_json(text: str) -> dict:
    def refuse(name: str) -> None:
        raise ValueError(f"non-finite {name} in JSON")
    return json.loads(text, parse_constant=refuse)


def test_cli_bad_line_exits_2_with_one_line(images, tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text(" ".join(GOOD) + "\n" + _with(10, "x") + "\n")
    r = _cli("eval-pairs", str(path), "--image-dir", str(images))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"mickey-ros: error: {path}:2: field 11 (K0[6]): expected a number, got 'x'\n"


def test_cli_missing_images_exit_2_before_the_network_loads(images, tmp_path, capsys, monkeypatch):
    from mickey_ros import cli

    monkeypatch.setattr(cli, "_load_network", lambda args: pytest.fail("the network must not load"))
    path = tmp_path / "pairs.txt"
    path.write_text(" ".join(GOOD) + "\n" + _with(0, "missing.png") + "\n")
    assert cli.main(["eval-pairs", str(path), "--image-dir", str(images)]) == cli.EXIT_BAD_INPUT
    assert capsys.readouterr().err == (f"mickey-ros: error: --image-dir {images}: 1 of 3 images not found, "
                                       f"first: missing.png (line 2)\n")
    path.write_text(" ".join(GOOD) + "\n")
    assert cli.main(["eval-pairs", str(path), "--image-dir", str(images), "--json", str(tmp_path / "no/o.json")]) == 2
    assert capsys.readouterr().err == f"mickey-ros: error: --json: folder {tmp_path / 'no'} does not exist\n"


def test_cli_end_to_end_with_the_bundled_network(tmp_path, textures):
    """Two rendered pairs (the demo cameras; the same pair with image 1 stored turned by a quarter turn and
    rot1 = 1) and an undecodable image: exit 0, JSON with every key, the no-motion floor, one picture per pair."""
    K, T0, T1, w, h = demo_cameras()
    _write_png(tmp_path / "im0.png", render(K, T0, w, h, textures)[0])
    image1 = render(K, T1, w, h, textures)[0]
    _write_png(tmp_path / "im1.png", image1)
    _write_png(tmp_path / "im1_turned.png", np.rot90(image1, -1))  # np.rot90(file, 1) is upright again
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    gt = invert_T(T1) @ T0
    Q = inplane_rotation(1)
    K_turned = np.array([[K[1, 1], 0, h - 1 - K[1, 2]], [0, K[0, 0], K[0, 2]], [0, 0, 1]])
    lines = ["# rendered pairs", _line("im0.png", "im1.png", 0, 0, K, K, gt),
             _line("im0.png", "im1_turned.png", 0, 1, K, K_turned, Q.T @ gt),
             _line("im0.png", "broken.png", 0, 0, K, K, gt)]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    out_json, viz = tmp_path / "out.json", tmp_path / "viz"
    r = _cli("eval-pairs", str(tmp_path / "pairs.txt"), "--image-dir", str(tmp_path), "--json", str(out_json),
             "--viz-dir", str(viz), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "eval-pairs [" not in r.stderr  # stderr is not a terminal: no progress line
    data = _strict_json(out_json.read_text())
    rows, s = data["pairs"], data["summary"]
    keys = {"name0", "name1", "success", "T_0to1", "T_0to1_gt", "rot_err_deg", "trans_err_m", "t_angle_err_deg",
            "scale_ratio", "vcre_px", "confidence"}
    assert all(keys <= set(row) for row in rows) and len(rows) == 3
    assert rows[0]["success"] and rows[1]["success"], rows
    for key in ("rot_err_deg", "trans_err_m", "t_angle_err_deg", "scale_ratio"):  # same upright input, same pose
        assert rows[1][key] == pytest.approx(rows[0][key], abs=1e-6)
    np.testing.assert_allclose(rows[1]["T_0to1"], Q.T @ np.array(rows[0]["T_0to1"]), atol=1e-9)
    assert not rows[2]["success"] and rows[2]["trans_err_m"] is None and rows[2]["scale_ratio"] is None
    assert s["num_pairs"] == 3 and s["num_failures"] == 1 and list(s["skipped"].values()) == [1]
    assert "broken.png" in next(iter(s["skipped"]))
    ident = s["identity"]  # by hand: the demo motion is a 10 deg turn and a move of |C1| metres
    assert ident["median_rot_err_deg"] == pytest.approx(10.0, abs=1e-6)
    assert ident["median_trans_err_m"] == pytest.approx(float(np.linalg.norm(T1[:3, 3])), abs=1e-9)
    assert ident["auc_pose_5deg"] == 0.0
    assert 0.0 < rows[0]["confidence"] <= 1.0 and np.isfinite(rows[0]["vcre_px"])
    assert "no motion" in r.stdout and "VCRE AUC @ 10% diagonal" in r.stdout and "skipped (1):" in r.stdout
    assert "within 25 cm / 5 deg" in r.stdout and "median camera-centre error (m)" in r.stdout
    run = data["run"]  # what ran, beside the numbers
    assert {k: run[k] for k in ("checkpoint", "preset", "refine", "refine_active", "seed", "device")} == {
        "checkpoint": "bundled default", "preset": "small", "refine": "auto", "refine_active": True, "seed": 0,
        "device": "cpu"}
    assert run["network_input"]["rule"] == "training size" and len(run["network_input"]["size"]) == 2
    assert run["weights_file"].endswith("default_small.pt") and run["torch_threads"] >= 1
    pictures = sorted(p.name for p in viz.iterdir())
    assert pictures == ["0000_im0__im1.png", "0001_im0__im1_turned.png"]  # the broken pair has no images
    assert all(cv2.imread(str(viz / p)) is not None for p in pictures)
