"""Map-free reading, submission writing and benchmark-exact evaluation (mickey_ros.mapfree).

The scenes are written here in tmp_path; every expected number is computed by hand below from the
perturbation applied to the GT pose, independently of the GT pose itself.
"""
from __future__ import annotations

import itertools
import logging
import math
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mickey_ros.errors import DatasetError, SubmissionError
from mickey_ros.mapfree import (
    KEY_AUC_POSE,
    KEY_AUC_VCRE,
    KEY_ESTIMATED,
    KEY_MEDIAN_ROT,
    KEY_MEDIAN_TRANS,
    KEY_MEDIAN_VCRE,
    KEY_PREC_POSE,
    KEY_PREC_VCRE,
    aggregate_results,
    evaluate_submission,
    evaluation_pairs,
    list_scenes,
    read_scene,
    relative_pose,
    write_submission,
)

BENCHMARK_KEYS = [
    "Average Median Translation Error",
    "Average Median Rotation Error",
    "Average Median Reprojection Error",
    "Precision @ Pose Error < (25.0cm, 5deg)",
    "AUC @ Pose Error < (25.0cm, 5deg)",
    "Precision @ VCRE < 90px",
    "AUC @ VCRE < 90px",
    "Estimates for % of frames",
]
GRID = list(itertools.product(
    (-0.9, -0.6, -0.3, 0.0, 0.3, 0.6, 0.9), (-0.45, -0.15, 0.15, 0.45), (1.8, 2.1, 2.4, 2.7, 3.0, 3.3, 3.6)
))


# -- hand arithmetic ------------------------------------------------------------------------------------
def qmul(a, b):
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by + ay * bw + az * bx - ax * bz, aw * bz + az * bw + ax * by - ay * bx])


def q_axis(axis, deg):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    h = math.radians(deg) / 2
    return np.array([math.cos(h), *(math.sin(h) * axis)])


def R_of(q):
    w, x, y, z = np.asarray(q) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def perturb(q_gt, t_gt, q_d, t_d):
    """Estimate = Delta @ GT with Delta = (q_d, t_d) in the GT camera: trans err |t_d|, rot err angle(q_d)."""
    return qmul(q_d, q_gt), R_of(q_d) @ t_gt + np.asarray(t_d, float)


def hand_vcre(q_d, t_d, fx, fy, cx, cy, w, h):
    R = R_of(q_d)
    fx, fy, cx, cy = (float(np.float32(v)) for v in (fx, fy, cx, cy))  # the benchmark's float32 K
    total = 0.0
    for x, y, z in GRID:
        p = R @ np.array([x, y, z]) + np.asarray(t_d, float)
        u0, v0 = min(max(fx * x / z + cx, 0), w), min(max(fy * y / z + cy, 0), h)
        u1, v1 = min(max(fx * p[0] / p[2] + cx, 0), w), min(max(fy * p[1] / p[2] + cy, 0), h)
        total += math.hypot(u0 - u1, v0 - v1)
    return total / len(GRID)


def hand_auc(items, failures):
    items = sorted(items, key=lambda it: -it[0])
    n, auc, prev, hits = len(items), 0.0, np.float32(0), 0
    for k, (conf, tp) in enumerate(items):
        hits += tp
        if k == n - 1 or items[k + 1][0] != conf:
            r = np.float32(k + 1) / np.float32(n + failures)
            auc += float(np.float32(r - prev)) * hits / (k + 1)
            prev = r
    return auc


# -- scene writing ----------------------------------------------------------------------------------------
def num(v) -> str:
    return repr(float(v))


def pose_line(name, q, t, conf=None) -> str:
    vals = [*q, *t] + ([] if conf is None else [conf])
    return name + " " + " ".join(num(v) for v in vals)


def gt_pose(i: int):
    """Some GT pose (unit q, metres) per index; the expected numbers never depend on it."""
    return q_axis([1.0, 2.0 + i, -0.5], 10.0 + 7.0 * i), np.array([0.1 * i, -0.3, 1.0 + 0.05 * i])


def write_scene(root: Path, name: str, seq1: list[int], intr: str = "590 590 270 360 540 720",
                ref_intr: str = "600 600 270 360 540 720", extra_intr: list[str] = (), zero_poses=False):
    d = root / name
    d.mkdir(parents=True)
    poses = [pose_line("seq0/frame_00000.jpg", [0.0, 0, 0, 0] if zero_poses else [1.0, 0, 0, 0], [0, 0, 0])]
    intrinsics = [f"seq0/frame_00000.jpg {ref_intr}"]
    gts = {}
    for i in seq1:
        q, t = ((np.zeros(4), np.zeros(3)) if zero_poses else gt_pose(i))
        poses.append(pose_line(f"seq1/frame_{i:05d}.jpg", q, t))
        intrinsics.append(f"seq1/frame_{i:05d}.jpg {intr}")
        gts[i] = (q, t)
    (d / "poses.txt").write_text("\n".join(poses) + "\n")
    (d / "intrinsics.txt").write_text("\n".join(intrinsics + list(extra_intr)) + "\n")
    return gts


