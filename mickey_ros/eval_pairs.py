"""``mickey-ros eval-pairs``: metric relative pose on a list of image pairs with metric ground truth (ROS-free).

The list is SuperGlue's ScanNet format, one pair per line, ``#`` comments and blank lines allowed::

    name0 name1 rot0 rot1 K0(9) K1(9) T_0to1(16)

* ``name0``/``name1``: image files relative to the image folder (no whitespace);
* ``rot0``/``rot1``: EXIF rotations, 0-3 quarter turns: the upright image is the file turned counter-clockwise by
  ``rot * 90`` deg (``numpy.rot90(image, rot)``), as SuperGlue's evaluation reads it;
* ``K0``/``K1``: 3x3 intrinsics of the image *files*, row-major, pixels;
* ``T_0to1``: 4x4 ground truth between the file cameras, row-major, metres, ``X1 = R X0 + t``.

The network sees the upright images with their K (``fx, fy`` swapped, principal point moved: :func:`rotate_K`),
and the ground truth turned into the upright cameras (:func:`inplane_rotation`). The estimate is turned back, so
``T_0to1`` in the results and every error are in the files' cameras, with image 1's K and size as given (the
rotation and camera-centre errors do not depend on the frame; VCRE does, and uses the file's).

Metrics come from :mod:`mickey_ros.geometry.pose_eval` (the implementation every evaluation uses): per pair
Map-free's camera-centre distance and rotation angle, the translation-direction angle, ``|t_est| / |t_gt|`` and
VCRE; in the summary the VCRE precision and confidence-ranked AUC at 10 % of the image diagonal and the median
errors (MicKey's Table 2 protocol), the SuperGlue/LoFTR pose AUC at 5/10/20 deg, the scale ratio, and all of it
for the identity ("no motion") pose under ``identity``.

A pair that raises (unreadable image, implausible K, ...) is a counted failure whose reason lands in
``summary["skipped"]``; a pair without a pose keeps its reason in ``summary["no_pose"]``; the run goes on.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mickey_ros.errors import DatasetError, InputError, IntrinsicsError, describe_error
from mickey_ros.geometry.camera import check_intrinsics
from mickey_ros.geometry.pose_eval import pair_errors, summarize_poses
from mickey_ros.progress import ProgressLine

LINE_FORMAT = "name0 name1 rot0 rot1 K0(9) K1(9) T_0to1(16)"
NUM_FIELDS = 38
ROTATION_TOLERANCE = 1e-3  # max |R^T R - I| entry accepted for a ground-truth rotation
_FIELD_NAMES = (["name0", "name1", "rot0", "rot1"] + [f"K0[{i}]" for i in range(9)] + [f"K1[{i}]" for i in range(9)]
                + [f"T_0to1[{i}]" for i in range(16)])

Estimator = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], Any]
"""``(image0, K0, image1, K1) -> RelativePose`` (uint8 ``[H, W, 3]`` RGB, ``[3, 3]`` K): ``Relocalizer.estimate``."""


@dataclass(frozen=True)
class PairSpec:
    """One line of a pair list (file cameras; K in pixels of the image files, ``T_0to1`` in metres)."""

    name0: str
    name1: str
    rot0: int  # quarter turns counter-clockwise from the file to the upright image, 0-3
    rot1: int
    K0: np.ndarray  # [3, 3] float64
    K1: np.ndarray  # [3, 3] float64
    T_0to1: np.ndarray  # [4, 4] float64, X1 = R X0 + t
    line: int  # 1-based line number in the list


# -- parsing -------------------------------------------------------------------------------------------------------
def parse_pairs(path: str | Path) -> list[PairSpec]:
    """Read a pair list (module docstring for the format).

    Raises:
        DatasetError: the file is missing or unreadable, holds no pair, or a line is malformed; one line of the
            form ``PATH:LINE: what was expected, got what``.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"PAIRS.txt: file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{p}: cannot read the pair list ({describe_error(err)})") from err
    pairs = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            pairs.append(_parse_line(line, number, p))
    if not pairs:
        raise DatasetError(f"{p}: no pairs (expected lines '{LINE_FORMAT}')")
    return pairs


