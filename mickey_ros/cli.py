"""The ``mickey-ros`` command.

Subcommands (DESIGN.md §4):
  match IMG0 IMG1 --intrinsics0 FX FY CX CY --intrinsics1 FX FY CX CY [...]  metric relative pose of a pair
  eval-mapfree SUBMISSION.zip --data-root ROOT --split val [--json OUT]      benchmark-exact Map-free metrics
  eval-pairs PAIRS.txt --image-dir DIR [--json OUT] [--viz-dir DIR] [...]   pose errors on pairs with ground truth
  bag IN OUT --image0 T --info0 T --image1 T --info1 T [...]                 the node's outputs for a recorded bag
  export-onnx OUT.onnx --height H --width W [...]                            the per-image network as ONNX
  make-interfaces DIR                                                        write the mickey_ros_msgs package

Exit codes: 0 success; 1 the pair ran but no pose was found (the reason is printed); 2 bad input
(one line on stderr naming the input and what was expected; ``--debug`` adds the traceback);
3 an unexpected internal error.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mickey_ros.errors import InputError, MickeyError
from mickey_ros.image_bytes import read_image

EXIT_OK, EXIT_NO_POSE, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
log = logging.getLogger("mickey_ros.cli")
QUIET_HELP = "only warnings and errors on stderr (no INFO lines)"


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (and exit code 2) instead of usage + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{self.prog}: {message}")


# -- image / intrinsics input ------------------------------------------------------------------------
def _intrinsics(values: Sequence[str], name: str) -> np.ndarray:
    from mickey_ros.geometry.camera import intrinsics_from_values

    return intrinsics_from_values(values, name)


# -- subcommands --------------------------------------------------------------------------------------
def _load_network(args: argparse.Namespace) -> Any:
    """--onnx, else --checkpoint, else a random-init --preset (testing), else the bundled default network."""
    from mickey_ros.model import build_model, load_checkpoint

    if getattr(args, "onnx", None):
        from mickey_ros.onnx_backend import OnnxNetwork

        for flag, value in (("--checkpoint", args.checkpoint), ("--backbone-weights", args.backbone_weights),
                            ("--preset", args.preset)):
            if value:
                raise InputError(f"{flag}: not used with --onnx (the ONNX file holds the network)")
        return OnnxNetwork(args.onnx)
    if args.checkpoint:
        return load_checkpoint(args.checkpoint, backbone_weights=args.backbone_weights)
    if args.backbone_weights:
        raise InputError("--backbone-weights: only meaningful together with --checkpoint (the official mickey.ckpt)")
    if args.preset:
        import torch

        torch.manual_seed(args.seed)  # a reproducible random network, like the seeded solver
        net = build_model(args.preset)
        log.warning(
            "--preset without --checkpoint: using a randomly initialised '%s' network, so the pose is not meaningful",
            args.preset,
        )
        return net
    from mickey_ros.model.default import describe_network, load_default_network

    net = load_default_network()
    log.info("no --checkpoint given: using the bundled default network, %s", describe_network(net))
    return net


def build_relocalizer(args: argparse.Namespace) -> Any:
    """The Relocalizer of ``match``, ``eval-pairs`` and ``bag`` (and ``scripts/eval_realdata.py``): the network of
    :func:`_load_network` with the command line's ``--device``, ``--seed``, ``--precision``, ``--resize`` /
    ``--max-side``, ``--depth-flip``, ``--refine`` and ``--min-confidence``.

    Raises:
        InputError: a bad device, size, refine mode or confidence; CheckpointError: an unreadable network file.
    """
    from mickey_ros.pipeline import Relocalizer, min_confidence_value, refine_mode, resolve_device

    device = resolve_device(args.device)
    net = _load_network(args)
    min_confidence = min_confidence_value(args.min_confidence, net, "--min-confidence")
    return Relocalizer(net, device=device, seed=args.seed, precision=args.precision,
                       resize=tuple(args.resize) if args.resize else None, max_side=_max_side(args),
                       depth_flip=args.depth_flip, refine=refine_mode(args.refine, "--refine"),
                       min_confidence=min_confidence)


def run_info(args: argparse.Namespace, reloc: Any) -> dict[str, Any]:
    """What an evaluation ran, for its JSON: the network, its input size rule, refinement, seed, device, threads.

    Returns:
        ``checkpoint`` (path, ``"bundled default"``, ``"onnx: PATH"`` or ``"random init"``), ``weights_file``
        (path or None), ``preset``, ``network_input`` (``{"rule": "resize" | "training size" | "max side" |
        "as given", "size": [W, H] or None, "max_side": px or None}``; "training size": images of another aspect
        keep the training pixel count), ``refine`` (``--refine``), ``refine_active``, ``min_confidence`` (the
        threshold in force), ``depth_flip``, ``seed``, ``device``, ``precision``, ``torch_threads``.
    """
    import torch

    if getattr(args, "onnx", None):
        checkpoint, weights = f"onnx: {args.onnx}", str(args.onnx)
    elif args.checkpoint:
        checkpoint, weights = str(args.checkpoint), str(args.checkpoint)
    elif args.preset:
        checkpoint, weights = "random init", None
    else:
        from mickey_ros.model.default import DEFAULT_WEIGHTS

        checkpoint, weights = "bundled default", str(DEFAULT_WEIGHTS)
    if reloc.resize is not None:
        network_input = {"rule": "resize", "size": list(reloc.resize), "max_side": None}
    elif reloc.fit_size is not None:
        network_input = {"rule": "training size", "size": list(reloc.fit_size), "max_side": None}
    elif reloc.max_side is not None:
        network_input = {"rule": "max side", "size": None, "max_side": reloc.max_side}
    else:
        network_input = {"rule": "as given", "size": None, "max_side": None}
    return {"checkpoint": checkpoint, "weights_file": weights, "preset": getattr(reloc.net, "preset", None),
            "network_input": network_input, "refine": args.refine, "refine_active": reloc.refine is not None,
            "min_confidence": reloc.min_confidence, "depth_flip": bool(args.depth_flip), "seed": args.seed, "device": str(reloc.device),
            "precision": reloc.precision, "torch_threads": torch.get_num_threads()}


def _pose_dict(res: Any) -> dict[str, Any]:
    return {
        "success": bool(res.success),
        "reason": res.reason,
        "T_0to1": res.T_0to1.tolist(),
        "R": res.R.tolist(),
        "t": res.t.tolist(),
        "confidence": float(res.confidence),
        "soft_inliers": float(res.soft_inliers),
        "num_inliers": int(res.num_inliers),
        "num_matches": int(res.num_matches),
    }


def cmd_match(args: argparse.Namespace) -> int:
    return EXIT_OK if _run_match(args).success else EXIT_NO_POSE


def _run_match(args: argparse.Namespace) -> Any:
    """The ``match`` job: prints the pose, writes --json / --viz; returns the RelativePose."""
    from mickey_ros.pipeline import check_network_size

    K0 = _intrinsics(args.intrinsics0, "--intrinsics0")
    K1 = _intrinsics(args.intrinsics1, "--intrinsics1")
    image0 = read_image(args.image0, "image0")
    image1 = read_image(args.image1, "image1")
    for name, image in (("image0", image0), ("image1", image1)):
        height, width = (args.resize[1], args.resize[0]) if args.resize else image.shape[:2]
        check_network_size(height, width, name)
    reloc = build_relocalizer(args)
    res = reloc.estimate(image0, K0, image1, K1)
    out = _pose_dict(res)
    out.update(image0=str(args.image0), image1=str(args.image1), K0=K0.tolist(), K1=K1.tolist())
    if res.success:
        np.set_printoptions(precision=6, suppress=True)
        print("T_0to1: camera 0 -> camera 1 (X1 = R X0 + t)")
        print(f"R =\n{res.R}")
        print(f"t (m) = {res.t}   |t| = {np.linalg.norm(res.t):.4f} m")
        print(f"confidence = {res.confidence:.4f}   inliers = {res.num_inliers} / {res.num_matches} matches")
    else:
        print(f"no pose: {res.reason}")
    if args.json:
        _write_json(args.json, out, "--json")
    if args.viz:
        from mickey_ros.viz import save_visualization

        save_visualization(args.viz, image0, image1, res, inlier_threshold_m=reloc.solver.inlier_threshold)
    return res


def cmd_eval_mapfree(args: argparse.Namespace) -> int:
    from mickey_ros.mapfree import evaluate_submission

    metrics = evaluate_submission(Path(args.submission), Path(args.data_root), args.split)
    text = json.dumps(metrics, indent=2)
    print(text)
    if args.json:
        _write_json(args.json, metrics, "--json")
    return EXIT_OK


def cmd_eval_pairs(args: argparse.Namespace) -> int:
    """Pairs with metric ground truth (SuperGlue's ScanNet list format): per-pair errors and the summary beside
    the no-motion pose's (:mod:`mickey_ros.eval_pairs`)."""
    from mickey_ros.eval_pairs import check_images, evaluate_pairs, json_safe, parse_pairs, summary_lines

    pairs = parse_pairs(args.pairs)  # fail fast: every line and every image before the network loads
    check_images(pairs, args.image_dir)
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise InputError(f"--json: folder {Path(args.json).parent} does not exist")
    reloc = build_relocalizer(args)
    result = evaluate_pairs(pairs, args.image_dir, reloc.estimate, viz_dir=args.viz_dir, read=read_image,
                            progress=not args.quiet and sys.stderr.isatty())
    print("\n".join(summary_lines(result["summary"])))
    if args.json:
        _write_json(args.json, json_safe({**result, "run": run_info(args, reloc)}), "--json")
    return EXIT_OK


def cmd_bag(args: argparse.Namespace) -> int:
    from mickey_ros.ros.bag import check_bag, process_bag

    topics = {"image0": args.image0, "info0": args.info0, "image1": args.image1, "info1": args.info1}
    if args.batch < 1:
        raise InputError(f"--batch: expected a positive number of pairs, got {args.batch}")
    check_bag(args.input, topics, out_path=args.output, overwrite=args.overwrite, slop=args.slop,
              storage=args.storage)  # fail fast: before the network loads, before any output exists
    reloc = build_relocalizer(args)
    log.info("warm-up inference: %.2f s", reloc.warmup())  # so the first pair's latency is like the others'
    summary = process_bag(args.input, args.output, reloc, topics, prefix=args.prefix, slop=args.slop,
                          storage=args.storage, frame0=args.frame0, frame1=args.frame1, progress=not args.quiet,
                          overwrite=args.overwrite, debug=args.debug, batch=args.batch, undistort=args.undistort)
    written = f"wrote {args.output}" if summary.wrote_output else "no output written"
    print(f"mickey-ros bag: {summary.line()}; {written}")
    for line in summary.reason_lines():
        print(f"  {line}")
    if summary.interrupted is not None:
        import signal

        kept = (f"{args.output} holds the {summary.processed} pairs processed so far" if summary.wrote_output
                else "no output written")
        print(f"mickey-ros bag: interrupted by {signal.Signals(summary.interrupted).name}; {kept}", file=sys.stderr)
        return 128 + summary.interrupted
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """The bundled demo pairs (``mickey_ros.demo``) through the bundled default network: per pair and in total
    (medians), the estimate and its errors beside the ground truth and the "no motion" (identity) pose, the floor
    an estimate must beat. Exit code 0 when every pair gave a pose, 1 when one did not (its reason is printed)."""
    from mickey_ros.demo import load_demo_pairs, report, run_demo, viz_paths
    from mickey_ros.pipeline import Relocalizer, refine_mode, resolve_device

    pairs = load_demo_pairs()
    pictures = viz_paths(args.viz, len(pairs))  # fail fast: before the network loads
    device = resolve_device(args.device)
    net = _load_network(argparse.Namespace(onnx=None, checkpoint=None, backbone_weights=None, preset=None,
                                           seed=args.seed))
    reloc = Relocalizer(net, device=device, seed=args.seed, precision="auto", max_side="auto",
                        refine=refine_mode(args.refine, "--refine"))
    results, summary = run_demo(pairs, reloc.estimate, read_image, pictures=pictures)
    if args.json:
        _write_json(args.json, report(results, summary, _pose_dict), "--json")
    return EXIT_OK if summary["num_failures"] == 0 else EXIT_NO_POSE


def cmd_export_onnx(args: argparse.Namespace) -> int:
    """The per-image network (backbone + heads) as an ONNX file (contract: mickey_ros.onnx_export)."""
    from mickey_ros.onnx_export import check_export_size, export_onnx, require

    check_export_size(args.height, args.width)  # fail fast: before the network loads
    require("onnx")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise InputError(f"--checkpoint: file not found: {args.checkpoint}")
    out = Path(args.output)
    if not out.parent.is_dir():
        raise InputError(f"OUT.onnx: folder {out.parent} does not exist")
    net = _load_network(args)
    export_onnx(net, out, args.height, args.width, dynamic_batch=args.dynamic_batch, fp16=args.fp16,
                opset=args.opset)
    inputs = "image [B, 3, H, W]" + (" + focal [B]" if net.config.depth_focal_ref > 0 else "")
    print(f"wrote {out} ({args.width}x{args.height}, {inputs} -> kpts, depth, scores, descriptors; "
          f"opset {args.opset})")
    return EXIT_OK


def cmd_make_interfaces(args: argparse.Namespace) -> int:
    from mickey_ros.ros.interfaces import make_interface_package

    root = make_interface_package(args.out_dir)
    print(f"wrote {root}; build it with: colcon build --packages-select mickey_ros_msgs")
    return EXIT_OK


def _write_json(path: str, data: dict[str, Any], name: str) -> None:
    try:
        Path(path).write_text(json.dumps(data, indent=2) + "\n")
    except OSError as err:
        raise InputError(f"{name}: cannot write {path}: {err.strerror}") from err


def _max_side(args: argparse.Namespace) -> int | str | None:
    """``--max-side``: absent -> "auto" (the network's training size, else a 720 budget), 0 -> no resize, else the
    budget's long side in pixels."""
    value = getattr(args, "max_side", None)
    if value is None:
        return "auto"
    if value == 0:
        return None
    if value < 42:
        raise InputError(f"--max-side: expected 0 (no resize) or a long side of at least 42 pixels, got {value}")
    return value


# -- parser -------------------------------------------------------------------------------------------
def _network_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="mickey.ckpt (official) or a mickey_ros checkpoint")
    p.add_argument("--backbone-weights", help="dinov2_vitl14_pretrain.pth, needed with the official mickey.ckpt")
    p.add_argument("--preset", help="random-init network preset instead of the bundled default (testing only)")
    p.add_argument("--onnx", metavar="PATH", help="run the network from a file written by export-onnx (onnxruntime; "
                                                  "images are resized to its export size)")
    p.add_argument("--resize", nargs=2, type=int, metavar=("W", "H"), help="resize both images (K rescaled)")
    p.add_argument("--max-side", type=int, metavar="PX",
                   help="size budget without --resize: longer images are resized to this long side, K rescaled, "
                        "smaller ones kept (default: images are brought to the network's recorded training size, "
                        "up or down; a 720 budget for weights without one, e.g. the official; 0: no resize)")
    p.add_argument("--precision", default="auto", help="auto, fp32, bf16, fp16 (backbone autocast)")
    p.add_argument("--depth-flip", action="store_true",
                   help="average each image's depth with its mirror image's (twice the network time)")
    p.add_argument("--refine", default="auto", choices=("auto", "on", "off"),
                   help="two-view bundle adjustment of the solver's pose (pixels + depth priors); auto: on for "
                        "every network but the official one (default: auto)")
    p.add_argument("--min-confidence", default="auto", metavar="auto|C",
                   help="no pose below this confidence (out of the network's domain): auto = the value calibrated "
                        "for the bundled network, 0 for any other; 0 keeps every pose (default: auto)")