def write_zip(path: Path, files: dict[str, list[str]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, lines in files.items():
            zf.writestr(name, "\n".join(lines) + "\n")
    return path


# -- the benchmark case -------------------------------------------------------------------------------------
A_SEQ1 = [0, 1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 13]  # skipped frames: lines 0, 5, 10 are frames 0, 7, 12
B_SEQ1 = [0, 1, 2, 3, 4, 5]
C_SEQ1 = [0, 1, 2, 3, 4, 5, 6]
A_K = (590.3821, 590.3821, 269.6, 351.2)  # not float32-exact
NO_ROT = [1.0, 0.0, 0.0, 0.0]


@pytest.fixture()
def benchmark_case(tmp_path):
    val = tmp_path / "data" / "val"
    a = write_scene(val, "s00001", A_SEQ1, intr="590.3821 590.3821 269.6 351.2 540 720")
    b = write_scene(val, "s00002", B_SEQ1,
                    extra_intr=["seq1/frame_00005.jpg 590 590 270 360 530 710",  # the last line sets W, H
                                "# seq1/frame_00005.jpg 1 1 1 1 999 999"])
    write_scene(val, "s00003", C_SEQ1)  # no file in the ZIP

    # per evaluated frame: (Delta rotation, Delta translation, confidence)
    deltas = {
        "A0": (q_axis([0, 1, 0], 1.0), [0.05, 0.0, 0.0], 3.0),  # pose accepted
        "A7": (q_axis([0, 1, 0], 3.0), [0.0, 0.0, 0.3], 3.0),  # 0.3 m: pose rejected, VCRE not; ties with A0
        "B0": (q_axis([0, 1, 0], 179.0), [0.0, 0.0, 0.0], 1.0),  # 179 deg yaw: every point behind
        "B5": (np.array(NO_ROT), [0.0, 0.0, -2.5], 7.0),  # 2.5 m forward: 84 points behind
    }

    def est(gts, frame, label, scale=1.0):
        q, t = perturb(*gts[frame], *deltas[label][:2])
        return pose_line(f"seq1/frame_{frame:05d}.jpg", scale * q, t, deltas[label][2])

    qa12, ta12 = a[12]
    a_lines = [
        "# a comment line",
        est(a, 0, "A0"),
        pose_line("seq1/frame_00007.jpg", qa12, ta12, 100.0),  # duplicate, overwritten below
        pose_line("seq1/frame_00001.jpg", *a[1], -5.0),  # negative, but frame 1 is not evaluated
        est(a, 7, "A7", scale=-2.5),  # non-unit, w < 0: same rotation
        # frame 12: every line is invalid, so it counts as missing
        pose_line("seq1/frame_00012.jpg", qa12, ta12, 1.0).replace(" ", "  ", 1),
        pose_line("seq1/frame_00012.jpg", qa12, ta12, 1.0).replace(" ", "\t", 1),
        pose_line("seq1/frame_00012.jpg", qa12, ta12),
        pose_line("seq1/frame_00012.jpg", qa12, ta12, 1.0) + " 1.0",
        pose_line("seq1/frame_00012.jpg", qa12, [math.nan, 0, 0], 1.0),
        pose_line("seq1/frame_00012.jpg", qa12, ta12, math.inf),
        pose_line("seq1/frame_00012.jpg", qa12, ta12, 1.0).replace(num(ta12[0]), "abc"),
        pose_line("seq1/frame_00012.jpg", [0.0, 0, 0, 1e-12], ta12, 1.0),
        pose_line("#seq1/frame_00012.jpg", qa12, ta12, 1.0),
        pose_line("seq1/frame_0001x.jpg", qa12, ta12, 1.0),
    ]
    b_lines = [est(b, 0, "B0"), est(b, 5, "B5")]
    sub = write_zip(tmp_path / "sub.zip", {
        "pose_s00001.txt": a_lines,
        "pose_s00002.txt": b_lines,
        "pose_s99999.txt": [pose_line("seq1/frame_00000.jpg", NO_ROT, [0, 0, 0], -1.0)],  # unknown scene
    })
    return tmp_path / "data", sub, deltas


def test_evaluate_matches_hand_computation(benchmark_case, caplog):
    data_root, sub, deltas = benchmark_case
    with caplog.at_level(logging.WARNING, logger="mickey_ros.mapfree"):
        out = evaluate_submission(sub, data_root, "val")
    assert list(out) == BENCHMARK_KEYS

    def angle(q):
        return 2 * math.degrees(math.acos(min(1.0, abs(q[0]))))

    trans = {k: float(np.linalg.norm(d[1])) for k, d in deltas.items()}
    rot = {k: angle(d[0]) for k, d in deltas.items()}
    assert rot == pytest.approx({"A0": 1.0, "A7": 3.0, "B0": 179.0, "B5": 0.0})
    reproj = {k: hand_vcre(d[0], d[1], *A_K, 540.0, 720.0) for k, d in deltas.items() if k[0] == "A"}
    reproj |= {k: hand_vcre(d[0], d[1], 590, 590, 270, 360, 530.0, 710.0) for k, d in deltas.items() if k[0] == "B"}
    conf = {k: d[2] for k, d in deltas.items()}
    pose_ok = {k: trans[k] < 0.25 and rot[k] < 5 for k in deltas}
    vcre_ok = {k: reproj[k] < 90 for k in deltas}
    assert pose_ok == {"A0": True, "A7": False, "B0": False, "B5": False}
    assert vcre_ok == {"A0": True, "A7": True, "B0": False, "B5": False}
    # 4 estimates; failures: A frame 12 (invalid lines) + scene C missing -> all 7 unique keys of its poses.txt
    failures = 1 + 7
    total = 4 + failures

    def avg_median(d):
        return ((d["A0"] + d["A7"]) / 2 + (d["B0"] + d["B5"]) / 2) / 2

    expected = {
        KEY_MEDIAN_TRANS: avg_median(trans),
        KEY_MEDIAN_ROT: avg_median(rot),
        KEY_MEDIAN_VCRE: avg_median(reproj),
        KEY_PREC_POSE: 1 / total,
        KEY_AUC_POSE: hand_auc([(conf[k], pose_ok[k]) for k in deltas], failures),
        KEY_PREC_VCRE: sum(vcre_ok.values()) / total,
        KEY_AUC_VCRE: hand_auc([(conf[k], vcre_ok[k]) for k in deltas], failures),
        KEY_ESTIMATED: 4 / total,
    }
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, abs=1e-9), key
    assert expected[KEY_AUC_POSE] == pytest.approx(2 / 12 * 1 / 3 + 1 / 12 * 1 / 4, abs=1e-8)  # tie counted once
    assert reproj["B5"] > 300 and reproj["B0"] > 100  # behind-camera points are clipped, not masked
    text = caplog.text
    assert text.count("line ignored") >= 10
    assert "pose_s99999.txt" in text and "no pose_s00003.txt" in text


def test_negative_confidence_on_evaluated_frame_aborts(tmp_path):
    gts = write_scene(tmp_path / "val", "s00001", [0, 1, 2, 3, 4, 5])
    lines = [pose_line("seq1/frame_00000.jpg", *gts[0], 1.0), pose_line("seq1/frame_00005.jpg", *gts[5], -0.5)]
    sub = write_zip(tmp_path / "sub.zip", {"pose_s00001.txt": lines})
    with pytest.raises(SubmissionError, match=r"pose_s00001.txt line 2: expected a confidence >= 0, got -0.5"):
        evaluate_submission(sub, tmp_path, "val")


def test_no_valid_estimate_is_an_error(tmp_path):
    gts = write_scene(tmp_path / "val", "s00001", [0, 1, 2])
    sub = write_zip(tmp_path / "sub.zip", {"pose_s00001.txt": [pose_line("seq1/frame_00000.jpg", *gts[0], math.nan)]})
    with pytest.raises(SubmissionError, match="no valid pose estimate"):
        evaluate_submission(sub, tmp_path, "val")
    sub = write_zip(tmp_path / "none.zip", {"README.txt": ["hello"]})
    with pytest.raises(SubmissionError, match="no valid pose estimate"):
        evaluate_submission(sub, tmp_path, "val")


def test_key_collision_and_last_line_wins(tmp_path):
    # the reference comes after seq1/frame_00000 here, so key 0 holds the identity pose and the 600 px K
    d = tmp_path / "val" / "s00001"
    d.mkdir(parents=True)
    q1, t1 = gt_pose(3)
    (d / "poses.txt").write_text("\n".join([
        pose_line("seq1/frame_00000.jpg", q1, t1),
        pose_line("seq0/frame_00000.jpg", NO_ROT, [0, 0, 0]),
    ]) + "\n")
    (d / "intrinsics.txt").write_text(
        "seq1/frame_00000.jpg 500 500 270 360 540 720\nseq0/frame_00000.jpg 600 600 270 360 540 720\n"
    )
    q_d, t_d = q_axis([1, 0, 0], 2.0), [0.0, 0.1, 0.0]
    q, t = perturb(np.array(NO_ROT), np.zeros(3), q_d, t_d)
    sub = write_zip(tmp_path / "sub.zip", {"pose_s00001.txt": [pose_line("seq1/frame_00000.jpg", q, t, 1.0)]})
    out = evaluate_submission(sub, tmp_path, "val")
    assert out[KEY_MEDIAN_TRANS] == pytest.approx(0.1, abs=1e-12)
    assert out[KEY_MEDIAN_ROT] == pytest.approx(2.0, abs=1e-9)
    assert out[KEY_MEDIAN_VCRE] == pytest.approx(hand_vcre(q_d, t_d, 600, 600, 270, 360, 540, 720), abs=1e-9)
    assert out[KEY_ESTIMATED] == 1.0
    # a missing scene is charged its unique keys: 1 here (two lines, one key)
    write_scene(tmp_path / "val", "s00002", [1])
    out = evaluate_submission(sub, tmp_path, "val")
    assert out[KEY_ESTIMATED] == pytest.approx(1 / 3)


def test_aggregate_thresholds_are_strict():
    scene = {"trans_err": [0.25, 0.1], "rot_err": [1.0, 5.0], "reproj_err": [90.0, 89.999], "confidence": [1.0, 2.0]}
    out = aggregate_results([scene, {"trans_err": [], "rot_err": [], "reproj_err": [], "confidence": []}], 0)
    assert out[KEY_PREC_POSE] == 0.0
    assert out[KEY_PREC_VCRE] == 0.5
    assert out[KEY_MEDIAN_TRANS] == pytest.approx(0.175)  # the empty scene is left out of the mean


# -- round trip and API ---------------------------------------------------------------------------------------
def test_write_submission_round_trip_perfect(tmp_path):
    write_scene(tmp_path / "val", "s00001", A_SEQ1, intr="590.3821 590.3821 269.6 351.2 540 720")
    write_scene(tmp_path / "val", "s00002", B_SEQ1)
    estimates = {}
    for scene_dir in list_scenes(tmp_path, "val"):
        scene = read_scene(scene_dir)
        rows = []
        for ref, query in evaluation_pairs(scene):
            T = relative_pose(ref.T_w2c, query.T_w2c)
            rows.append((query.path, T[:3, :3], T[:3, 3], 1.0 + len(rows)))
        estimates[scene.name] = rows
    sub = tmp_path / "out" / "submission.zip"
    write_submission(sub, estimates)
    with zipfile.ZipFile(sub) as zf:
        assert sorted(zf.namelist()) == ["pose_s00001.txt", "pose_s00002.txt"]
        lines = zf.read("pose_s00001.txt").decode().splitlines()
    assert [ln.split(" ")[0] for ln in lines] == [f"seq1/frame_{i:05d}.jpg" for i in (0, 7, 12)]
    pattern = r"seq1/frame_\d{5}\.jpg( -?\d+\.\d{6}){7} \d+\.\d+"
    assert all(re.fullmatch(pattern, ln) for ln in lines), lines
    assert all(float(ln.split(" ")[1]) >= 0 for ln in lines)  # w >= 0
    out = evaluate_submission(sub, tmp_path, "val")
    assert out[KEY_PREC_POSE] == 1.0 and out[KEY_PREC_VCRE] == 1.0 and out[KEY_ESTIMATED] == 1.0
    assert out[KEY_AUC_POSE] == pytest.approx(1.0, abs=1e-7)
    assert out[KEY_MEDIAN_TRANS] < 1e-5 and out[KEY_MEDIAN_ROT] < 1e-3 and out[KEY_MEDIAN_VCRE] < 1e-2


def test_read_scene_and_pairs(tmp_path):
    gts = write_scene(tmp_path / "val", "s00001", A_SEQ1, intr="590.3821 590.3821 269.6 351.2 540 720")
    scene = read_scene(tmp_path / "val" / "s00001")
    assert scene.name == "s00001" and scene.reference.path == "seq0/frame_00000.jpg"
    np.testing.assert_array_equal(scene.reference.T_w2c, np.eye(4))
    assert [f.path for f in scene.queries] == [f"seq1/frame_{i:05d}.jpg" for i in A_SEQ1]
    frame = scene.frames["seq1/frame_00007.jpg"]
    assert frame.K[0, 0] == 590.3821 and (frame.width, frame.height) == (540, 720)
    assert scene.image_path(frame) == tmp_path / "val" / "s00001" / "seq1" / "frame_00007.jpg"
    assert scene.frames["seq0/frame_00000.jpg"].K[0, 0] == 600.0
    assert [q.path for _, q in evaluation_pairs(scene)] == [f"seq1/frame_{i:05d}.jpg" for i in (0, 7, 12)]
    # val/test: the reference is the identity, so T_0to1 is the query's own pose
    q, t = gts[7]
    T = relative_pose(scene.reference.T_w2c, frame.T_w2c)
    np.testing.assert_allclose(T[:3, :3], R_of(q), atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], t, atol=1e-12)


