"""Write the bundled default network from a training checkpoint (weights only, float16, with provenance).

    python scripts/export_default_model.py runs/default_small_focal/checkpoints/last.ckpt [--out mickey_ros/data/default_small.pt]
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
    args = parser.parse_args()
    net = load_checkpoint(args.checkpoint)
    state = read_file(args.checkpoint)
    net.half()  # stored in float16; load_checkpoint copies into a float32 network
    provenance = {"source_step": int(state.get("step", -1)), "training_config": state.get("training_config", {}),
                  "note": args.note}
    save_checkpoint(net, args.out, provenance=provenance)
    check = load_checkpoint(args.out)
    assert next(check.parameters()).dtype == torch.float32
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) from step {provenance['source_step']}")


if __name__ == "__main__":
    main()
