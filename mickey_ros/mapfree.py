"""Map-free relocalisation data: scene reading, submission writing, benchmark-exact evaluation.

Layout (``shared/reference/mapfree_metrics.md`` §1): ``<root>/<split>/<scene>/`` holds
``intrinsics.txt`` (``frame fx fy cx cy W H``), ``poses.txt`` (``frame qw qx qy qz tx ty tz``,
world-to-camera, metres, Hamilton w-first), the reference image ``seq0/frame_00000.jpg`` and the
queries ``seq1/frame_XXXXX.jpg``. In val/test the world frame is the reference camera, so a query's
pose is the relative pose ``T_0to1`` reference -> query, which is also what a submission holds.

:func:`evaluate_submission` reproduces the benchmark's numbers, including its quirks: the frame key
is ``int(name[-9:-4])`` whatever the sequence (``seq0/frame_00000`` and ``seq1/frame_00000`` collide,
the later line wins but keeps the first position), every 5th key of that collapsed dict is evaluated,
W and H come from the last line of ``intrinsics.txt``, K is rounded to float32, and a scene whose file
is missing from the ZIP counts every pose line of the scene (before subsampling) as a failure.
Warnings go to the ``mickey_ros.mapfree`` logger.
"""
from __future__ import annotations

import io
import logging
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from mickey_ros.errors import DatasetError, InputError, SubmissionError
from mickey_ros.geometry.metrics import (
    R_THRESHOLD_DEG,
    T_THRESHOLD_M,
    VCRE_THRESHOLD_PX,
    confidence_auc,
    rotation_error_quat,
    vcre,
)
from mickey_ros.geometry.se3 import invert_T, make_T, matrix_to_quat_wxyz, quat_wxyz_to_matrix

logger = logging.getLogger("mickey_ros.mapfree")

REFERENCE_FRAME = "seq0/frame_00000.jpg"  # the single reference image of a val/test scene
QUERY_PREFIX = "seq1/"
SAMPLE_FACTOR = 5  # single-frame track: every 5th query is evaluated

# The benchmark's JSON keys, in its order.
KEY_MEDIAN_TRANS = "Average Median Translation Error"
KEY_MEDIAN_ROT = "Average Median Rotation Error"
KEY_MEDIAN_VCRE = "Average Median Reprojection Error"
KEY_PREC_POSE = "Precision @ Pose Error < (25.0cm, 5deg)"
KEY_AUC_POSE = "AUC @ Pose Error < (25.0cm, 5deg)"
KEY_PREC_VCRE = "Precision @ VCRE < 90px"
KEY_AUC_VCRE = "AUC @ VCRE < 90px"
KEY_ESTIMATED = "Estimates for % of frames"  # a fraction in [0, 1] despite the "%"


# -- dataset reading ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class MapFreeFrame:
    """One image of a scene.

    Attributes:
        path: file name relative to the scene directory, e.g. ``seq1/frame_00005.jpg``.
        K: ``[3, 3]`` float64 intrinsics from ``intrinsics.txt`` (pixels, original resolution).
        width: image width W (pixels).
        height: image height H (pixels).
        T_w2c: ``[4, 4]`` float64 world-to-camera pose (metres), or None where the file holds an
            all-zero quaternion (test split: poses are not published).
    """

    path: str
    K: np.ndarray = field(repr=False)
    width: int
    height: int
    T_w2c: np.ndarray | None = field(repr=False)


@dataclass(frozen=True)
class MapFreeScene:
    """A scene directory.

    Attributes:
        name: scene id, e.g. ``s00460``.
        root: the scene directory.
        frames: every frame of ``poses.txt`` by path, in file order.
        reference: the reference frame ``seq0/frame_00000.jpg`` (identity pose in val/test).
        queries: the ``seq1/`` frames in ``poses.txt`` order.
    """

    name: str
    root: Path
    frames: dict[str, MapFreeFrame] = field(repr=False)
    reference: MapFreeFrame
    queries: list[MapFreeFrame] = field(repr=False)

    def image_path(self, frame: MapFreeFrame) -> Path:
        """Absolute path of a frame's image."""
        return self.root / frame.path