def test_relative_pose_quaternion_form():
    (q1, t1), (q2, t2) = gt_pose(1), gt_pose(4)
    T0, T1 = np.eye(4), np.eye(4)
    T0[:3, :3], T0[:3, 3], T1[:3, :3], T1[:3, 3] = R_of(q1), t1, R_of(q2), t2
    q12 = qmul(q2, q1 * [1, -1, -1, -1])
    T = relative_pose(T0, T1)
    np.testing.assert_allclose(T[:3, :3], R_of(q12), atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], t2 - R_of(q12) @ t1, atol=1e-12)


def test_test_split_has_no_poses(tmp_path):
    write_scene(tmp_path / "test", "s00001", [0, 1], zero_poses=True)
    scene = read_scene(tmp_path / "test" / "s00001")
    assert scene.queries[0].T_w2c is None
    line = pose_line("seq1/frame_00000.jpg", NO_ROT, [0, 0, 0], 1.0)
    sub = write_zip(tmp_path / "sub.zip", {"pose_s00001.txt": [line]})
    with pytest.raises(DatasetError, match="no ground-truth pose"):
        evaluate_submission(sub, tmp_path, "test")


def test_dataset_errors_name_file_and_line(tmp_path):
    write_scene(tmp_path / "val", "s00001", [0, 1])
    poses = tmp_path / "val" / "s00001" / "poses.txt"
    poses.write_text(poses.read_text() + "seq1/frame_00002.jpg 1 0 0 0 0 0\n")
    with pytest.raises(DatasetError, match=r"poses.txt line 4: expected 8 fields"):
        read_scene(poses.parent)
    poses.unlink()
    with pytest.raises(DatasetError, match=r"poses: missing file .*poses.txt"):
        read_scene(poses.parent)
    with pytest.raises(DatasetError, match="data root: no such directory"):
        list_scenes(tmp_path / "nope", "val")
    with pytest.raises(DatasetError, match="split 'test': no such directory"):
        list_scenes(tmp_path, "test")


