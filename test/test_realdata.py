"""``mickey_ros.realdata``: the real-photograph converters on small fake sets written here (known poses, K, baseline,
distortion), their error lines, and the shared sets themselves where ``../shared/realdata`` exists."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from conftest import REPO
from mickey_ros.errors import DatasetError, InputError
from mickey_ros.eval_pairs import check_images, parse_pairs
from mickey_ros.geometry.se3 import invert_T, make_T
from mickey_ros.realdata import (MOTORCYCLE, SETS, check_out_dir, check_realdata, convert_euroc, convert_kitti,
                                 convert_middlebury, convert_motorcycle, convert_sets, parse_sets)

REALDATA = REPO.parent / "shared" / "realdata"
needs_realdata = pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata not found (real photographs)")


def _rot_y(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _png(path, width: int = 64, height: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (height, width), dtype=np.uint8))


def _row(values: np.ndarray) -> str:
    return " ".join(f"{v:.12e}" for v in np.asarray(values).ravel())


# -- KITTI ----------------------------------------------------------------------------------------------------------
K_KITTI = np.array([[700.0, 0.0, 30.5], [0.0, 705.0, 22.5], [0.0, 0.0, 1.0]])
POSES = [make_T(_rot_y(2.0 * i), [0.1 * i, -0.02 * i, 1.2 * i]) for i in range(7)]  # camera-to-world, metres


@pytest.fixture()
def kitti(tmp_path):
    """7 frames: calib.txt (P0, P1), poses.txt (camera-to-world), image_l/000000.png ... 000006.png."""
    src = tmp_path / "kitti"
    P0 = np.hstack([K_KITTI, np.zeros((3, 1))])
    P1 = P0.copy()
    P1[0, 3] = -700.0 * 0.54
    src.mkdir()
    (src / "calib.txt").write_text(f"{_row(P0)}\n{_row(P1)}\n")
    (src / "poses.txt").write_text("".join(f"{_row(T[:3])}\n" for T in POSES))
    for i in range(7):
        _png(src / "image_l" / f"{i:06d}.png")
    return src


def test_kitti_pairs_have_the_poses_relative_motion_and_p0s_K(kitti, tmp_path):
    done = convert_kitti(kitti, tmp_path / "out" / "kitti_seq1", "kitti_seq1")
    assert (done.name, done.num_pairs, done.image_dir) == ("kitti_seq1", 1, kitti.resolve())
    assert (tmp_path / "out" / "kitti_seq1" / "image_dir.txt").read_text() == f"{kitti.resolve()}\n"
    (pair,) = parse_pairs(done.pairs_file)  # frames (0, 5): (2, 7) needs an 8th frame
    check_images([pair], done.image_dir)
    assert (pair.name0, pair.name1) == ("image_l/000000.png", "image_l/000005.png")
    np.testing.assert_allclose(pair.K0, K_KITTI)
    np.testing.assert_allclose(pair.K1, K_KITTI)
    np.testing.assert_allclose(pair.T_0to1, invert_T(POSES[5]) @ POSES[0], atol=1e-10)
    X_world = np.array([1.0, -0.5, 20.0, 1.0])  # a world point seen by both cameras: X1 = T_0to1 X0
    X0, X5 = invert_T(POSES[0]) @ X_world, invert_T(POSES[5]) @ X_world
    np.testing.assert_allclose(pair.T_0to1 @ X0, X5, atol=1e-9)
    np.testing.assert_allclose(pair.T_0to1[:3, 3], [-0.5 * math.cos(math.radians(10)) + 6.0 * math.sin(
        math.radians(10)), 0.1, -0.5 * math.sin(math.radians(10)) - 6.0 * math.cos(math.radians(10))], atol=1e-9)


def test_kitti_labelled_calib_and_error_lines(kitti, tmp_path):
    P0 = np.hstack([K_KITTI, np.zeros((3, 1))])
    (kitti / "calib.txt").write_text(f"P0: {_row(P0)}\nP1: {_row(P0)}\nTr: {_row(np.zeros(12))}\n")
    (pair,) = parse_pairs(convert_kitti(kitti, tmp_path / "a").pairs_file)
    np.testing.assert_allclose(pair.K0, K_KITTI)
    lines = (kitti / "poses.txt").read_text().splitlines()
    (kitti / "poses.txt").write_text("\n".join(lines[:2] + ["1 0 0"] + lines[3:]) + "\n")
    with pytest.raises(DatasetError, match=r"poses.txt:3: expected 12 numbers \(a 3x4 camera-to-world pose "
                                           r"\(row-major\)\), got '1 0 0'$"):
        convert_kitti(kitti, tmp_path / "b")
    (kitti / "poses.txt").write_text("\n".join(lines[:5]) + "\n")
    with pytest.raises(DatasetError, match=r"poses.txt: expected at least 6 poses \(frames i and i \+ 5\), got 5$"):
        convert_kitti(kitti, tmp_path / "c")
    (kitti / "calib.txt").write_text(f"{_row(np.zeros(12))}\n")
    with pytest.raises(DatasetError, match=r"calib.txt: P0\[:, :3\]: expected focal lengths fx > 0"):
        convert_kitti(kitti, tmp_path / "d")
    (kitti / "calib.txt").unlink()
    with pytest.raises(DatasetError, match=r"calib.txt: file not found$"):
        convert_kitti(kitti, tmp_path / "e")


# -- Middlebury -----------------------------------------------------------------------------------------------------
CALIB = """cam0=[1038.018 0 322.037; 0 1038.018 243.393; 0 0 1]
cam1=[1038.018 0 375.308; 0 1038.018 243.393; 0 0 1]
doffs=53.271
baseline={baseline}
width=718
height=496
"""


def test_middlebury_pairs_move_camera_1_by_the_baseline_in_mm(tmp_path):
    src = tmp_path / "middlebury"
    for scene, baseline in (("Adirondack", "176.252"), ("Teddy", "160")):
        (src / scene).mkdir(parents=True)
        (src / scene / "calib.txt").write_text(CALIB.format(baseline=baseline))
        _png(src / scene / "im0.png")
        _png(src / scene / "im1.png")
    done = convert_middlebury(src, tmp_path / "out")
    pairs = parse_pairs(done.pairs_file)
    check_images(pairs, done.image_dir)
    assert [(p.name0, p.name1) for p in pairs] == [("Adirondack/im0.png", "Adirondack/im1.png"),
                                                  ("Teddy/im0.png", "Teddy/im1.png")]
    for pair, baseline_m in zip(pairs, (0.176252, 0.160)):
        expected = np.eye(4)
        expected[0, 3] = -baseline_m  # X1 = X0 - (B, 0, 0): camera 1 sits at +B on camera 0's x axis
        np.testing.assert_allclose(pair.T_0to1, expected, atol=1e-15)
        np.testing.assert_allclose(pair.K0[0, 2], 322.037)
        np.testing.assert_allclose(pair.K1[0, 2], 375.308)
    assert done.notes == ("nominal calibration only (up to ~1.5 deg off), kept: Teddy",)
    assert "# nominal calibration only (up to ~1.5 deg off), kept: Teddy" in done.pairs_file.read_text()


def test_middlebury_error_lines(tmp_path):
    calib = tmp_path / "m" / "Piano" / "calib.txt"
    calib.parent.mkdir(parents=True)
    calib.write_text(CALIB.format(baseline="x"))
    with pytest.raises(DatasetError, match=r"Piano/calib.txt: baseline: expected a number \(mm\), got 'x'$"):
        convert_middlebury(tmp_path / "m", tmp_path / "out")
    calib.write_text(CALIB.format(baseline="-3"))
    with pytest.raises(DatasetError, match=r"baseline: expected a positive number \(mm\), got -3$"):
        convert_middlebury(tmp_path / "m", tmp_path / "out")
    calib.write_text(CALIB.format(baseline="1").replace("cam1=[1038.018 0", "cam1=[1038.018"))
    with pytest.raises(DatasetError, match=r"calib.txt: cam1: expected a 3x3 matrix '\[fx 0 cx; 0 fy cy; 0 0 1\]'"):
        convert_middlebury(tmp_path / "m", tmp_path / "out")
    with pytest.raises(DatasetError, match=r"nothing: no <scene>/calib.txt \(expected Middlebury 2014 scene"):
        convert_middlebury(tmp_path / "nothing", tmp_path / "out")


# -- EuRoC ----------------------------------------------------------------------------------------------------------
K_EUROC = np.array([[458.654, 0.0, 367.215], [0.0, 457.296, 248.375], [0.0, 0.0, 1.0]])
DIST = np.array([-0.28340811, 0.07395907, 0.00019359, 1.76187114e-05])
T_BS0 = make_T(_rot_y(1.0) @ np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), [-0.02, -0.06, 0.01])
T_BS1 = make_T(np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), [-0.02, 0.045, 0.008])


def _sensor_yaml(T_BS: np.ndarray, model: str = "radial-tangential") -> str:
    def numbers(values: np.ndarray) -> str:
        return ", ".join(repr(float(v)) for v in np.ravel(values))

    return (f"%YAML:1.0\nsensor_type: camera\nT_BS:\n  cols: 4\n  rows: 4\n  data: [{numbers(T_BS)}]\n"
            f"resolution: [752, 480]\ncamera_model: pinhole\nintrinsics: [458.654, 457.296, 367.215, 248.375]\n"
            f"distortion_model: {model}\ndistortion_coefficients: [{numbers(DIST)}]\n")


@pytest.fixture()
def euroc(tmp_path):
    """cam0/cam1 with sensor.yaml and one stamp in both; each image a dot drawn where the distorted camera sees the
    point that the undistorted camera sees at pixel (150, 100)."""
    src = tmp_path / "euroc"
    seen = cv2.projectPoints(np.array([[(150.0 - 367.215) / 458.654, (100.0 - 248.375) / 457.296, 1.0]]),
                             np.zeros(3), np.zeros(3), K_EUROC, DIST)[0].reshape(2)
    image = np.zeros((480, 752), np.uint8)
    cv2.circle(image, (int(round(seen[0])), int(round(seen[1]))), 3, 255, -1)
    for cam, T_BS in (("cam0", T_BS0), ("cam1", T_BS1)):
        (src / cam / "data").mkdir(parents=True)
        (src / cam / "sensor.yaml").write_text(_sensor_yaml(T_BS))
        assert cv2.imwrite(str(src / cam / "data" / "1403715275012143104.png"), image)
    _png(src / "cam0" / "data" / "1403715273262142976.png")  # a stamp only cam0 has: no pair
    return src, seen


def test_euroc_images_are_undistorted_and_the_pose_is_camera_0_to_camera_1(euroc, tmp_path):
    src, seen = euroc
    assert np.hypot(*(seen - [150.0, 100.0])) > 20  # the distortion moves the point: the test can tell
    done = convert_euroc(src, tmp_path / "out")
    (pair,) = parse_pairs(done.pairs_file)
    check_images([pair], done.image_dir)
    assert done.image_dir == (tmp_path / "out" / "images").resolve()
    assert (pair.name0, pair.name1) == ("cam0_1403715275012143104.png", "cam1_1403715275012143104.png")
    np.testing.assert_allclose(pair.K0, K_EUROC)
    np.testing.assert_allclose(pair.T_0to1, invert_T(T_BS1) @ T_BS0, atol=1e-12)
    for name in (pair.name0, pair.name1):
        undistorted = cv2.imread(str(done.image_dir / name), cv2.IMREAD_UNCHANGED)
        assert undistorted.shape == (480, 752)
        ys, xs = np.nonzero(undistorted > 64)
        assert abs(xs.mean() - 150.0) < 1.5 and abs(ys.mean() - 100.0) < 1.5, (xs.mean(), ys.mean())
    assert "undistorted with cv2.undistort" in done.pairs_file.read_text()


def test_euroc_other_distortion_is_refused_never_passed_on_as_pinhole(euroc, tmp_path):
    src, _ = euroc
    (src / "cam1" / "sensor.yaml").write_text(_sensor_yaml(T_BS1, "equidistant"))
    with pytest.raises(DatasetError, match=r"cam1/sensor.yaml: distortion_model: expected 'radial-tangential' "
                                           r"\(undistorted here with OpenCV\), got 'equidistant'$"):
        convert_euroc(src, tmp_path / "out")
    assert not (tmp_path / "out" / "pairs.txt").exists()
    (src / "cam1" / "sensor.yaml").write_text(_sensor_yaml(T_BS1).replace("intrinsics: [458.654, ", "intrinsics: ["))
    with pytest.raises(DatasetError, match=r"cam1/sensor.yaml: expected intrinsics \[fu, fv, cu, cv\], "):
        convert_euroc(src, tmp_path / "out")


# -- scikit-image's motorcycle --------------------------------------------------------------------------------------
def test_motorcycle_calibration_is_the_docstrings_and_the_pair_is_written(tmp_path):
    data = pytest.importorskip("skimage.data", reason="scikit-image not installed (the test extra)")
    doc = " ".join(data.stereo_motorcycle.__doc__.split())
    for label, key in (("Focal length:", "f"), ("Principal point x:", "cx"), ("Principal point y:", "cy"),
                       ("Principal point dx:", "dcx"), ("Baseline:", "baseline_mm")):
        unit = "mm" if key == "baseline_mm" else "px"
        assert f"{label} {MOTORCYCLE[key]:.3f}{unit}" in doc, label
    done = convert_motorcycle(tmp_path / "motorcycle")
    (pair,) = parse_pairs(done.pairs_file)
    check_images([pair], done.image_dir)
    assert cv2.imread(str(done.image_dir / "im0.png")).shape == (500, 741, 3)
    np.testing.assert_allclose(pair.K1[0, 2] - pair.K0[0, 2], 31.086)
    np.testing.assert_allclose(pair.T_0to1[:3, 3], [-0.193001, 0.0, 0.0])


# -- arguments and the shared sets ----------------------------------------------------------------------------------
def test_argument_checks_name_the_argument(tmp_path):
    assert parse_sets("middlebury, kitti_seq1") == ("kitti_seq1", "middlebury")  # in SETS order
    assert parse_sets("all") == SETS
    with pytest.raises(InputError, match=r"^--sets: expected a comma-separated list of kitti_seq1, .*, got kiti$"):
        parse_sets("kiti,middlebury")
    with pytest.raises(InputError, match=r"^--sets: expected .*, got ''$"):
        parse_sets("")
    with pytest.raises(InputError, match=r"^--realdata: folder not found: .*nope \(expected the sets of "):
        check_realdata(tmp_path / "nope")
    with pytest.raises(InputError, match=r"^--out: .* is inside the repository .*; the real data must not be copied"):
        check_out_dir(REPO / "build" / "realdata", REPO)
    assert check_out_dir(tmp_path / "new", REPO) == (tmp_path / "new").resolve()
    with pytest.raises(DatasetError, match=r"no kitti_seq2/ folder \(expected the sets of shared/realdata"):
        convert_sets(["kitti_seq2"], tmp_path, tmp_path / "out")


@needs_realdata
def test_the_shared_sets_convert_to_valid_lists(tmp_path):
    done = {d.name: d for d in convert_sets([s for s in SETS if s != "motorcycle"], REALDATA, tmp_path)}
    assert {name: d.num_pairs for name, d in done.items()} == {"kitti_seq1": 23, "kitti_seq2": 23, "middlebury": 15,
                                                              "euroc_stereo": 1}
    for d in done.values():
        pairs = parse_pairs(d.pairs_file)
        check_images(pairs, d.image_dir)
    assert parse_pairs(done["kitti_seq1"].pairs_file)[-1].name1 == "image_l/000049.png"
    euroc = parse_pairs(done["euroc_stereo"].pairs_file)[0].T_0to1  # README: about 0.110 m, 0.8 deg
    assert np.linalg.norm(euroc[:3, 3]) == pytest.approx(0.110, abs=0.002)
