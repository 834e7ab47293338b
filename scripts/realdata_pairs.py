#!/usr/bin/env python3
"""Write ``mickey-ros eval-pairs`` lists of the shared real photographs into OUT (outside the repository).

    python scripts/realdata_pairs.py OUT [--sets kitti_seq1,...|all] [--realdata ../shared/realdata]

Layout and ground-truth conventions: ``mickey_ros/realdata.py``. Prints, per set, the eval-pairs command that
scores it. Exit 2 with one line on stderr for a bad argument, a missing real-data folder or a malformed file.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mickey_ros import cli  # noqa: E402
from mickey_ros.errors import MickeyError  # noqa: E402
from mickey_ros.realdata import check_out_dir, check_realdata, convert_sets, parse_sets  # noqa: E402

PROG = "realdata_pairs"


def main(argv: list[str] | None = None) -> int:
    p = cli._Parser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("out", metavar="OUT", help="folder to write <set>/pairs.txt and <set>/image_dir.txt into")
    p.add_argument("--sets", default="all", help="comma-separated sets (default: all)")
    p.add_argument("--realdata", default=str(REPO.parent / "shared" / "realdata"), metavar="DIR",
                   help="the real-data folder (default: ../shared/realdata next to the repository)")
    try:
        args = p.parse_args(argv)
        sets = parse_sets(args.sets)
        out = check_out_dir(args.out, REPO, "OUT")
        if set(sets) - {"motorcycle"}:
            check_realdata(args.realdata)
        for done in convert_sets(sets, args.realdata, out):
            print(f"{done.name}: {done.num_pairs} pairs: mickey-ros eval-pairs {shlex.quote(str(done.pairs_file))} "
                  f"--image-dir {shlex.quote(str(done.image_dir))}")
            for note in done.notes:
                print(f"  {note}")
    except MickeyError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return cli.EXIT_BAD_INPUT
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