def test_submission_file_errors(tmp_path):
    write_scene(tmp_path / "val", "s00001", [0])
    with pytest.raises(SubmissionError, match="submission: no such file .*missing.zip"):
        evaluate_submission(tmp_path / "missing.zip", tmp_path, "val")
    bad = tmp_path / "bad.zip"
    bad.write_text("not a zip")
    with pytest.raises(SubmissionError, match="bad.zip is not a readable ZIP"):
        evaluate_submission(bad, tmp_path, "val")
    good = write_zip(tmp_path / "good.zip", {"pose_s00001.txt": []})
    with pytest.raises(DatasetError, match="split 'val': no such directory"):
        evaluate_submission(good, tmp_path / "val", "val")


# -- the `mickey-ros eval-mapfree` command -------------------------------------------------------------------
def test_cli_eval_mapfree_writes_the_benchmark_json(benchmark_case, tmp_path, capsys):
    import json

    from mickey_ros.cli import main

    data_root, sub, _ = benchmark_case
    out = tmp_path / "metrics.json"
    assert main(["eval-mapfree", str(sub), "--data-root", str(data_root), "--split", "val", "--json", str(out)]) == 0
    expected = evaluate_submission(sub, data_root, "val")
    assert json.loads(out.read_text()) == expected
    assert json.loads(capsys.readouterr().out) == expected
    assert "AUC @ VCRE < 90px" in expected


def test_cli_eval_mapfree_bad_input_exit_2(tmp_path, capsys):
    from mickey_ros.cli import main

    (tmp_path / "val").mkdir()
    assert main(["eval-mapfree", str(tmp_path / "none.zip"), "--data-root", str(tmp_path), "--split", "val"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mickey-ros: error: ") and "none.zip" in err[0]
