#!/usr/bin/env python3
"""Write the shared real photographs as rosbag2 recordings shaped like a robot's (mcap), outside the repository.

    python scripts/realdata_bags.py OUT [--sets kitti_seq1,kitti_seq2,middlebury,euroc_stereo] [--realdata DIR]
        [--overwrite]

``OUT/kitti_seq1/``, ``OUT/kitti_seq2/``: one single-camera bag per KITTI sequence (``/camera/image_raw`` mono8,
``/camera/camera_info``, ``/tf`` ``map -> base_link``, ``/tf_static`` ``base_link -> camera_optical_frame``) for
training (``training/configs/finetune_kitti.yaml``); ``OUT/middlebury/<scene>/`` and ``OUT/euroc_stereo/``:
two-camera bags (``/cam0/...``, ``/cam1/...``, both extrinsics on ``/tf_static``) for ``mickey-ros bag``;
``OUT/<set>.json``: topics, frames, K and ground truth (``mickey_ros/realdata_bags.py`` has the conventions).
Research licences: OUT inside the repository is refused. Prints one line per set and the command that reads it.
Exit 2 with one line on stderr for a bad argument, a missing or malformed input, or an existing output without
``--overwrite``.
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mickey_ros import cli  # noqa: E402
from mickey_ros.errors import MickeyError  # noqa: E402

if TYPE_CHECKING:
    from mickey_ros.realdata_bags import WrittenSet

PROG = "realdata_bags"
DEFAULT_REALDATA = REPO.parent / "shared" / "realdata"


def build_parser() -> argparse.ArgumentParser:
    from mickey_ros.realdata_bags import BAG_SETS

    p = cli._Parser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("out", metavar="OUT", help="output folder, outside the repository (created if missing)")
    p.add_argument("--sets", default="all", help=f"comma-separated sets (default: all): {', '.join(BAG_SETS)}")
    p.add_argument("--realdata", default=str(DEFAULT_REALDATA), metavar="DIR",
                   help="the real-data folder (default: ../shared/realdata next to the repository)")
    p.add_argument("--overwrite", action="store_true", help="replace the sets' bags already in OUT")
    p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return p


def usage_line(written: WrittenSet) -> str:
    """What reads a written set: the training override for a single-camera bag, ``mickey-ros bag`` for a rig."""
    bags = written.bags
    if len(written.cameras) == 1:
        return f"  train on it: python training/train.py --config CONFIG 'data.train=[{bags[0]}]'"
    return (f"  run it: mickey-ros bag {bags[0]} OUT_BAG --image0 /cam0/image_raw --info0 /cam0/camera_info "
            "--image1 /cam1/image_raw --info1 /cam1/camera_info")


def run(args: argparse.Namespace) -> int:
    from mickey_ros.realdata import check_out_dir, check_realdata, parse_sets
    from mickey_ros.realdata_bags import BAG_SETS, write_bags

    sets = parse_sets(args.sets, known=BAG_SETS)
    out = check_out_dir(args.out, REPO, "OUT")
    check_realdata(args.realdata)
    for written in write_bags(sets, args.realdata, out, overwrite=args.overwrite):
        where = written.bags[0] if len(written.bags) == 1 else f"{written.bags[0].parent}/ ({len(written.bags)} bags)"
        print(f"{written.name}: {where}, {written.stamps} stamps, record {written.record}")
        print(usage_line(written))
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return run(build_parser().parse_args(argv))
    except MickeyError as err:
        if "--debug" in argv:
            traceback.print_exc()
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return cli.EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - one line, no traceback unless --debug
        if "--debug" in argv:
            traceback.print_exc()
        print(f"{PROG}: internal error: {type(err).__name__}: {err} (rerun with --debug)", file=sys.stderr)
        return cli.EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