def format_pair_line(name0: str, name1: str, K0: np.ndarray, K1: np.ndarray, T_0to1: np.ndarray,
                     rot0: int = 0, rot1: int = 0) -> str:
    """One line of a pair list, the inverse of :func:`parse_pairs` (floats as ``repr``: read back exactly).

    Args:
        name0, name1: image names relative to the image folder (no whitespace).
        K0, K1: ``[3, 3]`` intrinsics of the image files, pixels.
        T_0to1: ``[4, 4]`` ground truth, ``X1 = R X0 + t``, metres.
        rot0, rot1: EXIF rotations, 0-3 quarter turns.

    Raises:
        InputError: a name with whitespace (or empty), or K / T of the wrong size.
    """
    for what, name in (("name0", name0), ("name1", name1)):
        if not name or len(str(name).split()) != 1:
            raise InputError(f"{what}: expected an image name without whitespace, got {name!r}")
    numbers = []
    for what, value, size in (("K0", K0, 9), ("K1", K1, 9), ("T_0to1", T_0to1, 16)):
        flat = np.asarray(value, dtype=np.float64).reshape(-1)
        if flat.size != size:
            raise InputError(f"{what}: expected {size} numbers, got {flat.size}")
        numbers.extend(repr(float(v)) for v in flat)
    return " ".join([str(name0), str(name1), str(int(rot0)), str(int(rot1)), *numbers])


def _parse_line(line: str, number: int, path: Path) -> PairSpec:
    where = f"{path}:{number}"
    fields = line.split()
    if len(fields) != NUM_FIELDS:
        raise DatasetError(f"{where}: expected {NUM_FIELDS} fields '{LINE_FORMAT}', got {len(fields)}")
    rots = []
    for i in (2, 3):
        try:
            rot = int(fields[i])
        except ValueError:
            rot = -1
        if rot not in (0, 1, 2, 3):
            raise DatasetError(f"{where}: {_FIELD_NAMES[i]}: expected 0, 1, 2 or 3 (EXIF rotation in quarter turns), "
                               f"got {fields[i]!r}")
        rots.append(rot)
    values = np.empty(NUM_FIELDS - 4)
    for i, field in enumerate(fields[4:], start=4):
        try:
            values[i - 4] = float(field)
        except ValueError as err:
            raise DatasetError(f"{where}: field {i + 1} ({_FIELD_NAMES[i]}): expected a number, got {field!r}") from err
        if not math.isfinite(values[i - 4]):
            raise DatasetError(f"{where}: field {i + 1} ({_FIELD_NAMES[i]}): expected a finite number, got {field!r}")
    Ks = []
    for k, (name, rot) in enumerate((("K0", rots[0]), ("K1", rots[1]))):
        try:
            K = check_intrinsics(values[9 * k: 9 * k + 9].reshape(3, 3), name)
        except IntrinsicsError as err:
            raise DatasetError(f"{where}: {err}") from err
        if rot and (K[0, 1] != 0 or K[1, 0] != 0):
            raise DatasetError(f"{where}: {name}: expected zero skew with an EXIF rotation (rot{k}={rot}), "
                               f"got K[0,1]={K[0, 1]:g}, K[1,0]={K[1, 0]:g}")
        Ks.append(K)
    T = values[18:].reshape(4, 4)
    R = T[:3, :3]
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise DatasetError(f"{where}: T_0to1: expected last row 0 0 0 1, got {T[3].tolist()}")
    if np.abs(R.T @ R - np.eye(3)).max() > ROTATION_TOLERANCE or np.linalg.det(R) <= 0:
        raise DatasetError(f"{where}: T_0to1: expected a rotation (orthonormal, det +1, to {ROTATION_TOLERANCE:g}) in "
                           f"its top-left 3x3, got det {np.linalg.det(R):.4g}")
    return PairSpec(fields[0], fields[1], rots[0], rots[1], Ks[0], Ks[1], T.copy(), number)