def _read_lines(path: Path, what: str) -> list[str]:
    try:
        with path.open(encoding="utf-8") as f:
            return f.readlines()
    except FileNotFoundError as err:
        raise DatasetError(f"{what}: missing file {path}") from err
    except UnicodeDecodeError as err:
        raise DatasetError(f"{what}: {path} is not UTF-8 text") from err
    except OSError as err:
        raise DatasetError(f"{what}: cannot read {path}: {err.strerror}") from err


def _parse_intrinsics(path: Path) -> list[tuple[int, str, tuple[float, ...]]]:
    """``(line number, frame name, (fx, fy, cx, cy, W, H))`` per line; lines with '#' are skipped."""
    rows = []
    for lineno, line in enumerate(_read_lines(path, "intrinsics"), start=1):
        if "#" in line or not line.strip():
            continue
        parts = line.strip().split(" ")
        where = f"{path} line {lineno}"
        if len(parts) != 7:
            raise DatasetError(
                f"{where}: expected 7 fields 'frame fx fy cx cy W H' separated by single spaces, got {len(parts)}"
            )
        try:
            vals = tuple(float(p) for p in parts[1:])
        except ValueError as err:
            raise DatasetError(f"{where}: expected numbers fx fy cx cy W H, got {' '.join(parts[1:])!r}") from err
        fx, fy, _, _, w, h = vals
        if not all(math.isfinite(v) for v in vals) or min(fx, fy, w, h) <= 0:
            raise DatasetError(f"{where}: expected finite values with fx, fy, W, H > 0, got {' '.join(parts[1:])!r}")
        rows.append((lineno, parts[0], vals))
    return rows


def _parse_poses(path: Path) -> list[tuple[int, str, np.ndarray, np.ndarray]]:
    """``(line number, frame name, q [4] wxyz, t [3])`` per line; names containing '#' are skipped."""
    rows = []
    for lineno, line in enumerate(_read_lines(path, "poses"), start=1):
        parts = line.strip().split(" ")
        if not line.strip() or "#" in parts[0]:
            continue
        where = f"{path} line {lineno}"
        if len(parts) != 8:
            raise DatasetError(
                f"{where}: expected 8 fields 'frame qw qx qy qz tx ty tz' separated by single spaces, got {len(parts)}"
            )
        try:
            vals = np.array([float(p) for p in parts[1:]])
        except ValueError as err:
            raise DatasetError(f"{where}: expected numbers qw qx qy qz tx ty tz, got {' '.join(parts[1:])!r}") from err
        if not np.all(np.isfinite(vals)):
            raise DatasetError(f"{where}: expected finite numbers, got {' '.join(parts[1:])!r}")
        rows.append((lineno, parts[0], vals[:4], vals[4:]))
    return rows


def _is_zero_quat(q: np.ndarray) -> bool:
    return bool(np.isclose(np.linalg.norm(q), 0.0))


