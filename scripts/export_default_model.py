"""Write the bundled default network from a training checkpoint (weights only, float16, with provenance).

    python scripts/export_default_model.py runs/default_small_focal/checkpoints/last.ckpt [--out mickey_ros/data/default_small.pt]
        [--input-size W H]

The file records the checkpoint's training input size (the size the Relocalizer brings images to by default);
``--input-size`` replaces it, for checkpoints written before the trainer recorded a warm-started run's own size
(stage 8 recorded stage 7's 294 x 224 while it trained at 364 x 280).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mickey_ros.model import load_checkpoint, read_file, save_checkpoint  # noqa: E402
from mickey_ros.model.default import DEFAULT_WEIGHTS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--note", default="", help="free text kept in the file (e.g. the validation metrics)")
    parser.add_argument("--input-size", nargs=2, type=int, metavar=("W", "H"),
                        help="training input size to record instead of the checkpoint's (pixels)")
    args = parser.parse_args()
    if args.input_size and min(args.input_size) < 42:
        parser.error(f"--input-size: expected W H of at least 42 pixels each, got {args.input_size[0]} "
                     f"{args.input_size[1]}")
    net = load_checkpoint(args.checkpoint)
    if args.input_size:
        net.input_size = (args.input_size[0], args.input_size[1])
    state = read_file(args.checkpoint)
    net.half()  # stored in float16; load_checkpoint copies into a float32 network
    provenance = {"source_step": int(state.get("step", -1)), "training_config": state.get("training_config", {}),
                  "note": args.note}
    save_checkpoint(net, args.out, provenance=provenance)
    check = load_checkpoint(args.out)
    assert next(check.parameters()).dtype == torch.float32
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) from step {provenance['source_step']}, "
          f"input size {check.input_size}")


if __name__ == "__main__":
    main()
