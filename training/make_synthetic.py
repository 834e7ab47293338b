"""Write seeded synthetic scenes as rosbag2 (mcap) recordings: two visits per scene, with depth and TF.

    python training/make_synthetic.py OUT [--scenes N] [--frames F] [--width W] [--height H] [--seed S]
                                          [--depth/--no-depth] [--two-camera] [--kind room|street] [--overwrite]

Layout: ``OUT/scene_000/{rec0,rec1}/`` (bag folders) and ``OUT/scene_000/scene.json`` (seed, K, size,
ground-truth ``T_map_camera`` per image); see :mod:`training.data.synthetic`. ``--two-camera`` writes a
two-camera rig per bag instead (``/cam0/image_raw``, ``/cam0/camera_info``, ``/cam1/image_raw``,
``/cam1/camera_info``, same stamps, both extrinsics on ``/tf_static``; the rig's ``T_0to1`` in scene.json),
ready for ``mickey-ros bag OUT/scene_000/rec0 RESULT --image0 /cam0/image_raw --info0 /cam0/camera_info
--image1 /cam1/image_raw --info1 /cam1/camera_info``. ``--kind street`` writes outdoor streets instead of rooms
(facades, parked cars, sky; depths to 300 m; a vehicle driving at 3-12 m/s with a 0.45-1.1 W focal length). Exit codes: 0 done, 2 bad arguments (one line on
stderr; ``--debug`` adds the traceback).
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Sequence

if not __package__:  # run as a script: import this checkout's training/ and mickey_ros/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mickey_ros.errors import InputError, MickeyError  # noqa: E402
from training.data.synthetic import generate  # noqa: E402

PROG = "make_synthetic"


class _Parser(argparse.ArgumentParser):
    """argparse that raises a one-line InputError instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("out", metavar="OUT", help="output folder (new, empty, or with --overwrite)")
    parser.add_argument("--scenes", type=int, default=4, help="number of scenes (default 4)")
    parser.add_argument("--frames", type=int, default=30, help="images per recording, 10 Hz (default 30)")
    parser.add_argument("--width", type=int, default=294, help="image width in pixels (default 294)")
    parser.add_argument("--height", type=int, default=224, help="image height in pixels (default 224)")
    parser.add_argument("--seed", type=int, default=0, help="scene i uses numpy default_rng((seed, i)) (default 0)")
    parser.add_argument("--depth", action=argparse.BooleanOptionalAction, default=True,
                        help="write /camera/depth/image_raw (/camN/... with --two-camera; 32FC1 metres, for "
                             "evaluation; default on)")
    parser.add_argument("--two-camera", action="store_true",
                        help="a two-camera rig per bag (/cam0/..., /cam1/..., 0.1-0.5 m baseline) for `mickey-ros bag`")
    parser.add_argument("--kind", choices=("room", "street"), default="room",
                        help="room: indoor rooms (default); street: outdoor streets driven by a vehicle")
    parser.add_argument("--overwrite", action="store_true", help="replace the scene folders of a non-empty OUT")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)

        def progress(done: int, total: int) -> None:
            print(f"\r{PROG}: scene {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

        summary = generate(args.out, scenes=args.scenes, frames=args.frames, width=args.width, height=args.height,
                           seed=args.seed, depth=args.depth, overwrite=args.overwrite,
                           two_camera=args.two_camera, kind=args.kind, progress=progress)
    except MickeyError as err:
        if "--debug" in argv:
            traceback.print_exc()
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    print(f"{PROG}: {summary.line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
