"""``mickey-ros demo``: the bundled demo pairs through a network, each estimate beside its ground truth (ROS-free).

The pairs are listed in ``mickey_ros/data/demo/pairs.txt`` (the ScanNet/SuperGlue line format of
``mickey-ros eval-pairs``, :func:`mickey_ros.eval_pairs.parse_pairs`; the trailing ``# comment`` of a line is the
pair's description). They are synthetic views of one room (``scripts/make_demo_images.py``), all from the same
reference image, with different motions: small and large baseline, rotation, forward motion.

Per pair the demo prints the estimated and the ground-truth motion, the errors of the estimate (rotation deg,
camera-centre distance m, translation direction deg, scale ratio ``|t| / |t_gt|``) and the same errors of "no
motion" (the identity pose, the floor an estimate must beat); then the medians over all pairs. Every number comes
from :mod:`mickey_ros.geometry.pose_eval` (``pair_errors``, ``summarize_poses``): a pair without a pose counts with
infinite errors.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mickey_ros.errors import DatasetError, InputError
from mickey_ros.eval_pairs import PairSpec, parse_pairs
from mickey_ros.geometry.pose_eval import pair_errors, summarize_poses
from mickey_ros.geometry.se3 import angle_axis_deg

DEMO_DIR = Path(__file__).resolve().parent / "data" / "demo"
PAIRS_FILE = DEMO_DIR / "pairs.txt"

Estimator = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], Any]
"""``(image0, K0, image1, K1) -> RelativePose``, e.g. ``Relocalizer.estimate``."""


@dataclass(frozen=True)
class DemoPair:
    """A pair of the list with its description (the line's trailing comment, may be empty)."""

    spec: PairSpec
    description: str


@dataclass
class DemoResult:
    """One pair's outcome: the estimate (``RelativePose``), the image size and the ``pair_errors`` dicts."""

    pair: DemoPair
    result: Any
    width: int
    height: int
    errors: dict[str, float]
    no_motion_errors: dict[str, float]
    picture: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready per-pair entry (non-finite numbers as None); the estimate's own keys are the caller's."""
        spec = self.pair.spec
        return {"name0": spec.name0, "name1": spec.name1, "description": self.pair.description,
                "K0": spec.K0.tolist(), "K1": spec.K1.tolist(), "width": self.width, "height": self.height,
                "T_0to1_gt": spec.T_0to1.tolist(), "errors": _finite(self.errors),
                "no_motion_errors": _finite(self.no_motion_errors),
                "viz": None if self.picture is None else str(self.picture)}


def _finite(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out[key] = _finite(value)
        elif isinstance(value, (float, np.floating)):
            out[key] = float(value) if math.isfinite(value) else None
        else:
            out[key] = value
    return out


def load_demo_pairs(pairs_file: str | Path = PAIRS_FILE) -> list[DemoPair]:
    """The demo's pair list with descriptions.

    Raises:
        DatasetError: a malformed list (:func:`mickey_ros.eval_pairs.parse_pairs`) or an EXIF rotation (the demo
            images are upright).
    """
    specs = parse_pairs(pairs_file)
    lines = Path(pairs_file).read_text(encoding="utf-8").splitlines()
    pairs = []
    for spec in specs:
        if spec.rot0 or spec.rot1:
            raise DatasetError(f"{pairs_file}:{spec.line}: expected rot0 = rot1 = 0 (upright demo images), "
                               f"got {spec.rot0} {spec.rot1}")
        comment = lines[spec.line - 1].split("#", 1)
        pairs.append(DemoPair(spec, comment[1].strip() if len(comment) > 1 else ""))
    return pairs


def viz_paths(viz: str | Path | None, count: int) -> list[Path] | None:
    """``--viz OUT.png`` -> ``OUT_pair1.png`` ... ``OUT_pair<count>.png`` (one picture per pair), checked up front.

    Raises:
        InputError: an extension OpenCV does not write or a folder that does not exist.
    """
    if viz is None:
        return None
    from mickey_ros.viz import WRITABLE

    p = Path(viz)
    if p.suffix.lower() not in WRITABLE:
        raise InputError(f"--viz: expected a file name ending in {', '.join(WRITABLE)} (the demo writes "
                         f"NAME_pair1{p.suffix or '.png'} ...), got {p}")
    if not p.parent.is_dir():
        raise InputError(f"--viz: folder {p.parent} does not exist")
    return [p.with_name(f"{p.stem}_pair{k + 1}{p.suffix}") for k in range(count)]


# -- text ----------------------------------------------------------------------------------------------------------
def _num(value: float, spec: str, unit: str = "") -> str:
    value = float(value)
    if math.isnan(value):
        return "n/a"
    return "inf" if math.isinf(value) else f"{value:{spec}}{unit}"


ERROR_HEADER = f"  {'error':<13}{'rotation':>10}{'centre':>10}{'direction':>11}{'|t|/|t_gt|':>12}"


def error_row(label: str, rot_deg: float, centre_m: float, direction_deg: float, scale_ratio: float) -> str:
    """One line under :data:`ERROR_HEADER`."""
    return (f"  {label:<13}{_num(rot_deg, '.2f', ' deg'):>10}{_num(centre_m, '.3f', ' m'):>10}"
            f"{_num(direction_deg, '.1f', ' deg'):>11}{_num(scale_ratio, '.3f'):>12}")


def motion_row(label: str, T: np.ndarray) -> str:
    """``label  angle deg about [axis]  [t] m  |t| m`` of a ``[4, 4]`` ``T_0to1``."""
    angle, axis = angle_axis_deg(T[:3, :3])
    t = T[:3, 3] + 0.0
    return (f"  {label:<13}{angle:6.2f} deg about [{axis[0]:+.2f} {axis[1]:+.2f} {axis[2]:+.2f}]   "
            f"t [{t[0]:+.3f} {t[1]:+.3f} {t[2]:+.3f}] m   |t| {np.linalg.norm(t):.3f} m")


def _pair_lines(k: int, n: int, r: DemoResult) -> list[str]:
    spec, res = r.pair.spec, r.result
    head = f"pair {k}/{n}: {spec.name0} -> {spec.name1}" + (f"  ({r.pair.description})" if r.pair.description else "")
    lines = [head, motion_row("ground truth", spec.T_0to1)]
    if res.success:
        lines.append(motion_row("estimate", np.asarray(res.T_0to1, dtype=np.float64))
                     + f"   confidence {res.confidence:.3f}, {res.num_inliers} / {res.num_matches} inliers")
    else:
        lines.append(f"  {'estimate':<13}no pose: {res.reason}")
    lines.append(ERROR_HEADER)
    for label, e in (("estimate", r.errors), ("no motion", r.no_motion_errors)):
        lines.append(error_row(label, e["rot_err_deg"], e["trans_err_m"], e["trans_dir_err_deg"], e["scale_ratio"]))
    if r.picture is not None:
        lines.append(f"  picture: {r.picture}")
    return lines


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """The totals: medians of the estimate's and of no motion's errors over all pairs."""
    n, failures = summary["num_pairs"], summary["num_failures"]
    lines = [f"all {n} pairs: medians ({n - failures} of {n} with a pose; a pair without one counts with infinite "
             "errors)", ERROR_HEADER]
    for label, s in (("estimate", summary), ("no motion", summary["identity"])):
        lines.append(error_row(label, s["median_rot_err_deg"], s["median_trans_err_m"], s["median_trans_dir_err_deg"],
                               s["scale_ratio_median"]))
    return lines


# -- running -------------------------------------------------------------------------------------------------------
def run_demo(pairs: Sequence[DemoPair], estimate: Estimator, read: Callable[[Path, str], np.ndarray], *,
             image_dir: str | Path = DEMO_DIR, pictures: Sequence[Path] | None = None,
             out: Callable[[str], None] = print) -> tuple[list[DemoResult], dict[str, Any]]:
    """Estimate every pair, print its motion and errors, then the totals.

    Args:
        pairs: from :func:`load_demo_pairs`.
        estimate: ``(image0, K0, image1, K1) -> RelativePose``.
        read: ``(path, name) -> uint8 [H, W, 3] RGB`` (``mickey_ros.cli.read_image``).
        image_dir: folder the image names are relative to.
        pictures: one output path per pair (:func:`viz_paths`) for :func:`mickey_ros.viz.save_visualization`.
        out: where the lines go.

    Returns:
        ``(per-pair results, summary)``: the summary is :func:`mickey_ros.geometry.pose_eval.summarize_poses`
        (image 1's K and size, the estimates' confidences), with ``identity`` for no motion.
    """
    if pictures is not None and len(pictures) != len(pairs):
        raise InputError(f"run_demo: expected {len(pairs)} picture paths (one per pair), got {len(pictures)}")
    root = Path(image_dir)
    results = []
    for k, pair in enumerate(pairs):
        spec = pair.spec
        image0 = read(root / spec.name0, f"demo pair {k + 1}: image0")
        image1 = read(root / spec.name1, f"demo pair {k + 1}: image1")
        res = estimate(image0, spec.K0, image1, spec.K1)
        height, width = image1.shape[:2]
        errors = pair_errors(np.asarray(res.T_0to1) if res.success else None, spec.T_0to1, spec.K1, width, height)
        no_motion = pair_errors(np.eye(4), spec.T_0to1, spec.K1, width, height)
        r = DemoResult(pair, res, width, height, errors, no_motion)
        if pictures is not None:
            from mickey_ros.viz import save_visualization

            title = f"demo pair {k + 1}/{len(pairs)}: {spec.name0} -> {spec.name1}" + (
                f"  ({pair.description})" if pair.description else "")
            save_visualization(pictures[k], image0, image1, res, gt_T_0to1=spec.T_0to1, errors=errors,
                               no_motion_errors=no_motion, title=title)
            r.picture = pictures[k]
        results.append(r)
        for line in _pair_lines(k + 1, len(pairs), r):
            out(line)
    summary = summarize_poses([np.asarray(r.result.T_0to1) if r.result.success else None for r in results],
                              [r.pair.spec.T_0to1 for r in results], [r.pair.spec.K1 for r in results],
                              [(r.width, r.height) for r in results],
                              [float(r.result.confidence) for r in results])
    for line in summary_lines(summary):
        out(line)
    return results, summary


def report(results: Sequence[DemoResult], summary: Mapping[str, Any],
           pose_dict: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """The ``--json`` document: ``{"pairs": [pose_dict(estimate) + DemoResult.to_dict(), ...], "summary": ...}``
    (non-finite numbers as None)."""
    pairs = [{"pair": k + 1, **pose_dict(r.result), **r.to_dict()} for k, r in enumerate(results)]
    return {"pairs": pairs, "summary": _finite(summary)}