def read_scene(scene_dir: Path) -> MapFreeScene:
    """Read ``intrinsics.txt`` and ``poses.txt`` of one scene.

    Args:
        scene_dir: ``<root>/<split>/<scene>``.

    Returns:
        The scene, frames keyed by their path (``seq1/frame_00005.jpg``).

    Raises:
        DatasetError: a missing directory or file, a malformed line (file and line number in the
            message), a pose without intrinsics, or no reference frame ``seq0/frame_00000.jpg``.
    """
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        raise DatasetError(f"scene: no such directory {scene_dir}")
    intrinsics_path, poses_path = scene_dir / "intrinsics.txt", scene_dir / "poses.txt"
    intrinsics = {name: (lineno, vals) for lineno, name, vals in _parse_intrinsics(intrinsics_path)}
    frames: dict[str, MapFreeFrame] = {}
    for lineno, name, q, t in _parse_poses(poses_path):
        if name not in intrinsics:
            raise DatasetError(f"{intrinsics_path}: no line for {name} (poses.txt line {lineno})")
        k_line, (fx, fy, cx, cy, w, h) = intrinsics[name]
        if not (w.is_integer() and h.is_integer()):
            raise DatasetError(f"{intrinsics_path} line {k_line}: expected integer W H, got {w:g} {h:g}")
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        T_w2c = None if _is_zero_quat(q) else make_T(quat_wxyz_to_matrix(q), t)
        frames[name] = MapFreeFrame(name, K, int(w), int(h), T_w2c)
    if REFERENCE_FRAME not in frames:
        raise DatasetError(f"{poses_path}: expected the reference frame {REFERENCE_FRAME}, found none")
    queries = [f for f in frames.values() if f.path.startswith(QUERY_PREFIX)]
    return MapFreeScene(scene_dir.name, scene_dir, frames, frames[REFERENCE_FRAME], queries)


def list_scenes(data_root: Path, split: str) -> list[Path]:
    """Scene directories of a split, sorted by name.

    Raises:
        DatasetError: ``data_root`` or ``data_root/split`` is not a directory, or it holds no scene.
    """
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise DatasetError(f"data root: no such directory {data_root}")
    split_dir = data_root / split
    if not split_dir.is_dir():
        raise DatasetError(f"split {split!r}: no such directory {split_dir}")
    scenes = sorted(p for p in split_dir.iterdir() if p.is_dir())
    if not scenes:
        raise DatasetError(f"split {split!r}: no scene directories in {split_dir}")
    return scenes


def relative_pose(T_w2c_0: np.ndarray, T_w2c_1: np.ndarray) -> np.ndarray:
    """``T_0to1 = T1 @ inv(T0)`` (``[4, 4]`` float64): maps camera-0 points into camera 1, metres.

    Equivalent to ``q12 = q2 q1^-1``, ``t12 = t2 - R12 t1``. With the val/test reference (identity
    pose) as camera 0 it is the query's line of ``poses.txt``.
    """
    return np.asarray(T_w2c_1, dtype=np.float64) @ invert_T(T_w2c_0)


def evaluation_pairs(
    scene: MapFreeScene, sample_factor: int = SAMPLE_FACTOR
) -> list[tuple[MapFreeFrame, MapFreeFrame]]:
    """``(reference, query)`` pairs of a val/test scene, as the official loader: every
    ``sample_factor``-th ``seq1`` frame in ``poses.txt`` order (line 0, 5, 10, ...).

    This matches the frames :func:`evaluate_submission` scores when ``seq1`` starts at
    ``frame_00000`` (the benchmark subsamples its collapsed frame-number dict).
    """
    if sample_factor < 1:
        raise InputError(f"sample_factor: expected an integer >= 1, got {sample_factor}")
    return [(scene.reference, q) for q in scene.queries[::sample_factor]]


# -- submission writing -------------------------------------------------------------------------------
def _submission_line(scene: str, frame: str, R: np.ndarray, t: np.ndarray, confidence: float) -> str:
    where = f"estimates[{scene!r}] frame {frame!r}"
    if not isinstance(frame, str) or not frame or "#" in frame or len(frame.split()) != 1:
        raise InputError(f"{where}: expected a frame path without spaces or '#', e.g. seq1/frame_00005.jpg")
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    if R.shape != (3, 3) or t.shape != (3,) or not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
        raise InputError(f"{where}: expected a finite 3x3 R and 3-vector t, got shapes {R.shape} and {t.shape}")
    conf = float(confidence)
    if not math.isfinite(conf) or conf < 0:
        raise InputError(f"{where}: expected a finite confidence >= 0, got {conf}")
    q = matrix_to_quat_wxyz(R)  # w >= 0
    return f"{frame} " + " ".join(f"{v:.6f}" for v in (*q, *t)) + f" {conf!r}"


