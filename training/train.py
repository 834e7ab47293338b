"""Train MicKey end to end from image pairs with metric relative poses (rosbag2 recordings or Map-free).

    python training/train.py --config training/configs/synthetic_tiny.yaml [section.key=value ...] [--resume CKPT]
    torchrun --nproc_per_node 2 training/train.py --config ...      # DDP: gloo on CPU, nccl on GPU

Configuration: defaults -> ``--config`` file -> overrides (unknown keys are errors); the resolved config is
written to ``<train.run_dir>/config.yaml``. Checkpoints: ``<run_dir>/checkpoints/last.ckpt`` every
``train.checkpoint_every`` steps, at the end and on SIGINT/SIGTERM; ``best_vcre.ckpt`` (also written as
``best.ckpt``) by validation VCRE AUC and ``best_pose.ckpt`` by validation pose AUC, as the official
trainer; ``train.val_per_epoch`` validations per epoch (official: 2).
``--resume`` continues exactly (model, optimiser moments, data order, RNG); the config's ``optim.lr`` and
``optim.eps`` win over the checkpoint's, so ``--resume CKPT optim.lr=3e-5`` lowers the rate for the rest of a run.
Checkpoints load with ``mickey_ros.model.load_checkpoint`` (and the ``mickey-ros --checkpoint`` option).
Exit codes: 0 done, 2 bad configuration or data (one line), 130 interrupted (checkpoint written).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `training` and `mickey_ros` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mickey_ros.errors import MickeyError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train.py", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML file with sections model, data, optim, loss, train")
    parser.add_argument("--resume", help="training checkpoint to continue from (exactly; a changed optim.lr or "
                        "optim.eps in the config or overrides applies from the resumed step on)")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.batch_size=4")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from training import config as config_mod
    from training.trainer import Trainer, build_dataset, init_distributed

    rank, world = 0, 1
    try:
        cfg = config_mod.resolve(args.config, args.overrides)
        rank, world = init_distributed()
        trainer = Trainer(cfg, rank, world)
        if args.resume:
            trainer.resume(args.resume)
        run_dir = Path(cfg["train"]["run_dir"])
        train_ds = build_dataset(cfg, "train", run_dir)
        val_ds = build_dataset(cfg, "val", run_dir)
        if rank == 0:
            print(plan_lines(cfg, trainer, train_ds, val_ds), flush=True)
        result = trainer.fit(train_ds, val_ds)
    except MickeyError as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    finally:
        import torch.distributed as dist

        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        print(f"train.py: step {result['step']}, epoch {result['epoch']}"
              f"{' (interrupted; checkpoint written)' if result['interrupted'] else ''}")
    return 130 if result["interrupted"] else 0


def plan_lines(cfg: dict, trainer: Any, train_ds: Any, val_ds: Any) -> str:
    """What the run found and what it will do, before its first step (data, network, steps, where it writes)."""
    from training.data.build import describe_dataset

    m, t, d = cfg["model"], cfg["train"], cfg["data"]
    start = f"warm-started from {m['checkpoint']}" if m["checkpoint"] else "from scratch"
    steps = f"until step {t['max_steps']}" if t["max_steps"] else f"{t['epochs']} epochs"
    size = "images as they are" if d["resize"] is None else f"images resized to {d['resize'][0]}x{d['resize'][1]}"
    return "\n".join([
        f"train.py: {describe_dataset(train_ds, 'train')}",
        f"train.py: {describe_dataset(val_ds, 'val')}",
        f"train.py: network {m['preset']} {start}, at step {trainer.step}; {size}; batch {t['batch_size']}, "
        f"{steps}; writing to {t['run_dir']}",
    ])


if __name__ == "__main__":
    sys.exit(main())
