#!/usr/bin/env python3
"""The network on real photographs in one command: one table row per set, beside the no-motion pose.

    python scripts/eval_realdata.py [--checkpoint P] [--refine auto|on|off] [--resize W H | --max-side N]
        [--sets kitti_seq1,kitti_seq2,middlebury,euroc_stereo,motorcycle] [--max-pairs N] [--json OUT.json]
        [--realdata ../shared/realdata] [--out DIR] [--threads N] [--device auto] [--seed 0]

The sets (``mickey_ros.realdata``: KITTI, Middlebury, EuRoC undistorted, scikit-image's motorcycle) are converted
into ``--out`` (default: a temporary folder, removed at the end; never inside the repository: research licences)
and scored exactly as ``mickey-ros eval-pairs`` scores a list (``mickey_ros.eval_pairs`` with the Relocalizer
``mickey_ros.cli.build_relocalizer`` builds; metrics from ``mickey_ros.geometry.pose_eval``). Without
``--checkpoint``: the bundled default network. ``--json`` writes what ran (``mickey_ros.cli.run_info``) and per
set the summary, the network input sizes and the per-pair rows of eval-pairs. Exit 2 with one line on stderr for
a bad argument or a missing real-data folder.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mickey_ros import cli  # noqa: E402
from mickey_ros.errors import InputError, MickeyError  # noqa: E402
from mickey_ros.image_bytes import read_image  # noqa: E402

PROG = "eval_realdata"
DEFAULT_REALDATA = REPO.parent / "shared" / "realdata"


def build_parser() -> argparse.ArgumentParser:
    p = cli._Parser(prog=PROG, description=__doc__.splitlines()[0])
    cli._network_args(p)  # --checkpoint, --refine, --resize, --max-side, ... exactly as mickey-ros reads them
    p.add_argument("--sets", default="all", help="comma-separated sets (default: all): kitti_seq1, kitti_seq2, "
                                                 "middlebury, euroc_stereo, motorcycle")
    p.add_argument("--max-pairs", type=int, metavar="N", help="only the first N pairs of each set")
    p.add_argument("--realdata", default=str(DEFAULT_REALDATA), metavar="DIR",
                   help="the real-data folder (default: ../shared/realdata next to the repository)")
    p.add_argument("--out", metavar="DIR", help="keep the converted lists here (default: a temporary folder)")
    p.add_argument("--json", metavar="OUT.json", help="write what ran and the per-set summaries")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads (default: torch's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=0, help="solver seed (same seed, same poses)")
    p.add_argument("--quiet", action="store_true", help="only warnings and errors on stderr")
    p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return p


def check_args(args: argparse.Namespace) -> tuple[str, ...]:
    """Every argument checked before any work; returns the set names.

    Raises:
        InputError: one line naming the argument and what was expected.
    """
    from mickey_ros.realdata import check_out_dir, check_realdata, parse_sets

    if args.resize and args.max_side is not None:
        raise InputError("--resize and --max-side: expected one of them, got both")
    for name, value in (("--max-pairs", args.max_pairs), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise InputError(f"{name}: expected a positive number, got {value}")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise InputError(f"--json: folder {Path(args.json).parent} does not exist")
    if args.out:
        check_out_dir(args.out, REPO)
    sets = parse_sets(args.sets)
    if set(sets) - {"motorcycle"}:
        check_realdata(args.realdata)
    return sets


def evaluate_set(converted: Any, reloc: Any, max_pairs: int | None, progress: bool) -> dict[str, Any]:
    """One converted set through eval-pairs' evaluation; adds the network input sizes and the seconds taken."""
    from mickey_ros.eval_pairs import check_images, evaluate_pairs, parse_pairs

    pairs = parse_pairs(converted.pairs_file)[:max_pairs]
    check_images(pairs, converted.image_dir)
    sizes: Counter[str] = Counter()

    def estimate(image0: Any, K0: Any, image1: Any, K1: Any) -> Any:
        for image, K in ((image0, K0), (image1, K1)):
            height, width = reloc.network_input(image, K)[0].shape[-2:]
            sizes[f"{width}x{height}"] += 1
        return reloc.estimate(image0, K0, image1, K1)

    start = time.perf_counter()
    result = evaluate_pairs(pairs, converted.image_dir, estimate, read=read_image, progress=progress)
    return {"num_pairs": len(pairs), "notes": list(converted.notes), "image_dir": str(converted.image_dir),
            "network_input": dict(sizes), "seconds": round(time.perf_counter() - start, 1), **result}