def write_submission(
    zip_path: Path, estimates: dict[str, Sequence[tuple[str, np.ndarray, np.ndarray, float]]]
) -> None:
    """Write a Map-free submission ZIP: one ``pose_<scene>.txt`` per scene at the ZIP root.

    Each line is ``frame qw qx qy qz tx ty tz confidence`` (single spaces, q and t with 6 decimals,
    q with w >= 0). A scene with an empty list still gets a file: its evaluated frames then count as
    missing one by one, whereas a scene without a file is charged every frame of its ``poses.txt``.

    Args:
        zip_path: output file; parent directories are created.
        estimates: scene id -> ``[(frame_path, R [3, 3], t [3] metres, confidence >= 0), ...]`` where
            ``(R, t)`` is ``T_0to1`` reference -> query (``X_query = R X_ref + t``).

    Raises:
        InputError: a malformed scene id, frame name, pose or confidence, or the file cannot be written.
    """
    zip_path = Path(zip_path)
    texts = {}
    for scene, rows in estimates.items():
        if not isinstance(scene, str) or not scene or any(c in scene for c in "/\\ \t\n"):
            raise InputError(f"estimates: expected scene ids like 's00460', got {scene!r}")
        lines = [_submission_line(scene, frame, R, t, conf) for frame, R, t, conf in rows]
        texts[f"pose_{scene}.txt"] = "".join(line + "\n" for line in lines)
    try:
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, text in texts.items():
                zf.writestr(name, text.encode("utf-8"))
    except OSError as err:
        raise InputError(f"submission: cannot write {zip_path}: {err.strerror or err}") from err


# -- benchmark-exact evaluation -----------------------------------------------------------------------
@dataclass
class _GroundTruth:
    poses: dict[int, tuple[np.ndarray, np.ndarray]]  # frame key -> (q wxyz, t), collapsed, file order
    K: dict[int, np.ndarray]  # frame key -> [3, 3] float32-rounded intrinsics
    width: float  # from the last line of intrinsics.txt
    height: float


def _frame_key(name: str) -> int:
    """The benchmark's frame key: the 5 characters before a 4-character extension, as an int."""
    return int(name[-9:-4])


def _read_ground_truth(scene_dir: Path) -> _GroundTruth:
    intrinsics_path, poses_path = scene_dir / "intrinsics.txt", scene_dir / "poses.txt"
    K: dict[int, np.ndarray] = {}
    width = height = 0.0
    for lineno, name, (fx, fy, cx, cy, width, height) in _parse_intrinsics(intrinsics_path):
        try:
            key = _frame_key(name)
        except ValueError as err:
            raise DatasetError(
                f"{intrinsics_path} line {lineno}: expected a name like seq1/frame_00000.jpg, got {name!r}"
            ) from err
        K[key] = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float32).astype(np.float64)
    if not K:
        raise DatasetError(f"{intrinsics_path}: expected lines 'frame fx fy cx cy W H', found none")
    poses: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    unknown = 0
    for lineno, name, q, t in _parse_poses(poses_path):
        try:
            key = _frame_key(name)
        except ValueError as err:
            raise DatasetError(
                f"{poses_path} line {lineno}: expected a name like seq1/frame_00000.jpg, got {name!r}"
            ) from err
        if _is_zero_quat(q):  # the benchmark drops such lines
            unknown += 1
            continue
        poses[key] = (q, t)  # a later line wins, the key keeps its first position
    if not poses:
        raise DatasetError(
            f"{poses_path}: no ground-truth pose (all quaternions are zero; test-split poses are not published)"
        )
    if unknown:
        logger.warning("%s: ignored %d lines with a zero quaternion", poses_path, unknown)
    return _GroundTruth(poses, K, width, height)  # W, H of the last line, as the benchmark


