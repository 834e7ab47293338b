"""Evaluate a MicKey checkpoint on validation pairs: Map-free submission zip + benchmark-exact metrics.

    python training/evaluate.py --checkpoint run/checkpoints/best.ckpt --data DIR [--kind bags|mapfree]
        [--split val] [--out OUT_DIR] [--resize W H] [--max-pairs N] [--device auto] [--seed 0]
        [--config FILE] [--set section.key=value ...] [--sample N]

``--checkpoint default`` evaluates the bundled default network. ``--sample N``: a seeded random subset of N pairs.
With ``--set data.depth_topic=...`` (RGB-D bags) the predicted depth at the keypoints is compared with the sensor's
(ratio, correlation, error, per-image scale error) and ``sensor_depth_pose`` scores the network's matches with the
sensor depth: whether depth or matching limits the pose; ``depth_scale_only_pose`` / ``depth_shape_only_pose``
split the depth error into per-image scale and shape.

``--kind mapfree``: ``DIR`` is a Map-free root; the pairs are the benchmark's (reference vs every 5th query),
the submission zip is scored by :func:`mickey_ros.mapfree.evaluate_submission` (the benchmark's own rules).
``--kind bags``: ``DIR`` holds rosbag2 recordings (as for training); each pair's camera 0 plays the Map-free
reference, so the same rules apply (``pose_<place>.txt`` per place, VCRE with the query's K and image size).
Beside the benchmark's keys, ``metrics.json`` holds the pose summary of :mod:`mickey_ros.geometry.pose_eval`
(camera-centre, rotation and translation-direction errors, scale ratio, pose / VCRE precisions) and, under
``identity``, the same numbers for the no-motion pose on the same pairs.
Writes ``OUT/submission.zip`` and ``OUT/metrics.json``; exit 2 with one line on bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `training` and `mickey_ros` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mickey_ros.errors import InputError, MickeyError, describe_error  # noqa: E402
from mickey_ros.geometry.covariance import nees, nees_summary  # noqa: E402
from mickey_ros.geometry.metrics import pose_errors, vcre  # noqa: E402
from mickey_ros.geometry.pose_eval import KEYS as SUMMARY_KEYS, summarize_poses  # noqa: E402
from mickey_ros.geometry.se3 import make_T  # noqa: E402
from mickey_ros.mapfree import aggregate_results, write_submission  # noqa: E402


def sample_pairs(num_pairs: int, sample: int, seed: int) -> list[int]:
    """A seeded random subset of ``sample`` pair indices out of ``num_pairs`` (all of them if fewer), sorted."""
    if sample >= num_pairs:
        return list(range(num_pairs))
    return sorted(np.random.default_rng(seed).choice(num_pairs, size=sample, replace=False).tolist())


def weighted_median(values: torch.Tensor, weights: torch.Tensor) -> float:
    """The smallest of ``values`` ``[N]`` at which the cumulative ``weights`` ``[N]`` (>= 0) reach half their sum;
    NaN when the weights sum to zero."""
    order = torch.argsort(values)
    cumulative = torch.cumsum(weights[order], 0)
    if float(cumulative[-1]) <= 0:
        return float("nan")
    return float(values[order][torch.searchsorted(cumulative, 0.5 * cumulative[-1])])


# depth_diagnostics' poses (see there) -> their metrics.json keys
DEPTH_POSES = {"sensor": "sensor_depth_pose", "scale_only": "depth_scale_only_pose",
               "shape_only": "depth_shape_only_pose"}


def depth_diagnostics(reloc: Any, item: dict[str, Any]) -> tuple[list[dict[str, float]], dict[str, np.ndarray | None]]:
    """Predicted vs sensor depth for a pair with sensor depth (diagnosis: is the pose limited by depth or matches,
    and by which part of the depth error?).

    The network sees each image as the Relocalizer's estimate does (:meth:`Relocalizer.network_input`: its
    ``resize`` or size budget), and the sensor depth is resized with it (nearest), so that the depth numbers and
    the poses come from the same network input. Per view, over the keypoints with a valid sensor depth (nearest
    pixel): ``ratio`` (median predicted / sensor),
    ``logcorr`` (Pearson correlation of the log depths), ``abs_log_err`` (median |log(predicted / sensor)|),
    ``log_scale`` (median log(predicted / sensor): the view's scale error), ``shape_abs_log_err`` (median
    |log(predicted / sensor) - log_scale|: the shape error, what is left once the view's scale is right) and
    ``abs_log_err_matched`` (the median of |log(predicted / sensor)| weighted by
    each keypoint's match probability, a row or column sum of P: the depth error of the keypoints the solver
    draws, as it samples correspondences by P).

    And three poses from the network's own matches (P), solved as the Relocalizer does (its solver and seed), with
    3D points from: ``sensor``: the sensor's depth (the network's where the sensor has none); ``scale_only``: the
    sensor's depth times the view's scale error ``exp(log_scale)`` (the network's scale errors, no shape error);
    ``shape_only``: the network's depth divided by it (the network's shape, the right scale). Each a ``[4, 4]``
    ``T_0to1``, or None when the solver finds none; all None when a view has under 3 valid depths.
    """
    from mickey_ros.geometry.camera import backproject
    from mickey_ros.pipeline import flip_average_depth
    from mickey_ros.solver import solve_relative_pose
    from training.aux_loss import sample_depth
    from training.data.datasets import prepare_depth

    net, device = reloc.net, reloc.device
    outs, sensor, Ks = [], [], []
    for k in (0, 1):
        # the image the Relocalizer's network sees (its resize or size budget), the sensor depth resized with it
        image, K, (sx, sy) = reloc.network_input(item[f"image{k}"], item[f"K_color{k}"].numpy())
        depth = item[f"depth{k}"]
        if (sx, sy) != (1.0, 1.0):
            height, width = depth.shape
            depth = prepare_depth(depth.numpy(), (round(width * sx), round(height * sy)))
        focal = torch.tensor([K[0, 0]], dtype=torch.float32, device=device)  # fx (focal-relative depth)
        out = net(image, focal)
        if reloc.depth_flip:  # the depth the Relocalizer uses
            out = flip_average_depth(out, net(image.flip(-1), focal))
        z = sample_depth(depth[None].to(device), out.kpts)[0]
        d = out.depth[0]
        ok = torch.isfinite(z) & (z > 0) & (d > 0)
        outs.append(out)
        sensor.append((d, z, ok))
        Ks.append(torch.from_numpy(K)[None].to(device))
    P = net.match(outs[0], outs[1])[0].float()
    rows = []
    for (d, z, ok), mass in zip(sensor, (P.sum(1), P.sum(0))):  # each keypoint's match probability
        if int(ok.sum()) < 3:
            continue
        ld, lz = d[ok].double().log(), z[ok].double().log()
        log_ratio = ld - lz
        rows.append({"ratio": float(log_ratio.exp().median()),
                     "logcorr": float(torch.corrcoef(torch.stack([ld, lz]))[0, 1]),
                     "abs_log_err": float(log_ratio.abs().median()), "log_scale": float(log_ratio.median()),
                     "shape_abs_log_err": float((log_ratio - log_ratio.median()).abs().median()),
                     "abs_log_err_matched": weighted_median(log_ratio.abs(), mass[ok].double())})
    poses: dict[str, np.ndarray | None] = dict.fromkeys(DEPTH_POSES)
    if len(rows) < 2:
        return rows, poses
    scales = [float(np.exp(row["log_scale"])) for row in rows]
    true_depth = [torch.where(ok, z, d).double() for d, z, ok in sensor]
    depths = {"sensor": true_depth, "scale_only": [z * s for z, s in zip(true_depth, scales)],
              "shape_only": [d.double() / s for (d, _, _), s in zip(sensor, scales)]}
    for name in DEPTH_POSES:
        pts = [backproject(o.kpts.double(), z[None], K)[0] for o, z, K in zip(outs, depths[name], Ks)]
        generator = torch.Generator(device=device)
        generator.manual_seed(int(reloc.seed) if reloc.seed is not None else 0)
        est = solve_relative_pose(pts[0], pts[1], P, reloc.solver, generator=generator)
        if est.success:
            poses[name] = make_T(est.R.double().cpu().numpy(), est.t.double().cpu().numpy().reshape(3))
    return rows, poses


def evaluate_dataset(net: Any, dataset: Any, device: Any = "cpu", seed: int = 0, max_pairs: int | None = None,
                     indices: list[int] | None = None, batch: int = 1, depth_flip: bool = False,
                     max_side: int | str | None = "auto", refine: Any = "auto", min_confidence: Any = "auto",
                     ) -> tuple[dict[str, Any], dict[str, list[tuple[str, np.ndarray, np.ndarray, float]]]]:
    """Run the Relocalizer on the dataset's pairs (``indices``, else the first ``max_pairs``) and score them as
    Map-free does. Items with sensor depth (``depth0``/``depth1``) add, over images, ``depth_ratio_median``,
    ``depth_logcorr_median``, ``depth_abs_log_err_median``, ``depth_abs_log_err_matched_median`` (weighted by
    the match probability), ``depth_scale_abs_log_median`` (per-image scale error) and
    ``depth_shape_abs_log_err_median`` (the error left once each image's scale is right), over pairs
    ``depth_pair_scale_diff_median`` (|log scale0 - log scale1|: the part a rigid fit cannot absorb), and the pose
    summaries (with ``identity``) of the network's matches with the sensor depth (``sensor_depth_pose``:
    near-perfect there means depth, not matching, limits the pose), with the sensor depth times the network's
    per-image scale errors (``depth_scale_only_pose``) and with the network's depth rescaled to the right per-image
    scale (``depth_shape_only_pose``): which part of the depth error costs the pose (:func:`depth_diagnostics`).

    A pair that raises (unreadable frame, implausible intrinsics, ...) counts as a failure and its reason as an
    entry of ``metrics["skipped"]`` (reason -> count); the run goes on. ``batch`` pairs go through the network at
    a time (:meth:`mickey_ros.pipeline.Relocalizer.estimate_batch`: the same poses as one by one). ``depth_flip``:
    the Relocalizer's option of that name (depth averaged with the mirrored image's; the depth diagnostics use the
    same depth). ``max_side``: the Relocalizer's size budget (``"auto"``: the network's training size; None: the
    dataset's images as they are, what ``--resize`` asks for). ``refine``: the Relocalizer's option of that name
    (the two-view bundle adjustment; the depth diagnostics' poses stay the solver's). ``min_confidence``: its
    out-of-domain rule (a refused pair is a failure; 0 scores every pose). ``metrics["covariance"]``:
    the calibration of the poses' covariance over the successful pairs (:func:`mickey_ros.geometry.covariance.nees_summary`: mean NEES, 6
    when consistent; fraction inside the 95 % bound; the factor on ``covariance_scale`` that would make the mean 6
    or the median right).

    Camera 0 is the reference (identity pose), so a pair's ground truth ``T_0to1`` is the query's
    world-to-camera pose; VCRE uses the query's network-input K and image size.

    Returns:
        ``(metrics, estimates)``: the benchmark's metric dict plus the pose summary of
        :func:`mickey_ros.geometry.pose_eval.summarize_poses` (its keys, and ``identity``: the same numbers for
        the no-motion pose) over the pairs with a finite ground truth; and per scene the submission rows
        ``(query name, R, t, confidence)`` of the pairs with a pose.
    """
    from mickey_ros.pipeline import Relocalizer

    reloc = Relocalizer(net, device=device, seed=seed, depth_flip=depth_flip, max_side=max_side, refine=refine,
                        min_confidence=min_confidence)
    per_scene: dict[str, dict[str, list[float]]] = {}
    estimates: dict[str, list[tuple[str, np.ndarray, np.ndarray, float]]] = {}
    failures = 0
    summary_rows: dict[str, list[Any]] = {"T_est": [], "T_gt": [], "K": [], "size": [], "confidence": []}
    count = len(dataset) if max_pairs is None else min(len(dataset), max_pairs)
    depth_rows: list[dict[str, float]] = []
    pair_scale_diffs: list[float] = []
    depth_pose_rows: dict[str, dict[str, list[Any]]] = {name: {"T_est": [], "T_gt": [], "K": [], "size": []}
                                                         for name in DEPTH_POSES}
    skipped: dict[str, int] = {}
    nees_values: list[float] = []
    undetermined = 0
    order = list(range(count) if indices is None else indices)
    if batch < 1:
        raise InputError(f"--batch: expected a positive number of pairs, got {batch}")

    def skip(err: BaseException) -> None:
        nonlocal failures
        reason = describe_error(err)
        skipped[reason] = skipped.get(reason, 0) + 1
        failures += 1

    def estimated() -> Iterator[tuple[dict[str, Any], Any]]:
        """``(item, result)`` per pair that did not raise, ``batch`` pairs through the network at a time."""
        for start in range(0, len(order), batch):
            items = []
            for i in order[start:start + batch]:
                try:  # one bad pair (unreadable frame, implausible K, ...) is a counted skip, never the end
                    items.append(dataset[i])
                except Exception as err:  # noqa: BLE001 - isolation is the point; the reason is kept
                    skip(err)
            try:
                results = reloc.estimate_batch([(it["image0"], it["K_color0"].numpy(), it["image1"],
                                                 it["K_color1"].numpy()) for it in items], return_errors=True)
            except Exception:  # noqa: BLE001 - an unexpected error in the batch: find its pair one by one
                results = []
                for it in items:
                    try:
                        results.append(reloc.estimate_batch([(it["image0"], it["K_color0"].numpy(),
                                                              it["image1"], it["K_color1"].numpy())])[0])
                    except Exception as err:  # noqa: BLE001
                        results.append(err)
            for item, res in zip(items, results):
                if isinstance(res, BaseException):
                    skip(res)
                    continue
                try:
                    if "depth0" in item:
                        rows, depth_poses = depth_diagnostics(reloc, item)
                        depth_rows.extend(rows)
                        if len(rows) == 2:
                            pair_scale_diffs.append(abs(rows[0]["log_scale"] - rows[1]["log_scale"]))
                        T_gt = item["T_0to1"].double().numpy()
                        if np.all(np.isfinite(T_gt)):
                            K1, size1 = item["K_color1"].double().numpy(), tuple(item["image1"].shape[-1:-3:-1])
                            for name, T_depth in depth_poses.items():
                                for key, value in (("T_est", T_depth), ("T_gt", T_gt), ("K", K1), ("size", size1)):
                                    depth_pose_rows[name][key].append(value)
                except Exception as err:  # noqa: BLE001
                    skip(err)
                    continue
                yield item, res

    with torch.no_grad():
        for item, res in estimated():
            scene = _scene_name(item["scene_id"])
            rows = per_scene.setdefault(scene, {"trans_err": [], "rot_err": [], "reproj_err": [], "confidence": []})
            estimates.setdefault(scene, [])
            T_gt = item["T_0to1"].double().numpy()
            H, W = item["image1"].shape[-2:]
            if np.all(np.isfinite(T_gt)):
                for key, value in (("T_est", res.T_0to1 if res.success else None), ("T_gt", T_gt),
                                   ("K", item["K_color1"].double().numpy()), ("size", (W, H)),
                                   ("confidence", float(res.confidence) if res.success else 0.0)):
                    summary_rows[key].append(value)
            if not res.success or not np.all(np.isfinite(T_gt)):
                failures += 1
                continue
            if res.covariance is None:
                undetermined += 1
            else:
                nees_values.append(nees(res.T_0to1, T_gt, res.covariance))
            trans, rot = pose_errors(res.T_0to1, T_gt)
            rows["trans_err"].append(trans)
            rows["rot_err"].append(rot)
            rows["reproj_err"].append(vcre(res.T_0to1, T_gt, item["K_color1"].double().numpy(), W, H))
            rows["confidence"].append(float(res.confidence))
            estimates[scene].append((_frame_name(item["pair_names"][1]), res.R, res.t, float(res.confidence)))
    metrics: dict[str, Any] = aggregate_results(list(per_scene.values()), failures)
    metrics["skipped"] = skipped
    if summary_rows["T_gt"]:
        metrics.update(summarize_poses(summary_rows["T_est"], summary_rows["T_gt"], summary_rows["K"],
                                       summary_rows["size"], summary_rows["confidence"]))
    metrics["covariance"] = dict(nees_summary(nees_values), covariance_scale=reloc.covariance_scale,
                                 undetermined=undetermined)
    if depth_rows:
        for key, name in (("ratio", "depth_ratio_median"), ("logcorr", "depth_logcorr_median"),
                          ("abs_log_err", "depth_abs_log_err_median"),
                          ("shape_abs_log_err", "depth_shape_abs_log_err_median"),
                          ("abs_log_err_matched", "depth_abs_log_err_matched_median")):
            metrics[name] = float(np.nanmedian([row[key] for row in depth_rows]))
        metrics["depth_scale_abs_log_median"] = float(np.median([abs(row["log_scale"]) for row in depth_rows]))
    if pair_scale_diffs:
        metrics["depth_pair_scale_diff_median"] = float(np.median(pair_scale_diffs))
    for name, key in DEPTH_POSES.items():
        pose_rows = depth_pose_rows[name]
        if pose_rows["T_gt"]:
            metrics[key] = summarize_poses(pose_rows["T_est"], pose_rows["T_gt"], pose_rows["K"], pose_rows["size"])
    return metrics, estimates


def _scene_name(scene_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(scene_id)) or "scene"


def _frame_name(name: str) -> str:
    return "".join(c if not c.isspace() and c != "#" else "_" for c in str(name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--backbone-weights", default="")
    parser.add_argument("--data", required=True, help="Map-free root or folder of rosbag2 recordings")
    parser.add_argument("--kind", choices=("bags", "mapfree"), default="bags")
    parser.add_argument("--split", default="val")
    parser.add_argument("--out", default="eval_out")
    parser.add_argument("--resize", type=int, nargs=2, metavar=("W", "H"),
                        help="resize the images to W x H (then cropped to 14-px multiples): the network runs at "
                             "that size, not at the Relocalizer's default size budget")
    parser.add_argument("--max-pairs", type=int)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1, help="pairs through the network at a time (same poses)")
    parser.add_argument("--config", help="training config (data topics/pair limits for --kind bags)")
    parser.add_argument("--sample", type=int, help="evaluate a random subset of this many pairs (seeded by --seed)")
    parser.add_argument("--depth-flip", action="store_true",
                        help="average each image's depth with its mirror image's (Relocalizer depth_flip)")
    parser.add_argument("--refine", default="auto", choices=("auto", "on", "off"),
                        help="the Relocalizer's two-view bundle adjustment (auto: on for every network but the "
                             "official one)")
    parser.add_argument("--min-confidence", default="auto", metavar="auto|C",
                        help="the Relocalizer's out-of-domain rule: no pose below this confidence (a failure); "
                             "auto: the network's own (the bundled one's as shipped), 0: score every pose")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override, e.g. --set data.max_angle_deg=30 (repeatable)")
    args = parser.parse_args(argv)
    try:
        metrics = run(args)
    except MickeyError as err:
        print(f"evaluate.py: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=1))
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    from mickey_ros.mapfree import evaluate_submission
    from mickey_ros.model import load_checkpoint
    from mickey_ros.pipeline import min_confidence_value, refine_mode, resolve_device
    from training import config as config_mod
    from training.data.build import build_dataset

    if args.batch < 1:
        raise InputError(f"--batch: expected a positive number of pairs, got {args.batch}")
    out = Path(args.out)
    if args.checkpoint == "default":
        from mickey_ros.model.default import load_default_network

        net = load_default_network()
    else:
        net = load_checkpoint(args.checkpoint, backbone_weights=args.backbone_weights or None)
    overrides = [f"data.kind={args.kind}", f"data.resize={list(args.resize) if args.resize else 'null'}"]
    if args.kind == "mapfree":
        overrides.append(f"data.root={args.data}")
    else:
        overrides.append(f"data.{'val' if args.split != 'train' else 'train'}=[{args.data}]")
    cfg = config_mod.resolve(args.config, overrides + list(args.set))
    dataset = build_dataset(cfg, "val" if args.split != "train" else "train", out)
    if args.sample is not None and args.sample < 1:
        raise InputError(f"--sample: expected a positive number of pairs, got {args.sample}")
    indices = sample_pairs(len(dataset), args.sample, args.seed) if args.sample else None
    metrics, estimates = evaluate_dataset(net, dataset, resolve_device(args.device), args.seed, args.max_pairs,
                                          indices, batch=args.batch, depth_flip=args.depth_flip,
                                          max_side=None if args.resize else "auto",
                                          refine=refine_mode(args.refine, "--refine"),
                                          min_confidence=min_confidence_value(args.min_confidence, net,
                                                                              "--min-confidence"))
    write_submission(out / "submission.zip", estimates)
    if args.kind == "mapfree" and args.max_pairs is None and indices is None:  # the benchmark's own scoring of the zip
        kept = ("identity", "skipped", "covariance")
        summary = {k: v for k, v in metrics.items() if k in SUMMARY_KEYS or k in kept}
        metrics = {**evaluate_submission(out / "submission.zip", Path(args.data), args.split), **summary}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


if __name__ == "__main__":
    sys.exit(main())