def _output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=0, help="solver seed (same seed, same pose)")
    p.add_argument("--viz", metavar="OUT.png", help="write a picture of matches, depth and scores")
    p.add_argument("--json", metavar="OUT.json", help="write R, t, T_0to1 (4x4), confidence, inliers")
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mickey-ros", description="MicKey metric relative pose.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    m = sub.add_parser("match", help="metric relative pose between two images")
    m.add_argument("image0", help="reference image (camera 0)")
    m.add_argument("image1", help="query image (camera 1)")
    m.add_argument("--intrinsics0", nargs="+", required=True, metavar="V", help="FX FY CX CY of image0 (pixels)")
    m.add_argument("--intrinsics1", nargs="+", required=True, metavar="V", help="FX FY CX CY of image1 (pixels)")
    _network_args(m)
    _output_args(m)
    m.set_defaults(func=cmd_match)

    e = sub.add_parser("eval-mapfree", help="benchmark-exact Map-free metrics of a submission zip")
    e.add_argument("submission", help="submission.zip with pose_<scene>.txt files")
    e.add_argument("--data-root", required=True, help="Map-free root holding train/ val/ test/")
    e.add_argument("--split", default="val", choices=["train", "val", "test"])
    e.add_argument("--json", metavar="OUT.json", help="also write the metrics JSON here")
    e.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    e.set_defaults(func=cmd_eval_mapfree)

    ep = sub.add_parser("eval-pairs", help="pose errors on image pairs with metric ground truth (ScanNet list format)")
    ep.add_argument("pairs", metavar="PAIRS.txt", help="one pair per line: name0 name1 rot0 rot1 K0(9) K1(9) "
                                                       "T_0to1(16); '#' comments")
    ep.add_argument("--image-dir", required=True, metavar="DIR", help="folder the image names are relative to")
    _network_args(ep)  # --resize W H: the size of the upright (EXIF-rotated) images the network sees
    ep.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    ep.add_argument("--seed", type=int, default=0, help="solver seed (same seed, same poses)")
    ep.add_argument("--json", metavar="OUT.json", help="write per-pair errors and the summary")
    ep.add_argument("--viz-dir", metavar="DIR", help="write one picture per pair into this folder")
    ep.add_argument("--quiet", action="store_true", help=QUIET_HELP + ", no progress line")
    ep.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    ep.set_defaults(func=cmd_eval_pairs)

    b = sub.add_parser("bag", help="run MicKey over a rosbag2 (mcap/sqlite3) and write the outputs to a new bag")
    b.add_argument("input", metavar="IN", help="input rosbag2 folder")
    b.add_argument("output", metavar="OUT", help="output rosbag2 folder (must not exist, see --overwrite)")
    for name, what in (("image0", "Image or CompressedImage of camera 0"), ("info0", "CameraInfo of camera 0"),
                       ("image1", "Image or CompressedImage of camera 1"), ("info1", "CameraInfo of camera 1")):
        b.add_argument(f"--{name}", required=True, metavar="TOPIC", help=what)
    _network_args(b)
    b.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    b.add_argument("--seed", type=int, default=0, help="solver seed (same seed, same pose)")
    b.add_argument("--slop", type=float, default=0.05, help="seconds between the two cameras' stamps")
    b.add_argument("--batch", type=int, default=1, metavar="N",
                   help="pairs whose images go through the network together (same poses, same output)")
    b.add_argument("--prefix", default="/mickey", help="namespace of the output topics")
    b.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"])
    b.add_argument("--frame0", help="optical frame id of camera 0 (default: the image header's)")
    b.add_argument("--frame1", help="optical frame id of camera 1")
    b.add_argument("--undistort", action="store_true",
                   help="undistort images whose CameraInfo has non-zero distortion (else such pairs are skipped)")
    b.add_argument("--overwrite", action="store_true", help="replace OUT if it exists and holds only rosbag2 files")
    b.add_argument("--quiet", action="store_true", help=QUIET_HELP + ", no progress line")
    b.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    b.set_defaults(func=cmd_bag)

    d = sub.add_parser("demo", help="the bundled demo pairs through the bundled default network, vs ground truth")
    d.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    d.add_argument("--seed", type=int, default=0, help="solver seed (same seed, same pose)")
    d.add_argument("--refine", default="auto", choices=("auto", "on", "off"),
                   help="two-view bundle adjustment of the solver's pose (default: auto, on for the bundled network)")
    d.add_argument("--viz", metavar="OUT.png", help="write one picture per pair: OUT_pair1.png, OUT_pair2.png, ...")
    d.add_argument("--json", metavar="OUT.json", help="write per pair the estimate, ground truth and errors, and the "
                                                      "totals")
    d.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    d.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    d.set_defaults(func=cmd_demo)

    x = sub.add_parser("export-onnx", help="write the per-image network (backbone + heads) as an ONNX file")
    x.add_argument("output", metavar="OUT.onnx", help="the ONNX file to write")
    x.add_argument("--checkpoint", help="mickey.ckpt (official) or a mickey_ros checkpoint (default: bundled network)")
    x.add_argument("--backbone-weights", help="dinov2_vitl14_pretrain.pth, needed with the official mickey.ckpt")
    x.add_argument("--preset", help="random-init network preset instead of the bundled default (testing only)")
    x.add_argument("--seed", type=int, default=0, help="seed of a --preset network's random weights")
    x.add_argument("--height", type=int, required=True, metavar="H", help="input height (multiple of 14, >= 42)")
    x.add_argument("--width", type=int, required=True, metavar="W", help="input width (multiple of 14, >= 42)")
    x.add_argument("--dynamic-batch", action="store_true", help="dynamic batch size B (default: B = 1)")
    x.add_argument("--fp16", action="store_true", help="backbone in float16 (for GPU runtimes; I/O stays float32)")
    x.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    x.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    x.set_defaults(func=cmd_export_onnx)

    i = sub.add_parser("make-interfaces", help="write the ament_cmake package mickey_ros_msgs (RelativePose.msg)")
    i.add_argument("out_dir", help="folder (e.g. your colcon workspace's src/) to write mickey_ros_msgs/ into")
    i.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    i.set_defaults(func=cmd_make_interfaces)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    logging.basicConfig(level=logging.INFO, format="mickey-ros: %(levelname)s: %(message)s")
    root_level = logging.getLogger().level
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "quiet", False):  # only warnings and errors reach stderr
            logging.getLogger().setLevel(logging.WARNING)
        return int(args.func(args))
    except MickeyError as err:
        if debug:
            traceback.print_exc()
        print(f"mickey-ros: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("mickey-ros: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - last line of defence: one line, no traceback unless --debug
        if debug:
            traceback.print_exc()
        print(f"mickey-ros: internal error: {type(err).__name__}: {err} (rerun with --debug)", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        logging.getLogger().setLevel(root_level)  # main() called in-process (tests) leaves logging as it was


if __name__ == "__main__":
    sys.exit(main())