def _parse_estimates(lines: Iterable[str], source: str) -> dict[int, tuple[np.ndarray, np.ndarray, float, int]]:
    """Frame key -> ``(q, t, confidence, line number)``; invalid lines are dropped with a warning."""
    estimates = {}
    for lineno, line in enumerate(lines, start=1):
        where = f"{source} line {lineno}"
        parts = line.strip().split(" ")
        if len(parts) != 9:
            logger.warning(
                "%s: expected 9 fields 'frame qw qx qy qz tx ty tz confidence' separated by single spaces, "
                "got %d; line ignored",
                where,
                len(parts),
            )
            continue
        if "#" in parts[0]:
            logger.warning("%s: comment ('#' in the frame name); line ignored", where)
            continue
        try:
            key = _frame_key(parts[0])
        except ValueError:
            logger.warning("%s: expected a frame name like seq1/frame_00005.jpg, got %r; line ignored", where, parts[0])
            continue
        try:
            vals = [float(p) for p in parts[1:]]
        except ValueError:
            logger.warning("%s: expected 8 numbers after the frame name; line ignored", where)
            continue
        if not all(math.isfinite(v) for v in vals):
            logger.warning("%s: NaN or infinite value; line ignored", where)
            continue
        q = np.array(vals[:4])
        if _is_zero_quat(q):
            logger.warning("%s: quaternion of (near) zero norm; line ignored", where)
            continue
        estimates[key] = (q, np.array(vals[4:7]), vals[7], lineno)  # duplicates: the last line wins
    return estimates