def _fmt(value: float, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def table_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    """One row per set: the estimate's medians, precision and pose AUC, then the no-motion pose's centre/rotation."""
    head = (f"{'set':<13}{'pairs':>5}{'fail':>5}{'input':>9}{'centre':>8}{'rot':>7}{'dir':>7}  {'scale ratio':<18}"
            f"{'25cm/5deg':>9}{'AUC@5/10/20':>17}  {'| no motion':<11}{'centre':>7}{'rot':>7}")
    units = (f"{'':<13}{'':>5}{'':>5}{'(px)':>9}{'(m)':>8}{'(deg)':>7}{'(deg)':>7}  {'median (p10-p90)':<18}"
             f"{'':>9}{'(deg)':>17}  {'|':<11}{'(m)':>7}{'(deg)':>7}")
    lines = [head, units]
    for name, res in results.items():
        s, ident = res["summary"], res["summary"]["identity"]
        sizes = res["network_input"]
        size = next(iter(sizes)) if len(sizes) == 1 else "mixed"  # the JSON has each size's count
        scale = (f"{_fmt(s['scale_ratio_median'], '.3f')} ({_fmt(s['scale_ratio_p10'], '.2f')}-"
                 f"{_fmt(s['scale_ratio_p90'], '.2f')})")
        auc = "/".join(_fmt(s[f"auc_pose_{t}deg"], ".2f") for t in (5, 10, 20))
        lines.append(f"{name:<13}{s['num_pairs']:>5}{s['num_failures']:>5}{size:>9}"
                     f"{_fmt(s['median_trans_err_m'], '.3f'):>8}{_fmt(s['median_rot_err_deg'], '.2f'):>7}"
                     f"{_fmt(s['median_trans_dir_err_deg'], '.1f'):>7}  {scale:<18}"
                     f"{_fmt(s['prec_pose_25cm_5deg'], '.3f'):>9}{auc:>17}  {'|':<11}"
                     f"{_fmt(ident['median_trans_err_m'], '.3f'):>7}{_fmt(ident['median_rot_err_deg'], '.2f'):>7}")
    lines += ["centre: median camera-centre error; rot: median rotation error; dir: median direction error (of the "
              "translation);",
              "scale ratio: |t_est| / |t_gt|; 25cm/5deg: fraction of pairs within 25 cm and 5 deg; AUC: pose AUC of "
              "max(rot, dir);",
              "fail: pairs without a pose; input: network input W x H (mixed: several, counted in the JSON)"]
    for name, res in results.items():
        for reason, count in {**res["summary"]["skipped"], **res["summary"]["no_pose"]}.items():
            lines.append(f"  {name}: no pose ({count}): {reason}")
        lines += [f"  {name}: {note}" for note in res["notes"]]
    return lines


def describe_run(info: dict[str, Any]) -> str:
    """One line: network, input rule, refinement, seed, device, threads."""
    net_in = info["network_input"]
    size = "x".join(map(str, net_in["size"])) if net_in["size"] else net_in["max_side"]
    size_text = f"{net_in['rule']} {size}" if size else net_in["rule"]
    refine = f"{info['refine']} ({'on' if info['refine_active'] else 'off'})"
    return (f"network: {info['checkpoint']} (preset {info['preset']}), input: {size_text}, refine {refine}, "
            f"seed {info['seed']}, {info['device']}, {info['torch_threads']} torch thread(s)")


def run(args: argparse.Namespace) -> int:
    from mickey_ros.eval_pairs import json_safe
    from mickey_ros.realdata import convert_sets

    sets = check_args(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="mickey_realdata_") as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        converted = convert_sets(sets, args.realdata, out)  # fail fast: before the network loads
        reloc = cli.build_relocalizer(args)
        info = {**cli.run_info(args, reloc), "realdata": str(Path(args.realdata).resolve()), "sets": list(sets),
                "max_pairs": args.max_pairs}
        progress = not args.quiet and sys.stderr.isatty()
        results = {c.name: evaluate_set(c, reloc, args.max_pairs, progress) for c in converted}
    print(describe_run(info))
    print("\n".join(table_lines(results)))
    if args.json:
        cli._write_json(args.json, json_safe({"run": info, "sets": results}), "--json")
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    logging.basicConfig(level=logging.WARNING if "--quiet" in argv else logging.INFO,
                        format=f"{PROG}: %(levelname)s: %(message)s")
    try:
        return run(build_parser().parse_args(argv))
    except MickeyError as err:
        if debug:
            traceback.print_exc()
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return cli.EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - one line, no traceback unless --debug
        if debug:
            traceback.print_exc()
        print(f"{PROG}: internal error: {type(err).__name__}: {err} (rerun with --debug)", file=sys.stderr)
        return cli.EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