def check_images(pairs: Sequence[PairSpec], image_dir: str | Path) -> None:
    """Every image of the list exists under ``image_dir`` (checked before any work).

    Raises:
        InputError: the folder or an image is missing (one line: how many, the first one and its line).
    """
    root = Path(image_dir)
    if not root.is_dir():
        raise InputError(f"--image-dir: folder not found: {root}")
    missing = [(name, pair.line) for pair in pairs for name in (pair.name0, pair.name1) if not (root / name).is_file()]
    if missing:
        names = {name for name, _ in missing}
        total = len({name for pair in pairs for name in (pair.name0, pair.name1)})
        raise InputError(f"--image-dir {root}: {len(names)} of {total} images not found, first: {missing[0][0]} "
                         f"(line {missing[0][1]})")


# -- EXIF rotation -------------------------------------------------------------------------------------------------
def rotate_K(K: np.ndarray, width: int, height: int, rot: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Intrinsics of ``numpy.rot90(image, rot)`` (counter-clockwise quarter turns) of a ``width x height`` image.

    One quarter turn maps file pixel ``(x, y)`` to ``(y, W - 1 - x)``, hence ``fx' = fy``, ``fy' = fx``,
    ``cx' = cy``, ``cy' = W - 1 - cx``; zero skew assumed.

    Returns:
        ``(K' [3, 3] float64, (W', H'))`` of the rotated image.
    """
    K = np.asarray(K, dtype=np.float64)
    for _ in range(rot % 4):
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        K = np.array([[fy, 0.0, cy], [0.0, fx, width - 1 - cx], [0.0, 0.0, 1.0]])
        width, height = height, width
    return K, (width, height)


def inplane_rotation(rot: int) -> np.ndarray:
    """``[4, 4]`` Q with ``X_upright = Q X_file`` (camera coordinates) for :func:`rotate_K`'s turn.

    One quarter turn: ``x' = y``, ``y' = -x``, ``z' = z`` (a -90 deg rotation about the optical axis).
    """
    quarter = np.array([[0.0, 1.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    return np.linalg.matrix_power(quarter, rot % 4)


# -- running -------------------------------------------------------------------------------------------------------
class _Progress:
    """``mickey-ros eval-pairs [#####.....]  50% 2/4 pairs`` on stderr, ``\\r``-updated, below any log line
    (:class:`~mickey_ros.progress.ProgressLine`); silent when disabled."""

    def __init__(self, enabled: bool, total: int, width: int = 30) -> None:
        self.line, self.total, self.width = ProgressLine(enabled), total, width

    def show(self, done: int) -> None:
        frac = done / self.total if self.total else 1.0
        filled = int(round(frac * self.width))
        self.line.show(f"mickey-ros eval-pairs [{'#' * filled}{'.' * (self.width - filled)}] {100 * frac:3.0f}% "
                       f"{done}/{self.total} pairs")
        if done == self.total:
            self.line.end()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(Path(name).with_suffix(""))).strip("_") or "image"


def evaluate_pairs(pairs: Sequence[PairSpec], image_dir: str | Path, estimate: Estimator, *,
                   viz_dir: str | Path | None = None, progress: bool = False,
                   read: Callable[[Path, str], np.ndarray] | None = None) -> dict[str, Any]:
    """Estimate and score every pair.

    Args:
        pairs: from :func:`parse_pairs`.
        image_dir: folder the image names are relative to.
        estimate: ``(image0, K0, image1, K1) -> RelativePose`` on the upright images (:data:`Estimator`).
        viz_dir: write one picture per pair there (``NNNN_<name0>__<name1>.png``, created if missing).
        progress: show the progress line on stderr.
        read: ``(path, name) -> uint8 [H, W, 3] RGB`` (default :func:`mickey_ros.cli.read_image`).

    Returns:
        ``{"pairs": [per-pair dict], "summary": {...}}``: per pair ``name0``, ``name1``, ``line``, ``success``,
        ``reason``, ``T_0to1`` (estimate, file cameras, None without a pose), ``T_0to1_gt``, ``rot_err_deg``,
        ``trans_err_m`` (camera centres), ``t_angle_err_deg``, ``scale_ratio``, ``vcre_px`` (image 1's K and
        size), ``confidence``, ``num_inliers``, ``num_matches``; a failure has infinite errors and a NaN scale
        ratio. The summary is :func:`mickey_ros.geometry.pose_eval.summarize_poses` (with ``identity``) plus
        ``skipped`` (reason of a pair that raised -> count) and ``no_pose`` (reason -> count). (``mickey-ros
        eval-pairs --json`` adds ``run``: what ran, :func:`mickey_ros.cli.run_info`.)
    """
    if read is None:
        from mickey_ros.image_bytes import read_image as read
    root = Path(image_dir)
    viz = Path(viz_dir) if viz_dir is not None else None
    if viz is not None:
        try:
            viz.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"--viz-dir: cannot create {viz}: {err.strerror}") from err
    bar = _Progress(progress, len(pairs))
    bar.show(0)
    rows: list[dict[str, Any]] = []
    columns: dict[str, list[Any]] = {"T_est": [], "T_gt": [], "K": [], "size": [], "confidence": []}
    skipped: dict[str, int] = {}
    no_pose: dict[str, int] = {}
    for index, pair in enumerate(pairs):
        row, T_est, size1 = _evaluate_pair(pair, root, estimate, read, viz, index, skipped, no_pose)
        rows.append(row)
        for key, value in (("T_est", T_est), ("T_gt", pair.T_0to1), ("K", pair.K1), ("size", size1),
                           ("confidence", row["confidence"] or 0.0)):
            columns[key].append(value)
        bar.show(index + 1)
    summary = summarize_poses(columns["T_est"], columns["T_gt"], columns["K"], columns["size"], columns["confidence"])
    summary.update(skipped=skipped, no_pose=no_pose)
    return {"pairs": rows, "summary": summary}


def _evaluate_pair(pair: PairSpec, root: Path, estimate: Estimator, read: Callable[[Path, str], np.ndarray],
                   viz: Path | None, index: int, skipped: dict[str, int], no_pose: dict[str, int],
                   ) -> tuple[dict[str, Any], np.ndarray | None, tuple[float, float]]:
    """One pair, isolated: any exception becomes a failure with its reason."""
    size1 = (float("nan"), float("nan"))  # image 1 unread: its identity VCRE is undefined
    images: tuple[np.ndarray, np.ndarray] | None = None
    res: Any = None  # the estimator's RelativePose; None when the pair raised
    try:
        file0 = read(root / pair.name0, f"line {pair.line}: image0")
        file1 = read(root / pair.name1, f"line {pair.line}: image1")
        size1 = (float(file1.shape[1]), float(file1.shape[0]))
        (up0, K0), (up1, K1) = (_upright(file0, pair.K0, pair.rot0), _upright(file1, pair.K1, pair.rot1))
        images = (up0, up1)
        res = estimate(up0, K0, up1, K1)
        success, reason = bool(res.success), str(res.reason)
    except Exception as err:  # noqa: BLE001 - isolation is the point; the reason is kept
        res, success, reason = None, False, describe_error(err)
        skipped[reason] = skipped.get(reason, 0) + 1
    else:
        if not success:
            no_pose[reason] = no_pose.get(reason, 0) + 1
    T_est = None
    if success:  # back from the upright cameras to the files' cameras
        T_est = inplane_rotation(pair.rot1).T @ np.asarray(res.T_0to1, dtype=np.float64) @ inplane_rotation(pair.rot0)
    errors = pair_errors(T_est, pair.T_0to1, pair.K1, *size1)
    row = {"name0": pair.name0, "name1": pair.name1, "line": pair.line, "success": success, "reason": reason,
           "T_0to1": None if T_est is None else T_est.tolist(), "T_0to1_gt": pair.T_0to1.tolist(),
           "rot_err_deg": errors["rot_err_deg"], "trans_err_m": errors["trans_err_m"],
           "t_angle_err_deg": errors["trans_dir_err_deg"], "scale_ratio": errors["scale_ratio"],
           "vcre_px": errors["vcre_px"], "confidence": None if res is None else float(res.confidence),
           "num_inliers": 0 if res is None else int(res.num_inliers),
           "num_matches": 0 if res is None else int(res.num_matches)}
    if viz is not None and images is not None:  # a pair that raised is drawn as "no pose: <reason>"
        from mickey_ros.pipeline import RelativePose

        picture = res if res is not None else RelativePose(success=False, reason=reason, T_0to1=np.eye(4))
        _save_picture(viz / f"{index:04d}_{_slug(pair.name0)}__{_slug(pair.name1)}.png", images, picture)
    return row, T_est, size1


def _upright(image: np.ndarray, K: np.ndarray, rot: int) -> tuple[np.ndarray, np.ndarray]:
    if rot == 0:
        return image, K
    K_up, _ = rotate_K(K, image.shape[1], image.shape[0], rot)
    return np.ascontiguousarray(np.rot90(image, rot)), K_up


def _save_picture(path: Path, images: tuple[np.ndarray, np.ndarray], res: Any) -> None:
    import logging

    from mickey_ros.viz import save_visualization

    try:
        save_visualization(path, images[0], images[1], res)
    except Exception as err:  # noqa: BLE001 - a picture that cannot be written never costs the pair
        logging.getLogger(__name__).warning("--viz-dir: no picture %s: %s", path, describe_error(err))


# -- output --------------------------------------------------------------------------------------------------------
def json_safe(value: Any) -> Any:
    """Nested dicts/lists/numbers with every non-finite float (inf, NaN) as None, numpy scalars as Python."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary as printed: one line per metric, the estimate beside the identity ("no motion") pose.

    Names as in the JSON's documentation: "camera-centre error" (``median_trans_err_m``), "rotation error",
    "direction error" (of the translation), "scale ratio" (``|t_est| / |t_gt|``); "within 25 cm / 5 deg" is
    ``prec_pose_25cm_5deg``, the fraction of all pairs (failures included) with both errors below the thresholds.
    """
    ident = summary["identity"]

    def fmt(value: float, spec: str) -> str:
        return format(value, spec) if math.isfinite(value) else "n/a"

    n, failures = summary["num_pairs"], summary["num_failures"]
    lines = [f"mickey-ros eval-pairs: {n} pairs, {n - failures} with a pose, {failures} failures",
             f"{'':30}{'estimate':>10}{'no motion':>11}"]
    for label, key, spec in (("VCRE precision @ 10% diagonal", "prec_vcre_10pct_diag", ".3f"),
                             ("VCRE AUC @ 10% diagonal", "auc_vcre_10pct_diag", ".3f"),
                             ("median VCRE (px)", "median_vcre_px", ".1f"),
                             ("within 25 cm / 5 deg", "prec_pose_25cm_5deg", ".3f"),
                             ("median camera-centre error (m)", "median_trans_err_m", ".3f"),
                             ("median rotation error (deg)", "median_rot_err_deg", ".2f"),
                             ("median direction error (deg)", "median_trans_dir_err_deg", ".2f"),
                             ("pose AUC @ 5 deg", "auc_pose_5deg", ".3f"),
                             ("pose AUC @ 10 deg", "auc_pose_10deg", ".3f"),
                             ("pose AUC @ 20 deg", "auc_pose_20deg", ".3f"),
                             ("scale ratio median", "scale_ratio_median", ".3f")):
        lines.append(f"{label:30}{fmt(summary[key], spec):>10}{fmt(ident[key], spec):>11}")
    for title, reasons in (("skipped", summary["skipped"]), ("no pose", summary["no_pose"])):
        for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
            lines.append(f"  {title} ({count}): {reason}")
    return lines