def _open_submission(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise SubmissionError(f"submission: no such file {path}")
    try:
        return zipfile.ZipFile(path, "r")
    except (zipfile.BadZipFile, OSError) as err:
        raise SubmissionError(f"submission: {path} is not a readable ZIP file ({err})") from err


def _read_member(zf: zipfile.ZipFile, name: str, zip_path: Path) -> list[str]:
    try:
        with zf.open(name) as raw:
            return io.TextIOWrapper(raw, encoding="utf-8").readlines()
    except UnicodeDecodeError as err:
        raise SubmissionError(f"submission {zip_path}: {name} is not UTF-8 text") from err
    except (zipfile.BadZipFile, OSError, NotImplementedError) as err:
        raise SubmissionError(f"submission {zip_path}: cannot read {name} ({err})") from err


def _scene_metrics(
    gt: _GroundTruth, estimates: dict, source: str, scene_dir: Path
) -> tuple[dict[str, list[float]], int]:
    """Per-frame metrics of the evaluated frames with an estimate, and the number without one."""
    results: dict[str, list[float]] = {"trans_err": [], "rot_err": [], "reproj_err": [], "confidence": []}
    failures = 0
    for key, (q_gt, t_gt) in list(gt.poses.items())[::SAMPLE_FACTOR]:
        if key not in estimates:
            failures += 1
            continue
        q_est, t_est, conf, lineno = estimates[key]
        if conf < 0:
            raise SubmissionError(
                f"{source} line {lineno}: expected a confidence >= 0, got {conf} (the benchmark aborts)"
            )
        if key not in gt.K:
            raise DatasetError(f"{scene_dir / 'intrinsics.txt'}: no intrinsics for frame number {key}")
        T_gt = make_T(quat_wxyz_to_matrix(q_gt), t_gt)
        T_est = make_T(quat_wxyz_to_matrix(q_est), t_est)
        c_gt = -T_gt[:3, :3].T @ T_gt[:3, 3]
        c_est = -T_est[:3, :3].T @ T_est[:3, 3]
        results["trans_err"].append(float(np.linalg.norm(c_est - c_gt)))
        results["rot_err"].append(rotation_error_quat(q_est, q_gt))
        results["reproj_err"].append(vcre(T_est, T_gt, gt.K[key], gt.width, gt.height))
        results["confidence"].append(float(conf))
    return results, failures


def aggregate_results(per_scene: Sequence[dict[str, list[float]]], failures: int) -> dict[str, float]:
    """The benchmark's output dict from per-scene frame metrics and the count of missing frames.

    Medians per scene (scenes without estimates left out), then their unweighted mean; precisions
    and AUCs pooled over all frames with ``TOTAL = #estimates + failures`` as the denominator.

    Args:
        per_scene: per scene, lists ``trans_err`` (m), ``rot_err`` (deg), ``reproj_err`` (px) and
            ``confidence``, one value per evaluated frame with an estimate.
        failures: evaluated frames without a valid estimate (plus whole missing scenes).

    Raises:
        SubmissionError: no frame has an estimate.
    """
    scenes = [r for r in per_scene if r["confidence"]]
    if not scenes:
        raise SubmissionError("submission: no valid pose estimate for any evaluated frame")
    pooled = {k: np.concatenate([np.asarray(r[k], dtype=np.float64) for r in scenes]) for k in scenes[0]}
    n_est = pooled["confidence"].size
    total = n_est + failures
    accepted_pose = (pooled["trans_err"] < T_THRESHOLD_M) & (pooled["rot_err"] < R_THRESHOLD_DEG)
    accepted_vcre = pooled["reproj_err"] < VCRE_THRESHOLD_PX

    def mean_median(k: str) -> float:
        return float(np.mean([np.median(r[k]) for r in scenes]))

    return {
        KEY_MEDIAN_TRANS: mean_median("trans_err"),
        KEY_MEDIAN_ROT: mean_median("rot_err"),
        KEY_MEDIAN_VCRE: mean_median("reproj_err"),
        KEY_PREC_POSE: int(np.sum(accepted_pose)) / total,
        KEY_AUC_POSE: confidence_auc(pooled["confidence"], accepted_pose, failures),
        KEY_PREC_VCRE: int(np.sum(accepted_vcre)) / total,
        KEY_AUC_VCRE: confidence_auc(pooled["confidence"], accepted_vcre, failures),
        KEY_ESTIMATED: n_est / total,
    }


def evaluate_submission(submission_zip: Path, data_root: Path, split: str = "val") -> dict[str, float]:
    """Score a submission ZIP exactly as the Map-free benchmark (single-frame track).

    Args:
        submission_zip: ZIP with ``pose_<scene>.txt`` files at its root.
        data_root: Map-free root holding ``<split>/<scene>/``.
        split: ``val`` (or ``train``; ``test`` has no published poses).

    Returns:
        The benchmark's JSON dict (keys ``KEY_*`` of this module), Python floats.

    Raises:
        SubmissionError: missing or unreadable ZIP, non-UTF-8 file, a negative confidence on an
            evaluated frame (the benchmark aborts), or no valid estimate at all.
        DatasetError: missing data root, split, scene files, or malformed ground truth.
    """
    submission_zip, data_root = Path(submission_zip), Path(data_root)
    with _open_submission(submission_zip) as zf:
        scene_dirs = list_scenes(data_root, split)
        per_scene, failures = [], 0
        members = set(zf.namelist())
        expected = {f"pose_{d.name}.txt" for d in scene_dirs}
        for name in sorted(members - expected):
            logger.warning(
                "submission %s: %s is not pose_<scene>.txt of a %s scene; ignored", submission_zip, name, split
            )
        for scene_dir in scene_dirs:
            gt = _read_ground_truth(scene_dir)
            member = f"pose_{scene_dir.name}.txt"
            if member not in members:
                logger.warning(
                    "submission %s: no %s; its %d frames count as failures", submission_zip, member, len(gt.poses)
                )
                failures += len(gt.poses)  # every frame key, before subsampling (benchmark quirk)
                continue
            source = f"{submission_zip}:{member}"
            estimates = _parse_estimates(_read_member(zf, member, submission_zip), source)
            results, missing = _scene_metrics(gt, estimates, source, scene_dir)
            per_scene.append(results)
            failures += missing
    if failures:
        logger.warning("submission %s: missing pose estimates for %d frames", submission_zip, failures)
    try:
        return aggregate_results(per_scene, failures)
    except SubmissionError as err:
        raise SubmissionError(
            f"submission {submission_zip}: no valid pose estimate for any evaluated frame of split {split!r}"
        ) from err
